"""LTX-Video, LTX-2 and HunyuanVideo-1.5 on tiny offline models built from the configs below: the token layout each
adapter reads is the model's own, apply/remove restore the stock processors, the dense preset equals stock bit for
bit, and a sparse step equals the same masks through the library's reference attention.

Every tiny model has 2 layers of 2 heads x 64 and the post-patchify grid 3 x 5 x 7 (105 video tokens); LTX takes
them flattened with the grid as forward arguments.
"""

import pytest
import torch
from diffusers import HunyuanVideo15Transformer3DModel, LTX2VideoTransformer3DModel, LTXVideoTransformer3DModel
from diffusers.models.embeddings import get_1d_rotary_pos_embed

import vidsparse
from vidsparse import SparseConfig
from vidsparse.core.layout import SPATIAL_MAJOR
from vidsparse.pipelines.processors import SparseAttnProcessor

GRID = (3, 5, 7)
N_VIDEO = 3 * 5 * 7
SMALL = dict(q_block=16, k_block=16)  # several blocks over the 105 video tokens
SPATIAL = SparseConfig.make(method="spatial", frames=0, **SMALL)
# every frame: density 1 through the kernel, in blocks of 32 (fewer, larger blocks are quicker under the interpreter)
FULL = SparseConfig.make(method="spatial", frames=64, q_block=32, k_block=32)


def _seeded(seed, build):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return build().eval()


def _gen(seed):
    return torch.Generator().manual_seed(seed)


# ---- tiny models and their forward inputs ------------------------------------------------------------------------


def ltx_transformer(seed=0):
    return _seeded(seed, lambda: LTXVideoTransformer3DModel(
        in_channels=8, out_channels=8, num_attention_heads=2, attention_head_dim=64, cross_attention_dim=128,
        num_layers=2, caption_channels=16,
    ))


def ltx_inputs(model, batch=2, seed=0):
    """As `LTXPipeline` calls the transformer: packed latents [B, F*H*W, C], latent grid sizes, RoPE scale."""
    gen = _gen(seed)
    mask = torch.ones(batch, 6)
    mask[-1, 4:] = 0
    return {
        "hidden_states": torch.randn(batch, N_VIDEO, 8, generator=gen),
        "encoder_hidden_states": torch.randn(batch, 6, 16, generator=gen),
        "timestep": torch.randint(0, 1000, (batch,), generator=gen),
        "encoder_attention_mask": mask,
        "num_frames": GRID[0], "height": GRID[1], "width": GRID[2],
        "rope_interpolation_scale": (8 / 25, 32, 32),
    }


def ltx2_transformer(seed=0, **variant):
    """LTX-2 (interleaved RoPE); with `variant`, e.g. LTX-2.3's split RoPE, per-head gates and the perturbed
    (STG) processors."""
    return _seeded(seed, lambda: LTX2VideoTransformer3DModel(
        in_channels=8, out_channels=8, num_attention_heads=2, attention_head_dim=64, cross_attention_dim=128,
        audio_in_channels=8, audio_out_channels=8, audio_num_attention_heads=2, audio_attention_head_dim=16,
        audio_cross_attention_dim=32, num_layers=2, caption_channels=16, **variant,
    ))


def ltx2_inputs(model, batch=2, seed=0, **extra):
    """As `LTX2Pipeline` calls the transformer: video and audio tokens, text for each, the latent grid sizes."""
    gen = _gen(seed)
    mask = torch.ones(batch, 6)
    mask[-1, 4:] = 0
    timestep = torch.randint(0, 1000, (batch,), generator=gen).float()
    return {
        "hidden_states": torch.randn(batch, N_VIDEO, 8, generator=gen),
        "audio_hidden_states": torch.randn(batch, 6, 8, generator=gen),
        "encoder_hidden_states": torch.randn(batch, 6, 16, generator=gen),
        "audio_encoder_hidden_states": torch.randn(batch, 6, 16, generator=gen),
        "timestep": timestep, "sigma": timestep,
        "encoder_attention_mask": mask, "audio_encoder_attention_mask": mask,
        "num_frames": GRID[0], "height": GRID[1], "width": GRID[2], "audio_num_frames": 6,
        **extra,
    }


def hunyuan15_transformer(seed=0):
    return _seeded(seed, lambda: HunyuanVideo15Transformer3DModel(
        in_channels=9, out_channels=4, num_attention_heads=2, attention_head_dim=64, num_layers=2,
        num_refiner_layers=1, mlp_ratio=2.0, patch_size=2, patch_size_t=1, text_embed_dim=32, text_embed_2_dim=16,
        image_embed_dim=16, rope_axes_dim=(16, 24, 24),
    ))


def hunyuan15_inputs(model, batch=2, seed=0):
    """Text-to-video as the pipeline calls it: [B, C, F, H, W] latents (with the condition channels), MLLM and
    ByT5 text with padding in the last batch element, zero image embeddings (masked: 4 + 5 + 7 = 16 context
    tokens, 4 of them padding everywhere and 6 more in the last element)."""
    gen = _gen(seed)
    mask, mask_2 = torch.ones(batch, 7, dtype=torch.long), torch.ones(batch, 5, dtype=torch.long)
    mask[-1, 4:] = 0
    mask_2[-1, 2:] = 0
    return {
        "hidden_states": torch.randn(batch, 9, GRID[0], 2 * GRID[1], 2 * GRID[2], generator=gen),
        "timestep": torch.randint(0, 1000, (batch,), generator=gen).float(),
        "encoder_hidden_states": torch.randn(batch, 7, 32, generator=gen), "encoder_attention_mask": mask,
        "encoder_hidden_states_2": torch.randn(batch, 5, 16, generator=gen), "encoder_attention_mask_2": mask_2,
        "image_embeds": torch.zeros(batch, 4, 16),
    }


# name -> (model, inputs, the replaced processor keys, the text tokens of the replaced layers)
def _family(name):
    if name == "ltx-video":
        model = ltx_transformer()
        return model, ltx_inputs(model), _ltx_self_attention, 0
    if name == "ltx-2":
        model = ltx2_transformer()
        return model, ltx2_inputs(model), _ltx_self_attention, 0
    if name == "ltx-2.3-stg":  # split RoPE, gates, STG in block 1 for batch element 0 only
        model = ltx2_transformer(rope_type="split", gated_attn=True, audio_gated_attn=True, perturbed_attn=True)
        inputs = ltx2_inputs(model, spatio_temporal_guidance_blocks=[1], perturbation_mask=torch.tensor([0.0, 1.0]))
        return model, inputs, _ltx_self_attention, 0
    model = hunyuan15_transformer()
    return model, hunyuan15_inputs(model), lambda key: key.startswith("transformer_blocks."), 16


def _ltx_self_attention(key):
    return key.endswith(".attn1.processor") and key.startswith("transformer_blocks.")


FAMILIES = ["ltx-video", "ltx-2", "ltx-2.3-stg", "hunyuanvideo-1.5"]


def _run(model, inputs):
    with torch.no_grad():
        return model(**inputs, return_dict=False)[0]


def _rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def _model_positions(model, name):
    """(frame, row, column) of every video token as the model's own RoPE sees it, each [N_VIDEO]."""
    if name == "ltx-video":
        coords = model.rope._prepare_video_coords(1, *GRID, rope_interpolation_scale=None, device="cpu")[0]
        return coords.long().unbind(-1)
    if name.startswith("ltx-2"):
        start = model.rope.prepare_video_coords(1, *GRID, device="cpu")[0, :, :, 0]  # pixel space, [3, N]
        t_scale, h_scale, w_scale = model.config.vae_scale_factors
        # the first latent frame holds one pixel frame (causal VAE): frame t starts at pixel frame 1 + (t - 1) * 8
        frame = torch.where(start[0] > 0, (start[0] * 24.0 - 1) / t_scale + 1, torch.zeros_like(start[0]))
        return frame.round().long(), (start[1] / h_scale).long(), (start[2] / w_scale).long()
    return None  # HunyuanVideo-1.5: compared through its RoPE table below


@pytest.mark.parametrize("name", FAMILIES)
def test_layout_is_the_models_own_and_round_trips(name):
    model, inputs, _, text_len = _family(name)
    with vidsparse.apply(model, "dense") as handle:
        _run(model, inputs)
        runtime = handle.runtimes[0]
        assert runtime.grid == GRID
        layout = runtime.layout(N_VIDEO + text_len, text_len)
    assert layout is not None and (layout.frames, layout.height, layout.width) == GRID
    assert layout.text_range == (None if text_len == 0 else (N_VIDEO, N_VIDEO + text_len))  # context last
    frame, row, col = layout.video_coords()
    positions = _model_positions(model, name)
    if positions is not None:
        for axis, model_axis in zip((frame, row, col), positions):
            assert torch.equal(axis, model_axis)
    else:  # HunyuanVideo-1.5's RoPE table, rebuilt from the layout's positions
        cos, sin = model.rope(inputs["hidden_states"])
        axes = [get_1d_rotary_pos_embed(d, a.float(), 256.0, use_real=True)
                for d, a in zip(model.config.rope_axes_dim, (frame, row, col))]
        assert torch.equal(cos, torch.cat([c for c, _ in axes], 1)) and torch.equal(sin, torch.cat([s for _, s in axes], 1))
    perm, inverse = SPATIAL_MAJOR.permutation(layout), SPATIAL_MAJOR.inverse(layout)
    assert torch.equal(perm[inverse], torch.arange(layout.seq_len))
    assert not torch.equal(perm, torch.arange(layout.seq_len))


@pytest.mark.parametrize("name", FAMILIES)
def test_apply_replaces_the_video_self_attention_and_remove_restores_stock(name):
    model, inputs, replaced, _ = _family(name)
    before = dict(model.attn_processors)
    stock = _run(model, inputs)
    handle = vidsparse.apply(model, SPATIAL.replace(backend="reference"))
    for key, processor in model.attn_processors.items():
        assert isinstance(processor, SparseAttnProcessor) == replaced(key), key
    _run(model, inputs)
    assert handle.report()["layers"] == 2
    handle.remove()
    after = model.attn_processors
    assert after.keys() == before.keys() and all(after[k] is before[k] for k in before)
    assert torch.equal(_run(model, inputs), stock)


@pytest.mark.parametrize("name", FAMILIES)
def test_dense_preset_equals_stock_bit_for_bit(name):
    model, inputs, _, _ = _family(name)
    stock = _run(model, inputs)
    with vidsparse.apply(model, "dense") as handle:
        assert torch.equal(_run(model, inputs), stock)
        report = handle.report()
    assert report["density"] == 1.0 and report["fallbacks"] == [] and report["calls"] > 0


@pytest.mark.parametrize("name", FAMILIES)
def test_density_one_through_the_kernel_equals_stock(name):
    """q, k, v, the padded context keys (HunyuanVideo-1.5) and STG's values (LTX-2.3) as stock, through the kernel."""
    model, inputs, _, _ = _family(name)
    stock = _run(model, inputs)
    with vidsparse.apply(model, FULL) as handle:
        out = _run(model, inputs)
        report = handle.report()
    assert report["sparse_calls"] == report["calls"] > 0 and report["density"] == pytest.approx(1.0)
    assert _rel(out, stock) < 1e-5


@pytest.mark.parametrize("name", FAMILIES)
def test_sparse_step_equals_the_reference_masked_attention(name):
    model, inputs, _, _ = _family(name)
    stock = _run(model, inputs)
    with vidsparse.apply(model, SPATIAL) as handle:
        kernel_out = _run(model, inputs)
        density = handle.report()["density"]
    with vidsparse.apply(model, SPATIAL.replace(backend="reference")) as handle:
        reference_out = _run(model, inputs)
        assert handle.report()["fallbacks"] == []
    assert 0.0 < density < 1.0
    assert _rel(kernel_out, reference_out) < 1e-5
    assert _rel(kernel_out, stock) > 1e-4  # the pattern really dropped keys


def test_ltx_video_coords_without_the_grid_run_dense_and_say_so():
    """`LTXConditionPipeline` passes `video_coords` alone (its conditioning tokens are appended to the grid)."""
    model = ltx_transformer()
    inputs = ltx_inputs(model)
    coords = model.rope._prepare_video_coords(2, *GRID, rope_interpolation_scale=None, device="cpu")
    given = {k: v for k, v in inputs.items() if k not in ("num_frames", "height", "width", "rope_interpolation_scale")}
    given["video_coords"] = coords.transpose(1, 2) * torch.tensor([8.0, 32.0, 32.0]).view(1, 3, 1)
    stock = _run(model, given)
    with vidsparse.apply(model, SPATIAL) as handle:
        assert torch.equal(_run(model, given), stock)
        report = handle.report()
    assert report["sparse_calls"] == 0
    assert report["fallbacks"] == [f"the latent grid None does not match {N_VIDEO} video tokens: dense attention"]


def test_ltx2_video_self_attention_mask_runs_dense():
    model = ltx2_transformer()
    inputs = ltx2_inputs(model, video_self_attention_mask=torch.ones(2, N_VIDEO, N_VIDEO))
    stock = _run(model, inputs)
    with vidsparse.apply(model, SPATIAL) as handle:
        assert torch.equal(_run(model, inputs), stock)
        report = handle.report()
    assert report["calls"] == 2 and report["sparse_calls"] == 0 and report["density"] == 1.0


def test_the_families_are_listed_as_supported():
    assert {"LTXVideoTransformer3DModel", "LTX2VideoTransformer3DModel",
            "HunyuanVideo15Transformer3DModel"} <= set(vidsparse.pipelines.supported_classes())


def test_ltx2_stg_layers_perturbed_everywhere_skip_attention():
    """STG with no perturbation mask perturbs every batch element: the values stand in for block 1's attention."""
    model = ltx2_transformer(perturbed_attn=True)
    inputs = ltx2_inputs(model, spatio_temporal_guidance_blocks=[1])
    stock = _run(model, inputs)
    with vidsparse.apply(model, FULL) as handle:
        out = _run(model, inputs)
        report = handle.report()
    assert report["calls"] == report["sparse_calls"] == 1  # block 0 only
    assert _rel(out, stock) < 1e-5


@pytest.mark.parametrize(("config", "steps"), [("ltx-video", 50), ("ltx-2", 30), ("hunyuanvideo-1.5-480p", 50),
                                                ("hunyuanvideo-1.5-720p", 50)])
def test_presets_name_a_supported_transformer_at_the_published_steps(config, steps):
    from vidsparse.app.configs import load_model_config

    cfg = load_model_config(config)
    assert cfg.model.transformer in vidsparse.pipelines.supported_classes()
    assert cfg.generate.num_inference_steps == steps
