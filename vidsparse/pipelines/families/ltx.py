"""LTX-Video 0.9.x (`LTXVideoTransformer3DModel`): the video self-attention (attn1) goes sparse.

Token layout: the replaced layers see video tokens only (the text reaches the cross-attention, attn2, which keeps
its stock processor). The transformer takes flattened tokens `hidden_states [B, F*H*W, C]`, frame-major (the
pipeline's `_pack_latents`), with the grid beside them as the forward arguments `num_frames`, `height` and
`width`; the RoPE counts those as tokens, so they are the grid after patchify. A forward given `video_coords`
alone (`LTXConditionPipeline`, which appends its conditioning tokens to the grid) has no grid: it runs dense,
with the reason reported.

q, k, v as `LTXVideoAttnProcessor` makes them: projections, RMSNorm across heads on `[B, S, H*D]`, interleaved
RoPE, then the split into heads. `ltx_attention` is shared with LTX-2 (`ltx2.py`), whose processors add per-head
gates and spatio-temporal guidance to the same steps.
"""

from __future__ import annotations

import re

import torch
from diffusers.models.attention_dispatch import dispatch_attention_fn

from ..processors import SparseAttnProcessor

__all__ = ["ADAPTERS", "LTXSparseProcessor", "ltx_attention", "self_attention"]


def self_attention(key: str) -> bool:
    """The video self-attention layers (attn1) of LTX-Video and LTX-2."""
    return re.fullmatch(r"transformer_blocks\.\d+\.attn1\.processor", key) is not None


def ltx_attention(processor: SparseAttnProcessor, attn, hidden_states, encoder_hidden_states, attention_mask,
                  rotary, query_rotary_emb, key_rotary_emb=None, perturbation_mask=None, all_perturbed=None):
    """The steps of LTX's stock self-attention processors with one runtime call for the attention.

    `rotary(x, freqs)` applies the family's RoPE to `[B, S, H*D]`. LTX-2 only: per-head gates (`to_gate_logits`),
    and STG's `perturbation_mask` / `all_perturbed` (the values stand in for the attention where it is 0).
    """
    if encoder_hidden_states is not None:
        raise ValueError(f"{processor.name}: vidsparse replaces LTX's video self-attention (attn1) only; this layer "
                         "gets context, which means the adapter selected a cross-attention layer")
    batch_size, sequence_length, _ = hidden_states.shape
    if attention_mask is not None:  # LTX-2's IC-LoRA reference mask: dense below
        attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
        attention_mask = attention_mask.view(batch_size, attn.heads, -1, attention_mask.shape[-1])
    to_gate_logits = getattr(attn, "to_gate_logits", None)
    gate_logits = None if to_gate_logits is None else to_gate_logits(hidden_states)

    value = attn.to_v(hidden_states)
    if all_perturbed is None:
        all_perturbed = torch.all(perturbation_mask == 0) if perturbation_mask is not None else False
    if all_perturbed:
        hidden_states = value
    else:
        query = attn.norm_q(attn.to_q(hidden_states))
        key = attn.norm_k(attn.to_k(hidden_states))
        if query_rotary_emb is not None:
            query = rotary(query, query_rotary_emb)
            key = rotary(key, key_rotary_emb if key_rotary_emb is not None else query_rotary_emb)
        # [B, S, H*D] -> [B, S, H, D]
        query = query.unflatten(2, (attn.heads, -1))
        key = key.unflatten(2, (attn.heads, -1))
        value = value.unflatten(2, (attn.heads, -1))

        hidden_states = processor.attend_or_stock(
            lambda: dispatch_attention_fn(query, key, value, attn_mask=attention_mask, dropout_p=0.0, is_causal=False,
                                          backend=processor._attention_backend,
                                          parallel_config=processor._parallel_config),
            query, key, value, sparse=attention_mask is None, bshd=True,
        )
        hidden_states = hidden_states.flatten(2, 3)
        hidden_states = hidden_states.to(query.dtype)
        if perturbation_mask is not None:
            hidden_states = torch.lerp(value.flatten(2, 3), hidden_states, perturbation_mask)

    if gate_logits is not None:
        hidden_states = hidden_states.unflatten(2, (attn.heads, -1))  # [B, S, H, D]
        gates = 2.0 * torch.sigmoid(gate_logits)  # [B, S, H]
        hidden_states = (hidden_states * gates.unsqueeze(-1)).flatten(2, 3)
    hidden_states = attn.to_out[0](hidden_states)
    hidden_states = attn.to_out[1](hidden_states)
    return hidden_states


class LTXSparseProcessor(SparseAttnProcessor):
    """LTX-Video self-attention (attn1): video tokens only."""

    def __call__(
        self,
        attn,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        from diffusers.models.transformers.transformer_ltx import apply_rotary_emb

        return ltx_attention(self, attn, hidden_states, encoder_hidden_states, attention_mask, apply_rotary_emb,
                             image_rotary_emb)


def _grid(model, arguments: dict) -> tuple[int, int, int] | None:
    # the RoPE makes num_frames x height x width positions, one per token: the grid after patchify
    sizes = [arguments.get(name) for name in ("num_frames", "height", "width")]
    return None if None in sizes else tuple(int(s) for s in sizes)


# The fields of `ModelAdapter`, registered by `adapters._ensure_builtin`.
ADAPTERS = [dict(
    name="ltx-video", class_name="LTXVideoTransformer3DModel", processor=LTXSparseProcessor,
    replaces=self_attention, latent_grid=None, text_position=None, grid_from_arguments=_grid,
)]
