"""Where every layer's cached delta lives: on its GPU within `cache_budget` bytes, else in pinned host memory within
`host_budget` bytes, else nowhere.

The entries themselves sit in each layer's `LayerState.delta`; `DeltaStore` is the one place that puts and drops
them, so its byte counts are the bytes alive. Offloaded entries are copied to the host on a side stream (the
device tensors are freed once the copy has read them) and fetched back one layer ahead of use. `drop` is the one
release path: a refresh replacing an entry, a stale stamp, a reset between generations, and `remove()` all go
through it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..core.state import CachedDelta, LayerState

__all__ = ["DeltaStore"]


@dataclass
class DeltaStore:
    """The budgets and byte counts of one installation's delta caches (see the module docstring)."""

    cache_budget: int | None = None
    host_budget: int | None = None
    device_bytes: int = 0
    host_bytes: int = 0
    peak_device_bytes: int = 0
    offloaded: set = field(default_factory=set)  # (branch, layer) keys ever offloaded
    uncached: set = field(default_factory=set)  # (branch, layer) keys ever refused
    _holders: dict = field(default_factory=dict, repr=False)  # id -> every LayerState holding an entry
    _stream: object | None = field(default=None, repr=False)

    def _side_stream(self, device: torch.device):
        if device.type != "cuda":
            return None
        if self._stream is None:
            self._stream = torch.cuda.Stream(device)
        return self._stream

    def drop(self, state: LayerState) -> None:
        """Release a layer's entry, if it has one."""
        entry, state.delta = state.delta, None
        self._holders.pop(id(state), None)
        if entry is None:
            return
        if entry.offloaded:
            self.host_bytes -= entry.nbytes
        else:
            self.device_bytes -= entry.nbytes
        entry.staged = entry.staged_ready = None

    def put(self, key, state: LayerState, entry: CachedDelta) -> bool:
        """Keep a layer's new entry in `state.delta`: on its device within the budget, else in host memory, else
        nowhere (returns False and marks the state `uncached`)."""
        self.drop(state)
        nbytes = entry.nbytes
        if self.cache_budget is None or self.device_bytes + nbytes <= self.cache_budget:
            self.device_bytes += nbytes
            self.peak_device_bytes = max(self.peak_device_bytes, self.device_bytes)
        elif self.host_budget is not None and self.host_bytes + nbytes > self.host_budget:
            self.uncached.add(key)
            state.uncached = True
            return False
        else:
            self.host_bytes += nbytes
            self.offloaded.add(key)
            self._offload(entry)
        state.delta = entry
        self._holders[id(state)] = state
        return True

    def narrow(self, state: LayerState, heads: tuple[int, ...]) -> None:
        """Keep only model heads `heads` of a layer's entry (a subset of those it holds), or drop it for none. An
        entry in host memory keeps every head: selecting heads of pinned host tensors costs more host time than the
        host memory is worth, and a delta step fetches it whole either way."""
        entry = state.delta
        if entry is None or tuple(heads) == entry.heads:
            return
        if not heads:
            self.drop(state)
            return
        if entry.offloaded:
            return
        index = torch.tensor(entry.positions(heads), dtype=torch.long, device=entry.device)
        before = entry.nbytes
        entry.tensors = tuple(t.index_select(1, index) for t in entry.tensors)
        entry.density = entry.density.index_select(1, index)
        entry.heads = tuple(heads)
        self.device_bytes -= before - entry.nbytes

    def clear(self) -> None:
        """Drop every entry alive, whichever branch holds it (a reset, `remove()`, or Wan 2.2's other expert taking
        over: the first expert's caches are not read again in that generation)."""
        for state in list(self._holders.values()):
            self.drop(state)

    def _offload(self, entry: CachedDelta) -> None:
        entry.offloaded = True
        tensors = entry.tensors
        stream = self._side_stream(entry.device)
        if stream is None:  # no GPU: host memory is where the tensors are; keep private copies
            entry.tensors = tuple(t.clone() for t in tensors)
            return
        stream.wait_stream(torch.cuda.current_stream(entry.device))
        with torch.cuda.stream(stream):
            entry.tensors = tuple(torch.empty(t.shape, dtype=t.dtype, pin_memory=True).copy_(t, non_blocking=True)
                                  for t in tensors)
            entry.copied = torch.cuda.Event()
            entry.copied.record(stream)
        for t in tensors:  # the device tensors may be freed now; the copy still reads them
            t.record_stream(stream)

    def prefetch(self, entry: CachedDelta | None) -> None:
        """Start copying an offloaded entry back to its device on the side stream, if it is not on its way."""
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

    def fetch(self, entry: CachedDelta) -> tuple[torch.Tensor, ...]:
        """The entry's tensors on its device. An offloaded one's device copy is used once and dropped, so that an
        offloaded layer costs device memory only while it runs."""
        if not entry.offloaded:
            return entry.tensors
        self.prefetch(entry)
        staged, entry.staged = entry.staged, None
        if entry.staged_ready is not None:
            current = torch.cuda.current_stream(entry.device)
            current.wait_event(entry.staged_ready)
            for t in staged:  # allocated on the side stream, used on this one
                t.record_stream(current)
        return staged

    def report(self) -> dict:
        return {
            "offloaded": sorted(_name(k) for k in self.offloaded),
            "uncached": sorted(_name(k) for k in self.uncached),
            "peak_device_bytes": self.peak_device_bytes, "cache_budget": self.cache_budget,
            "host_budget": self.host_budget,
        }


def _name(key) -> str:
    branch, layer = key
    return f"{branch}:{layer}" if branch else str(layer)
