"""Model configs (vidsparse.app.configs) and the built-in models (vidsparse.app.models): every shipped YAML loads and every
method preset builds a SparseConfig; every built-in has a config that fits its pipeline and whose generation
defaults run it; overrides apply; bad names, overrides and configs fail with messages that say what is allowed."""

import logging

import pytest
import torch
from omegaconf import OmegaConf
from tiny_models import COGVIDEOX_TEXT_LEN, HUNYUAN_PROMPT_TEMPLATE, WAN_TEXT_LEN

from vidsparse import SparseConfig
from vidsparse.app.models import BUILTIN_MODELS, DEFAULT_BUILTIN, load_builtin
from vidsparse.app.configs import (
    NON_CALL_KEYS,
    ModelConfigError,
    apply_scheduler_config,
    call_kwargs,
    load_model_config,
    method_config,
    model_names,
)
from vidsparse.yardstick import GENERATE, LONG_WEIGHTS_DIR

# Every built-in, the long yardstick skipped until the GPU session's weights are committed (yardstick/long_session.sh).
BUILTINS = [
    pytest.param(name, marks=pytest.mark.skipif(
        not (LONG_WEIGHTS_DIR / "transformer" / "diffusion_pytorch_model.safetensors").exists(),
        reason="the long yardstick's weights are not committed yet (yardstick/long_session.sh writes them)"))
    if name == "yardstick-long" else name
    for name in BUILTIN_MODELS
]

REAL_MODELS = [
    "cogvideox-2b", "cogvideox-5b", "cogvideox1.5-5b", "hunyuanvideo",
    "wan2.1-t2v-1.3b", "wan2.1-t2v-14b", "wan2.2-t2v-a14b",
]
REAL_MODELS += ["ltx-video", "ltx-2", "hunyuanvideo-1.5-480p", "hunyuanvideo-1.5-720p"]  # tests/test_families_b.py
REAL_MODELS += [  # the families of vidsparse/pipelines/families/ (issue 22)
    "wan2.1-i2v-14b-480p", "wan2.1-i2v-14b-720p", "wan2.1-vace-14b", "wan2.2-animate-14b", "skyreels-v2-df-14b-540p",
    "cosmos-1.0-diffusion-7b-text2world", "mochi-1-preview",
]
# Temporal VAE factors other than 4 (Wan's, CogVideoX's and HunyuanVideo's): a video has factor x k + 1 frames.
TEMPORAL_FACTOR = {"mochi-1-preview": 6, "cosmos-1.0-diffusion-7b-text2world": 8}


def test_shipped_configs_are_the_real_models_and_the_builtins():
    assert sorted(model_names()) == sorted(REAL_MODELS + list(BUILTIN_MODELS))


@pytest.mark.parametrize("name", model_names())
def test_every_config_loads_and_every_method_builds(name):
    cfg = load_model_config(name)
    assert {"dense", "spatial", "temporal", "profile", "delta", "hybrid", "dynamic"} <= set(cfg.methods)
    hybrid = method_config(cfg, "hybrid")
    steps = cfg.generate.num_inference_steps
    # the hybrid's warm-up: its first refresh steps run full attention, and its delta schedule fits the steps
    assert hybrid.refresh_steps[:2] == (0, 1) and max(hybrid.refresh_steps) < steps
    assert ("static" in hybrid.options.active) == bool(hybrid.patterns)
    for method in cfg.methods:
        sparse = method_config(cfg, method)
        assert isinstance(sparse, SparseConfig)
        assert sparse.method == cfg.methods[method].method
        # the warm-up is a fraction of the config's own steps, never all of them
        assert sparse.warmup_steps < cfg.generate.num_inference_steps
    assert cfg.generate.dtype in ("float32", "float16", "bfloat16")
    kwargs = call_kwargs(cfg)
    assert not set(NON_CALL_KEYS) & set(kwargs)
    assert {"height", "width", "num_inference_steps"} <= set(kwargs)
    assert "num_frames" in kwargs or "segment_frame_length" in kwargs  # Wan-Animate's pipeline takes a segment length


@pytest.mark.parametrize("name", REAL_MODELS)
def test_real_model_configs_name_their_weights_and_latent_friendly_sizes(name):
    cfg = load_model_config(name)
    assert "/" in cfg.model.weights  # a Hugging Face repository id, informational
    assert cfg.generate.height % 16 == 0 and cfg.generate.width % 16 == 0  # 8x VAE, 2x2 patches
    frames = cfg.generate.get("num_frames", cfg.generate.get("segment_frame_length"))
    assert (frames - 1) % TEMPORAL_FACTOR.get(name, 4) == 0  # 4x temporal VAE: 4k + 1 frames


@pytest.mark.parametrize("name", BUILTINS)
def test_builtin_config_fits_its_pipeline(name):
    cfg = load_model_config(name)
    pipe, spec = load_builtin(name)
    assert spec.name == name and cfg.model.builtin == name
    assert type(pipe).__name__ == cfg.model.pipeline
    assert type(pipe.transformer).__name__ == cfg.model.transformer
    assert spec.family in type(pipe.transformer).__name__.lower()
    assert spec.defaults == call_kwargs(cfg)


def test_builtin_defaults_match_the_models_text_settings():
    defaults = {name: spec.defaults for name, spec in BUILTIN_MODELS.items()}
    assert defaults["yardstick"] == GENERATE  # the yardstick's config calls it as vidsparse.yardstick does
    for name in ("tiny-cogvideox", "tiny-cogvideox-2b", "tiny-cogvideox1.5"):
        assert defaults[name]["max_sequence_length"] == COGVIDEOX_TEXT_LEN
    for name in ("tiny-wan", "tiny-wan2.2"):
        assert defaults[name]["max_sequence_length"] == WAN_TEXT_LEN
    assert defaults["tiny-hunyuanvideo"]["prompt_template"] == HUNYUAN_PROMPT_TEMPLATE
    assert DEFAULT_BUILTIN == "yardstick"
    assert BUILTIN_MODELS[DEFAULT_BUILTIN].build().transformer.config.use_rotary_positional_embeddings


@pytest.mark.parametrize("name", BUILTINS)
def test_builtin_defaults_run_the_pipeline(name):
    # The defaults' own keys (templates, text lengths, guidance) at a small size (80 x 112 x 9 frames, or the
    # model's own where smaller: the yardstick's 64 x 64) and one step, to stay fast.
    pipe, spec = load_builtin(name)
    small = {key: min(spec.defaults[key], size) for key, size in (("height", 80), ("width", 112), ("num_frames", 9))}
    kwargs = dict(spec.defaults, num_inference_steps=1, **small)
    video = pipe(prompt="a red ball rolling", output_type="pt", generator=torch.Generator().manual_seed(0),
                 **kwargs).frames
    assert video.shape == (1, small["num_frames"], 3, small["height"], small["width"])
    assert torch.isfinite(video).all()


def test_unknown_builtin_lists_the_names():
    with pytest.raises(ValueError, match="yardstick, tiny-cogvideox.*tiny-wan2.2"):
        load_builtin("tiny-sora")


def test_overrides_apply_and_parse_types():
    cfg = load_model_config("cogvideox-5b", [
        "generate.num_inference_steps=30", "generate.guidance_scale=4.5", "methods.spatial.frames=2",
        "methods.wide.method=spatial", "methods.wide.frames=3",
    ])
    assert cfg.generate.num_inference_steps == 30 and cfg.generate.guidance_scale == 4.5
    assert cfg.generate.height == 480  # untouched keys keep the file's values
    # schedules are stated for the config's own step count
    assert method_config(cfg, "spatial") == SparseConfig.make(method="spatial", frames=2, warmup_steps=12,
                                                              schedule_steps=30)
    assert method_config(cfg, "wide") == SparseConfig.make(method="spatial", frames=3, schedule_steps=30)
    assert load_model_config("cogvideox-5b").methods.spatial.frames == 1  # the shipped file is unchanged


def test_a_yaml_path_loads(tmp_path):
    cfg = load_model_config("tiny-wan")
    cfg.generate.num_frames = 17
    path = tmp_path / "mine.yaml"
    OmegaConf.save(cfg, path)
    assert load_model_config(path).generate.num_frames == 17
    assert load_model_config(str(path), ["generate.num_frames=33"]).generate.num_frames == 33


@pytest.mark.parametrize("name, match", [
    ("cogvideox-7b", r"unknown model config 'cogvideox-7b'; known: .*cogvideox-5b.*tiny-cogvideox"),
    ("/no/such/config.yaml", "does not exist"),
])
def test_bad_names(name, match):
    with pytest.raises(ValueError, match=match):
        load_model_config(name)


@pytest.mark.parametrize("override, match", [
    ("generate.num_frames", "not of the form section.key=value"),
    ("generate..height=3", "not of the form section.key=value"),
    ("generat.num_frames=9", "unknown section 'generat'; sections: model, generate, methods"),
    ("generate.num_inference_step=10", r"takes no argument\(s\) \['num_inference_step'\].*num_inference_steps"),
    ("generate.height=abc", "generate.height must be a positive integer; got 'abc'"),
    ("generate.num_frames=0", "generate.num_frames must be a positive integer"),
    ("generate.dtype=float8", "generate.dtype must be one of"),
    ("methods.spatial.frame=2", r"methods.spatial: method 'spatial' has no option 'frame'; its options: frames, "),
    ("methods.spatial.frames=-1", "methods.spatial: frames must be an int >= 0"),
    ("methods.spatial.method=diagonal", "methods.spatial: method must be one of"),
    ("methods.dense=null", "methods.dense must be a mapping"),
    ("model=3", "the 'model' section is missing or not a mapping"),
    ("generate.prompt=a_cat", "generate.prompt is given per call, not by the config"),
])
def test_bad_overrides_say_what_is_allowed(override, match):
    with pytest.raises(ModelConfigError, match=match):
        load_model_config("cogvideox-5b", [override])


def test_unknown_method_lists_the_configs_methods():
    cfg = load_model_config("hunyuanvideo")
    with pytest.raises(ValueError, match="unknown method 'voxel'; this model config defines: dense, spatial, temporal"):
        method_config(cfg, "voxel")


def test_config_without_dense_is_refused(tmp_path):
    cfg = load_model_config("tiny-cogvideox")
    del cfg.methods["dense"]
    path = tmp_path / "no_dense.yaml"
    OmegaConf.save(cfg, path)
    with pytest.raises(ValueError, match="methods must include 'dense'"):
        load_model_config(path)


def test_warmup_covering_every_step_warns(caplog):
    cfg = load_model_config("cogvideox-5b", ["generate.num_inference_steps=10"])
    with caplog.at_level(logging.WARNING, logger="vidsparse.app.configs"):
        method_config(cfg, "spatial")
    assert "every step runs dense" in caplog.text


def test_scheduler_settings_apply_over_the_pipelines_own():
    pipe, _ = load_builtin("tiny-wan")
    assert pipe.scheduler.config.flow_shift == 3.0
    apply_scheduler_config(pipe, load_model_config("tiny-wan", ["model.scheduler.flow_shift=5.0"]))
    assert pipe.scheduler.config.flow_shift == 5.0
    assert pipe.scheduler.config.use_flow_sigmas  # the rest of the scheduler's config is kept
    with pytest.raises(ValueError, match=r"UniPCMultistepScheduler has no setting\(s\) \['shift'\]"):
        apply_scheduler_config(pipe, load_model_config("tiny-wan", ["model.scheduler.shift=5.0"]))


@pytest.mark.parametrize(("override", "match"), [
    ("methods.spatail.frames=2", r"has no method 'spatail'; its methods: dense, spatial, temporal, profile, delta, hybrid, dynamic \(valid keys "
                                 r"include methods.dense.method, methods.spatial.method, methods.spatial.frames"),
    ("model.pipline=CogVideoXPipeline", "has no key model.pipline; valid keys: model.pipeline, model.transformer"),
])
def test_an_override_that_names_no_key_lists_the_valid_keys(override, match):
    with pytest.raises(ModelConfigError, match=match):
        load_model_config("cogvideox-5b", [override])


def test_an_override_can_define_a_new_method_by_its_method_field():
    cfg = load_model_config("cogvideox-5b", ["methods.wide.method=spatial", "methods.wide.frames=3"])
    assert method_config(cfg, "wide") == SparseConfig.make(method="spatial", frames=3, schedule_steps=50)
