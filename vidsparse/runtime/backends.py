"""Sparse attention backends: who runs a block-sparse `SparseMask`, behind one small registry.

| name | runs | where |
|---|---|---|
| `triton` | `block_sparse_attention`, the Triton kernel | CUDA, or the CPU under `TRITON_INTERPRET=1`; head dims 64 and 128 |
| `sdpa` | torch SDPA, an additive token mask per distinct mask row (cached) | small sequences anywhere |
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
from ..kernels.block_sparse import _interpreting
from ..core.mask import SparseMask

__all__ = ["Backend", "BACKENDS", "column_attention", "register_backend", "pick_backend"]

_TOKEN_MASK_ELEMENTS = 1 << 24  # elements of one [S, S] token mask of the sdpa backend (64 MB in float32)
_TOKEN_MASK_CACHE_BYTES = 1 << 29  # all cached token masks together (512 MB), least recently used dropped first


@dataclass(frozen=True)
class Backend:
    """A way to run block-sparse attention.

    Attributes:
        name: the registry key (`SparseConfig.backend`).
        run: `(q, k, v, mask, key_padding_mask, return_lse, token_masks, out_dtype=None) -> o or (o, lse)` over
            `[B, H, S, D]`; `token_masks` is the calling runtime's `TokenMasks` cache (reset between generations);
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


def _triton(q, k, v, mask, key_padding_mask, return_lse, token_masks=None, out_dtype=None):
    return block_sparse_attention(q, k, v, mask, key_padding_mask=key_padding_mask, return_lse=return_lse,
                                  out_dtype=out_dtype)


# ---------------------------------------------------------------------------------------------- sdpa
@dataclass(frozen=True)
class MaskRun:
    """Heads of one mask batch row that share a token mask: one SDPA call.

    `batch` and `heads` slice `[B', H]` (a shared mask's batch slice covers every batch element); `bias` is the
    additive token mask `[S, S]` (0 = attend, -inf = skip) in the compute dtype, None where every key is visited;
    `empty` is bool `[S]`, the query rows that visit no block (None: none), whose log-sum-exp is -inf."""

    batch: slice
    heads: slice
    bias: torch.Tensor | None
    empty: torch.Tensor | None


class TokenMasks:
    """The sdpa backend's token masks, one per distinct mask row, least recently used dropped first within a byte
    budget.

    A `SparseMask`'s rows are read on the host once per mask object (planners hand out the same object while a
    pattern holds) and keyed by their content, so heads and layers that share a pattern share one `[S, S]` token
    mask, and a row that visits every block runs SDPA without a mask."""

    def __init__(self, budget: int = _TOKEN_MASK_CACHE_BYTES, max_masks: int = 256):
        self.budget = budget
        self.max_masks = max_masks
        self.entries: OrderedDict[tuple, tuple[torch.Tensor | None, torch.Tensor | None]] = OrderedDict()
        self.masks: OrderedDict[int, tuple[SparseMask, list[tuple[int, int, int, tuple]]]] = OrderedDict()

    def runs(self, mask: SparseMask, dtype: torch.dtype) -> list[MaskRun]:
        """The mask as runs of neighbouring heads that share a row, with their token masks in `dtype`."""
        found = self.masks.get(id(mask))
        if found is None or found[0] is not mask:
            found = (mask, _row_runs(mask))
            self.masks[id(mask)] = found
            while len(self.masks) > self.max_masks:
                self.masks.popitem(last=False)
        self.masks.move_to_end(id(mask))
        shared = mask.batch == 1
        return [MaskRun(slice(None) if shared else slice(b, b + 1), slice(h0, h1), *self.row(key, dtype))
                for b, h0, h1, key in found[1]]

    def row(self, key: tuple, dtype: torch.dtype) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """`(bias, empty)` of one row key (see `_row_runs`), built on first use."""
        entry = self.entries.get((key, dtype))
        if entry is not None:
            self.entries.move_to_end((key, dtype))
            return entry
        entry = _token_bias(key, dtype)
        self.entries[(key, dtype)] = entry
        while self.nbytes > self.budget and len(self.entries) > 1:
            self.entries.popitem(last=False)
        return entry

    @property
    def nbytes(self) -> int:
        return sum(b.numel() * b.element_size() for b, _ in self.entries.values() if b is not None)

    def clear(self) -> None:
        self.entries.clear()
        self.masks.clear()


def _row_runs(mask: SparseMask) -> list[tuple[int, int, int, tuple]]:
    """`(b', h0, h1, key)` for each run of neighbouring heads with one row; the key holds the row's blocks (bytes,
    None for a row that visits every block) and the sizes that turn them into a token mask. One host read."""
    blocks = mask.to_blocks().cpu()  # [B', H, nQ, nK]
    full = blocks.flatten(2).all(-1).tolist()
    runs = []
    for b in range(mask.batch):
        for h in range(mask.num_heads):
            row = None if full[b][h] else blocks[b, h].numpy().tobytes()
            key = (row, blocks.shape[2], blocks.shape[3], mask.q_block, mask.k_block, mask.seq_len, str(mask.device))
            if runs and runs[-1][0] == b and runs[-1][3] == key:
                runs[-1] = (b, runs[-1][1], h + 1, key)
            else:
                runs.append((b, h, h + 1, key))
    return runs


def _token_bias(key: tuple, dtype: torch.dtype) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    row, n_q, n_k, q_block, k_block, s, device = key
    if row is None:
        return None, None
    blocks = torch.frombuffer(bytearray(row), dtype=torch.bool).view(n_q, n_k).to(device)
    bias = torch.zeros(n_q, n_k, dtype=dtype, device=device).masked_fill_(~blocks, float("-inf"))
    # each block's value over its q_block x k_block tokens: one copy, then the ragged last blocks cut off
    bias = bias[:, None, :, None].expand(n_q, q_block, n_k, k_block).reshape(n_q * q_block, n_k * k_block)
    empty = ~blocks.any(-1)
    empty = empty.repeat_interleave(q_block)[:s] if bool(empty.any()) else None
    return bias[:s, :s], empty


def _sdpa_unavailable(q: torch.Tensor, mask: SparseMask) -> str | None:
    s = q.shape[2]
    if s * s > _TOKEN_MASK_ELEMENTS:
        return f"a token mask of {s * s:,} elements is too large for the sdpa backend"
    if q.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        return f"dtype {q.dtype} is not supported by torch SDPA"
    return None


def sdpa_returns_lse(q: torch.Tensor) -> bool:
    """Whether the sdpa backend returns the log-sum-exp for q (torch's CPU flash attention does; elsewhere it runs
    the reference)."""
    return q.device.type == "cpu" and hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu")


def _sdpa(q, k, v, mask, key_padding, return_lse, token_masks=None, out_dtype=None):
    if return_lse and not sdpa_returns_lse(q):
        return _reference(q, k, v, mask, key_padding, True, out_dtype=out_dtype)
    compute = torch.float32 if out_dtype == torch.float32 else q.dtype
    q, k, v = (t.to(compute) for t in (q, k, v))
    runs = (token_masks if token_masks is not None else TokenMasks()).runs(mask, compute)
    pad = None
    if key_padding is not None:  # [B, 1, 1, S], added to every run's token mask
        pad = torch.zeros(key_padding.shape, dtype=compute, device=q.device).masked_fill_(key_padding, float("-inf"))
        pad = pad[:, None, None, :]
    b, h, s, _ = q.shape
    if len(runs) == 1 and runs[0].heads == slice(0, h) and runs[0].batch == slice(None):
        return _sdpa_run(q, k, v, runs[0], pad, key_padding, return_lse, out_dtype)
    out = torch.empty(q.shape, dtype=out_dtype or q.dtype, device=q.device)
    lse = torch.empty(b, h, s, dtype=torch.float32, device=q.device) if return_lse else None
    for run in runs:
        at = (run.batch, run.heads)
        got = _sdpa_run(q[at], k[at], v[at], run, None if pad is None else pad[run.batch],
                        None if key_padding is None else key_padding[run.batch], return_lse, out_dtype)
        if return_lse:
            out[at], lse[at] = got
        else:
            out[at] = got
    return (out, lse) if return_lse else out


def _sdpa_run(q, k, v, run: MaskRun, pad, key_padding, return_lse, out_dtype):
    """One SDPA call over heads that share `run`'s token mask (pad: the key padding as a bias, or None)."""
    bias = run.bias if pad is None else (pad if run.bias is None else run.bias + pad)
    if not return_lse:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        out = out.nan_to_num(0.0)  # a row that selects no key: zeros, as the kernel and the reference give
        return out if out_dtype is None else out.to(out_dtype)
    # torch's CPU flash attention: zeros for a row without a key, but a log-sum-exp of 0 there (made -inf below)
    out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, False, attn_mask=bias)
    empty = run.empty
    if key_padding is not None:  # rows whose visited keys are all padded have none either
        empty = _padded_rows(run, key_padding) if empty is None else empty | _padded_rows(run, key_padding)
    if empty is not None:
        lse = lse.masked_fill(empty.view(*empty.shape[:-1], 1, empty.shape[-1]) if empty.dim() == 2 else empty,
                              float("-inf"))
    return out if out_dtype is None else out.to(out_dtype), lse.float()


def _padded_rows(run: MaskRun, key_padding: torch.Tensor) -> torch.Tensor:
    """bool `[B, S]`: query rows of `run` whose visited keys are all padded."""
    if run.bias is None:
        return key_padding.all(-1, keepdim=True).expand(key_padding.shape)
    live = torch.isfinite(run.bias).unsqueeze(0) & ~key_padding[:, None, :]  # [B, S, S]
    return ~live.any(-1)


# ---------------------------------------------------------------------------------------------- reference
def _reference(q, k, v, mask, key_padding_mask, return_lse, token_masks=None, out_dtype=None):
    return block_sparse_attention_reference(q, k, v, mask, key_padding_mask=key_padding_mask, return_lse=return_lse,
                                            out_dtype=out_dtype)


register_backend(Backend("triton", _triton, _triton_unavailable))
register_backend(Backend("sdpa", _sdpa, _sdpa_unavailable))
register_backend(Backend("reference", _reference, lambda q, mask: None))


def column_attention(name: str, q, k, v, columns, counts, *, q_block: int, text, key_padding_mask,
                     fall_back: Callable[[str], None], out_dtype: torch.dtype | None = None):
    """Column-sparse attention with its log-sum-exp (the delta method's kernel): the Triton kernel where it runs
    and `name` allows it ("auto" or "triton"), else its PyTorch reference (reporting why through `fall_back`)."""
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
               return_lse=True, out_dtype=out_dtype)
