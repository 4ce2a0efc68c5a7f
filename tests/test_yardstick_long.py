"""The long yardstick: training at a chosen size uses the pipeline's own RoPE, the built-in loads its shipped weights
with the right shapes and runs at a reduced grid, its config's presets parse, and its pattern file fits it.

The weights and the pattern file come from one GPU session (`yardstick/long_session.sh`); until they are committed,
the tests that need them skip and say so.
"""

import json

import pytest
import torch
from safetensors import safe_open

from vidsparse import SparseConfig
from vidsparse.app.configs import call_kwargs, load_model_config, method_config, resolve_patterns
from vidsparse.app.models import BUILTIN_MODELS, DEFAULT_BUILTIN, load_builtin
from vidsparse.yardstick import (
    GENERATE_LONG,
    LONG_WEIGHTS_DIR,
    WEIGHTS_DIR,
    build_components,
    load_yardstick,
)

WEIGHTS = LONG_WEIGHTS_DIR / "transformer" / "diffusion_pytorch_model.safetensors"
PATTERNS = LONG_WEIGHTS_DIR.parent.parent / "search" / "patterns" / "yardstick-long.safetensors"
SMALL = WEIGHTS_DIR / "transformer" / "diffusion_pytorch_model.safetensors"
needs_weights = pytest.mark.skipif(
    not WEIGHTS.exists(), reason=f"{WEIGHTS} is not committed yet: the GPU session yardstick/long_session.sh writes it"
)
needs_patterns = pytest.mark.skipif(
    not PATTERNS.exists() or not WEIGHTS.exists(),
    reason=f"{PATTERNS.name} or the long weights are not committed yet: yardstick/long_session.sh writes them",
)


def test_training_uses_the_pipelines_rope_at_the_long_size():
    """At 16 x 128 x 128 the pipeline's RoPE (base grid: the transformer config's sample sizes) is the one training
    feeds the transformer, and its positions are 0, 1, ..., 31 along each axis, as the small model's 0 ... 15."""
    from diffusers import CogVideoXPipeline
    from diffusers.pipelines.cogvideo.pipeline_cogvideox import get_resize_crop_region_for_grid

    from vidsparse.yardstick.train import _rotary_emb

    components = build_components(0, 16, 128, 128)
    config = components["transformer"].config
    assert (config.sample_frames, config.sample_height, config.sample_width) == (16, 64, 64)
    pipe = CogVideoXPipeline(**components)
    cos, sin = pipe._prepare_rotary_positional_embeddings(128, 128, 16, torch.device("cpu"))
    mine = _rotary_emb(components["transformer"], 16, 64, 64)
    assert cos.shape == (16 * 32 * 32, 64)
    assert torch.equal(cos, mine[0]) and torch.equal(sin, mine[1])
    assert get_resize_crop_region_for_grid((32, 32), 32, 32) == ((0, 0), (32, 32))  # integer positions, no rescale


def test_training_at_a_chosen_size_writes_that_size(tmp_path):
    from vidsparse.yardstick.train import main

    main(["--out", str(tmp_path / "run"), "--steps", "1", "--batch", "1", "--workers", "0", "--frames", "4",
          "--height", "32", "--width", "32", "--init", str(SMALL)])
    trained = tmp_path / "run" / "weights" / "transformer"
    config = json.loads((trained / "config.json").read_text())
    assert (config["sample_frames"], config["sample_height"], config["sample_width"]) == (4, 16, 16)
    assert json.loads((tmp_path / "run" / "train.json").read_text())["frames"] == 4
    # A transformer-only folder (the long yardstick's layout) loads with the shipped yardstick's other components.
    main(["--assemble", str(trained / "diffusion_pytorch_model.safetensors"), "--transformer-only", "--frames", "4",
          "--height", "32", "--width", "32", "--out", str(tmp_path / "long")])
    assert sorted(p.name for p in (tmp_path / "long").iterdir()) == ["transformer"]
    pipe = load_yardstick(tmp_path / "long")
    assert pipe.transformer.config.sample_frames == 4 and pipe.text_encoder.config.d_model == 128
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path), "--height", "30"])


def test_the_long_builtin_is_registered_for_gpu_runs_and_the_small_one_stays_the_default():
    assert DEFAULT_BUILTIN == "yardstick"
    assert "GPU" in BUILTIN_MODELS["yardstick-long"].description
    assert BUILTIN_MODELS["yardstick-long"].defaults == GENERATE_LONG
    assert (GENERATE_LONG["num_frames"], GENERATE_LONG["height"], GENERATE_LONG["width"]) == (16, 128, 128)


def test_the_configs_presets_parse_like_the_yardsticks():
    cfg, small = load_model_config("yardstick-long"), load_model_config("yardstick")
    assert list(cfg.methods) == list(small.methods)
    assert call_kwargs(cfg) == GENERATE_LONG and cfg.model.builtin == "yardstick-long"
    for name in cfg.methods:
        sparse = method_config(cfg, name)
        assert isinstance(sparse, SparseConfig) and sparse.method == small.methods[name].method
        assert sparse.warmup_steps < cfg.generate.num_inference_steps
        if name != "dense":  # the same warm-up as the small yardstick's presets
            assert sparse.warmup_steps == method_config(small, name).warmup_steps
        if "patterns" in cfg.methods[name]:
            assert cfg.methods[name].patterns == "yardstick-long"
    hybrid = method_config(cfg, "hybrid")
    assert hybrid.refresh_steps[:2] == (0, 1) and max(hybrid.refresh_steps) < cfg.generate.num_inference_steps
    assert cfg.search.q_block == 128 and len(cfg.search.prompts) == 4


def test_a_missing_long_folder_says_how_to_make_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="--frames 16 --height 128 --width 128"):
        load_yardstick(tmp_path / "nothing", long=True)


@needs_weights
def test_the_builtin_loads_the_shipped_weights_with_the_right_shapes():
    assert WEIGHTS.stat().st_size <= 25e6
    assert sorted(p.name for p in LONG_WEIGHTS_DIR.iterdir()) == ["transformer"]  # the rest is the yardstick's
    with safe_open(str(WEIGHTS), "pt") as long, safe_open(str(SMALL), "pt") as small:
        assert set(long.keys()) == set(small.keys())
        for key in long.keys():
            tensor = long.get_tensor(key)
            assert tensor.dtype == torch.float16, key
            assert tensor.shape == small.get_tensor(key).shape, key
        moved = [key for key in long.keys() if not torch.equal(long.get_tensor(key), small.get_tensor(key))]
        assert len(moved) > len(list(long.keys())) // 2  # fine-tuned, not a copy
    pipe, spec = load_builtin("yardstick-long")
    config = pipe.transformer.config
    assert (config.sample_frames, config.sample_height, config.sample_width) == (16, 64, 64)
    assert (config.num_layers, config.num_attention_heads, config.attention_head_dim) == (8, 4, 64)
    assert config.use_rotary_positional_embeddings and not config.use_learned_positional_embeddings
    assert all(p.dtype == torch.float32 for p in pipe.transformer.parameters())
    assert sum(p.numel() for p in pipe.transformer.parameters()) == 8_030_384
    assert spec.family == "cogvideox" and type(pipe).__name__ == load_model_config("yardstick-long").model.pipeline


@pytest.fixture(scope="module")
def long_pipe():
    pipe = load_yardstick(long=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@needs_weights
def test_a_forward_runs_at_a_reduced_grid(long_pipe):
    """RoPE lets the same weights run at 4 frames of 32 x 32 (a grid of 4 x 8 x 8)."""
    video = long_pipe("a red circle moving right over a gray plain background", output_type="pt",
                      generator=torch.Generator().manual_seed(0),
                      **{**GENERATE_LONG, "num_frames": 4, "height": 32, "width": 32, "num_inference_steps": 2}).frames
    assert video.shape == (1, 4, 3, 32, 32)
    assert torch.isfinite(video).all() and video.std() > 0.01


@needs_patterns
def test_the_pattern_file_fits_the_model_and_runs(long_pipe):
    import vidsparse
    from vidsparse.core.pattern_file import PatternFile

    cfg = load_model_config("yardstick-long")
    assert resolve_patterns(cfg.methods.static.patterns) == PATTERNS
    patterns = PatternFile.load(PATTERNS)
    patterns.check(long_pipe.transformer, 8, 4)
    assert patterns.calibration["layout"][:3] == [16, 32, 32]  # searched at the long size, not the small one's
    handle = vidsparse.apply(long_pipe, {"method": "static", "patterns": str(PATTERNS), "warmup_steps": 0})
    try:
        video = long_pipe("a red circle moving right over a gray plain background", output_type="pt",
                          generator=torch.Generator().manual_seed(0),
                          **{**GENERATE_LONG, "num_frames": 4, "height": 32, "width": 32,
                             "num_inference_steps": 1}).frames
    finally:
        handle.remove()
    assert video.shape == (1, 4, 3, 32, 32) and torch.isfinite(video).all()


@needs_weights
def test_the_sampling_settings_script_checks_every_prompt_and_seed(tmp_path):
    """yardstick/long_settings.py (the measurement behind the long model's CFG 2) at a reduced grid: each setting
    its scheduler's shift and call, every prompt x seed checked, one picture a setting."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent.parent / "yardstick"))
    import long_settings

    long_settings.main(["--device", "cpu", "--out", str(tmp_path), "--frames", "4", "--height", "32", "--width", "32",
                        "--steps-scale", "0.1", "--prompts", "2", "--seeds", "2", "--only", "cfg2",
                        "--only", "cfg6-dynamic-shift3"])
    results = json.loads((tmp_path / "settings.json").read_text())
    assert list(results["settings"]) == ["cfg2", "cfg6-dynamic-shift3"]
    shifted = results["settings"]["cfg6-dynamic-shift3"]
    assert shifted["snr_shift_scale"] == 3.0
    assert shifted["call"] == {"guidance_scale": 6.0, "use_dynamic_cfg": True, "num_inference_steps": 2}
    chosen = results["settings"]["cfg2"]
    assert chosen["snr_shift_scale"] == 1.0 and chosen["call"]["guidance_scale"] == GENERATE_LONG["guidance_scale"]
    for name, r in results["settings"].items():
        assert len(r["checks"]) == r["of"] == 4 and (tmp_path / f"long_samples_{name}.png").is_file()
        assert [c.get("seed", 0) for c in r["checks"]] == [0, 0, 1, 1]
        assert r["present"] == sum(all(c["present"] for c in s["clauses"]) for s in r["checks"])
