"""The benchmark's models: each one's transformer class and generation size come from its shipped YAML config
(`vidsparse/app/configs/<config>.yaml`); what the YAML does not hold (the full-size architecture, the tiny
--dry-run version, the text tokens of self-attention, the smaller published size) is kept here, once per model.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable

import torch

from .inputs import Video, cogvideox_inputs, hunyuan_inputs, wan_inputs

__all__ = ["MODELS", "PIXEL_MULTIPLE", "TINY_VIDEO", "ModelSpec", "Video", "build_transformer"]

# Every model here patches 2 x 2 after its VAE's 8x spatial compression.
PIXEL_MULTIPLE = 16


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


def _from_config(name: str, config_name: str, *, architecture_source: str, **fields) -> ModelSpec:
    """A ModelSpec whose class and size come from the shipped YAML (read as is: validating it imports diffusers)."""
    from importlib import resources

    from omegaconf import OmegaConf

    yaml = OmegaConf.create((resources.files("vidsparse.app.configs") / f"{config_name}.yaml").read_text())
    gen = yaml.generate
    source = f"{architecture_source}; size and class: vidsparse/app/configs/{config_name}.yaml"
    return ModelSpec(name=name, config_name=config_name, cls_name=yaml.model.transformer,
                     video=Video(gen.num_frames, gen.height, gen.width), source=source, **fields)


TINY_VIDEO = Video(17, 64, 128)  # latent 5 x 8 x 16 -> grid 5 x 4 x 8 = 160 video tokens, 32 a frame


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
