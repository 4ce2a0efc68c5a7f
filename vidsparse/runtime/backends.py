"""Sparse attention backends: who runs a block-sparse `SparseMask`, behind one small registry.

| name | runs | where |
|---|---|---|
| `triton` | `block_sparse_attention`, the Triton kernel | CUDA, or the CPU under `TRITON_INTERPRET=1`; head dims 64 and 128 |
| `sdpa` | torch SDPA by query blocks, or on the CPU their gathered keys (see below) | small sequences anywhere |
| `reference` | `block_sparse_attention_reference`, chunked over query rows | anywhere, any size (slow) |

`SparseConfig(backend="auto")` takes the first that can run, in that order, and the runtime reports every reason a
faster one could not; a backend named explicitly must run, or the call fails with the reason. Every backend has the
kernel's semantics: a row with no live key gives zeros (and a log-sum-exp of -inf). On the CPU the sdpa backend
returns the log-sum-exp as well (torch's CPU flash attention; `sdpa_returns_lse`), so a cached-delta refresh's full
attention there is one SDPA call without a mask; elsewhere it runs the reference for it.

Example::

    >>> vidsparse.apply(pipe, {"method": "spatial", "backend": "reference"})   # force the PyTorch reference
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from ..kernels import SUPPORTED_HEAD_DIMS, block_sparse_attention, block_sparse_attention_reference
from ..kernels.reference import block_sparse_attention_gathered
from ..kernels.block_sparse import _interpreting
from ..core.mask import SparseMask

__all__ = ["Backend", "BACKENDS", "column_attention", "fuses_refresh", "pick_backend", "register_backend",
           "sdpa_returns_lse"]

_MASK_ROW_ELEMENTS = 1 << 26  # elements of the sdpa backend's mask rows, B x H x nQ x S (256 MB in float32)
_MASK_ROW_CACHE_BYTES = 1 << 28  # all cached mask rows together (256 MB), least recently used dropped first


@dataclass(frozen=True)
class Backend:
    """A way to run block-sparse attention.

    Attributes:
        name: the registry key (`SparseConfig.backend`).
        run: `(q, k, v, mask, key_padding_mask, return_lse, cache, out_dtype=None) -> o or (o, lse)` over
            `[B, H, S, D]`; `cache` is the calling runtime's `MaskRowsCache` (reset between generations);
            `out_dtype` (None: q's) torch.float32 asks for the unrounded output.
        unavailable: `(q, mask) -> None` where it can run, else the reason (one line, for the report).
    """

    name: str
    run: Callable
    unavailable: Callable


BACKENDS: dict[str, Backend] = {}


def register_backend(backend: Backend) -> Backend:
    BACKENDS[backend.name] = backend
    return backend


def pick_backend(name: str, q: torch.Tensor, mask: SparseMask, fall_back: Callable[[str], None],
                 need_lse: bool = False) -> Backend:
    """The backend to run: `name`, or with "auto" the first of triton, sdpa, reference that can (reporting each
    reason through `fall_back`). `need_lse` skips backends that cannot return the log-sum-exp."""
    if name != "auto":
        backend = BACKENDS[name]
        reason = backend.unavailable(q, mask)
        if reason is not None:
            raise ValueError(f"backend {name!r} cannot run here: {reason}; use backend='auto'")
        return backend
    for candidate in ("triton", "sdpa", "reference"):
        backend = BACKENDS[candidate]
        if need_lse and candidate == "sdpa" and not sdpa_returns_lse(q):
            continue
        reason = backend.unavailable(q, mask)
        if reason is None:
            return backend
        if candidate == "triton":
            fall_back(reason)
    raise AssertionError("the reference backend always runs")


# ---------------------------------------------------------------------------------------------- triton
def _triton_unavailable(q: torch.Tensor, mask: SparseMask) -> str | None:
    if q.device.type != "cuda" and not _interpreting():
        return f"no Triton kernel on {q.device.type}: PyTorch runs the same masks instead (slower than the kernel)"
    if q.shape[-1] not in SUPPORTED_HEAD_DIMS:
        return f"head dim {q.shape[-1]} has no Triton kernel (supported {SUPPORTED_HEAD_DIMS}): PyTorch reference"
    if q.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        return f"dtype {q.dtype} has no Triton kernel: PyTorch reference"
    return None


def _triton(q, k, v, mask, key_padding_mask, return_lse, cache=None, out_dtype=None):
    return block_sparse_attention(q, k, v, mask, key_padding_mask=key_padding_mask, return_lse=return_lse,
                                  out_dtype=out_dtype)


# ---------------------------------------------------------------------------------------------- sdpa
# Torch SDPA takes an additive mask, but a block mask expanded to tokens is S x S per head: building it costs more
# than half an attention call, and reading it a tenth more. The sdpa backend runs a mask's heads one of three ways:
# - heads whose rows visit every block: SDPA without a mask;
# - on the CPU, at a density under `_GATHER_BELOW`: each query block over the keys of its blocks only, gathered
#   (`block_sparse_attention_gathered`), whose cost follows the density;
# - otherwise each query block as its own SDPA "head" (q viewed as [B H, nQ, q_block, D]; k and v as [B H, 1, S, D]
#   broadcast over the query blocks, no copy) with the block's row of the mask over the keys, [B H, nQ, 1, S],
#   broadcast over its rows: the mask costs nQ x S a head, and the call about what a call with a token mask costs.
# At the yardstick's shape on the CPU (S = 2,336, blocks of 32) the gathered path takes about 0.15 + 1.7 x density
# of a dense SDPA call and the mask rows about 1.2 (`python pipelines/cpu_fallback_speed.py` measures the steps).
_GATHER_BELOW = 0.5


@dataclass(frozen=True)
class MaskRows:
    """A `SparseMask` as the sdpa backend runs it.

    `full`: the heads whose rows visit every block in every batch row; `part`: the mask of the other heads (None
    without any) and `density`, the share of blocks it visits; `bias`: float `[B', len(part heads), nQ, S]`, each
    query block's additive row over the keys (0 = visit, -inf = skip) in the compute dtype, or None where the other
    heads run gathered."""

    full: tuple[int, ...]
    part: SparseMask | None
    density: float
    bias: torch.Tensor | None

    @property
    def nbytes(self) -> int:
        return 0 if self.bias is None else self.bias.numel() * self.bias.element_size()


class MaskRowsCache:
    """The sdpa backend's `MaskRows` of recently used masks, least recently used dropped first within a byte budget.
    Planners hand out the same mask object while a pattern holds; each is read on the host once (its full heads and
    density)."""

    def __init__(self, budget: int = _MASK_ROW_CACHE_BYTES, max_masks: int = 256):
        self.budget = budget
        self.max_masks = max_masks
        self.entries: OrderedDict[tuple, tuple[SparseMask, MaskRows]] = OrderedDict()

    def get(self, mask: SparseMask, dtype: torch.dtype) -> MaskRows:
        key = (id(mask), dtype)
        entry = self.entries.get(key)
        if entry is not None and entry[0] is mask:
            self.entries.move_to_end(key)
            return entry[1]
        rows = _mask_rows(mask, dtype)
        self.entries[key] = (mask, rows)
        while len(self.entries) > 1 and (self.nbytes > self.budget or len(self.entries) > self.max_masks):
            self.entries.popitem(last=False)
        return rows

    @property
    def nbytes(self) -> int:
        return sum(rows.nbytes for _, rows in self.entries.values())

    def clear(self) -> None:
        self.entries.clear()


def _mask_rows(mask: SparseMask, dtype: torch.dtype) -> MaskRows:
    """The `MaskRows` of a mask (one host read: its full heads and density)."""
    blocks = mask.to_blocks()  # [B', H, nQ, nK]
    full = blocks.flatten(2).all(-1).all(0).tolist()
    part_heads = [h for h, f in enumerate(full) if not f]
    if not part_heads:
        return MaskRows(tuple(range(mask.num_heads)), None, 1.0, None)
    if len(part_heads) < mask.num_heads:
        index = torch.tensor(part_heads, device=mask.device)
        mask = SparseMask(mask.kv_num_blocks.index_select(1, index), mask.kv_indices.index_select(1, index),
                          mask.q_block, mask.k_block, mask.seq_len, mask.text)
        blocks = blocks.index_select(1, index)
    density = blocks.float().mean().item()
    bias = None
    if mask.device.type != "cpu" or density >= _GATHER_BELOW:
        bias = torch.zeros(blocks.shape, dtype=dtype, device=blocks.device).masked_fill_(~blocks, float("-inf"))
        bias = bias.repeat_interleave(mask.k_block, dim=-1)[..., : mask.seq_len]
    return MaskRows(tuple(h for h, f in enumerate(full) if f), mask, density, bias)


def _sdpa_unavailable(q: torch.Tensor, mask: SparseMask) -> str | None:
    b, h, s, _ = q.shape
    if b * h * mask.num_q_blocks * s > _MASK_ROW_ELEMENTS:
        return (f"mask rows of {b * h * mask.num_q_blocks * s:,} elements (query blocks x keys) are too many for the "
                "sdpa backend")
    if q.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        return f"dtype {q.dtype} is not supported by torch SDPA"
    return None


def sdpa_returns_lse(q: torch.Tensor) -> bool:
    """Whether the sdpa backend returns the log-sum-exp for q (torch's CPU flash attention does; elsewhere it runs
    the reference)."""
    return q.device.type == "cpu" and hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu")


def fuses_refresh(name: str, q: torch.Tensor) -> bool:
    """Whether a cached-delta refresh under backend `name` computes its full attention, its columns and its cached
    rest in one pass (`attention_topk_and_rest`): on the CPU where the sdpa backend would run its full attention."""
    runs_sdpa = name == "sdpa" or (name == "auto" and _triton_unavailable(q, None) is not None)
    return runs_sdpa and q.device.type == "cpu" and q.dtype in (torch.float32, torch.bfloat16, torch.float16)


def _sdpa(q, k, v, mask, key_padding, return_lse, cache=None, out_dtype=None):
    if return_lse and not sdpa_returns_lse(q):
        return _reference(q, k, v, mask, key_padding, True, out_dtype=out_dtype)
    compute = torch.float32 if out_dtype == torch.float32 else q.dtype
    q, k, v = (t.to(compute) for t in (q, k, v))
    rows = (cache if cache is not None else MaskRowsCache()).get(mask, compute)
    pad = None
    if key_padding is not None:  # [B, 1, 1, S]: -inf on padded keys
        pad = torch.zeros(key_padding.shape, dtype=compute, device=q.device).masked_fill_(key_padding, float("-inf"))
        pad = pad[:, None, None, :]

    def part(q, k, v):  # the heads that are not full
        if rows.bias is None:
            return block_sparse_attention_gathered(q, k, v, rows.part, key_padding_mask=key_padding,
                                                   return_lse=return_lse)
        return _attend_rows(q, k, v, rows.bias, mask.q_block, pad, return_lse)

    h = q.shape[1]
    if rows.part is None:
        got = _attend(q, k, v, pad, return_lse)
    elif not rows.full:
        got = part(q, k, v)
    else:  # the full heads without a mask, the others as their mask says
        full = torch.tensor(rows.full, device=q.device)
        others = torch.tensor([i for i in range(h) if i not in rows.full], device=q.device)
        parts = [(full, _attend(*(x.index_select(1, full) for x in (q, k, v)), pad, return_lse)),
                 (others, part(*(x.index_select(1, others) for x in (q, k, v))))]
        out = torch.empty(q.shape, dtype=compute, device=q.device)
        lse = torch.empty(q.shape[:3], dtype=torch.float32, device=q.device)
        for heads, part_got in parts:
            out.index_copy_(1, heads, part_got[0] if return_lse else part_got)
            if return_lse:
                lse.index_copy_(1, heads, part_got[1])
        got = (out, lse) if return_lse else out
    if return_lse:
        return got[0] if out_dtype is None else got[0].to(out_dtype), got[1]
    return got if out_dtype is None else got.to(out_dtype)


def _attend(q, k, v, pad, return_lse):
    """Attention over every key (but the padded ones: `pad`, an additive `[B, 1, 1, S]`, or None)."""
    if not return_lse:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=pad)
        return out if pad is None else out.nan_to_num(0.0)  # a row whose keys are all padded: zeros
    out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, False, attn_mask=pad)
    if pad is not None:  # a row whose keys are all padded: CPU flash attention gives zeros, but a log-sum-exp of 0
        lse = lse.masked_fill(torch.isinf(pad).all(-1), float("-inf"))
    return out, lse.float()


def _attend_rows(q, k, v, bias, q_block: int, pad, return_lse):
    """Attention under a mask's rows (`bias [B', H, nQ, S]`, see `MaskRows`), each query block an SDPA head."""
    b, h, s, d = q.shape
    n_q = bias.shape[2]
    if pad is not None:
        bias = bias + pad  # [B, H, nQ, S]
    bias = bias.expand(b, h, n_q, s).reshape(b * h, n_q, 1, s)
    if n_q * q_block > s:  # the ragged last block: padded
        q = F.pad(q, (0, 0, 0, n_q * q_block - s))
    q = q.reshape(b * h, n_q, q_block, d)
    k, v = (t.reshape(b * h, 1, s, d).expand(b * h, n_q, s, d) for t in (k, v))
    empty = torch.isinf(bias).all(-1, keepdim=True)  # query blocks without a live key: [B H, nQ, 1, 1]
    if not return_lse:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        out = out.masked_fill(empty, 0.0)  # zeros for them, as the kernel and the reference give
        return out.reshape(b, h, n_q * q_block, d)[:, :, :s]
    out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, False, attn_mask=bias)
    lse = lse.masked_fill(empty.view(b * h, n_q, 1), float("-inf"))  # CPU flash attention says 0 there
    return out.reshape(b, h, n_q * q_block, d)[:, :, :s], lse.reshape(b, h, n_q * q_block)[:, :, :s].float()


# ---------------------------------------------------------------------------------------------- reference
def _reference(q, k, v, mask, key_padding_mask, return_lse, cache=None, out_dtype=None):
    return block_sparse_attention_reference(q, k, v, mask, key_padding_mask=key_padding_mask, return_lse=return_lse,
                                            out_dtype=out_dtype)


register_backend(Backend("triton", _triton, _triton_unavailable))
register_backend(Backend("sdpa", _sdpa, _sdpa_unavailable))
register_backend(Backend("reference", _reference, lambda q, mask: None))


def column_attention(name: str, q, k, v, columns, counts, *, q_block: int, text, key_padding_mask,
                     fall_back: Callable[[str], None], out_dtype: torch.dtype | None = None,
                     wraps: torch.Tensor | None = None):
    """Column-sparse attention with its log-sum-exp (the delta method's kernel): the Triton kernel where it runs
    and `name` allows it ("auto" or "triton"), else its PyTorch reference (reporting why through `fall_back`).
    `columns` int32, or int16 packed lists with their `wraps` (a cached delta's)."""
    from ..kernels import column_sparse_attention, column_sparse_attention_reference

    reason = _triton_unavailable(q, None)
    if name == "triton" and reason is not None:
        raise ValueError(f"backend 'triton' cannot run here: {reason}; use backend='auto'")
    run = column_sparse_attention
    if name in ("sdpa", "reference") or reason is not None:
        if name == "auto":
            fall_back(reason)
        run = column_sparse_attention_reference
    return run(q, k, v, columns, counts, q_block=q_block, text=text, key_padding_mask=key_padding_mask,
               return_lse=True, out_dtype=out_dtype, wraps=wraps)
