"""The hybrid planner: forced to one candidate it equals that method; its choices meet the budget; a mixed plan runs
each head as its candidate does; the delta candidate's measured error is what a delta step computes; it composes
with diffusers' step caches and torch.compile."""

import json
import math
from pathlib import Path

import pytest
import torch

from vidsparse.core.state import LayerState
from test_plan import _planted
from tiny_models import wan_inputs, wan_pipeline, wan_transformer

import vidsparse
from vidsparse import SparseConfig
from vidsparse.methods.hybrid import LABELS, UNIT_COST
from vidsparse.core.layout import TokenLayout
from vidsparse.core.pattern_file import PatternFile, fingerprint
from vidsparse.core.patterns import Pattern
from vidsparse.pipelines.processors import SparseAttnProcessor
from vidsparse.runtime.runtime import SparseRuntime
from vidsparse.core.plan import PlanContext, Probe
from vidsparse.methods.base import planner_for

ROOT = Path(__file__).resolve().parents[1]
SMALL = dict(q_block=16, k_block=16)
DELTA = dict(q_block=16, voxel=(1, 2, 8), rows_per_block=8, top_keys=0.3, refresh_steps=[0])


def _rel(a, b) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def _pattern_file(model, path, heads_patterns=("window:frames=0,radius=-1", "temporal:every=1,radius=0")):
    """A pattern file whose head h of every layer runs heads_patterns[h % len] (block size 16)."""
    with vidsparse.apply(model, "dense"):
        layers = sum(isinstance(p, SparseAttnProcessor) for p in model.attn_processors.values())
    heads = model.config.num_attention_heads
    candidates = [Pattern.parse(p) for p in heads_patterns]
    choice = torch.tensor([h % len(candidates) for h in range(heads)]).expand(layers, heads).contiguous()
    PatternFile(
        model=fingerprint(model), candidates=candidates, errors=torch.zeros(layers, heads, len(candidates)),
        stats=torch.zeros(layers, heads, 4), density=torch.full((len(candidates),), 0.3), choice=choice,
        params={"eps": 0.1, "lam": 1.0, "aggregate": "max", "q_block": 16, "k_block": 16},
    ).save(path)
    return str(path)


def _steps(model, config, n=3):
    """n forwards (n denoising steps) on inputs that change a little each step; their outputs."""
    outs = []
    with vidsparse.apply(model, config) as handle, torch.no_grad():
        for step in range(n):
            inputs = wan_inputs(model, seed=0)
            inputs["hidden_states"] = inputs["hidden_states"] + 0.05 * step * wan_inputs(model, seed=step + 1)[
                "hidden_states"]
            outs.append(model(**inputs, return_dict=False)[0])
        report = handle.report()
    return outs, report


@pytest.mark.parametrize("method", ["spatial", "temporal", "delta", "static", "dense"])
def test_hybrid_forced_to_one_method_equals_that_method(method, tmp_path):
    model = wan_transformer()
    fields = {"spatial": dict(frames=1, **SMALL), "temporal": dict(radius=1, **SMALL), "delta": DELTA,
              "static": dict(patterns=_pattern_file(model, tmp_path / "p.safetensors")), "dense": {}}[method]
    alone, _ = _steps(model, SparseConfig.make(method, **fields))
    hybrid, report = _steps(model, SparseConfig.make("hybrid", force=method, **fields))
    for a, h in zip(alone, hybrid):
        assert _rel(h, a) < 1e-6
    if method != "dense":
        assert report["sparse_calls"] > 0
    stock, _ = _steps(model, SparseConfig())
    if method == "dense":
        assert all(torch.equal(h, s) for h, s in zip(hybrid, stock))
    else:
        assert _rel(hybrid[-1], stock[-1]) > 1e-4  # it did run sparse


def test_hybrids_own_static_candidate_equals_the_static_method(tmp_path):
    model = wan_transformer()
    patterns = _pattern_file(model, tmp_path / "p.safetensors")
    alone, _ = _steps(model, SparseConfig.make("static", patterns=patterns))
    hybrid, report = _steps(model, SparseConfig.make("hybrid", patterns=patterns, candidates=["static"], eps=100.0))
    assert all(_rel(h, a) < 1e-6 for h, a in zip(hybrid, alone))
    assert {label for layer in report["heads"]["choices"] for head in layer for label in head} == {"static"}


# ------------------------------------------------------------------------------------------ the planner alone
LAYOUT = TokenLayout(4, 4, 8, text_len=16, text_position="start")
KINDS = ["spatial", "temporal", "diffuse", "spatial", "temporal", "diffuse"]


def _planner(**options):
    config = SparseConfig.make("hybrid", **{**SMALL, "q_block": 16, "rows_per_frame": 8, "voxel": (1, 2, 8),
                                            "rows_per_block": 8, "refresh_steps": [0], "every": 1, **options})
    planner = planner_for(config)
    return SparseRuntime(config, planner, "test", "start"), planner


def _call(runtime, planner, state, step, q, k, v):
    ctx = PlanContext(0, step, None, LAYOUT, q.shape[1], q.device, state=state)
    plan = planner.plan(ctx, Probe(q, k, v, LAYOUT))
    runtime.record(0, plan, q.shape[1], q.device)
    return plan, runtime.execute(plan, q, k, v, LAYOUT, state=state)


def _exact(q, k, v):
    scores = (q.double() @ k.double().transpose(-1, -2)) / math.sqrt(q.shape[-1])
    return scores.softmax(-1) @ v.double()


def test_hybrid_picks_each_planted_heads_pattern_and_runs_it_as_that_pattern_does():
    q, k, v = _planted(LAYOUT, KINDS)
    runtime, planner = _planner(candidates=["spatial", "temporal"], eps=0.2, fraction=0.3)
    plan, out = _call(runtime, planner, LayerState(), 0, q, k, v)
    choice = {h: g.labels[int(g.label_index[0, i])] if g.label_index is not None else g.labels[0]
              for g in plan.groups for i, h in enumerate(g.heads)}
    assert [choice[h] for h in range(len(KINDS))] == ["spatial", "temporal", "dense"] * 2
    # each head's output is what the method of its choice computes for it
    for name, method in (("spatial", "spatial"), ("temporal", "temporal"), ("dense", "dense")):
        t = planner.table(LAYOUT, "cpu")
        fields = {"spatial": dict(frames=t["frames"]), "temporal": dict(radius=t["radius"]), "dense": {}}[name]
        alone = SparseRuntime(SparseConfig.make(method, **fields, **({} if name == "dense" else SMALL)),
                              planner_for(SparseConfig.make(method, **fields, **({} if name == "dense" else SMALL))),
                              "test", "start")
        heads = [h for h in range(len(KINDS)) if choice[h] == name]
        ctx = PlanContext(0, 0, None, LAYOUT, q.shape[1], q.device, state=LayerState())
        ref_plan = alone.planner.plan(ctx, Probe(q, k, v, LAYOUT))
        ref = _exact(q, k, v).float() if ref_plan.is_stock else alone.execute(ref_plan, q, k, v, LAYOUT)
        torch.testing.assert_close(out[:, heads], ref[:, heads], atol=1e-5, rtol=1e-4)


def test_delta_candidate_error_is_what_a_delta_step_computes_and_fresh_caches_win():
    gen = torch.Generator().manual_seed(3)
    q, k, v = _planted(LAYOUT, KINDS)
    runtime, planner = _planner(eps=0.05)
    state = LayerState()
    plan, _ = _call(runtime, planner, state, 0, q, k, v)
    assert plan.groups[0].mode == "refresh"
    # unchanged inputs: every head's cached delta is exact to rounding, and the cheapest candidate
    plan, out = _call(runtime, planner, state, 1, q, k, v)
    assert [g.mode for g in plan.groups] == ["delta"]
    torch.testing.assert_close(out.double(), _exact(q, k, v), atol=2e-5, rtol=1e-4)
    # new inputs: the measured delta error on the sampled rows equals the delta step's actual error there
    q2, k2, v2 = (x + 0.5 * torch.randn(x.shape, generator=gen) for x in (q, k, v))
    ctx = PlanContext(0, 2, None, LAYOUT, q.shape[1], q.device, state=state)
    probe = Probe(q2, k2, v2, LAYOUT)
    errors, _, _ = planner.measure(ctx, probe, planner.table(LAYOUT, "cpu"))
    delta_plan = planner.build(ctx, torch.full((q.shape[1],), LABELS.index("delta")))
    out = runtime.execute(delta_plan, q2, k2, v2, LAYOUT, state=state)
    rows = probe.sample_rows(8)
    exact = _exact(q2, k2, v2)[:, :, rows]
    actual = (out.double()[:, :, rows] - exact).flatten(-2).norm(dim=-1) / exact.flatten(-2).norm(dim=-1)
    torch.testing.assert_close(errors[..., LABELS.index("delta")].double(), actual, atol=1e-4, rtol=1e-3)


def test_a_mixed_plan_runs_each_head_as_its_candidate_does():
    gen = torch.Generator().manual_seed(5)
    q, k, v = _planted(LAYOUT, KINDS, b=2)
    runtime, planner = _planner(eps=0.05)
    state = LayerState()
    _call(runtime, planner, state, 0, q, k, v)  # refresh: every head's cache
    q2, k2, v2 = (x + 0.3 * torch.randn(x.shape, generator=gen) for x in (q, k, v))
    ctx = PlanContext(0, 1, None, LAYOUT, q.shape[1], q.device, state=state)
    codes = [LABELS.index(n) for n in ("delta", "spatial", "dense", "delta", "temporal", "delta")]
    plan = planner.build(ctx, torch.tensor(codes))
    assert sorted(g.mode for g in plan.groups) == ["delta", "dense", "sparse"]
    out = runtime.execute(plan, q2, k2, v2, LAYOUT, state=state)
    every_delta = runtime.execute(planner.build(ctx, torch.full((6,), LABELS.index("delta"))), q2, k2, v2, LAYOUT,
                                  state=state)
    t = planner.table(LAYOUT, "cpu")
    for h, name in enumerate(("delta", "spatial", "dense", "delta", "temporal", "delta")):
        if name == "delta":
            ref = every_delta[:, h]
        elif name == "dense":
            ref = _exact(q2, k2, v2)[:, h].float()
        else:
            fields = dict(frames=t["frames"]) if name == "spatial" else dict(radius=t["radius"])
            config = SparseConfig.make(name, **fields, **SMALL)
            alone = SparseRuntime(config, planner_for(config), "test", "start")
            ref_plan = alone.planner.plan(PlanContext(0, 1, None, LAYOUT, 6, "cpu", state=LayerState()), None)
            ref = alone.execute(ref_plan, q2, k2, v2, LAYOUT)[:, h]
        torch.testing.assert_close(out[:, h], ref, atol=1e-5, rtol=1e-4, msg=f"head {h} ({name})")


def test_the_worst_batch_element_decides_a_heads_choice():
    """Head 0 is spatial in batch element 0 and diffuse in element 1: no pattern fits both, so it runs dense."""
    first, second = _planted(LAYOUT, ["spatial", "temporal"], seed=0), _planted(LAYOUT, ["diffuse", "temporal"], seed=1)
    q, k, v = (torch.cat(pair) for pair in zip(first, second))
    runtime, planner = _planner(candidates=["spatial", "temporal"], eps=0.2, fraction=0.3)
    ctx = PlanContext(0, 0, None, LAYOUT, 2, q.device, state=LayerState())
    errors, _, _ = planner.measure(ctx, Probe(q, k, v, LAYOUT), planner.table(LAYOUT, "cpu"))
    spatial, temporal = LABELS.index("spatial"), LABELS.index("temporal")
    assert errors[0, 0, spatial] < 0.2 < errors[1, 0, spatial] and (errors[:, 0, temporal] > 0.2).all()
    assert (errors[:, 1, temporal] < 0.2).all()
    assert planner.choose(ctx, Probe(q, k, v, LAYOUT)).tolist() == [LABELS.index("dense"), temporal]


@pytest.mark.parametrize("target", [0.2, 0.45, 0.6, 0.8])
def test_a_target_density_is_respected_and_an_error_budget_caps_every_choice(target):
    q, k, v = _planted(LAYOUT, KINDS)
    runtime, planner = _planner(density=target, candidates=["spatial", "temporal"])
    ctx = PlanContext(0, 0, None, LAYOUT, q.shape[1], q.device, state=LayerState())
    choice = planner.choose(ctx, Probe(q, k, v, LAYOUT))
    _, _, density = planner.measure(ctx, Probe(q, k, v, LAYOUT), planner.table(LAYOUT, "cpu"))
    density = torch.cat([density[0], torch.ones(len(KINDS), 1)], -1)  # the dense column, LABELS order
    realised = density.gather(-1, choice[:, None])[:, 0]
    cheapest = density[:, 1:3].min(-1).values
    if cheapest.mean() > target:  # out of reach: the cheapest choice of every head
        assert torch.equal(realised, cheapest)
    else:
        assert realised.mean() <= target + 1e-6 and (choice != LABELS.index("dense")).any()
    if target == 0.8:  # room to spare: less total error than every head on its cheapest candidate
        errors, _, _ = planner.measure(ctx, Probe(q, k, v, LAYOUT), planner.table(LAYOUT, "cpu"))
        errors = torch.cat([errors[0], torch.zeros(len(KINDS), 1)], -1).clamp(max=1e3)
        cheapest_error = errors[:, 1:3].gather(-1, density[:, 1:3].argmin(-1, keepdim=True)).sum()
        assert errors.gather(-1, choice[:, None]).sum() < cheapest_error
    for eps in (0.0, 0.1, 0.3, 10.0):
        runtime, planner = _planner(eps=eps, candidates=["spatial", "temporal"])
        choice = planner.choose(ctx, Probe(q, k, v, LAYOUT))
        errors, _, _ = planner.measure(ctx, Probe(q, k, v, LAYOUT), planner.table(LAYOUT, "cpu"))
        chosen = choice != LABELS.index("dense")
        assert (errors[0][chosen].gather(-1, choice[chosen][:, None]) <= eps).all()
        if eps == 0:
            assert not chosen.any()
        if eps == 10.0:
            assert chosen.all()


def test_hybrid_chooses_on_its_schedule_and_again_after_each_refresh():
    q, k, v = _planted(LAYOUT, KINDS)
    runtime, planner = _planner(eps=0.2, every=2, refresh_steps=[0, 4])
    state = LayerState()
    modes = []
    for step in range(7):
        before = planner.choices
        plan, _ = _call(runtime, planner, state, step, q, k, v)
        modes.append(("choose " if planner.choices > before else "") + "+".join(g.mode for g in plan.groups))
    assert [m.startswith("choose") for m in modes] == [False, True, False, True, False, True, False]
    assert modes[0] == "refresh" and modes[4] == "refresh"


def test_a_choice_narrows_the_cache_to_the_delta_heads_and_later_choices_measure_only_those():
    gen = torch.Generator().manual_seed(7)
    q, k, v = _planted(LAYOUT, KINDS)
    runtime, planner = _planner(eps=0.05)
    state = LayerState()
    _call(runtime, planner, state, 0, q, k, v)  # refresh: every head's cache
    full = state.delta.nbytes
    assert runtime.store.device_bytes == full and state.delta.heads == tuple(range(6))
    q2, k2, v2 = (x + 0.3 * torch.randn(x.shape, generator=gen) for x in (q, k, v))
    ctx = PlanContext(0, 1, None, LAYOUT, 6, q.device, state=state)
    probe = Probe(q2, k2, v2, LAYOUT)
    before, _, _ = planner.measure(ctx, probe, planner.table(LAYOUT, "cpu"))
    every_delta = runtime.execute(planner.build(ctx, torch.full((6,), LABELS.index("delta"))), q2, k2, v2, LAYOUT,
                                  state=state)
    codes = [LABELS.index(n) for n in ("delta", "spatial", "dense", "delta", "temporal", "dense")]
    plan = planner.build(ctx, torch.tensor(codes))
    assert plan.cache_heads == (0, 3)
    runtime.store.narrow(state, plan.cache_heads)  # what the runtime does before running the plan
    # the stored bytes are the delta heads' share, and their delta steps read the same cache as before
    assert state.delta.heads == (0, 3) and state.delta.nbytes == full * 2 // 6 == runtime.store.device_bytes
    out = runtime.execute(plan, q2, k2, v2, LAYOUT, state=state)
    assert torch.equal(out[:, [0, 3]], every_delta[:, [0, 3]])
    # the next choice measures the delta candidate of the heads it holds as before, and of no other
    after, _, density = planner.measure(ctx, probe, planner.table(LAYOUT, "cpu"))
    d = LABELS.index("delta")
    torch.testing.assert_close(after[:, [0, 3], d], before[:, [0, 3], d])
    assert torch.isinf(after[:, [1, 2, 4, 5], d]).all()
    torch.testing.assert_close(density[:, [0, 3], d], state.delta.density.float())
    # a choice with no delta head frees the layer's cache; a head asked to run delta without one runs dense
    runtime.store.narrow(state, planner.build(ctx, torch.tensor([LABELS.index("dense")] * 6)).cache_heads)
    assert state.delta is None and runtime.store.device_bytes == 0


def test_a_choice_frees_the_cache_share_of_the_heads_that_chose_otherwise_in_a_model():
    from vidsparse.app.bench.forced import ForcedMixHybrid

    model = wan_transformer()
    config = SparseConfig.make("hybrid", **{**SMALL, **DELTA}, every=1, rows_per_frame=8)
    # seeded draws: layer 0 runs head 1 on its delta, layer 1 none
    planner = ForcedMixHybrid(config, {"delta": 0.5, "dense": 0.5}, seed=5)
    inputs = wan_inputs(model, seed=0)
    with vidsparse.apply(model, config, planner=planner) as handle, torch.no_grad():
        runtime = handle.runtimes[0]
        model(**inputs)  # step 0: a refresh of every head
        layers = runtime.state.layers
        full = {i: s.delta.nbytes for i, s in layers.items()}
        assert runtime.store.device_bytes == sum(full.values())
        chosen = model(**inputs, return_dict=False)[0]  # step 1: the first choice
        kept = {i: [h for g in s.plan.groups if g.mode == "delta" for h in g.heads] for i, s in layers.items()}
        assert kept == {0: [1], 1: []}
        assert layers[0].delta.nbytes == full[0] // 2 and layers[1].delta is None
        assert runtime.store.device_bytes == full[0] // 2
        again = model(**inputs, return_dict=False)[0]  # step 2: chooses again from the narrowed caches
        assert runtime.refreshed == {0}  # layer 1, which freed its cache, waits for the next scheduled refresh
    assert torch.equal(again, chosen)


def test_unit_costs_match_the_kernel_measurements():
    results = json.loads((ROOT / "kernels" / "results.json").read_text())
    sparse = [c["ours_ms"] / (c["density"] * s["cudnn_ms"]) for s in results["shapes"] for c in s["cases"]
              if c["pattern"].startswith("random 0.") and c["density"] < 0.3]
    columns = [c["ours_ms"] / (c["density"] * c["cudnn_ms"])
               for c in json.loads((ROOT / "kernels" / "columns.json").read_text())["cases"]]
    for name, measured in (("sparse", sparse), ("columns", columns)):
        assert measured and all(0.8 <= m / UNIT_COST[name] <= 1.2 for m in measured), (name, measured)


# ------------------------------------------------------------------------------------------ composition
def _generate(pipe, **kwargs):
    return pipe(prompt="a red circle", negative_prompt="blue", height=32, width=48, num_frames=5,
                num_inference_steps=4, guidance_scale=5.0, max_sequence_length=16, output_type="latent",
                generator=torch.Generator().manual_seed(0), **kwargs).frames


@pytest.mark.parametrize("cache", ["FirstBlockCacheConfig", "TaylorSeerCacheConfig", "MagCacheConfig",
                                   "PyramidAttentionBroadcastConfig"])
def test_hybrid_composes_with_diffusers_step_caches_and_resets_between_generations(cache):
    from diffusers import hooks

    pipe = wan_pipeline()
    config = {"FirstBlockCacheConfig": dict(threshold=0.2),
              "TaylorSeerCacheConfig": dict(cache_interval=2, disable_cache_before_step=1),
              "MagCacheConfig": dict(threshold=0.02, retention_ratio=0.25, num_inference_steps=4,
                                     mag_ratios=[1.0, 0.99, 0.9, 0.8]),
              "PyramidAttentionBroadcastConfig": dict(spatial_attention_block_skip_range=2,
                                                      current_timestep_callback=lambda: 500)}[cache]
    pipe.transformer.enable_cache(getattr(hooks, cache)(**config))
    handle = vidsparse.apply(pipe, SparseConfig.make("hybrid", eps=0.5, warmup_steps=1, **{**DELTA, **SMALL, "refresh_steps": [1]}))
    first = _generate(pipe)
    second = _generate(pipe)
    report = handle.report()
    handle.remove()
    pipe.transformer.disable_cache()
    assert torch.isfinite(first).all() and torch.equal(first, second)
    ran = {label for layer in report["heads"]["choices"] for head in layer for label in head}
    assert ran - {"dense", "refresh"}, ran  # chosen candidates ran, not only the warm-up and the refreshes


def test_hybrid_under_torch_compile_matches_eager():
    model = wan_transformer()
    inputs = wan_inputs(model)
    config = SparseConfig.make("hybrid", eps=0.5, candidates=["spatial", "temporal"], **SMALL)
    handle = vidsparse.apply(model, config)
    with torch.no_grad():
        eager = model(**inputs, return_dict=False)[0]
        handle.reset()
        compiled = torch.compile(model)(**inputs, return_dict=False)[0]
    report = handle.report()
    handle.remove()
    assert _rel(compiled, eager) < 1e-5
    assert {"spatial", "temporal"} & {label for layer in report["heads"]["choices"] for head in layer for label in head}


def test_bad_hybrid_options_name_the_fix():
    with pytest.raises(ValueError, match="needs a pattern file"):
        SparseConfig.make("hybrid", candidates=["static"])
    with pytest.raises(ValueError, match="force must be one of"):
        SparseConfig.make("hybrid", force="window")
    with pytest.raises(ValueError, match="density must be in"):
        SparseConfig.make("hybrid", density=1.5)
