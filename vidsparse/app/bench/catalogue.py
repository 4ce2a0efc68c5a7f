"""The benchmark's models: each one's transformer class and generation size come from its shipped YAML config
(`vidsparse/app/configs/<config>.yaml`); what the YAML does not hold (the full-size architecture, the tiny
--dry-run version, the text tokens of self-attention, the smaller published size) is kept here, once per model.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable

import torch

from .inputs import (
    Video, cogvideox_inputs, cosmos_inputs, hunyuan15_inputs, hunyuan_inputs, ltx2_inputs, ltx_inputs, mochi_inputs,
    skyreels_inputs, wan_animate_inputs, wan_i2v_inputs, wan_inputs, wan_vace_inputs,
)

__all__ = ["MODELS", "PIXEL_MULTIPLE", "TINY_VIDEO", "ModelSpec", "Video", "build_transformer"]

# Most models here patch 2 x 2 after their VAE's 8x spatial compression (HunyuanVideo-1.5: 16x, patch 1); LTX's
# VAE compresses 32x (`ModelSpec.pixel_multiple`).
PIXEL_MULTIPLE = 16

TINY_VIDEO = Video(17, 64, 128)  # latent 5 x 8 x 16 -> grid 5 x 4 x 8 = 160 video tokens, 32 a frame


# ---------------------------------------------------------------------------------------------- models


@dataclass(frozen=True)
class ModelSpec:
    """How to build one transformer and feed it one denoising step.

    Attributes:
        name: the benchmark's name of the model (`--models`).
        config_name: its shipped model config (`vidsparse/app/configs/<config_name>.yaml`), which gives the
            transformer class (`model.transformer`), the default generation size (`generate`) and the weights'
            repository (`model.weights`).
        cls_name: the diffusers transformer class, from the model config.
        config: its full-size architecture (the class defaults fill the rest); `tiny` overrides it for --dry-run.
        video, quick_video: the model config's generation size, and the smaller published one (--quick).
        text, tiny_text: (text tokens in self-attention's inputs, of which padding at the end).
        inputs: `(transformer, video, text, batch, device, dtype, generator) -> forward kwargs`.
        steps_timed: default timed forwards per variant.
        source: where the architecture and the size come from.
        tiny_video: the --dry-run size (TINY_VIDEO, larger where the VAE compresses more).
        pixel_multiple: what --height and --width must be multiples of (the VAE's compression times the patch).
    """

    name: str
    config_name: str
    cls_name: str
    config: dict
    tiny: dict
    video: Video
    quick_video: Video
    text: tuple[int, int]
    tiny_text: tuple[int, int]
    inputs: Callable
    steps_timed: int
    source: str
    tiny_video: Video = TINY_VIDEO
    pixel_multiple: int = PIXEL_MULTIPLE


def _from_config(name: str, config_name: str, *, architecture_source: str, **fields) -> ModelSpec:
    """A ModelSpec whose class and size come from the shipped YAML (read as is: validating it imports diffusers)."""
    from importlib import resources

    from omegaconf import OmegaConf

    yaml = OmegaConf.create((resources.files("vidsparse.app.configs") / f"{config_name}.yaml").read_text())
    gen = yaml.generate
    source = f"{architecture_source}; size and class: vidsparse/app/configs/{config_name}.yaml"
    frames = gen.num_frames if "num_frames" in gen else gen.segment_frame_length  # Wan-Animate: one segment
    fields.setdefault("quick_video", Video(frames, gen.height, gen.width))  # no smaller published size
    return ModelSpec(name=name, config_name=config_name, cls_name=yaml.model.transformer,
                     video=Video(frames, gen.height, gen.width), source=source, **fields)


# Wan2.1-T2V-14B's transformer/config.json (below); Wan2.1-I2V-14B, SkyReels-V2-14B and VACE's main blocks share it.
_WAN_14B = {"patch_size": (1, 2, 2), "num_attention_heads": 40, "attention_head_dim": 128, "in_channels": 16,
            "out_channels": 16, "text_dim": 4096, "freq_dim": 256, "ffn_dim": 13824, "num_layers": 40,
            "cross_attn_norm": True, "qk_norm": "rms_norm_across_heads", "eps": 1e-6}
# The tiny Wan-architecture models of tests/test_families_a.py: 2 heads x 64, 2 layers.
_WAN_TINY = {"num_attention_heads": 2, "attention_head_dim": 64, "num_layers": 2, "ffn_dim": 64, "text_dim": 32,
             "freq_dim": 32, "rope_max_seq_len": 64}
_LTX_TINY = {"in_channels": 8, "out_channels": 8, "num_attention_heads": 2, "attention_head_dim": 64,
             "cross_attention_dim": 128, "num_layers": 2, "caption_channels": 16}
# LTX's 32x VAE: 17 x 128 x 256 -> latent and grid 3 x 4 x 8 = 96 tokens
_LTX_TINY_VIDEO = Video(17, 128, 256)

_COGVIDEOX_TINY = {"num_attention_heads": 2, "num_layers": 2, "text_embed_dim": 32, "time_embed_dim": 32,
                   "sample_width": 12, "sample_height": 8, "sample_frames": 17, "max_text_seq_length": 16}

MODELS: dict[str, ModelSpec] = {spec.name: spec for spec in (
    # THUDM/CogVideoX-2b transformer/config.json: 30 heads x 64, 30 layers, no RoPE (3-D sin/cos positions added
    # to the tokens, spatial_interpolation_scale 1.875), learned positions off; the other keys are
    # CogVideoXTransformer3DModel's defaults (sample 60 x 90 x 49, patch 2, text 4096 x 226 tokens, time 512).
    # diffusers scripts/convert_cogvideox_to_diffusers.py: "For CogVideoX-2B, num_layers is 30 ...
    # num_attention_heads is 30 ... use_rotary_positional_embeddings is False".
    _from_config(
        "cogvideox-2b", "cogvideox-2b",
        config={"num_attention_heads": 30, "attention_head_dim": 64, "num_layers": 30,
                "use_rotary_positional_embeddings": False, "use_learned_positional_embeddings": False},
        tiny=_COGVIDEOX_TINY,
        quick_video=Video(49, 480, 720),
        text=(226, 0), tiny_text=(16, 0), inputs=cogvideox_inputs, steps_timed=5,
        architecture_source="THUDM/CogVideoX-2b transformer/config.json; diffusers scripts/convert_cogvideox_to_diffusers.py",
    ),
    # THUDM/CogVideoX-5b transformer/config.json (non-default keys: 48 heads, 42 layers, RoPE on), cross-checked
    # with diffusers' convert_cogvideox_to_diffusers.py ("For 5B, it is 42 / 48 / True").
    _from_config(
        "cogvideox-5b", "cogvideox-5b",
        config={"num_attention_heads": 48, "attention_head_dim": 64, "num_layers": 42,
                "use_rotary_positional_embeddings": True, "use_learned_positional_embeddings": False},
        tiny=_COGVIDEOX_TINY,
        quick_video=Video(49, 480, 720),
        text=(226, 0), tiny_text=(16, 0), inputs=cogvideox_inputs, steps_timed=5,
        architecture_source="THUDM/CogVideoX-5b transformer/config.json; diffusers scripts/convert_cogvideox_to_diffusers.py",
    ),
    # THUDM/CogVideoX1.5-5B transformer/config.json: the 5B body (48 heads x 64, 42 layers, RoPE) with 2 x 2 x 2
    # patches (patch_size_t 2, patch_bias false) and RoPE bounded by sample 300 x 300 x 81, as diffusers'
    # convert_cogvideox_to_diffusers.py writes for version "1.5". Model card: 1360 x 768, 81 frames.
    _from_config(
        "cogvideox1.5-5b", "cogvideox1.5-5b",
        config={"num_attention_heads": 48, "attention_head_dim": 64, "num_layers": 42, "patch_size": 2,
                "patch_size_t": 2, "patch_bias": False, "sample_height": 300, "sample_width": 300,
                "sample_frames": 81, "use_rotary_positional_embeddings": True,
                "use_learned_positional_embeddings": False},
        tiny={**_COGVIDEOX_TINY, "sample_height": 32, "sample_width": 32},  # the RoPE bound only
        quick_video=Video(81, 768, 1360),
        text=(226, 0), tiny_text=(16, 0), inputs=cogvideox_inputs, steps_timed=3,
        architecture_source="THUDM/CogVideoX1.5-5B transformer/config.json; diffusers convert_cogvideox_to_diffusers.py (1.5)",
    ),
    # Wan-AI/Wan2.1-T2V-14B-Diffusers transformer/config.json, which is WanTransformer3DModel's defaults:
    # 40 heads x 128 (dim 5120), 40 layers, ffn 13824, text 4096, freq 256, in/out 16 channels, patch (1, 2, 2),
    # QK RMS norm across heads, cross-attention norm; the Wan2.1 README's table gives the same 14B numbers.
    # Resolutions from the README: 720P (1280 x 720) and 480P (832 x 480), 81 frames. Text: 512 UMT5 tokens.
    _from_config(
        "wan2.1-14b", "wan2.1-t2v-14b",
        config={"patch_size": (1, 2, 2), "num_attention_heads": 40, "attention_head_dim": 128, "in_channels": 16,
                "out_channels": 16, "text_dim": 4096, "freq_dim": 256, "ffn_dim": 13824, "num_layers": 40,
                "cross_attn_norm": True, "qk_norm": "rms_norm_across_heads", "eps": 1e-6},
        tiny={"num_attention_heads": 2, "num_layers": 1, "ffn_dim": 64, "text_dim": 32, "freq_dim": 32},
        quick_video=Video(81, 480, 832),
        text=(512, 0), tiny_text=(16, 0), inputs=wan_inputs, steps_timed=3,
        architecture_source="Wan-AI/Wan2.1-T2V-14B-Diffusers transformer/config.json (= WanTransformer3DModel defaults); "
        "Wan2.1 README",
    ),
    # HunyuanVideoTransformer3DModel's defaults are the 13B model (hunyuanvideo-community/HunyuanVideo):
    # 24 heads x 128, 20 dual-stream + 40 single-stream blocks, 2 refiner layers, text 4096, pooled 768,
    # guidance embedding. 720p x 129 frames from the official sample script; 544 x 960 is its 540p size.
    _from_config(
        "hunyuanvideo", "hunyuanvideo",
        config={},
        tiny={"num_attention_heads": 2, "num_layers": 1, "num_single_layers": 1, "num_refiner_layers": 1,
              "text_embed_dim": 32, "pooled_projection_dim": 16},
        quick_video=Video(129, 544, 960),
        text=(256, 100), tiny_text=(16, 6), inputs=hunyuan_inputs, steps_timed=3,
        architecture_source="diffusers HunyuanVideoTransformer3DModel defaults (the 13B hunyuanvideo-community config)",
    ),
    # --- the families of issue 22 (vidsparse/pipelines/families/); sizes from their YAML configs ---
    # LTXVideoTransformer3DModel's defaults are LTX-Video 0.9.x 2B (28 layers x 32 heads x 64, 128 latent channels,
    # caption 4096 = T5-XXL, 128 text tokens).
    _from_config(
        "ltx-video", "ltx-video",
        config={}, tiny=_LTX_TINY, tiny_video=_LTX_TINY_VIDEO, pixel_multiple=32,
        text=(128, 96), tiny_text=(6, 2), inputs=ltx_inputs, steps_timed=3,
        architecture_source="diffusers LTXVideoTransformer3DModel defaults (LTX-Video 0.9.x, 2B)",
    ),
    # LTX2VideoTransformer3DModel's defaults are LTX-2 (19B: 48 layers, video 32 heads x 128, audio 32 x 64, caption
    # 3840 = Gemma 3 through the connectors, 1024 text tokens).
    _from_config(
        "ltx-2", "ltx-2",
        config={},
        tiny={**_LTX_TINY, "audio_in_channels": 8, "audio_out_channels": 8, "audio_num_attention_heads": 2,
              "audio_attention_head_dim": 16, "audio_cross_attention_dim": 32},
        tiny_video=_LTX_TINY_VIDEO, pixel_multiple=32,
        text=(1024, 0), tiny_text=(6, 2), inputs=ltx2_inputs, steps_timed=3,
        architecture_source="diffusers LTX2VideoTransformer3DModel defaults (LTX-2, 19B)",
    ),
    # HunyuanVideo15Transformer3DModel's defaults are the 8.3B model (54 blocks x 16 heads x 128, target_size 640:
    # the 480p weights). Context in self-attention: 729 image + 256 glyph + 1000 MLLM tokens (900 of them padding).
    _from_config(
        "hunyuanvideo-1.5", "hunyuanvideo-1.5-480p",
        config={},
        tiny={"in_channels": 9, "out_channels": 4, "num_attention_heads": 2, "attention_head_dim": 64, "num_layers": 2,
              "num_refiner_layers": 1, "mlp_ratio": 2.0, "text_embed_dim": 32, "text_embed_2_dim": 16,
              "image_embed_dim": 16, "rope_axes_dim": (16, 24, 24)},
        text=(1985, 900), tiny_text=(16, 3), inputs=hunyuan15_inputs, steps_timed=3,
        architecture_source="diffusers HunyuanVideo15Transformer3DModel defaults (HunyuanVideo-1.5 8.3B, 480p)",
    ),
    # Wan2.1-I2V-14B-480P: the 14B body with 36 input channels (noise, mask, image latents) and the CLIP image
    # tokens through added k/v (image_dim 1280, added_kv_proj_dim 5120), as diffusers' convert_wan_to_diffusers.py
    # writes for "Wan-I2V-14B-480p".
    _from_config(
        "wan2.1-i2v-14b", "wan2.1-i2v-14b-480p",
        config={**_WAN_14B, "in_channels": 36, "image_dim": 1280, "added_kv_proj_dim": 5120},
        tiny={**_WAN_TINY, "in_channels": 12, "out_channels": 4, "image_dim": 16, "added_kv_proj_dim": 128},
        text=(512, 0), tiny_text=(512, 0), inputs=wan_i2v_inputs, steps_timed=3,
        architecture_source="diffusers convert_wan_to_diffusers.py (Wan-I2V-14B-480p)",
    ),
    # WanVACETransformer3DModel's defaults are Wan2.1-VACE-14B (the 14B body plus 8 control blocks at layers
    # 0, 5, ..., 35, 96 control channels).
    _from_config(
        "wan2.1-vace-14b", "wan2.1-vace-14b",
        config={},
        tiny={**_WAN_TINY, "in_channels": 4, "out_channels": 4, "vace_layers": [0, 1], "vace_in_channels": 8},
        text=(512, 0), tiny_text=(16, 0), inputs=wan_vace_inputs, steps_timed=3,
        architecture_source="diffusers WanVACETransformer3DModel defaults (Wan2.1-VACE-14B)",
    ),
    # WanAnimateTransformer3DModel's defaults are Wan2.2-Animate-14B (Wan 2.1 I2V's body, the motion encoder at
    # 512 x 512 face crops, face adapter every 5 blocks). One 77-frame segment at 720p; --quick: 480 x 832.
    _from_config(
        "wan2.2-animate-14b", "wan2.2-animate-14b",
        config={},
        tiny={**_WAN_TINY, "in_channels": 12, "latent_channels": 4, "out_channels": 4, "image_dim": 16,
              "added_kv_proj_dim": 128, "motion_encoder_channel_sizes": {"8": 8, "4": 8}, "motion_encoder_size": 8,
              "motion_style_dim": 16, "motion_dim": 4, "motion_encoder_dim": 16, "face_encoder_hidden_dim": 16,
              "face_encoder_num_heads": 2, "inject_face_latents_blocks": 2},
        quick_video=Video(77, 480, 832),
        text=(512, 0), tiny_text=(512, 0), inputs=wan_animate_inputs, steps_timed=3,
        architecture_source="diffusers WanAnimateTransformer3DModel defaults (Wan2.2-Animate-14B)",
    ),
    # SkyReels-V2-DF-14B-540P: Wan 2.1's 14B body (not confirmed from the checkpoint's config), diffusion forcing in
    # its synchronous mode (one timestep for every frame, no mask).
    _from_config(
        "skyreels-v2-df-14b", "skyreels-v2-df-14b-540p",
        config=_WAN_14B,
        tiny={**_WAN_TINY, "in_channels": 4, "out_channels": 4},
        text=(512, 0), tiny_text=(16, 0), inputs=skyreels_inputs, steps_timed=3,
        architecture_source="Wan2.1-T2V-14B's config (SkyReels-V2-14B's architecture; not confirmed from its config)",
    ),
    # CosmosTransformer3DModel's defaults are Cosmos-1.0-Diffusion-7B (28 layers x 32 heads x 128, T5 text 512 x
    # 1024). Its padding-mask channel is an input channel here (17 in, concat_padding_mask off; see cosmos_inputs):
    # the same patch embedding and forward, without torchvision.
    _from_config(
        "cosmos-1.0-7b", "cosmos-1.0-diffusion-7b-text2world",
        config={"in_channels": 17, "out_channels": 16, "concat_padding_mask": False},
        tiny={"in_channels": 5, "out_channels": 4, "num_attention_heads": 2, "attention_head_dim": 64,
              "num_layers": 2, "text_embed_dim": 32, "adaln_lora_dim": 16, "max_size": (8, 32, 32)},
        text=(512, 0), tiny_text=(16, 0), inputs=cosmos_inputs, steps_timed=3,
        architecture_source="diffusers CosmosTransformer3DModel defaults (Cosmos-1.0-Diffusion-7B)",
    ),
    # MochiTransformer3DModel's defaults are Mochi 1 preview (10B: 48 layers x 24 heads x 128, T5 text 256 tokens,
    # text last in the joint attention; 200 of them padding here).
    _from_config(
        "mochi-1", "mochi-1-preview",
        config={},
        tiny={"num_attention_heads": 2, "attention_head_dim": 64, "num_layers": 2, "pooled_projection_dim": 16,
              "in_channels": 4, "text_embed_dim": 32, "time_embed_dim": 32},
        text=(256, 200), tiny_text=(8, 3), inputs=mochi_inputs, steps_timed=3,
        architecture_source="diffusers MochiTransformer3DModel defaults (Mochi 1 preview, 10B)",
    ),
)}


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype):
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def build_transformer(spec: ModelSpec, tiny: bool, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """The transformer with the model's own random init (seed 0), created directly on `device` in `dtype`, with
    the dtypes `from_pretrained(torch_dtype=dtype)` gives: the class's `_keep_in_fp32_modules` (Wan's norms, time
    embedder and RoPE) in float32, everything else in `dtype`. The caller's random state is left as it was."""
    import diffusers

    cls = getattr(diffusers, spec.cls_name)
    config = {**spec.config, **(spec.tiny if tiny else {})}
    with torch.random.fork_rng(devices=[torch.cuda.current_device()] if device.type == "cuda" else []):
        torch.manual_seed(0)
        with torch.device(device), _default_dtype(dtype):
            model = cls(**config)
    keep = cls._keep_in_fp32_modules
    with torch.no_grad():
        if keep:  # from_pretrained loads these parameters in float32 and leaves the buffers as built
            tensors = [p for name, p in model.named_parameters() if any(part in keep for part in name.split("."))]
            target = torch.float32
        else:  # from_pretrained's model.to(torch_dtype), which also casts buffers built in float32
            tensors, target = [*model.parameters(), *model.buffers()], dtype
        # (ModelMixin.to(dtype) would warn about fp32 modules even for classes that have none)
        for tensor in tensors:
            if tensor.is_floating_point() and tensor.dtype != target:
                tensor.data = tensor.data.to(target)
    return model.to(device).eval().requires_grad_(False)
