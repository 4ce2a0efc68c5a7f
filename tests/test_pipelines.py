"""The diffusers integration on tiny offline models of every family: exact at density 1, sparse paths
equal to the reference masked attention, reversible, step counting across generations, composition."""

import logging

import pytest
import torch
from attention_checks import cpu_paths
from tiny_models import (
    COGVIDEOX_TEXT_LEN,
    HUNYUAN_PROMPT_TEMPLATE,
    WAN_TEXT_LEN,
    cogvideox_inputs,
    cogvideox_pipeline,
    cogvideox_transformer,
    hunyuan_inputs,
    hunyuan_pipeline,
    hunyuan_transformer,
    wan_inputs,
    wan_pipeline,
    wan_transformer,
)

import vidsparse
from vidsparse import SparseConfig
from vidsparse.runtime import backends as backends_module
from vidsparse.pipelines.processors import SparseAttnProcessor

# Blocks of 16 tokens so that the 105 video tokens of the tiny 3x5x7 grid span several blocks.
SMALL = dict(q_block=16, k_block=16)
FULL = SparseConfig.make(method="spatial", frames=64, **SMALL)  # every frame: density 1 through the kernel
SPATIAL = SparseConfig.make(method="spatial", frames=0, **SMALL)
TEMPORAL = SparseConfig.make(method="temporal", radius=0, **SMALL)


def _family(name):
    if name.startswith("cogvideox"):
        model = cogvideox_transformer(name.split("-")[1])
        return model, cogvideox_inputs(model)
    if name == "hunyuanvideo":
        model = hunyuan_transformer()
        return model, hunyuan_inputs(model)
    model = wan_transformer()
    return model, wan_inputs(model)


FAMILIES = ["cogvideox-2b", "cogvideox-5b", "cogvideox-1.5", "hunyuanvideo", "wan"]


def _run(model, inputs):
    with torch.no_grad():
        return model(**inputs, return_dict=False)[0]


def _rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


@pytest.mark.parametrize("family", FAMILIES)
def test_dense_preset_equals_stock_bit_for_bit(family):
    model, inputs = _family(family)
    stock = _run(model, inputs)
    handle = vidsparse.apply(model, "dense")
    assert torch.equal(_run(model, inputs), stock)
    report = handle.report()
    assert report["density"] == 1.0 and report["fallbacks"] == [] and report["layers"] >= 2
    handle.remove()


@pytest.mark.parametrize("family", FAMILIES)
def test_density_one_through_the_kernel_equals_stock(family):
    model, inputs = _family(family)
    stock = _run(model, inputs)
    with vidsparse.apply(model, FULL) as handle:
        out = _run(model, inputs)
        report = handle.report()
    assert report["sparse_calls"] == report["calls"] > 0
    assert report["density"] == pytest.approx(1.0)
    assert _rel(out, stock) < 1e-5


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("config", [SPATIAL, TEMPORAL], ids=["spatial", "temporal"])
def test_fixed_patterns_equal_reference_masked_attention(family, config):
    model, inputs = _family(family)
    stock = _run(model, inputs)
    with vidsparse.apply(model, config) as handle:
        kernel_out = _run(model, inputs)
        density = handle.report()["density"]
    # the same masks through the chunked PyTorch reference instead of the Triton kernel
    with vidsparse.apply(model, config.replace(backend="reference")) as handle:
        reference_out = _run(model, inputs)
        assert handle.report()["fallbacks"] == []
    assert 0.0 < density < 1.0
    assert _rel(kernel_out, reference_out) < 1e-5
    assert _rel(kernel_out, stock) > 1e-4  # the pattern really dropped keys


@pytest.mark.parametrize("family", ["cogvideox-5b", "hunyuanvideo", "wan"])
def test_remove_restores_processors_and_outputs(family):
    model, inputs = _family(family)
    before = dict(model.attn_processors)
    stock = _run(model, inputs)
    handle = vidsparse.apply(model, SPATIAL)
    assert any(isinstance(p, SparseAttnProcessor) for p in model.attn_processors.values())
    handle.remove()
    after = model.attn_processors
    assert after.keys() == before.keys() and all(after[k] is before[k] for k in before)
    assert torch.equal(_run(model, inputs), stock)


def test_only_the_adapters_layers_are_replaced():
    hunyuan = hunyuan_transformer()
    with vidsparse.apply(hunyuan, "dense"):
        for key, proc in hunyuan.attn_processors.items():
            assert isinstance(proc, SparseAttnProcessor) != key.startswith("context_embedder."), key
    wan = wan_transformer()
    with vidsparse.apply(wan, "dense"):
        for key, proc in wan.attn_processors.items():
            assert isinstance(proc, SparseAttnProcessor) == (".attn1." in key), key


def test_set_attn_processor_path_and_module_remove():
    model, inputs = _family("wan")
    stock = _run(model, inputs)
    procs = vidsparse.sparse_attn_processors(model, FULL)
    assert set(procs) == set(model.attn_processors)
    model.set_attn_processor(procs)
    assert _rel(_run(model, inputs), stock) < 1e-5
    vidsparse.remove(model)
    assert torch.equal(_run(model, inputs), stock)
    with pytest.raises(ValueError, match="vidsparse is not installed on this WanTransformer3DModel"):
        vidsparse.remove(model)


def test_hunyuan_padded_text_keys_stay_masked():
    model = hunyuan_transformer()
    inputs = hunyuan_inputs(model, pad=3)
    with vidsparse.apply(model, SPATIAL):
        out = _run(model, inputs)
        changed = dict(inputs)
        text = inputs["encoder_hidden_states"].clone()
        text[1, -3:] = torch.randn_like(text[1, -3:]) * 10  # batch element 1's padded tokens
        changed["encoder_hidden_states"] = text
        out_changed = _run(model, changed)
    assert torch.allclose(out[1], out_changed[1], atol=1e-6)


def _record_plans(handle):
    """Wrap each runtime's call record so that the (branch, step) of every replaced-layer call is recorded."""
    seen = []
    for runtime in handle.runtimes:
        record = runtime.record

        def recording(layer, plan, heads, device, runtime=runtime, record=record):
            seen.append((runtime.branch, runtime.step))
            return record(layer, plan, heads, device)

        runtime.record = recording
    return seen


def _generate(pipe, family, **overrides):
    kwargs = dict(num_inference_steps=2, height=80, width=112, output_type="latent",
                  generator=torch.Generator().manual_seed(0), prompt="a red circle", negative_prompt="blue")
    if family == "cogvideox":
        kwargs.update(num_frames=9, guidance_scale=5.0, max_sequence_length=COGVIDEOX_TEXT_LEN)
    elif family == "hunyuanvideo":
        kwargs.update(num_frames=9, true_cfg_scale=5.0, prompt_template=HUNYUAN_PROMPT_TEMPLATE, max_sequence_length=16)
    else:
        kwargs.update(num_frames=9, guidance_scale=5.0, max_sequence_length=WAN_TEXT_LEN)
    kwargs.update(overrides)
    with torch.no_grad():
        return pipe(**kwargs).frames


@pytest.mark.parametrize(
    ("family", "branches"),
    [("cogvideox", ["cond_uncond"]), ("hunyuanvideo", ["cond", "uncond"]), ("wan", ["cond", "uncond"])],
)
def test_step_counts_per_branch_across_two_generations(family, branches):
    pipe = {"cogvideox": cogvideox_pipeline, "hunyuanvideo": hunyuan_pipeline, "wan": wan_pipeline}[family]()
    handle = vidsparse.apply(pipe, SparseConfig.make(method="spatial", frames=0, warmup_steps=1, **SMALL))
    seen = _record_plans(handle)
    layers = sum(isinstance(p, SparseAttnProcessor) for p in pipe.transformer.attn_processors.values())
    first = _generate(pipe, family)
    assert torch.isfinite(first).all()
    expected = sorted((b, step) for b in branches for step in (0, 1) for _ in range(layers))
    assert sorted(seen) == expected
    seen.clear()
    second = _generate(pipe, family)  # the pipeline resets the step hook after every call
    assert sorted(seen) == expected
    assert torch.equal(first, second)
    report = handle.report()
    assert 0.0 < report["density"] < 1.0  # step 0 dense (warm-up), step 1 sparse
    handle.remove()


def test_wan22_covers_both_transformers():
    pipe = wan_pipeline(two_transformers=True)
    handle = vidsparse.apply(pipe, SPATIAL)
    seen = _record_plans(handle)
    _generate(pipe, "wan")
    assert len(handle.runtimes) == 2
    per_transformer = [r.report()["sparse_calls"] for r in handle.runtimes]
    assert all(n > 0 for n in per_transformer)  # each expert ran one of the two steps
    assert sorted({step for _, step in seen}) == [0, 1]  # the pipeline's global step index
    handle.remove()
    assert not any(isinstance(p, SparseAttnProcessor) for p in pipe.transformer_2.attn_processors.values())


def test_outside_a_pipeline_steps_count_until_reset():
    model, inputs = _family("wan")
    handle = vidsparse.apply(model, SparseConfig.make(method="spatial", frames=0, warmup_steps=1, **SMALL))
    seen = _record_plans(handle)
    _run(model, inputs)
    _run(model, inputs)
    handle.reset()
    _run(model, inputs)
    assert [step for _, step in seen] == [0, 0, 1, 1, 0, 0]  # two layers per forward
    assert {branch for branch, _ in seen} == {None}
    handle.remove()


@pytest.mark.parametrize("family", ["cogvideox-5b", "wan"])
def test_fused_qkv_projections(family):
    model, inputs = _family(family)
    stock = _run(model, inputs)
    model.fuse_qkv_projections()
    with vidsparse.apply(model, FULL):
        assert _rel(_run(model, inputs), stock) < 1e-5


def test_first_block_cache_composes():
    from diffusers.hooks import FirstBlockCacheConfig

    pipe = wan_pipeline()
    pipe.transformer.enable_cache(FirstBlockCacheConfig(threshold=0.05))
    handle = vidsparse.apply(pipe, SPATIAL)
    out = _generate(pipe, "wan")
    assert torch.isfinite(out).all()
    assert handle.report()["sparse_calls"] > 0
    handle.remove()
    pipe.transformer.disable_cache()


def test_torch_compile_matches_eager():
    model, inputs = _family("wan")
    handle = vidsparse.apply(model, SPATIAL)
    eager = _run(model, inputs)
    handle.reset()
    compiled = torch.compile(model)
    assert _rel(_run(compiled, inputs), eager) < 1e-5
    handle.remove()


def test_cpu_without_interpreter_falls_back_to_reference_and_says_so(monkeypatch, caplog):
    model, inputs = _family("cogvideox-5b")
    with vidsparse.apply(model, SPATIAL) as handle:
        kernel_out = _run(model, inputs)
    monkeypatch.setattr(backends_module, "_interpreting", lambda: False)
    with caplog.at_level(logging.WARNING, logger="vidsparse"):
        with vidsparse.apply(model, SPATIAL) as handle:
            out = _run(model, inputs)
            _run(model, inputs)
            report = handle.report()
    assert report["fallbacks"] == [
        "no Triton kernel on cpu: PyTorch runs the same masks instead (slower than the kernel)"
    ]
    assert sum("no Triton kernel on cpu" in r.getMessage() for r in caplog.records) == 1  # logged once
    assert _rel(out, kernel_out) < 1e-5


CPU_METHODS = {
    "profile": dict(eps=10.0, fraction=0.3, rows_per_frame=4, **SMALL),
    "delta": dict(top_keys=0.2, refresh_steps=[0], q_block=16, voxel=(1, 2, 4), rows_per_block=8),
    "hybrid": dict(eps=0.5, every=1, top_keys=0.2, refresh_steps=[0], voxel=(1, 2, 4), rows_per_block=8, **SMALL),
    "dynamic": dict(top_p=0.8, **SMALL),
}


@pytest.mark.parametrize("family", ["cogvideox-5b", "hunyuanvideo"])
@pytest.mark.parametrize("method", sorted(CPU_METHODS))
def test_the_cpu_path_of_each_method_equals_its_reference_backend(family, method):
    """What a CPU user runs (no Triton interpreter: SDPA by mask rows, the one-pass refresh, the column reference)
    gives, step after step, what the plain reference backend gives (issue 23, defect 8)."""
    model, inputs = _family(family)
    config = SparseConfig.make(method, **CPU_METHODS[method])
    outs, reports = [], []
    with cpu_paths():
        for backend in ("auto", "reference"):
            with vidsparse.apply(model, config.replace(backend=backend)) as handle:
                outs.append([_run(model, inputs) for _ in range(3)])  # a refresh or a choice, then the steps after
                reports.append(handle.report())
    assert reports[0]["sparse_calls"] == reports[0]["calls"] > 0 and reports[0]["density"] < 1.0
    assert any("no Triton kernel on cpu" in reason for reason in reports[0]["fallbacks"])  # the CPU paths ran
    assert reports[0]["heads"]["choices"] == reports[1]["heads"]["choices"]
    for got, expect in zip(*outs):
        assert _rel(got, expect) < 1e-5


def test_unsupported_transformer_is_a_clear_error():
    # the list grows with every family (tests/test_families_*.py check theirs): the first ones, in order
    with pytest.raises(ValueError, match=r"vidsparse has no adapter for Linear; supported transformers: "
                                         r"CogVideoXTransformer3DModel, (.+, )?HunyuanVideoTransformer3DModel, (.+, )?WanTransformer3DModel"):
        vidsparse.apply(torch.nn.Linear(2, 2), "dense")
    with pytest.raises(ValueError, match="expected a diffusers pipeline with a `transformer` or a transformer module"):
        vidsparse.apply(object(), "dense")


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("sparse-please", r"unknown preset 'sparse-please'; choose one of \[.*'dense', 'dynamic', 'hybrid', 'profile', 'spatial', 'temporal'"),
        ({"method": "diagonal"}, r"method must be one of \('dense', 'spatial', 'temporal', .*'static'.*\); got 'diagonal'"),
        ({"method": "spatial", "radius": 1}, r"method 'spatial' has no option 'radius'; its options: frames, q_block"),
        ({"method": "spatial", "frames": -1}, r"frames must be an int >= 0; got -1"),
        ({"method": "spatial", "q_block": 100}, r"q_block must be a power of two >= 16; got 100"),
        (3, r"config must be a preset name, a SparseConfig or a dict; got int"),
    ],
)
def test_bad_config_is_a_clear_error(config, message):
    model = wan_transformer()
    with pytest.raises(ValueError, match=message):
        vidsparse.apply(model, config)
    assert not any(isinstance(p, SparseAttnProcessor) for p in model.attn_processors.values())


def test_applying_twice_is_refused():
    model = wan_transformer()
    handle = vidsparse.apply(model, "dense")
    with pytest.raises(ValueError, match="vidsparse is already installed on this WanTransformer3DModel"):
        vidsparse.apply(model, "spatial")
    handle.remove()


@pytest.mark.parametrize("family", ["cogvideox-1.5", "hunyuanvideo", "wan"])
def test_pipeline_with_cfg_at_density_one_equals_stock(family):
    # CogVideoX1.5 at num_frames=17: 5 latent frames, padded by the pipeline to 6 (grid 3x5x7)
    name = family.split("-")[0]
    pipe = {"cogvideox": lambda: cogvideox_pipeline("1.5"), "hunyuanvideo": hunyuan_pipeline, "wan": wan_pipeline}[name]()
    kwargs = {"num_frames": 17} if family == "cogvideox-1.5" else {}
    stock = _generate(pipe, name, **kwargs)
    with vidsparse.apply(pipe, FULL) as handle:
        sparse = _generate(pipe, name, **kwargs)
        assert handle.report()["sparse_calls"] > 0 and handle.report()["fallbacks"] == []
    assert _rel(sparse, stock) < 1e-4


# ---------------------------------------------------------------------------------------------- the plan seam
PROFILE = SparseConfig.make(method="profile", eps=10.0, fraction=0.3, rows_per_frame=4, **SMALL)  # always sparse


@pytest.mark.parametrize("family", FAMILIES)
def test_profile_runs_its_choices_like_the_reference_and_at_budget_zero_equals_stock(family):
    model, inputs = _family(family)
    stock = _run(model, inputs)
    with vidsparse.apply(model, PROFILE) as handle:
        kernel_out = _run(model, inputs)
        report = handle.report()
    with vidsparse.apply(model, PROFILE.replace(backend="reference")):
        reference_out = _run(model, inputs)
    assert 0.0 < report["density"] < 1.0 and report["sparse_calls"] == report["calls"]
    choices = [c for layer in report["heads"]["choices"] for c in layer]
    assert all(set(c) <= {"spatial", "temporal", "dense"} and sum(c.values()) == pytest.approx(1.0) for c in choices)
    assert _rel(kernel_out, reference_out) < 1e-5
    assert _rel(kernel_out, stock) > 1e-4
    with vidsparse.apply(model, PROFILE.replace(eps=0.0)) as handle:  # no candidate qualifies: every head dense
        assert _rel(_run(model, inputs), stock) < 1e-5
        assert all(c == {"dense": 1.0} for layer in handle.report()["heads"]["choices"] for c in layer)


@pytest.mark.parametrize("family", ["cogvideox", "hunyuanvideo", "wan"])
def test_profile_in_a_pipeline_with_cfg_keeps_choices_per_branch(family):
    pipe = {"cogvideox": cogvideox_pipeline, "hunyuanvideo": hunyuan_pipeline, "wan": wan_pipeline}[family]()
    handle = vidsparse.apply(pipe, PROFILE.replace(warmup_steps=1, every=2))
    first = _generate(pipe, family, num_inference_steps=3)
    states = handle.runtimes[0]
    report = handle.report()
    assert torch.isfinite(first).all() and 0.0 < report["density"] < 1.0
    layers = report["layers"]
    per_step = report["sparse_calls_per_step"]
    if family == "cogvideox":
        assert per_step == {"cond_uncond:1": layers, "cond_uncond:2": layers}
    else:
        assert per_step == {f"{b}:{s}": layers for b in ("cond", "uncond") for s in (1, 2)}
    assert states.state is not None
    second = _generate(pipe, family, num_inference_steps=3)  # state is reset between generations
    assert torch.equal(first, second)
    handle.remove()
    assert handle.report()["calls"] == report["calls"] * 2  # the report of a removed handle stays readable


def _pattern_file(model, path):
    from vidsparse.core.pattern_file import PatternFile, fingerprint
    from vidsparse.core.patterns import Pattern

    layers = sum(isinstance(p, SparseAttnProcessor) for p in model.attn_processors.values())
    heads = model.config.num_attention_heads
    PatternFile(
        model=fingerprint(model), candidates=[Pattern.parse("window:frames=0,radius=-1")],
        errors=torch.zeros(layers, heads, 1), stats=torch.zeros(layers, heads, 4), density=torch.tensor([0.3]),
        choice=torch.zeros(layers, heads, dtype=torch.long),
        params={"eps": 0.1, "lam": 1.0, "aggregate": "max", "q_block": 16, "k_block": 16},
    ).save(path)
    return str(path)


@pytest.mark.parametrize("method", ["spatial", "temporal", "static", "profile"])
def test_every_method_turns_sparse_exactly_after_its_warmup(method, tmp_path):
    pipe = wan_pipeline()
    with vidsparse.apply(pipe, "dense"):
        layers = len(pipe.transformer.attn_processors)
    fields = {"profile": dict(eps=10.0, rows_per_frame=4), "static": {}}.get(method, {})
    if method == "static":
        with vidsparse.apply(pipe.transformer, "dense"):
            fields["patterns"] = _pattern_file(pipe.transformer, tmp_path / "p.safetensors")
    else:
        fields.update(SMALL)
    handle = vidsparse.apply(pipe, SparseConfig.make(method=method, warmup_steps=2, warmup_layers=1, **fields))
    _generate(pipe, "wan", num_inference_steps=4)
    report = handle.report()
    handle.remove()
    replaced = report["layers"]
    assert replaced >= 2 and layers > replaced  # attn1 only
    sparse_layers = replaced - 1  # the first replaced layer is dense at every step
    assert report["sparse_calls_per_step"] == {f"{b}:{s}": sparse_layers for b in ("cond", "uncond") for s in (2, 3)}


class _KeyRecorder(vidsparse.methods.base.Planner):
    """Plans every call dense and keeps layer 0's layout and keys."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def plan(self, ctx, probe):
        if ctx.layer == 0:
            self.seen.append((ctx.layout, probe.k.detach().clone()))
        return vidsparse.core.plan.AttentionPlan.dense(ctx.heads)


@pytest.mark.parametrize("family", ["cogvideox-5b", "hunyuanvideo", "wan"])
def test_planned_text_range_is_where_the_processor_puts_the_text(family):
    """Changing only the prompt embedding changes exactly the text keys of the first layer (its video keys depend on
    the video alone), so those positions, found from the keys themselves, must be the planned text range."""
    model, inputs = _family(family)
    changed = dict(inputs)
    changed["encoder_hidden_states"] = inputs["encoder_hidden_states"] + 1.0
    recorder = _KeyRecorder()
    with vidsparse.apply(model, "dense", planner=recorder):
        _run(model, inputs)
        _run(model, changed)
    (layout, k0), (_, k1) = recorder.seen
    moved = ((k0 - k1).abs().amax(dim=(0, 1, 3)) > 0).nonzero().flatten().tolist()
    planned = [] if layout.text_range is None else list(range(*layout.text_range))
    assert moved == planned
    assert family == "wan" or len(planned) > 0


def test_wan22_keeps_at_most_one_experts_cache_alive():
    """Each expert has its own runtime and cache; when the low-noise expert takes over, the high-noise one's caches
    are freed (it does not run again in that generation)."""
    pipe = wan_pipeline(two_transformers=True)
    handle = vidsparse.apply(pipe, SparseConfig.make("delta", top_keys=0.3, refresh_steps=[0], q_block=16,
                                                     voxel=(1, 2, 4), rows_per_block=8))
    first, second = handle.runtimes
    alive = []
    record = second.record

    def recording(layer, plan, heads, device):
        out = record(layer, plan, heads, device)
        alive.append((first.store.device_bytes + first.store.host_bytes, second.store.device_bytes))
        return out

    second.record = recording
    _generate(pipe, "wan")
    assert alive and all(first_bytes == 0 for first_bytes, _ in alive)  # the first expert's caches were freed
    assert alive[-1][1] > 0  # while the second's are in use
    handle.remove()


@pytest.mark.parametrize("family", ["cogvideox", "wan"])
def test_the_schedule_follows_the_pipelines_step_count(family):
    """Refresh steps stated for 2 steps land at 0 and 2 of a 4-step generation: Wan's cache context says how many
    steps there are, CogVideoX's scheduler does (issue 23, defect 1). A transformer alone cannot know: as stated."""
    pipe = cogvideox_pipeline() if family == "cogvideox" else wan_pipeline()
    config = SparseConfig.make("delta", top_keys=0.3, refresh_steps=[0, 1], schedule_steps=2, q_block=16,
                               voxel=(1, 2, 4), rows_per_block=8, backend="reference")
    handle = vidsparse.apply(pipe, config)
    _generate(pipe, family, num_inference_steps=4)
    schedule = handle.runtimes[0].report()["schedule"]
    assert schedule["refreshed_at"] == [0, 2]
    assert schedule["ran"] == [{"num_steps": 4, "stated_for": 2, "warmup_steps": 0, "refresh_steps": [0, 2],
                                "refresh_every": 0}]
    handle.remove()
    model, inputs = _family("wan")
    handle = vidsparse.apply(model, config)
    _run(model, inputs)
    _run(model, inputs)
    schedule = handle.runtimes[0].report()["schedule"]
    assert schedule["refreshed_at"] == [0, 1] and "was not seen" in schedule["ran"][0]["note"]
    handle.remove()


def test_a_custom_loop_calling_cond_and_uncond_separately_keeps_their_caches_apart():
    """Outside a cache context, cond and uncond at one step are two branches, not two steps (issue 23, defect 2):
    the loop gives what the same loop inside `cache_context("cond")` / `("uncond")` gives."""
    model = wan_transformer()
    config = SparseConfig.make("delta", top_keys=0.3, refresh_steps=[0], q_block=16, voxel=(1, 2, 4),
                               rows_per_block=8, backend="reference")
    cond, uncond = (wan_inputs(model, batch=1, seed=s)["encoder_hidden_states"] for s in (1, 2))

    def loop(contexts: bool):
        outs = []
        with vidsparse.apply(model, config) as handle, torch.no_grad():
            for step in range(3):
                latents = wan_inputs(model, batch=1, seed=10 + step)["hidden_states"]
                t = torch.tensor([900.0 - 300 * step])
                for name, text in (("cond", cond), ("uncond", uncond)):
                    if contexts:
                        with model.cache_context(name, step_index=step):
                            outs.append(model(hidden_states=latents, timestep=t, encoder_hidden_states=text,
                                              return_dict=False)[0])
                    else:
                        outs.append(model(hidden_states=latents, timestep=t, encoder_hidden_states=text,
                                          return_dict=False)[0])
            report = handle.report()
        return outs, report

    inside, _ = loop(contexts=True)
    outside, report = loop(contexts=False)
    assert sorted(report["sparse_calls_per_step"]) == ["0", "1", "2", "call2:0", "call2:1", "call2:2"]
    for a, b in zip(inside, outside):
        assert torch.equal(a, b)
