"""Tiny offline pipelines of the families of issue 22, for `vidsparse generate --model <folder>` (test fixtures).

Each is the family's diffusers pipeline with every component tiny and random: the transformer of
tests/test_families_a.py or test_families_b.py (2 heads x 64), a tiny VAE, a tiny T5 / UMT5 encoder
(`vidsparse.app.models.tiny`'s) and the word-level tokenizer of the built-in models; nothing is downloaded.
`FAMILY_PIPELINES` maps a name to (builder, model config, generate flags that fit the tiny VAE).

The families without one, and why (tests/test_generate_families.py checks the first two):
- Wan2.1 image-to-video and Wan2.2-Animate: their pipelines require an input image (and pose and face videos),
  which `vidsparse generate` does not pass; `generate` refuses them by name.
- Cosmos: `CosmosTextToWorldPipeline` builds NVIDIA's safety checker (the `cosmos_guardrail` package, which
  downloads its own models) whenever none is given, and refuses to run without one; the transformer's published
  padding-mask channel also needs torchvision.
- LTX-2: its text encoder is a multimodal Gemma 3 (`Gemma3ForConditionalGeneration`, vision tower included), with
  LTX-2's text connectors, audio VAE and vocoder beside it; tiny versions of all five are possible but not built
  here. Its transformer runs in tests/test_families_b.py and in `vidsparse bench --dry-run`.
"""

from __future__ import annotations

import torch
from diffusers import (
    AutoencoderKLLTXVideo,
    AutoencoderKLMochi,
    AutoencoderKLWan,
    FlowMatchEulerDiscreteScheduler,
    LTXPipeline,
    MochiPipeline,
    SkyReelsV2DiffusionForcingPipeline,
    UniPCMultistepScheduler,
    WanAnimatePipeline,
    WanImageToVideoPipeline,
    WanVACEPipeline,
)

from vidsparse.app.models.tiny import _seeded, _t5_fields, word_tokenizer
from vidsparse.yardstick.wordlevel import BOS_ID, EOS_ID

__all__ = ["FAMILY_PIPELINES", "REFUSED_PIPELINES", "wan_i2v_pipeline"]


def _t5(kind: str = "t5"):
    from transformers import T5Config, T5EncoderModel, UMT5Config, UMT5EncoderModel

    if kind == "umt5":
        return _seeded(0, lambda: UMT5EncoderModel(UMT5Config(**_t5_fields())))
    return _seeded(0, lambda: T5EncoderModel(T5Config(**_t5_fields())))


def _wan_vae():
    return _seeded(0, lambda: AutoencoderKLWan(base_dim=8, z_dim=4, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                                               temperal_downsample=[False, True, True], latents_mean=[0.0] * 4,
                                               latents_std=[1.0] * 4))


def _wan_fields(**extra) -> dict:
    return dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=64, text_dim=32, freq_dim=32,
                ffn_dim=64, num_layers=2, rope_max_seq_len=64, in_channels=4, out_channels=4, **extra)


def _unipc():
    return UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)


def ltx_pipeline() -> LTXPipeline:
    """LTX-Video: the tiny transformer of test_families_b (8 latent channels), a VAE of 8x spatial and 4x temporal
    compression (two scaling blocks), T5."""
    from diffusers import LTXVideoTransformer3DModel

    transformer = _seeded(0, lambda: LTXVideoTransformer3DModel(
        in_channels=8, out_channels=8, num_attention_heads=2, attention_head_dim=64, cross_attention_dim=128,
        num_layers=2, caption_channels=32))
    vae = _seeded(0, lambda: AutoencoderKLLTXVideo(
        latent_channels=8, block_out_channels=(8, 8, 8, 8), spatio_temporal_scaling=(True, True, True, False),
        layers_per_block=(1, 1, 1, 1, 1), patch_size=1, patch_size_t=1, encoder_causal=True, decoder_causal=False))
    return LTXPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=_t5(),
                       tokenizer=word_tokenizer("$A </s>"), transformer=transformer)


def mochi_pipeline() -> MochiPipeline:
    """Mochi: the tiny joint-attention transformer (12 latent channels, 16 text tokens), Mochi's VAE (8x spatial,
    6x temporal) at 32 channels, T5."""
    from diffusers import MochiTransformer3DModel

    transformer = _seeded(0, lambda: MochiTransformer3DModel(
        patch_size=2, num_attention_heads=2, attention_head_dim=64, num_layers=2, pooled_projection_dim=16,
        in_channels=12, text_embed_dim=32, time_embed_dim=32, max_sequence_length=16))
    vae = _seeded(0, lambda: AutoencoderKLMochi(
        latent_channels=12, out_channels=3, encoder_block_out_channels=(32, 32, 32, 32),
        decoder_block_out_channels=(32, 32, 32, 32), layers_per_block=(1, 1, 1, 1, 1)))
    return MochiPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=_t5(),
                         tokenizer=word_tokenizer("$A </s>"), transformer=transformer)


def skyreels_pipeline() -> SkyReelsV2DiffusionForcingPipeline:
    """SkyReels-V2 diffusion forcing: the tiny Wan-architecture transformer, Wan's VAE and UMT5, UniPC."""
    from diffusers import SkyReelsV2Transformer3DModel

    transformer = _seeded(0, lambda: SkyReelsV2Transformer3DModel(**_wan_fields()))
    return SkyReelsV2DiffusionForcingPipeline(tokenizer=word_tokenizer("$A </s>"), text_encoder=_t5("umt5"),
                                              transformer=transformer, vae=_wan_vae(), scheduler=_unipc())


def wan_vace_pipeline() -> WanVACEPipeline:
    """Wan-VACE: the tiny transformer with two control blocks over 4 x 2 + 64 control channels (the inactive and
    reactive video latents and the 8 x 8 mask pixels of each latent pixel, as WanVACEPipeline prepares them)."""
    from diffusers import WanVACETransformer3DModel

    transformer = _seeded(0, lambda: WanVACETransformer3DModel(**_wan_fields(vace_layers=[0, 1],
                                                                             vace_in_channels=4 * 2 + 64)))
    return WanVACEPipeline(tokenizer=word_tokenizer("$A </s>"), text_encoder=_t5("umt5"), vae=_wan_vae(),
                           scheduler=_unipc(), transformer=transformer)


def wan_i2v_pipeline() -> WanImageToVideoPipeline:
    """Wan image-to-video without the CLIP image encoder (Wan 2.2's I2V has none): only `generate`'s refusal runs."""
    from diffusers import WanTransformer3DModel

    transformer = _seeded(0, lambda: WanTransformer3DModel(**{**_wan_fields(), "in_channels": 12}))
    return WanImageToVideoPipeline(tokenizer=word_tokenizer("$A </s>"), text_encoder=_t5("umt5"), vae=_wan_vae(),
                                   scheduler=_unipc(), transformer=transformer)

def hunyuan15_pipeline():
    """HunyuanVideo-1.5 text-to-video: the tiny transformer of test_families_b (patch 1), a VAE of 4x spatial and 2x
    temporal compression, a tiny Qwen2.5-VL text model behind the word tokenizer with a plain chat template (the
    pipeline formats every prompt as a chat, pads it to 1,108 tokens and crops the first 108), ByT5's byte tokenizer
    (offline by construction) with a tiny T5, and CFG through the pipeline's guider."""
    from diffusers import AutoencoderKLHunyuanVideo15, HunyuanVideo15Pipeline, HunyuanVideo15Transformer3DModel
    from diffusers.guiders import ClassifierFreeGuidance
    from transformers import ByT5Tokenizer, Qwen2_5_VLTextConfig, Qwen2_5_VLTextModel, T5Config, T5EncoderModel

    transformer = _seeded(0, lambda: HunyuanVideo15Transformer3DModel(
        in_channels=9, out_channels=4, num_attention_heads=2, attention_head_dim=64, num_layers=2,
        num_refiner_layers=1, mlp_ratio=2.0, patch_size=1, patch_size_t=1, text_embed_dim=32, text_embed_2_dim=32,
        image_embed_dim=16, rope_axes_dim=(16, 24, 24), target_size=32, task_type="t2v"))
    vae = _seeded(0, lambda: AutoencoderKLHunyuanVideo15(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 16), layers_per_block=1,
        spatial_compression_ratio=4, temporal_compression_ratio=2, downsample_match_channel=False,
        upsample_match_channel=False))
    qwen = Qwen2_5_VLTextConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
                                num_key_value_heads=2, vocab_size=len(word_tokenizer().get_vocab()),
                                bos_token_id=BOS_ID, eos_token_id=EOS_ID,
                                rope_scaling={"mrope_section": [2, 2, 4], "rope_type": "default", "type": "default"})
    tokenizer = word_tokenizer("$A")
    tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }} {% endfor %}"
    return HunyuanVideo15Pipeline(
        text_encoder=_seeded(0, lambda: Qwen2_5_VLTextModel(qwen)), tokenizer=tokenizer, transformer=transformer,
        vae=vae, scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
        text_encoder_2=_seeded(0, lambda: T5EncoderModel(T5Config(**{**_t5_fields(), "vocab_size": 384}))),
        tokenizer_2=ByT5Tokenizer(), guider=ClassifierFreeGuidance(guidance_scale=5.0))



# name -> (builder, model config, generate flags: options, then overrides); 9 frames of 64 x 96 make a 3 x 4 x 6 grid of 2 x 2 patches over
# 8x latents (LTX: patch 1, so 3 x 8 x 12)
_SMALL = ["--steps", "2", "--height", "64", "--width", "96", "--frames", "9"]
FAMILY_PIPELINES = {
    "ltx-video": (ltx_pipeline, "ltx-video", _SMALL),
    # 6x temporal: 13 frames are 3 latent frames; the tokenizer's 16 text tokens, as the tiny transformer's
    "mochi-1-preview": (mochi_pipeline, "mochi-1-preview", ["--steps", "2", "--height", "64", "--width", "96",
                                                            "--frames", "13", "generate.max_sequence_length=16"]),
    "skyreels-v2-df-14b-540p": (skyreels_pipeline, "skyreels-v2-df-14b-540p", _SMALL),
    "wan2.1-vace-14b": (wan_vace_pipeline, "wan2.1-vace-14b", _SMALL),
    # 4x spatial, 2x temporal, patch 1: a 5 x 8 x 12 grid before 1,985 context tokens (729 image, 256 glyph, 1,000 text)
    "hunyuanvideo-1.5-480p": (hunyuan15_pipeline, "hunyuanvideo-1.5-480p",
                              ["--steps", "2", "--height", "32", "--width", "48", "--frames", "9"]),
}
# pipeline class -> the call arguments `generate` names as missing
REFUSED_PIPELINES = {WanImageToVideoPipeline: "image", WanAnimatePipeline: "image, pose_video, face_video"}
