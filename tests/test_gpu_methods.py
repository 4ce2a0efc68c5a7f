"""GPU tier (H200): the plan executor, profile and delta at real shapes in bf16 against the float32 reference.
Skipped without CUDA; results recorded in tests/GPU_RESULTS.txt."""

import math

import pytest
import torch

from vidsparse.core.state import LayerState

from vidsparse import SparseConfig
from vidsparse.core.layout import TokenLayout
from vidsparse.runtime.runtime import SparseRuntime
from vidsparse.core.plan import PlanContext, Probe
from vidsparse.methods.base import planner_for

pytestmark = pytest.mark.gpu

# CogVideoX-5b at 480p x 49 frames: 13 x 30 x 45 video tokens after 226 text tokens; 4 of its 48 heads
LAYOUT = TokenLayout(13, 30, 45, text_len=226)


def _qkv(heads=4, d=64, seed=0):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    return [torch.randn(1, heads, LAYOUT.seq_len, d, generator=gen, device="cuda", dtype=torch.bfloat16)
            for _ in range(3)]


def _rel(a, b):
    return float((a.float() - b.float()).norm() / b.float().norm())


@pytest.mark.parametrize("d", [64, 128])
def test_profile_plan_on_the_gpu_equals_the_reference_backend(d):
    q, k, v = _qkv(d=d)
    config = SparseConfig.make("profile", fraction=0.25, eps=10.0)
    planner = planner_for(config)
    ctx = PlanContext(0, 0, None, LAYOUT, 4, q.device, state=LayerState())
    runtime, rows = SparseRuntime(config, planner, "gpu", "start"), {}
    runtime.execute(planner.plan(ctx, Probe(q, k, v, LAYOUT, rows_cache=rows)), q, k, v, LAYOUT)  # builds tables
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # from then on, planning and execution make no host sync
    try:
        plan = planner.plan(ctx, Probe(q, k, v, LAYOUT, rows_cache=rows))
        out = runtime.execute(plan, q, k, v, LAYOUT)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    ref = SparseRuntime(config.replace(backend="reference"), planner, "gpu", "start").execute(plan, q, k, v, LAYOUT)
    fp32 = SparseRuntime(config.replace(backend="reference"), planner, "gpu", "start").execute(
        plan, *(t.float() for t in (q, k, v)), LAYOUT)
    assert _rel(out, fp32) <= 2 * _rel(ref, fp32) + 1e-3


def test_delta_on_the_gpu_refresh_then_delta_at_unchanged_inputs():
    q, k, v = _qkv(d=128)
    config = SparseConfig.make("delta", top_keys=0.07, refresh_steps=[0])
    planner = planner_for(config)
    runtime = SparseRuntime(config, planner, "gpu", "start")
    state = LayerState()
    outs = []
    for step in range(2):
        ctx = PlanContext(0, step, None, LAYOUT, 4, q.device, state=state)
        plan = planner.plan(ctx, Probe(q, k, v, LAYOUT))
        outs.append((plan.groups[0].mode, runtime.execute(plan, q, k, v, LAYOUT, state=state)))
    assert [m for m, _ in outs] == ["refresh", "delta"]
    scores = (q.float() @ k.float().transpose(-1, -2)) / math.sqrt(q.shape[-1])
    exact = scores.softmax(-1) @ v.float()
    assert _rel(outs[0][1], exact) < 2e-2
    assert _rel(outs[1][1], outs[0][1]) < 2e-2


def test_hybrid_mixed_plan_on_the_gpu_equals_the_reference_and_reuses_it_without_a_sync():
    """A hybrid plan of pattern, delta and dense heads (forced per head) in bf16 against the float32 reference; the
    steps between choices plan and run with no host sync."""
    from vidsparse.methods.hybrid import LABELS

    q, k, v = _qkv(heads=6)
    config = SparseConfig.make("hybrid", refresh_steps=[0], every=100, top_keys=0.1)
    planner = planner_for(config)
    runtime, state, rows = SparseRuntime(config, planner, "gpu", "start"), LayerState(), {}
    ctx = lambda step: PlanContext(0, step, None, LAYOUT, 6, q.device, state=state)  # noqa: E731
    runtime.execute(planner.plan(ctx(0), Probe(q, k, v, LAYOUT, rows_cache=rows)), q, k, v, LAYOUT, state=state)
    names = ["spatial", "temporal", "delta", "dense", "delta", "spatial"]
    forced = torch.tensor([LABELS.index(n) for n in names], device="cuda")
    planner.choose = lambda c, p: forced
    q2, k2, v2 = (x + 0.1 * torch.randn_like(x) for x in (q, k, v))
    plan = planner.plan(ctx(1), Probe(q2, k2, v2, LAYOUT, rows_cache=rows))
    assert sorted(g.mode for g in plan.groups) == ["delta", "dense", "sparse"]
    out = runtime.execute(plan, q2, k2, v2, LAYOUT, state=state)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        again = runtime.execute(planner.plan(ctx(2), Probe(q2, k2, v2, LAYOUT, rows_cache=rows)), q2, k2, v2, LAYOUT,
                                state=state)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert torch.equal(again, out)
    # the delta heads read the cached rest of step 0's refresh, which no step since has replaced
    ref = SparseRuntime(config.replace(backend="reference"), planner, "gpu", "start").execute(plan, q2, k2, v2, LAYOUT,
                                                                                           state=state)
    assert _rel(out, ref) < 1e-2
