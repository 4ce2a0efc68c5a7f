"""Cosmos (`CosmosTransformer3DModel`: Cosmos-1.0-Diffusion text2world and video2world, and the Predict2 / 2.5
models built on the same class).

Layout: self-attention (`transformer_blocks.N.attn1`, `CosmosAttnProcessor2_0`) sees the video tokens only,
frame-major (`CosmosPatchEmbed` orders patches as `[B, T, H, W]` before flattening) on the grid of `hidden_states`
`[B, C, F, H, W]` after patchify. Text (and 2.5's image context) reach only the cross-attention (`attn2`), which
keeps its stock processor.

The transformer has no `attn_processors` / `set_attn_processor` (it is not a diffusers `AttentionMixin`);
`vidsparse.apply` sets each attention module's processor through `Attention.set_processor` instead, and
`remove()` puts the stock ones back the same way.
"""

from __future__ import annotations

from diffusers.models.attention_dispatch import dispatch_attention_fn
from diffusers.models.embeddings import apply_rotary_emb

from ..processors import SparseAttnProcessor
from ._grid import patch_grid


class CosmosSparseProcessor(SparseAttnProcessor):
    """Cosmos self-attention: q, k, v as `CosmosAttnProcessor2_0` makes them (projections, QK RMS-norm per head,
    real RoPE over the whole head), video tokens only."""

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, image_rotary_emb=None):
        if encoder_hidden_states is not None:
            raise ValueError(f"{self.name}: vidsparse replaces Cosmos self-attention (attn1) only; this layer gets "
                             "text context, which means the adapter selected a cross-attention layer")
        # 1. QKV projections, [B, H, S, D]
        query, key, value = (proj(hidden_states).unflatten(2, (attn.heads, -1)).transpose(1, 2)
                             for proj in (attn.to_q, attn.to_k, attn.to_v))
        # 2. QK normalization
        query = attn.norm_q(query)
        key = attn.norm_k(key)
        # 3. RoPE
        if image_rotary_emb is not None:
            query = apply_rotary_emb(query, image_rotary_emb, use_real=True, use_real_unbind_dim=-2)
            key = apply_rotary_emb(key, image_rotary_emb, use_real=True, use_real_unbind_dim=-2)
        # 4. "GQA" as stock repeats along the head dim by query.size(3) // key.size(3), i.e. 1: a copy, kept as stock
        key = key.repeat_interleave(query.size(3) // key.size(3), dim=3)
        value = value.repeat_interleave(query.size(3) // value.size(3), dim=3)
        # 5. Attention, [B, S, H, D]
        query, key, value = query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2)
        hidden_states = self.attend_or_stock(
            lambda: dispatch_attention_fn(query, key, value, attn_mask=attention_mask, dropout_p=0.0, is_causal=False),
            query, key, value, sparse=attention_mask is None, bshd=True,
        )
        hidden_states = hidden_states.flatten(2, 3).type_as(query)
        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        return hidden_states


ADAPTERS = (
    dict(name="cosmos", class_name="CosmosTransformer3DModel", processor=CosmosSparseProcessor,
         replaces=lambda key: ".attn1." in key, latent_grid=patch_grid, text_position=None),
)
