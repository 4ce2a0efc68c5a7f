"""LTX-2 (`LTX2VideoTransformer3DModel`, audio and video): the video self-attention (attn1) goes sparse.

Token layout: the replaced layers see video tokens only, flattened and frame-major as in LTX-Video (`ltx.py`),
with the grid given as the forward arguments `num_frames`, `height` and `width` (latent sizes; the RoPE steps
through them by the patch sizes). Everything else keeps its stock processor: the audio self-attention
(audio_attn1), both text cross-attentions (attn2, audio_attn2) and the audio-video cross-attentions
(audio_to_video_attn, video_to_audio_attn), whose keys are another modality's tokens. Forwards whose video
tokens are not that grid (the condition pipelines' appended keyframe tokens) run dense, with the reason reported;
so does a video self-attention given a mask (`video_self_attention_mask`, IC-LoRA).

q, k, v as `LTX2AudioVideoAttnProcessor` or, in models built with `perturbed_attn`, `LTX2PerturbedAttnProcessor`
make them: the steps of `ltx.ltx_attention` with the layer's RoPE type (interleaved or split), per-head gates
where the layer has them, and STG (the values stand in for the attention of perturbed batch elements).
"""

from __future__ import annotations

import torch

from ..processors import SparseAttnProcessor
from .ltx import ltx_attention, self_attention

__all__ = ["ADAPTERS", "LTX2SparseProcessor"]


class LTX2SparseProcessor(SparseAttnProcessor):
    """LTX-2 video self-attention (attn1): video tokens only. The signature is the perturbed processor's:
    `LTX2Attention` passes `perturbation_mask` and `all_perturbed` only to a processor that names them, and blocks
    pass them only where the model was built with `perturbed_attn`."""

    def __call__(
        self,
        attn,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        query_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
        key_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
        perturbation_mask: torch.Tensor | None = None,
        all_perturbed: bool | None = None,
    ) -> torch.Tensor:
        return ltx_attention(self, attn, hidden_states, encoder_hidden_states, attention_mask, _rotary(attn.rope_type),
                             query_rotary_emb, key_rotary_emb, perturbation_mask, all_perturbed)


def _rotary(rope_type: str):
    from diffusers.models.transformers.transformer_ltx2 import apply_interleaved_rotary_emb, apply_split_rotary_emb

    if rope_type == "interleaved":
        return apply_interleaved_rotary_emb
    if rope_type == "split":
        return apply_split_rotary_emb
    return lambda x, freqs: x  # the stock processors apply no RoPE for another type


def _grid(model, arguments: dict) -> tuple[int, int, int] | None:
    # `rope.prepare_video_coords` steps through the latent frames, rows and columns by the patch sizes
    sizes = [arguments.get(name) for name in ("num_frames", "height", "width")]
    if None in sizes:
        return None
    patches = (model.config.patch_size_t, model.config.patch_size, model.config.patch_size)
    return tuple(-(-int(s) // p) for s, p in zip(sizes, patches))


# The fields of `ModelAdapter`, registered by `adapters._ensure_builtin`.
ADAPTERS = [dict(
    name="ltx-2", class_name="LTX2VideoTransformer3DModel", processor=LTX2SparseProcessor,
    replaces=self_attention, latent_grid=None, text_position=None, grid_from_arguments=_grid,
)]
