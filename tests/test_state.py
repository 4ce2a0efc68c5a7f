"""Per-layer state has one owner and one release path: stamps refuse stale entries, the store's byte counts are the
bytes alive, a layer over the memory budgets stops asking for a cache, and `remove()` frees every cache."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch
from tiny_models import wan_inputs, wan_transformer

import vidsparse
from vidsparse import SparseConfig
from vidsparse.core.layout import TokenLayout
from vidsparse.core.state import CachedDelta, LayerState
from vidsparse.methods.base import planner_for
from vidsparse.runtime.cache import DeltaStore
from vidsparse.runtime.runtime import SparseRuntime

SMALL = dict(q_block=16, voxel=(2, 2, 4), rows_per_block=8)
LAYOUT = TokenLayout(4, 4, 6, text_len=12)


def _entry(nbytes_rows: int = 4) -> CachedDelta:
    o = torch.randn(1, 2, nbytes_rows, 8)
    return CachedDelta(o, torch.zeros(1, 2, nbytes_rows), torch.zeros(1, 2, 1, 1, dtype=torch.int32),
                       torch.ones(1, 2, 1, dtype=torch.int32), torch.full((1, 2), 0.5), (0, 1), o.device)


def test_replacing_an_entry_keeps_the_byte_counts_of_what_is_alive():
    one = _entry().nbytes
    store, state = DeltaStore(cache_budget=one), LayerState()
    assert store.put(("cond", 0), state, _entry())
    assert store.put(("cond", 0), state, _entry())  # the same layer again: the old entry's bytes go back first
    assert (store.device_bytes, store.host_bytes) == (one, 0)
    other = LayerState()
    assert store.put(("cond", 1), other, _entry())  # over the device budget: offloaded
    assert (store.device_bytes, store.host_bytes) == (one, one) and other.delta.offloaded
    assert store.put(("cond", 1), other, _entry())
    assert (store.device_bytes, store.host_bytes) == (one, one)
    store.drop(state)
    store.drop(other)
    assert (store.device_bytes, store.host_bytes) == (0, 0) and state.delta is None and other.delta is None


def test_storing_a_layer_again_returns_its_old_bytes_to_the_device_count():
    """The second entry replaces the first: the first's device bytes go back, so the second fits on the device."""
    big, small = _entry(8), _entry(4)
    store, state = DeltaStore(cache_budget=big.nbytes), LayerState()  # room for one entry
    assert store.put(("cond", 0), state, big)
    assert (store.device_bytes, store.host_bytes) == (big.nbytes, 0) and not big.offloaded
    assert store.put(("cond", 0), state, small)
    assert (store.device_bytes, store.host_bytes) == (small.nbytes, 0)
    assert state.delta is small and not small.offloaded and store.report()["offloaded"] == []
    store.drop(state)
    assert (store.device_bytes, store.host_bytes) == (0, 0)


def test_a_refused_entry_marks_the_layer_uncached():
    store, state = DeltaStore(cache_budget=0, host_budget=0), LayerState()
    assert not store.put(("cond", 3), state, _entry())
    assert state.uncached and state.delta is None and store.report()["uncached"] == ["cond:3"]


def _runtime(method: str, **options):
    config = SparseConfig.make(method, refresh_steps=[0], **{**SMALL, **options})
    return SparseRuntime(config, planner_for(config), "test", "start")


def _call(runtime, step, q, k, v):
    runtime.step = step
    runtime.grid = (LAYOUT.frames, LAYOUT.height, LAYOUT.width)
    plan, layout, state = runtime.plan(0, q, k, v, LAYOUT.text_len)
    return plan, runtime.execute(plan, q, k, v, layout, state=state, layer=0)


def test_a_layer_made_for_another_batch_or_dtype_is_refreshed_not_reused():
    gen = torch.Generator().manual_seed(0)
    runtime = _runtime("delta", top_keys=0.2)
    q, k, v = (torch.randn(1, 2, LAYOUT.seq_len, 64, generator=gen) for _ in range(3))
    assert _call(runtime, 0, q, k, v)[0].groups[0].mode == "refresh"
    assert _call(runtime, 1, q, k, v)[0].groups[0].mode == "delta"
    q2, k2, v2 = (torch.cat([x, x]) for x in (q, k, v))  # batch 2: the batch-1 cache must not be merged in
    assert _call(runtime, 2, q2, k2, v2)[0].groups[0].mode == "refresh"
    assert _call(runtime, 3, *(x.double() for x in (q2, k2, v2)))[0].groups[0].mode == "refresh"


def test_over_the_host_budget_the_hybrid_stops_refreshing_and_says_so():
    gen = torch.Generator().manual_seed(1)
    runtime = _runtime("hybrid", cache_budget=0, host_budget=0, rows_per_frame=8, every=1)
    q, k, v = (torch.randn(1, 2, LAYOUT.seq_len, 64, generator=gen) for _ in range(3))
    modes = [[g.mode for g in _call(runtime, step, q, k, v)[0].groups] for step in range(4)]
    assert modes[0] == ["refresh"] and all("refresh" not in m and "delta" not in m for m in modes[1:])
    report = runtime.report()
    assert report["planner"]["delta_cache"]["uncached"] == ["0"]
    assert any("memory budgets" in reason for reason in report["fallbacks"])


def test_a_step_index_that_goes_back_starts_a_new_generation():
    """A generation that raised never reached diffusers' reset; the next one must not reuse its caches."""
    model = wan_transformer()
    inputs = wan_inputs(model)
    handle = vidsparse.apply(model, SparseConfig.make("delta", top_keys=0.3, refresh_steps=[0], **SMALL))
    modes = []
    record = handle.runtimes[0].record
    handle.runtimes[0].record = lambda layer, plan, heads, device: (
        modes.append(plan.groups[0].mode) if layer == 0 and plan is not None else None,
        record(layer, plan, heads, device))
    with torch.no_grad():
        for step in (0, 1, 2, 0, 1):  # an interrupted generation at step 2, then a new one
            with model.cache_context("cond", step_index=step, num_inference_steps=3):  # as a pipeline says
                model(**inputs, return_dict=False)
    assert modes == ["refresh", "delta", "delta", "refresh", "delta"]
    handle.remove()


def test_remove_frees_every_cache_and_apply_again_keeps_one_caches_bytes():
    model = wan_transformer()
    inputs = wan_inputs(model)
    config = SparseConfig.make("delta", top_keys=0.3, refresh_steps=[0], **SMALL)
    peaks = []
    for _ in range(2):
        handle = vidsparse.apply(model, config)
        with torch.no_grad():
            model(**inputs, return_dict=False)  # refresh: every layer caches
        runtime = handle.runtimes[0]
        entries = [s.delta for s in runtime.state.layers.values() if s.delta is not None]
        assert entries and runtime.store.device_bytes == sum(e.nbytes for e in entries)
        peaks.append(runtime.store.device_bytes)
        refs = [weakref.ref(t) for e in entries for t in e.tensors]
        del entries
        handle.remove()
        gc.collect()
        assert runtime.store.device_bytes == 0 and runtime.store.host_bytes == 0
        alive = [r for r in refs if r() is not None]
        assert not alive, f"{len(alive)} cached tensors of a removed handle are still reachable"
        assert handle.report()["calls"] > 0  # the report stays readable
    assert peaks[0] == peaks[1]


@pytest.mark.parametrize("method", ["hybrid", "profile"])
def test_a_plan_made_for_another_layout_is_not_reused(method):
    gen = torch.Generator().manual_seed(2)
    options = dict(rows_per_frame=8, every=100) if method == "hybrid" else dict(every=100)
    options = {**options, **({} if method == "hybrid" else dict(q_block=16, k_block=16))}
    config = SparseConfig.make(method, **({**SMALL, **options} if method == "hybrid" else options))
    planner = planner_for(config)
    state = LayerState()
    for layout in (LAYOUT, TokenLayout(4, 4, 8, text_len=12)):
        q, k, v = (torch.randn(1, 2, layout.seq_len, 64, generator=gen) for _ in range(3))
        runtime = SparseRuntime(config, planner, "test", "start")
        runtime.state.layers[0] = state
        runtime.grid = (layout.frames, layout.height, layout.width)
        runtime.step = 5
        plan, _, _ = runtime.plan(0, q, k, v, layout.text_len)
        assert all(g.mask is None or g.mask.seq_len == layout.seq_len for g in plan.groups)

