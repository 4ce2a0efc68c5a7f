"""HunyuanVideo-1.5 (`HunyuanVideo15Transformer3DModel`): the joint attention of every dual-stream block goes sparse.

Token layout: [video, context] per layer, as HunyuanVideo's dual-stream blocks; the context comes last. It is the
image tokens (zeroed and masked in text-to-video), the ByT5 glyph tokens and the MLLM text tokens, valid ones
first and padding after, with the forward's mask over them. `hidden_states` keep their shape `[B, C, F, H, W]`,
so the grid is read off them (patch sizes from the config); the patch embedding flattens them frame-major. The
text refiner (context_embedder.token_refiner) keeps its stock processors; the model has no single-stream blocks.

q, k, v as `HunyuanVideo15AttnProcessor2_0` makes them: projections, heads, QK-norm, RoPE on the video part,
then the context's own projections and norms (HunyuanVideo's `_heads_qkv`). The stock processor turns the
context mask `[B, L]` into a `[B, 1, S, S]` mask of valid query and key pairs; sparse attention takes the same
keys away (`key_padding`), and the padded context's own rows, which no video token reads, are not masked. The
stock call (dense) builds the stock mask only when it runs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.attention_dispatch import dispatch_attention_fn
from diffusers.models.embeddings import apply_rotary_emb

from ..processors import HunyuanVideoSparseProcessor, SparseAttnProcessor, _heads_qkv

__all__ = ["ADAPTERS", "HunyuanVideo15SparseProcessor"]


class HunyuanVideo15SparseProcessor(SparseAttnProcessor):
    """HunyuanVideo-1.5 dual-stream blocks: attention over [video, context], padded context keys masked."""

    def __call__(
        self,
        attn,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
    ):
        # 1-3. QKV projections, QK-norm, RoPE on the video tokens: [B, S, H, D]
        query, key, value = _heads_qkv(hidden_states, attn.heads, attn.to_q, attn.to_k, attn.to_v, attn.norm_q,
                                       attn.norm_k)
        if image_rotary_emb is not None:
            query = apply_rotary_emb(query, image_rotary_emb, sequence_dim=1)
            key = apply_rotary_emb(key, image_rotary_emb, sequence_dim=1)

        # 4. Context QKV projection and normalization
        text_len = 0
        if encoder_hidden_states is not None:
            text_len = encoder_hidden_states.shape[1]
            encoder_query, encoder_key, encoder_value = _heads_qkv(
                encoder_hidden_states, attn.heads, attn.add_q_proj, attn.add_k_proj, attn.add_v_proj,
                attn.norm_added_q, attn.norm_added_k,
            )
            query = torch.cat([query, encoder_query], dim=1)
            key = torch.cat([key, encoder_key], dim=1)
            value = torch.cat([value, encoder_value], dim=1)

        # 5. Attention. keep: [B, S], True for every video token and each valid context token
        batch_size, seq_len, _, _ = query.shape
        keep = F.pad(attention_mask, (seq_len - attention_mask.shape[1], 0), value=True).bool()

        def stock():
            mask_1 = keep.view(batch_size, 1, 1, seq_len).repeat(1, 1, seq_len, 1)
            mask = (mask_1 & mask_1.transpose(2, 3)).bool()
            return dispatch_attention_fn(query, key, value, attn_mask=mask, dropout_p=0.0, is_causal=False,
                                         backend=self._attention_backend, parallel_config=self._parallel_config)

        hidden_states = self.attend_or_stock(stock, query, key, value, bshd=True, text_len=text_len, key_padding=~keep)
        hidden_states = hidden_states.flatten(2, 3)
        hidden_states = hidden_states.to(query.dtype)
        # 6. Output projection, as HunyuanVideo's
        return HunyuanVideoSparseProcessor._hunyuan_out(attn, hidden_states, encoder_hidden_states, text_len)


def _grid(model, hidden_states):
    # hidden_states: [B, C, F, H, W]
    _, _, f, h, w = hidden_states.shape
    p, p_t = model.config.patch_size, model.config.patch_size_t
    return (f // p_t, h // p, w // p)


# The fields of `ModelAdapter`, registered by `adapters._ensure_builtin`.
ADAPTERS = [dict(
    name="hunyuanvideo-1.5", class_name="HunyuanVideo15Transformer3DModel", processor=HunyuanVideo15SparseProcessor,
    replaces=lambda key: key.startswith("transformer_blocks."), latent_grid=_grid, text_position="end",
)]
