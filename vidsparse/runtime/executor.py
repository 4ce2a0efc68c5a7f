"""The one executor: runs every mode of an `AttentionPlan` (dense, sparse, refresh, delta) over q, k, v.

For each head group it permutes the group's heads into the group's token order, runs the mode, and permutes back;
groups of heads that are not neighbours are gathered and scattered. The cached-delta modes read and write the
layer's `LayerState.delta` through the `DeltaStore`:

- **refresh**: per query block the `top_keys` share of key columns with the most mass (`topk_columns`), the rest
  `o_rest, lse_rest` over every other key, cached in the model's dtype, and the output. The Triton kernels choose
  the columns from the sampled rows' own log-sum-exp, run the rest as one full pass that leaves the columns and
  the text out (`block_sparse_attention(..., exclude=column_bitmask(...))`), and merge it with the columns'
  attention: disjoint parts add, so nothing is amplified. On the CPU all of it comes from one score matrix
  (`attention_topk_and_rest`). The other backends subtract: `o_rest = (o - r o_k) / (1 - r)` from the full and the
  columns' attention in float32, since it amplifies their error by `1 / (1 - r)`, with `r` the columns' share;
- **delta**: only those columns (and the text) with this call's q, k, v, merged with the cached rest by log-sum-exp.

Orders leave text in place and only text keys are ever padded (HunyuanVideo), so `key_padding` applies unchanged in
every order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from ..core.columns import pack_columns
from ..core.layout import TokenLayout
from ..core.mask import SparseMask
from ..core.plan import AttentionPlan, HeadGroup
from ..core.state import CachedDelta, LayerState
from . import backends as _backends
from .cache import DeltaStore

__all__ = ["Executor", "permute_tokens"]


@dataclass
class Executor:
    """Runs plans on one installation's backend; `fall_back(reason)` records where sparse attention could not run."""

    backend: str
    fall_back: Callable[[str], None]
    store: DeltaStore = field(default_factory=DeltaStore)
    mask_rows: _backends.MaskRowsCache = field(default_factory=_backends.MaskRowsCache, repr=False)
    _memo: dict = field(default_factory=dict, repr=False)  # permutations, head indices, full masks

    def clear(self) -> None:
        """Forget every memoised tensor (permutations, head indices, full masks, the sdpa backend's mask rows)."""
        self._memo.clear()
        self.mask_rows.clear()

    # ------------------------------------------------------------------ plans and groups
    def run(self, plan: AttentionPlan, q, k, v, layout: TokenLayout, key_padding=None,
            state: LayerState | None = None, key=None, ahead: Callable[[], CachedDelta | None] | None = None):
        """`[B, H, S, D]` attention of a plan over q, k, v in model order. `state` is the layer's (the cached-delta
        modes need it), `key` its (branch, layer) for the report, and `ahead()` the next delta layer's entry, if
        any, to fetch while this one runs."""
        run = lambda g, *x: self.group(g, *x, layout, key_padding, state, key, ahead)  # noqa: E731
        if len(plan.groups) == 1 and plan.groups[0].contiguous is not None:
            return run(plan.groups[0], q, k, v)
        out = torch.empty_like(q)
        for g in plan.groups:
            hs = g.contiguous
            if hs is not None:
                out[:, hs] = run(g, q[:, hs], k[:, hs], v[:, hs])
            else:  # heads that are not neighbours: gathered, run, scattered back
                index = self.head_index(g.heads, q.device)
                out.index_copy_(1, index, run(g, *(x.index_select(1, index) for x in (q, k, v))))
        return out

    def group(self, g: HeadGroup, q, k, v, layout, key_padding, state, key, ahead) -> torch.Tensor:
        """One head group: permute, attend, unpermute (q, k, v: the group's heads only)."""
        perms = None if g.in_model_order else self.permutations(g.orders, layout, q.device)
        if perms is not None:
            q, k, v = (permute_tokens(x, perms, g.order_index) for x in (q, k, v))
        if g.mode == "dense":
            out = dense_attention(q, k, v, key_padding)
        elif g.mode == "sparse":
            out = self.sparse(q, k, v, g.mask, key_padding)
        elif g.mode == "refresh":
            out = self.refresh(g, q, k, v, layout, key_padding, _needs(state, g), key)
        else:
            if ahead is not None:  # the next delta layer's cache, if offloaded, comes back while this one runs
                self.store.prefetch(ahead())
            out = self.delta(g, q, k, v, layout, key_padding, _needs(state, g))
        if perms is not None:
            out = permute_tokens(out, perms, g.order_index, inverse=True)
        return out

    def sparse(self, q, k, v, mask: SparseMask, key_padding=None, return_lse: bool = False, out_dtype=None):
        """Block-sparse attention on the configured backend (see `backends`)."""
        backend = _backends.pick_backend(self.backend, q, mask, self.fall_back, need_lse=return_lse)
        return backend.run(q, k, v, mask, key_padding, return_lse, self.mask_rows, out_dtype=out_dtype)

    # ------------------------------------------------------------------ cached deltas
    def refresh(self, g: HeadGroup, q, k, v, layout: TokenLayout, key_padding, state: LayerState, key):
        from ..kernels import (
            attention_topk_and_rest, block_sparse_attention, column_bitmask, merge_attention, subtract_attention,
            topk_columns,
        )

        spec, text = g.delta, layout.text_range
        full = self.full_mask(layout, q.shape[1], spec.q_block, q.device)
        fused = _backends.fuses_refresh(self.backend, q)
        # picked once: each pick reports why a faster backend cannot run
        backend = None if fused else _backends.pick_backend(self.backend, q, full, self.fall_back, need_lse=True)
        if fused:  # the CPU: one score matrix serves all four parts
            out, lse, columns, counts, o_rest, lse_rest = attention_topk_and_rest(
                q, k, v, q_block=spec.q_block, fraction=spec.top_keys, rows_per_block=spec.rows_per_block, text=text,
                key_padding_mask=key_padding)
        elif backend.name == "triton":
            # The columns first, from the sampled rows' own log-sum-exp; then the rest directly, as one full pass
            # that leaves the columns and the text out, and the columns' attention beside it. Their merge is the
            # full attention: two disjoint parts add, nothing is subtracted, and every output stays in the model's
            # dtype.
            columns, counts = topk_columns(q, k, None, q_block=spec.q_block, fraction=spec.top_keys,
                                           rows_per_block=spec.rows_per_block, text=text, key_padding_mask=key_padding)
            o_rest, lse_rest = block_sparse_attention(q, k, v, full, key_padding_mask=key_padding, return_lse=True,
                                                      exclude=column_bitmask(columns, counts, q.shape[2], text))
            o_k, lse_k = _backends.column_attention(self.backend, q, k, v, columns, counts, q_block=spec.q_block,
                                                    text=text, key_padding_mask=key_padding, fall_back=self.fall_back)
            out, _ = merge_attention(o_rest, lse_rest, o_k, lse_k)
            del o_k, lse_k
        else:  # the other backends subtract the columns' part from the full attention, both in float32
            out, lse = backend.run(q, k, v, full, key_padding, True, self.mask_rows, out_dtype=torch.float32)
            columns, counts = topk_columns(q, k, lse, q_block=spec.q_block, fraction=spec.top_keys,
                                           rows_per_block=spec.rows_per_block, text=text, key_padding_mask=key_padding)
            o_k, lse_k = _backends.column_attention(self.backend, q, k, v, columns, counts, q_block=spec.q_block,
                                                    text=text, key_padding_mask=key_padding, fall_back=self.fall_back,
                                                    out_dtype=torch.float32)
            # float32 in (o_k's buffer reused), stored in the model's dtype
            o_rest, lse_rest = subtract_attention(out, lse, o_k, lse_k, out=o_k if o_k.dtype == out.dtype else None)
        o_rest, out = o_rest.to(q.dtype), out.to(q.dtype)
        text_keys = 0 if text is None else text[1] - text[0]
        # realised density of this layer's delta steps: each query block's columns and the text keys (device tensor)
        density = (counts.float().mean(-1) + text_keys) / layout.seq_len
        # the lists packed to 16 bits a column (vidsparse.core.columns): half their bytes, decoded as they are read
        columns, wraps = pack_columns(columns, counts, q.shape[2])
        entry = CachedDelta(o_rest, lse_rest, columns, counts, density, tuple(g.heads), q.device, wraps=wraps)
        if not self.store.put(key, state, entry):
            self.fall_back("the delta cache is over its memory budgets: some layers run without a cached delta")
        return out

    def delta(self, g: HeadGroup, q, k, v, layout: TokenLayout, key_padding, state: LayerState):
        from ..kernels import merge_attention

        spec = g.delta
        if state.delta is None:
            raise ValueError("a delta group needs the layer's cached entry: plan a refresh first")
        at = state.delta.positions(g.heads)
        held = self.store.fetch(state.delta)  # o_rest, lse_rest, columns, counts, and wraps where packed
        if at is not None:  # the group's heads of an entry of more heads (the hybrid planner)
            index = self.head_index(tuple(at), q.device)
            held = tuple(t.index_select(1, index) for t in held)
        o_rest, lse_rest, columns, counts, *wraps = held
        o_k, lse_k = _backends.column_attention(self.backend, q, k, v, columns, counts, q_block=spec.q_block,
                                                text=layout.text_range, key_padding_mask=key_padding,
                                                fall_back=self.fall_back, wraps=wraps[0] if wraps else None)
        out, _ = merge_attention(o_rest, lse_rest, o_k, lse_k)
        return out

    # ------------------------------------------------------------------ memoised index tensors
    def full_mask(self, layout: TokenLayout, heads: int, block: int, device) -> SparseMask:
        key = ("full", layout, heads, block, str(device))
        if key not in self._memo:
            self._memo[key] = SparseMask.full(1, layout.seq_len, block, block, device=device).expand_heads(heads)
        return self._memo[key]

    def head_index(self, heads: tuple[int, ...], device) -> torch.Tensor:
        """int64 `[len(heads)]` on the device, built once per head set."""
        key = ("heads", heads, str(device))
        if key not in self._memo:
            self._memo[key] = torch.tensor(heads, dtype=torch.long, device=device)
        return self._memo[key]

    def permutations(self, orders, layout: TokenLayout, device) -> torch.Tensor:
        """int64 `[P, S]`: each order's permutation at this layout, built once per (orders, layout, device)."""
        key = ("orders", tuple(orders), layout, str(device))
        if key not in self._memo:
            self._memo[key] = torch.stack([o.permutation(layout, device) for o in orders])
        return self._memo[key]


def _needs(state: LayerState | None, g: HeadGroup) -> LayerState:
    if state is None or g.delta is None:
        raise ValueError(f"a {g.mode!r} group needs the layer's state and a DeltaSpec: it runs inside vidsparse's "
                         "runtime only")
    return state


def dense_attention(q, k, v, key_padding=None) -> torch.Tensor:
    """SDPA over every key (`key_padding`: bool `[B, S]`, True = ignore)."""
    keep = None if key_padding is None else ~key_padding[:, None, None, :]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=keep)


def permute_tokens(x: torch.Tensor, perms: torch.Tensor, order_index=None, *, inverse: bool = False) -> torch.Tensor:
    """x `[B, H, S, D]` with (b, h) in order `perms[order_index[b, h]]` (row 0 without an index): gathered into that
    order, or with `inverse=True` scattered back."""
    from ..kernels import permute_tokens as kernel

    return kernel(x, perms, order_index, inverse=inverse)
