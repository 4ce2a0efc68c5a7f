"""The tiny offline models of tiny_models.py run stock: transformer forwards, and pipelines with CFG.

These pin the facts that the sparse-attention tests build on: which attention modules each transformer has and
which processor each one uses, the post-patchify grid of the default inputs, how each pipeline batches its CFG
branches, that CogVideoX's rotary embedding in `cogvideox_inputs` is the pipeline's own, that HunyuanVideo ignores
padded text, and that two generations with one seed agree exactly.
"""

import pytest
import torch
from tiny_models import (
    COGVIDEOX_TEXT_LEN,
    HUNYUAN_PROMPT_TEMPLATE,
    WAN_TEXT_LEN,
    cogvideox_inputs,
    cogvideox_pipeline,
    cogvideox_rotary_emb,
    cogvideox_transformer,
    hunyuan_inputs,
    hunyuan_pipeline,
    hunyuan_transformer,
    wan_inputs,
    wan_pipeline,
    wan_transformer,
)

N_VIDEO = 3 * 5 * 7  # video tokens of the post-patchify grid (T, H, W) = (3, 5, 7) used throughout
SIZE = {"height": 80, "width": 112}  # 8x VAE -> 10 x 14 latent pixels -> 5 x 7 after 2 x 2 patches
PROMPTS = {"prompt": "a red circle", "negative_prompt": "blue"}


def _generator():
    return torch.Generator().manual_seed(0)


def _record_calls(model):
    """Record the keyword arguments of every forward of `model`; returns (calls, hook handle)."""
    calls = []
    handle = model.register_forward_pre_hook(lambda module, args, kwargs: calls.append(kwargs), with_kwargs=True)
    return calls, handle


def _processor_names(model):
    return {name: type(processor).__name__ for name, processor in model.attn_processors.items()}


# ---- builders --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "build",
    [lambda seed: cogvideox_transformer("5b", seed=seed), hunyuan_transformer, wan_transformer],
    ids=["cog", "hy", "wan"],
)
def test_builders_are_seeded_and_leave_global_rng_alone(build):
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    a, b, c = build(0), build(0), build(1)
    assert torch.equal(torch.rand(1), expected_next)
    assert not a.training
    for (name, pa), pb, pc in zip(a.state_dict().items(), b.state_dict().values(), c.state_dict().values()):
        assert pa.dtype == torch.float32, name
        assert torch.equal(pa, pb), name
    assert any(not torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters()))


def test_attention_modules_and_stock_processors():
    assert _processor_names(cogvideox_transformer("5b")) == {
        f"transformer_blocks.{i}.attn1.processor": "CogVideoXAttnProcessor2_0" for i in range(2)
    }
    assert _processor_names(hunyuan_transformer()) == {
        "context_embedder.token_refiner.refiner_blocks.0.attn.processor": "AttnProcessor2_0",
        "transformer_blocks.0.attn.processor": "HunyuanVideoAttnProcessor2_0",
        "single_transformer_blocks.0.attn.processor": "HunyuanVideoAttnProcessor2_0",
    }
    assert _processor_names(wan_transformer()) == {
        f"blocks.{i}.attn{j}.processor": "WanAttnProcessor" for i in range(2) for j in (1, 2)
    }


# ---- transformer forwards --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["2b", "5b", "1.5"])
def test_cogvideox_transformer_forward(variant):
    model = cogvideox_transformer(variant)
    kwargs = cogvideox_inputs(model)
    hidden_states = kwargs["hidden_states"]  # [B, F, C, H, W]
    p_t = model.config.patch_size_t or 1
    assert hidden_states.shape == (2, 3 * p_t, 4, 10, 14)
    assert kwargs["encoder_hidden_states"].shape == (2, COGVIDEOX_TEXT_LEN, 32)
    rotary = kwargs["image_rotary_emb"]
    if variant == "2b":
        assert rotary is None
    else:
        assert [t.shape for t in rotary] == [(N_VIDEO, 64)] * 2
    with torch.no_grad():
        out = model(**kwargs, return_dict=False)[0]
    assert out.shape == hidden_states.shape
    assert torch.isfinite(out).all()


def test_cogvideox_15_inputs_need_whole_temporal_patches():
    with pytest.raises(ValueError, match="multiple of patch_size_t"):
        cogvideox_inputs(cogvideox_transformer("1.5"), frames=5)


def test_hunyuan_transformer_forward_ignores_padded_text():
    model = hunyuan_transformer()
    kwargs = hunyuan_inputs(model, pad=3)
    assert kwargs["encoder_attention_mask"].tolist() == [[1] * 7, [1] * 4 + [0] * 3]
    with torch.no_grad():
        out = model(**kwargs, return_dict=False)[0]
    assert out.shape == kwargs["hidden_states"].shape == (2, 4, 3, 10, 14)  # [B, C, F, H, W]
    assert torch.isfinite(out).all()

    # New content in batch 1's padded tokens must not reach its video; new content in a valid token must.
    padded, valid = dict(kwargs), dict(kwargs)
    padded["encoder_hidden_states"] = kwargs["encoder_hidden_states"].clone()
    padded["encoder_hidden_states"][1, -3:] += 10.0
    valid["encoder_hidden_states"] = kwargs["encoder_hidden_states"].clone()
    valid["encoder_hidden_states"][1, 0] += 10.0
    with torch.no_grad():
        out_padded = model(**padded, return_dict=False)[0]
        out_valid = model(**valid, return_dict=False)[0]
    torch.testing.assert_close(out_padded, out, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(out_valid[1], out[1], rtol=1e-3, atol=1e-3)


def test_wan_transformer_forward():
    model = wan_transformer()
    kwargs = wan_inputs(model)
    with torch.no_grad():
        out = model(**kwargs, return_dict=False)[0]
    assert out.shape == kwargs["hidden_states"].shape == (2, 4, 3, 10, 14)  # [B, C, F, H, W]
    assert torch.isfinite(out).all()


# ---- pipelines with CFG ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["2b", "5b", "1.5"])
def test_cogvideox_pipeline_cfg(variant):
    pipe = cogvideox_pipeline(variant)
    num_frames = 17 if variant == "1.5" else 9  # 1.5: 5 latent frames, padded to 6 for the 2-frame temporal patch
    calls, handle = _record_calls(pipe.transformer)
    frames = pipe(
        **PROMPTS,
        num_inference_steps=2,
        guidance_scale=5.0,
        num_frames=num_frames,
        max_sequence_length=COGVIDEOX_TEXT_LEN,
        output_type="pt",
        generator=_generator(),
        **SIZE,
    ).frames
    handle.remove()

    assert frames.shape == (1, num_frames, 3, 80, 112)
    assert torch.isfinite(frames).all()
    # CFG: one forward per step, negative and positive prompts concatenated along the batch.
    assert len(calls) == 2
    latent_frames = 6 if variant == "1.5" else 3
    for kwargs in calls:
        assert kwargs["hidden_states"].shape == (2, latent_frames, 4, 10, 14)
        assert kwargs["encoder_hidden_states"].shape == (2, COGVIDEOX_TEXT_LEN, 32)
    # The rotary embedding that cogvideox_inputs builds is exactly the one the pipeline passes.
    expected = cogvideox_rotary_emb(pipe.transformer, latent_frames, 10, 14)
    if expected is None:
        assert calls[0]["image_rotary_emb"] is None
    else:
        for got, want in zip(calls[0]["image_rotary_emb"], expected):
            assert torch.equal(got, want)


def test_hunyuan_pipeline_true_cfg():
    pipe = hunyuan_pipeline()
    calls, handle = _record_calls(pipe.transformer)
    frames = pipe(
        **PROMPTS,
        true_cfg_scale=5.0,
        num_inference_steps=2,
        num_frames=9,
        prompt_template=HUNYUAN_PROMPT_TEMPLATE,
        max_sequence_length=16,
        output_type="pt",
        generator=_generator(),
        **SIZE,
    ).frames
    handle.remove()

    assert frames.shape == (1, 9, 3, 80, 112)
    assert torch.isfinite(frames).all()
    # True CFG: two batch-1 forwards per step, positive then negative; text is right-padded to 16 tokens.
    assert len(calls) == 4
    valid_tokens = [int(kwargs["encoder_attention_mask"].sum()) for kwargs in calls]
    assert valid_tokens == [3, 1, 3, 1]  # "a red circle", "blue" after the template's 5 cropped tokens
    for kwargs in calls:
        assert kwargs["hidden_states"].shape == (1, 4, 3, 10, 14)
        assert kwargs["encoder_hidden_states"].shape == (1, 16, 32)


@pytest.mark.parametrize("two_transformers", [False, True], ids=["wan2.1", "wan2.2"])
def test_wan_pipeline_cfg(two_transformers):
    pipe = wan_pipeline(two_transformers=two_transformers)
    models = [pipe.transformer] + ([pipe.transformer_2] if two_transformers else [])
    recorders = [_record_calls(model) for model in models]
    frames = pipe(
        **PROMPTS,
        num_inference_steps=2,
        guidance_scale=5.0,
        num_frames=9,
        max_sequence_length=WAN_TEXT_LEN,
        output_type="pt",
        generator=_generator(),
        **SIZE,
    ).frames
    for _, handle in recorders:
        handle.remove()

    assert frames.shape == (1, 9, 3, 80, 112)
    assert torch.isfinite(frames).all()
    # CFG: two batch-1 forwards per step; Wan 2.2 hands the second (low-noise) step to transformer_2.
    counts = [len(calls) for calls, _ in recorders]
    assert counts == ([2, 2] if two_transformers else [4])
    for calls, _ in recorders:
        for kwargs in calls:
            assert kwargs["hidden_states"].shape == (1, 4, 3, 10, 14)
            assert kwargs["encoder_hidden_states"].shape == (1, WAN_TEXT_LEN, 32)


@pytest.mark.parametrize(
    "build, call",
    [
        (lambda: cogvideox_pipeline("5b"), {"guidance_scale": 5.0, "max_sequence_length": COGVIDEOX_TEXT_LEN}),
        (
            hunyuan_pipeline,
            {"true_cfg_scale": 5.0, "prompt_template": HUNYUAN_PROMPT_TEMPLATE, "max_sequence_length": 16},
        ),
        (lambda: wan_pipeline(two_transformers=True), {"guidance_scale": 5.0, "max_sequence_length": WAN_TEXT_LEN}),
    ],
    ids=["cog", "hy", "wan2.2"],
)
def test_two_consecutive_generations_agree(build, call):
    pipe = build()
    latents = [
        pipe(
            **PROMPTS, **call, **SIZE, num_inference_steps=2, num_frames=9, output_type="latent", generator=_generator()
        ).frames
        for _ in range(2)
    ]
    assert latents[0].numel() == 4 * 3 * 10 * 14  # 4 channels x 3 latent frames x 10 x 14 latent pixels
    assert torch.equal(latents[0], latents[1])
