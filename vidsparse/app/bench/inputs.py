"""Random forward inputs for one denoising step of each family, shaped as its diffusers pipeline feeds them."""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["Video", "cogvideox_inputs", "hunyuan_inputs", "wan_inputs"]


@dataclass(frozen=True)
class Video:
    """A generation size in pixel space, as a user gives it to the pipeline."""

    frames: int
    height: int
    width: int

    def latent(self, patch_t: int = 1) -> tuple[int, int, int]:
        """(T, H, W) of the latent the pipeline feeds the transformer: the VAEs compress time 4x (first frame
        kept) and space 8x, and CogVideoX1.5's pipeline pads T to a multiple of its temporal patch."""
        t = (self.frames - 1) // 4 + 1
        return t + (-t % patch_t), self.height // 8, self.width // 8

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
