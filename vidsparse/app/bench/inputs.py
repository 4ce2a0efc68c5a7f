"""Random forward inputs for one denoising step of each family, shaped as its diffusers pipeline feeds them."""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = [
    "Video", "cogvideox_inputs", "cosmos_inputs", "hunyuan15_inputs", "hunyuan_inputs", "ltx2_inputs", "ltx_inputs",
    "mochi_inputs", "skyreels_inputs", "wan_animate_inputs", "wan_i2v_inputs", "wan_inputs", "wan_vace_inputs",
]


@dataclass(frozen=True)
class Video:
    """A generation size in pixel space, as a user gives it to the pipeline."""

    frames: int
    height: int
    width: int

    def latent(self, patch_t: int = 1, temporal: int = 4, spatial: int = 8) -> tuple[int, int, int]:
        """(T, H, W) of the latent the pipeline feeds the transformer: the VAE compresses time `temporal`x (first
        frame kept; 4 for most, 8 for LTX and Cosmos, 6 for Mochi) and space `spatial`x (8; 16 for
        HunyuanVideo-1.5, 32 for LTX), and CogVideoX1.5's pipeline pads T to a multiple of its temporal patch."""
        t = (self.frames - 1) // temporal + 1
        return t + (-t % patch_t), self.height // spatial, self.width // spatial

    def __str__(self) -> str:
        return f"{self.frames} frames at {self.height}x{self.width}"


def _randn(gen, device, dtype, *shape) -> torch.Tensor:
    return torch.randn(*shape, generator=gen, device=device).to(dtype)


def cogvideox_inputs(transformer, video: Video, text, batch: int, device, dtype, gen) -> dict:
    """One step as CogVideoXPipeline feeds it: latents [B, T, C, H, W] (T padded for 1.5), text first, and RoPE
    (5b, 1.5) from the pipeline's own `_prepare_rotary_positional_embeddings`."""
    from types import SimpleNamespace

    from diffusers import CogVideoXPipeline

    cfg = transformer.config
    t, h, w = video.latent(cfg.patch_size_t or 1)
    rotary = None
    if cfg.use_rotary_positional_embeddings:
        pipe_like = SimpleNamespace(vae_scale_factor_spatial=8, transformer=transformer)
        prepare = CogVideoXPipeline._prepare_rotary_positional_embeddings
        rotary = prepare(pipe_like, video.height, video.width, t, device)
    return {
        "hidden_states": _randn(gen, device, dtype, batch, t, cfg.in_channels, h, w),
        "encoder_hidden_states": _randn(gen, device, dtype, batch, text[0], cfg.text_embed_dim),
        "timestep": torch.full((batch,), 900, device=device, dtype=torch.long),
        "image_rotary_emb": rotary,
        "return_dict": False,
    }


def hunyuan_inputs(transformer, video: Video, text, batch: int, device, dtype, gen) -> dict:
    """One step as HunyuanVideoPipeline feeds it: latents [B, C, T, H, W], a float32 timestep, the text mask in
    the model dtype (the prompt is shorter than the tokenizer's length: the last tokens are padding), pooled
    CLIP projections and embedded guidance 6.0 x 1000."""
    cfg = transformer.config
    t, h, w = video.latent()
    tokens, padded = text
    mask = torch.ones(batch, tokens, device=device, dtype=dtype)
    mask[:, tokens - padded :] = 0
    return {
        "hidden_states": _randn(gen, device, dtype, batch, cfg.in_channels, t, h, w),
        "timestep": torch.full((batch,), 900.0, device=device),
        "encoder_hidden_states": _randn(gen, device, dtype, batch, tokens, cfg.text_embed_dim),
        "encoder_attention_mask": mask,
        "pooled_projections": _randn(gen, device, dtype, batch, cfg.pooled_projection_dim),
        "guidance": torch.full((batch,), 6.0, device=device, dtype=dtype) * 1000.0,
        "return_dict": False,
    }


def wan_inputs(transformer, video: Video, text, batch: int, device, dtype, gen) -> dict:
    """One step as WanPipeline feeds it: latents [B, C, T, H, W] and the UMT5 embeddings (512 tokens), which
    reach only the cross-attention."""
    cfg = transformer.config
    t, h, w = video.latent()
    return {
        "hidden_states": _randn(gen, device, dtype, batch, cfg.in_channels, t, h, w),
        "timestep": torch.full((batch,), 900.0, device=device),
        "encoder_hidden_states": _randn(gen, device, dtype, batch, text[0], cfg.text_dim),
        "return_dict": False,
    }


def _text_mask(batch: int, tokens: int, padded: int, device, dtype=torch.long) -> torch.Tensor:
    """[B, tokens]: 1 for the prompt, 0 for the last `padded` tokens (the tokenizers pad right)."""
    mask = torch.ones(batch, tokens, device=device, dtype=dtype)
    mask[:, tokens - padded :] = 0
    return mask


def wan_i2v_inputs(transformer, video: Video, text, batch: int, device, dtype, gen) -> dict:
    """One step as WanImageToVideoPipeline feeds it: the noise, the image condition's mask and latents concatenated
    channel-wise ([B, 36, T, H, W]), the UMT5 text and the 257 CLIP tokens of the input image."""
    cfg = transformer.config
    return {**wan_inputs(transformer, video, text, batch, device, dtype, gen),
            "encoder_hidden_states_image": _randn(gen, device, dtype, batch, 257, cfg.image_dim)}


def wan_vace_inputs(transformer, video: Video, text, batch: int, device, dtype, gen) -> dict:
    """One step as WanVACEPipeline feeds it: the latents, the control latents (video, mask) on the same grid, and a
    control scale of 1 per VACE block."""
    cfg = transformer.config
    t, h, w = video.latent()
    return {**wan_inputs(transformer, video, text, batch, device, dtype, gen),
            "control_hidden_states": _randn(gen, device, dtype, batch, cfg.vace_in_channels, t, h, w),
            "control_hidden_states_scale": torch.ones(len(cfg.vace_layers), device=device, dtype=dtype)}


def wan_animate_inputs(transformer, video: Video, text, batch: int, device, dtype, gen) -> dict:
    """One segment's step as WanAnimatePipeline feeds it: the reference image as an extra first latent frame
    ([B, 36, T + 1, H, W] with the condition channels), the pose latents of the T frames, the face crops of every
    pixel frame at the motion encoder's size, the text and the CLIP tokens of the reference image."""
    cfg = transformer.config
    t, h, w = video.latent()
    size = cfg.motion_encoder_size
    return {
        "hidden_states": _randn(gen, device, dtype, batch, cfg.in_channels, t + 1, h, w),
        "timestep": torch.full((batch,), 900.0, device=device),
        "encoder_hidden_states": _randn(gen, device, dtype, batch, text[0], cfg.text_dim),
        "encoder_hidden_states_image": _randn(gen, device, dtype, batch, 257, cfg.image_dim),
        "pose_hidden_states": _randn(gen, device, dtype, batch, cfg.latent_channels, t, h, w),
        "face_pixel_values": _randn(gen, device, dtype, batch, 3, video.frames, size, size),
        "return_dict": False,
    }


def skyreels_inputs(transformer, video: Video, text, batch: int, device, dtype, gen) -> dict:
    """One step of SkyReelsV2DiffusionForcingPipeline in its synchronous mode (causal_block_size 1: no mask, one
    timestep for every frame), shaped as Wan's."""
    return wan_inputs(transformer, video, text, batch, device, dtype, gen)


def ltx_inputs(transformer, video: Video, text, batch: int, device, dtype, gen) -> dict:
    """One step as LTXPipeline feeds it: latents packed to tokens [B, T*H*W, 128] (8x temporal, 32x spatial VAE,
    patch 1), the latent grid beside them, the T5 text (128 tokens, padded ones masked) and the RoPE scale of
    frame rate 25."""
    cfg = transformer.config
    t, h, w = video.latent(temporal=8, spatial=32)
    return {
        "hidden_states": _randn(gen, device, dtype, batch, t * h * w, cfg.in_channels),
        "encoder_hidden_states": _randn(gen, device, dtype, batch, text[0], cfg.caption_channels),
        "timestep": torch.full((batch,), 900.0, device=device),
        "encoder_attention_mask": _text_mask(batch, *text, device),
        "num_frames": t, "height": h, "width": w,
        "rope_interpolation_scale": (8 / 25, 32, 32),
        "return_dict": False,
    }


def ltx2_inputs(transformer, video: Video, text, batch: int, device, dtype, gen) -> dict:
    """One "cond_uncond" step as LTX2Pipeline feeds it: video tokens as LTX's, audio tokens for the clip's length
    at 24 fps (25 audio latents a second: 16 kHz, hop 160, 4x compression), the Gemma connector's text for each
    modality (padded ones masked), the latent grid and the frame rate."""
    cfg = transformer.config
    t, h, w = video.latent(temporal=8, spatial=32)
    audio_frames = round(video.frames / 24.0 * cfg.audio_sampling_rate / cfg.audio_hop_length / cfg.audio_scale_factor)
    timestep = torch.full((batch,), 900.0, device=device)
    mask = _text_mask(batch, *text, device)
    return {
        "hidden_states": _randn(gen, device, dtype, batch, t * h * w, cfg.in_channels),
        "audio_hidden_states": _randn(gen, device, dtype, batch, audio_frames, cfg.audio_in_channels),
        "encoder_hidden_states": _randn(gen, device, dtype, batch, text[0], cfg.caption_channels),
        "audio_encoder_hidden_states": _randn(gen, device, dtype, batch, text[0], cfg.caption_channels),
        "timestep": timestep, "sigma": timestep,
        "encoder_attention_mask": mask, "audio_encoder_attention_mask": mask,
        "num_frames": t, "height": h, "width": w, "fps": 24.0, "audio_num_frames": audio_frames,
        "return_dict": False,
    }


# HunyuanVideo-1.5's context after the video: the 729 SigLIP tokens of the image (zeros, masked, in text-to-video),
# the ByT5 glyph tokens (256) and the MLLM tokens (1000), in the forward's order; `text` is their total.
HUNYUAN15_IMAGE, HUNYUAN15_GLYPH = 729, 256


def hunyuan15_inputs(transformer, video: Video, text, batch: int, device, dtype, gen) -> dict:
    """One text-to-video step as HunyuanVideo15Pipeline feeds it: [B, 65, T, H, W] (the noise, zero condition
    latents and mask; 16x spatial VAE, patch 1), the MLLM text and ByT5 glyph tokens with their masks (the last
    `text[1]` tokens padded, the glyphs all but one), and zero image embeddings."""
    cfg = transformer.config
    t, h, w = video.latent(spatial=16)
    image, glyph = (HUNYUAN15_IMAGE, HUNYUAN15_GLYPH) if text[0] > HUNYUAN15_IMAGE + HUNYUAN15_GLYPH else (4, 5)
    tokens = text[0] - image - glyph
    return {
        "hidden_states": _randn(gen, device, dtype, batch, cfg.in_channels, t, h, w),
        "timestep": torch.full((batch,), 900.0, device=device, dtype=dtype),
        "encoder_hidden_states": _randn(gen, device, dtype, batch, tokens, cfg.text_embed_dim),
        "encoder_attention_mask": _text_mask(batch, tokens, text[1], device),
        "encoder_hidden_states_2": _randn(gen, device, dtype, batch, glyph, cfg.text_embed_2_dim),
        "encoder_attention_mask_2": _text_mask(batch, glyph, glyph - 1, device),
        "image_embeds": torch.zeros(batch, image, cfg.image_embed_dim, device=device, dtype=dtype),
        "return_dict": False,
    }


def cosmos_inputs(transformer, video: Video, text, batch: int, device, dtype, gen) -> dict:
    """One step as CosmosTextToWorldPipeline feeds it: latents [B, 16, T, H, W] (8x temporal and spatial VAE) and
    the T5 text at 30 fps. The pipeline's padding mask is all zeros, which the transformer resizes (with
    torchvision) and concatenates as a 17th channel: the catalogue builds Cosmos with that channel as an input
    channel instead (`concat_padding_mask` off, 17 input channels), and the zero channel is concatenated here."""
    cfg = transformer.config
    t, h, w = video.latent(temporal=8)
    latents = _randn(gen, device, dtype, batch, cfg.in_channels - 1, t, h, w)
    return {
        "hidden_states": torch.cat([latents, latents.new_zeros(batch, 1, t, h, w)], dim=1),
        "timestep": torch.full((batch,), 0.5, device=device, dtype=dtype),
        "encoder_hidden_states": _randn(gen, device, dtype, batch, text[0], cfg.text_embed_dim),
        "fps": 30,
        "return_dict": False,
    }


def mochi_inputs(transformer, video: Video, text, batch: int, device, dtype, gen) -> dict:
    """One step as MochiPipeline feeds it: latents [B, 12, T, H, W] (6x temporal, 8x spatial VAE) and the T5 text
    (256 tokens, the last `text[1]` padded and masked)."""
    cfg = transformer.config
    t, h, w = video.latent(temporal=6)
    return {
        "hidden_states": _randn(gen, device, dtype, batch, cfg.in_channels, t, h, w),
        "encoder_hidden_states": _randn(gen, device, dtype, batch, text[0], cfg.text_embed_dim),
        "timestep": torch.full((batch,), 900.0, device=device, dtype=dtype),
        "encoder_attention_mask": _text_mask(batch, *text, device),
        "return_dict": False,
    }
