"""Sparse attention backends: who runs a block-sparse `SparseMask`, behind one small registry.

| name | runs | where |
|---|---|---|
| `triton` | `block_sparse_attention`, the Triton kernel | CUDA, or the CPU under `TRITON_INTERPRET=1`; head dims 64 and 128 |
| `sdpa` | torch SDPA with the mask expanded to a boolean token mask (cached per runtime) | small sequences anywhere |
| `reference` | `block_sparse_attention_reference`, chunked over query rows | anywhere, any size (slow) |

`SparseConfig(backend="auto")` takes the first that can run, in that order, and the runtime reports every reason a
faster one could not; a backend named explicitly must run, or the call fails with the reason. Every backend has the
kernel's semantics: a row with no live key gives zeros (and a log-sum-exp of -inf).

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

_TOKEN_MASK_ELEMENTS = 1 << 26  # booleans one token mask of the sdpa backend may have (64 MB)
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
        if need_lse and candidate == "sdpa":
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
class TokenMasks:
    """Token masks of recently used `SparseMask`s, least recently used dropped first, within a byte budget. Planners
    hand out the same mask object while a pattern holds, so a layer's mask is built once, not at every call."""

    def __init__(self, budget: int = _TOKEN_MASK_CACHE_BYTES):
        self.budget = budget
        self.entries: OrderedDict[int, tuple[SparseMask, torch.Tensor]] = OrderedDict()

    def get(self, mask: SparseMask) -> torch.Tensor:
        entry = self.entries.get(id(mask))
        if entry is not None and entry[0] is mask:
            self.entries.move_to_end(id(mask))
            return entry[1]
        dense = mask.to_dense()  # [B', H, S, S]
        self.entries[id(mask)] = (mask, dense)
        while sum(e[1].numel() for e in self.entries.values()) > self.budget and len(self.entries) > 1:
            self.entries.popitem(last=False)
        return dense

    def clear(self) -> None:
        self.entries.clear()


def _sdpa_unavailable(q: torch.Tensor, mask: SparseMask) -> str | None:
    b, h, s, _ = q.shape
    if mask.batch * h * s * s > _TOKEN_MASK_ELEMENTS:
        return f"a token mask of {mask.batch * h * s * s:,} booleans is too large for the sdpa backend"
    if q.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        return f"dtype {q.dtype} is not supported by torch SDPA"
    return None


def _sdpa(q, k, v, mask, key_padding_mask, return_lse, token_masks=None, out_dtype=None):
    if return_lse:
        return _reference(q, k, v, mask, key_padding_mask, True, out_dtype=out_dtype)
    allowed = (token_masks if token_masks is not None else TokenMasks()).get(mask)
    if key_padding_mask is not None:
        allowed = allowed & ~key_padding_mask[:, None, None, :]
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
    out = out.nan_to_num(0.0)  # a row that selects no key: zeros, as the kernel and the reference give
    return out if out_dtype is None else out.to(out_dtype)


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
