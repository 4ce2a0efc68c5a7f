"""The "delta" method: Chipmunk's cached step deltas, in Triton, on any GPU, inside diffusers.

Activations change slowly between denoising steps, so a key need not be dropped to be skipped; its contribution can
be cached. Per layer and CFG branch, in voxel order (chunks of t x h x w tokens, so a query block is a compact piece
of video):

- on a **refresh** step, full attention `o, lse = attn(all keys)`; per query block, the `top_keys` fraction of key
  columns that carry most of its attention mass (`topk_columns`, estimated from sampled rows, on the device), their
  attention `o_k, lse_k`, and the rest `o_rest, lse_rest = subtract(o, lse; o_k, lse_k)`, which is cached;
- on a **delta** step, only those columns (and the text keys) with the current q, k, v: `o_k', lse_k'`, merged with
  the cached rest by log-sum-exp: `o = merge(o_rest, lse_rest; o_k', lse_k')`.

With every key a column the rest is empty and a delta step is full attention; with q, k and v unchanged since the
refresh it returns the refresh's output (both to rounding). The merge renormalises the cached rest against the new
columns' mass, where Chipmunk adds `o_rest` under the refresh step's softmax constants: the two agree at the refresh,
and the merge keeps every row's weights summing to one.

Refreshes: at `refresh_steps` (Chipmunk's defaults on HunyuanVideo: 0, 1, 10 and 40 of 50), every `refresh_every`
steps if set, and wherever a layer has no cache yet. `layers` restricts deltas to some layers (the others dense).

Memory: a layer's cache is `o_rest` (B x H x S x D, the input dtype), `lse_rest` and the columns; at HunyuanVideo 720p
about 0.7 GB in bf16 per layer. `cache_budget` bytes stay on the GPU; later layers go to pinned host memory, copied
asynchronously on a side stream (and fetched back one layer ahead); past `host_budget` a layer is not cached and
refreshes at every step. The report lists what was offloaded or refreshed for want of memory.

Example::

    >>> vidsparse.apply(pipe, {"method": "delta", "top_keys": 0.05, "refresh_steps": [0, 1, 10, 40],
    ...                        "cache_budget": 30 * 2**30})
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .config import SparseConfig
from .registry import register_method
from ..core.layout import TokenLayout, TokenOrder
from ..core.mask import SparseMask
from ..core.plan import AttentionPlan, HeadGroup, PlanContext, Probe
from .base import Planner

__all__ = ["DeltaOptions", "DeltaPlanner", "DeltaCache", "run_cached_delta"]


@dataclass(frozen=True)
class DeltaOptions:
    """"delta" options.

    Attributes:
        top_keys: fraction of the video keys each query block recomputes on delta steps (Chipmunk: 0.05).
        refresh_steps: denoising steps that compute full attention and refresh the cache.
        refresh_every: also refresh every this many steps (0: only `refresh_steps`).
        layers: the replaced layers that use deltas (empty: all); the others run dense.
        voxel: the voxel order's chunk (frames, rows, columns); a query block is one chunk when their sizes match.
        q_block: query tokens per block that share one column list (a power of two >= 16).
        rows_per_block: sampled query rows per block that estimate the columns' mass on a refresh.
        cache_budget: bytes of cache kept on the GPU (None: no limit); the rest goes to host memory.
        host_budget: bytes of pinned host memory for offloaded caches (None: no limit); past it a layer refreshes.
    """

    top_keys: float = 0.05
    refresh_steps: tuple[int, ...] = (0, 1, 10, 40)
    refresh_every: int = 0
    layers: tuple[int, ...] = ()
    voxel: tuple[int, int, int] = (4, 4, 8)
    q_block: int = 128
    rows_per_block: int = 16
    cache_budget: int | None = None
    host_budget: int | None = None

    def __post_init__(self):
        if not isinstance(self.top_keys, (int, float)) or not 0 < self.top_keys <= 1:
            raise ValueError(f"top_keys must be in (0, 1]; got {self.top_keys!r}")
        for name in ("refresh_steps", "layers"):
            value = getattr(self, name)
            if not isinstance(value, tuple) or not all(isinstance(v, int) and v >= 0 for v in value):
                raise ValueError(f"{name} must be a list of ints >= 0; got {value!r}")
        if not isinstance(self.refresh_every, int) or self.refresh_every < 0:
            raise ValueError(f"refresh_every must be an int >= 0; got {self.refresh_every!r}")
        if len(self.voxel) != 3 or not all(isinstance(v, int) and v >= 1 for v in self.voxel):
            raise ValueError(f"voxel must be three ints >= 1 (frames, rows, columns); got {self.voxel!r}")
        if not isinstance(self.q_block, int) or self.q_block < 16 or self.q_block & (self.q_block - 1):
            raise ValueError(f"q_block must be a power of two >= 16; got {self.q_block!r}")
        if not isinstance(self.rows_per_block, int) or self.rows_per_block < 1:
            raise ValueError(f"rows_per_block must be an int >= 1; got {self.rows_per_block!r}")
        for name in ("cache_budget", "host_budget"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 0):
                raise ValueError(f"{name} must be a number of bytes >= 0 or None; got {value!r}")


@dataclass
class _Entry:
    """One layer's cache in one branch: (o_rest, lse_rest, columns, counts), on its device or in host memory."""

    tensors: tuple[torch.Tensor, ...]
    device: torch.device
    nbytes: int
    offloaded: bool = False
    copied: object | None = None  # CUDA event: the copy to the host is done
    staged: tuple[torch.Tensor, ...] | None = None  # device copies fetched ahead of use
    staged_ready: object | None = None


@dataclass
class DeltaCache:
    """Where every layer's cache lives, within `cache_budget` device bytes and `host_budget` host bytes (see the
    module docstring). Entries are kept in each layer's `PlanContext.state` (reset between generations); this
    object counts their bytes, indexes them by (branch, layer) to fetch offloaded ones a layer ahead, and
    remembers what was offloaded or left uncached, for the report."""

    cache_budget: int | None = None
    host_budget: int | None = None
    device_bytes: int = 0
    host_bytes: int = 0
    peak_device_bytes: int = 0
    offloaded: set = field(default_factory=set)  # (branch, layer) keys ever offloaded
    uncached: set = field(default_factory=set)  # (branch, layer) keys ever refused
    entries: dict = field(default_factory=dict)
    _stream: object | None = None

    def reset(self) -> None:
        self.device_bytes = self.host_bytes = 0
        self.entries.clear()

    def _side_stream(self, device: torch.device):
        if device.type != "cuda":
            return None
        if self._stream is None:
            self._stream = torch.cuda.Stream(device)
        return self._stream

    def store(self, key, state: dict, tensors: tuple[torch.Tensor, ...]) -> bool:
        """Keep a layer's new cache in `state["delta"]`: on its device within the budget, else in host memory, else
        nowhere (returns False: that layer then refreshes at every step)."""
        old = state.pop("delta", None)
        if old is not None:
            if old.offloaded:
                self.host_bytes -= old.nbytes
            else:
                self.device_bytes -= old.nbytes
        device = tensors[0].device
        entry = _Entry(tensors, device, sum(t.numel() * t.element_size() for t in tensors))
        if self.cache_budget is None or self.device_bytes + entry.nbytes <= self.cache_budget:
            self.device_bytes += entry.nbytes
            self.peak_device_bytes = max(self.peak_device_bytes, self.device_bytes)
        elif self.host_budget is not None and self.host_bytes + entry.nbytes > self.host_budget:
            self.uncached.add(key)
            self.entries.pop(key, None)
            return False
        else:
            self.host_bytes += entry.nbytes
            self.offloaded.add(key)
            entry.offloaded = True
            stream = self._side_stream(device)
            if stream is None:  # no GPU: host memory is where the tensors are; keep private copies
                entry.tensors = tuple(t.clone() for t in tensors)
            else:
                stream.wait_stream(torch.cuda.current_stream(device))
                with torch.cuda.stream(stream):
                    entry.tensors = tuple(torch.empty(t.shape, dtype=t.dtype, pin_memory=True).copy_(t, non_blocking=True)
                                          for t in tensors)
                    entry.copied = torch.cuda.Event()
                    entry.copied.record(stream)
                for t in tensors:  # the device tensors may be freed now; the copy still reads them
                    t.record_stream(stream)
        state["delta"] = entry
        self.entries[key] = entry
        return True

    def prefetch(self, key) -> None:
        """Start copying an offloaded cache back to its device on the side stream, if it is not on its way."""
        entry = self.entries.get(key)
        if entry is None or not entry.offloaded or entry.staged is not None:
            return
        stream = self._side_stream(entry.device)
        if stream is None:
            entry.staged = entry.tensors
            return
        with torch.cuda.stream(stream):
            stream.wait_event(entry.copied)
            entry.staged = tuple(t.to(entry.device, non_blocking=True) for t in entry.tensors)
            entry.staged_ready = torch.cuda.Event()
            entry.staged_ready.record(stream)

    def fetch(self, key, entry: _Entry) -> tuple[torch.Tensor, ...]:
        """The cache's tensors on its device. An offloaded one's device copy is used once and dropped, so that an
        offloaded layer costs device memory only while it runs."""
        if not entry.offloaded:
            return entry.tensors
        self.prefetch(key)
        staged, entry.staged = entry.staged, None
        if entry.staged_ready is not None:
            current = torch.cuda.current_stream(entry.device)
            current.wait_event(entry.staged_ready)
            for t in staged:  # allocated on the side stream, used on this one
                t.record_stream(current)
        return staged


@register_method("delta", DeltaOptions)
class DeltaPlanner(Planner):
    """Chipmunk's cached deltas per layer and branch (see the module docstring)."""

    def __init__(self, config: SparseConfig):
        super().__init__(config)
        o = config.options
        self.order = TokenOrder.voxel(*o.voxel)
        self.cache = DeltaCache(o.cache_budget, o.host_budget)
        self._full: dict[tuple, SparseMask] = {}

    def reset(self) -> None:
        self.cache.reset()

    def report(self) -> dict:
        c = self.cache
        return {"delta_cache": {
            "offloaded": sorted(f"{b}:{layer}" if b else str(layer) for b, layer in c.offloaded),
            "refreshed_for_memory": sorted(f"{b}:{layer}" if b else str(layer) for b, layer in c.uncached),
            "peak_device_bytes": c.peak_device_bytes, "cache_budget": c.cache_budget, "host_budget": c.host_budget,
        }}

    def full_mask(self, layout: TokenLayout, heads: int, device) -> SparseMask:
        key = (layout, heads, str(device))
        if key not in self._full:
            o = self.config.options
            self._full[key] = SparseMask.full(1, layout.seq_len, o.q_block, o.q_block, device=device).expand_heads(heads)
        return self._full[key]

    def refreshes(self, ctx: PlanContext) -> bool:
        o = self.config.options
        return (ctx.step in o.refresh_steps or "delta" not in ctx.state
                or (o.refresh_every and ctx.step % o.refresh_every == 0))

    def plan(self, ctx: PlanContext, probe: Probe | None) -> AttentionPlan:
        o = self.config.options
        if o.layers and ctx.layer not in o.layers:
            return AttentionPlan.dense(ctx.heads)
        if ctx.state is None:
            raise ValueError("the delta method keeps a cache per layer: it runs inside vidsparse's runtime only")
        refresh = self.refreshes(ctx)
        work = _Work(self, ctx.layout, (ctx.branch, ctx.layer), ctx.state)
        if refresh:
            density: torch.Tensor | float = 1.0
        else:
            density = ctx.state["delta_density"]
        group = HeadGroup(range(ctx.heads), "refresh" if refresh else "delta", None, (self.order,), state=work,
                          labels=("refresh" if refresh else "delta",), density=density)
        return AttentionPlan((group,))


@dataclass
class _Work:
    """What the executor needs to run one refresh or delta group."""

    planner: DeltaPlanner
    layout: TokenLayout
    key: tuple
    state: dict
    heads: torch.Tensor | None = None  # a delta step of some of the cached heads (int64 index); None: all


def run_cached_delta(runtime, group: HeadGroup, q, k, v, layout: TokenLayout, key_padding=None) -> torch.Tensor:
    """The executor's refresh and delta modes over q, k, v `[B, H, S, D]` in the group's (voxel) order."""
    from ..kernels import merge_attention, subtract_attention, topk_columns
    from ..runtime.backends import column_attention

    work: _Work = group.state
    planner, o = work.planner, work.planner.config.options
    text = layout.text_range
    if group.mode == "refresh":
        full = planner.full_mask(layout, q.shape[1], q.device)
        out, lse = runtime.sparse(q, k, v, full, key_padding, return_lse=True)
        columns, counts = topk_columns(q, k, lse, q_block=o.q_block, fraction=o.top_keys,
                                       rows_per_block=o.rows_per_block, text=text, key_padding_mask=key_padding)
        o_k, lse_k = column_attention(runtime.config.backend, q, k, v, columns, counts, q_block=o.q_block,
                                      text=text, key_padding_mask=key_padding, fall_back=runtime.fall_back)
        o_rest, lse_rest = subtract_attention(out, lse, o_k, lse_k)
        text_keys = 0 if text is None else text[1] - text[0]
        # realised density of this layer's delta steps: each query block's columns and the text keys (device tensor)
        work.state["delta_density"] = (counts.float().mean(-1) + text_keys) / layout.seq_len
        if not planner.cache.store(work.key, work.state, (o_rest, lse_rest, columns, counts)):
            runtime.fall_back("the delta cache is over its memory budgets: some layers refresh at every step")
        return out
    branch, layer = work.key
    later = [other for b, other in planner.cache.entries if b == branch and other > layer]
    if later:  # the next delta layer's cache, if offloaded, comes back while this one runs
        planner.cache.prefetch((branch, min(later)))
    o_rest, lse_rest, columns, counts = planner.cache.fetch(work.key, work.state["delta"])
    if work.heads is not None:  # the group's heads of a cache of every head (the hybrid planner)
        o_rest, lse_rest, columns, counts = (t.index_select(1, work.heads) for t in (o_rest, lse_rest, columns, counts))
    o_k, lse_k = column_attention(runtime.config.backend, q, k, v, columns, counts, q_block=o.q_block, text=text,
                                  key_padding_mask=key_padding, fall_back=runtime.fall_back)
    out, _ = merge_attention(o_rest, lse_rest, o_k, lse_k)
    return out
