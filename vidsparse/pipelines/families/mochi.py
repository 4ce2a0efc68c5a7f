"""Mochi 1 (`MochiTransformer3DModel`): asymmetric joint attention. The video stream (3072 wide) and the text stream
(1536 wide) have their own projections and norms, but both project to the same heads x head dim, and every block's
`attn1` attends over the joint sequence [video, text]: a layout vidsparse already has (text last, as HunyuanVideo).

Layout: video tokens first, frame-major on the grid `(F, H / p, W / p)` of `hidden_states` `[B, C, F, H, W]` (Mochi
patchifies each frame in 2-D), then the text tokens (256 in the pipeline). The stock processor attends, per batch
element, over the video and that element's valid text tokens only; here the padded text keys are masked instead
(`key_padding`), and the padded text rows of the output are zeroed as stock leaves them. That equals stock for
right-padded text (the pipeline's tokenizer pads right); stock would move the valid text rows of a left-padded
prompt to the front.

The transformer has no `attn_processors` / `set_attn_processor` (neither it nor `MochiAttention` is a diffusers
`AttentionMixin`); `vidsparse.apply` sets each `MochiAttention.processor` instead, and `remove()` puts the stock
ones back the same way.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..processors import SparseAttnProcessor


class MochiSparseProcessor(SparseAttnProcessor):
    """Mochi joint attention over [video, text], q, k, v as `MochiAttnProcessor2_0` makes them."""

    def __call__(self, attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb=None):
        # Projections and QK-norm per stream, [B, S, H, D]; RoPE on the video stream
        query, key, value = _heads(attn.heads, hidden_states, attn.to_q, attn.to_k, attn.to_v, attn.norm_q,
                                   attn.norm_k)
        text_query, text_key, text_value = _heads(attn.heads, encoder_hidden_states, attn.add_q_proj, attn.add_k_proj,
                                                  attn.add_v_proj, attn.norm_added_q, attn.norm_added_k)
        if image_rotary_emb is not None:
            query, key = _mochi_rotary(query, *image_rotary_emb), _mochi_rotary(key, *image_rotary_emb)
        # [B, H, S, D]
        query, key, value, text_query, text_key, text_value = (
            x.transpose(1, 2) for x in (query, key, value, text_query, text_key, text_value))
        video_len, text_len = query.size(2), text_query.size(2)

        # vidsparse over the joint sequence, padded text keys masked; None: the stock per-element call below
        joint = [torch.cat(pair, dim=2) for pair in ((query, text_query), (key, text_key), (value, text_value))]
        padding = torch.cat([attention_mask.new_zeros(attention_mask.shape[0], video_len, dtype=torch.bool),
                             attention_mask == 0], dim=1)  # [B, S], True = ignore
        out = self.attend(*joint, text_len=text_len, key_padding=padding)
        if out is None:
            out = _stock_attention(query, key, value, text_query, text_key, text_value, attention_mask)
        else:
            out = out.masked_fill(padding[:, None, :, None], 0.0)  # stock leaves the padded text rows zero

        hidden_states = out.transpose(1, 2).flatten(2, 3)
        hidden_states, encoder_hidden_states = hidden_states.split_with_sizes((video_len, text_len), dim=1)
        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        if hasattr(attn, "to_add_out"):  # the last block (context_pre_only) has none
            encoder_hidden_states = attn.to_add_out(encoder_hidden_states)
        return hidden_states, encoder_hidden_states


def _heads(heads: int, states, to_q, to_k, to_v, norm_q, norm_k):
    query, key, value = (proj(states).unflatten(2, (heads, -1)) for proj in (to_q, to_k, to_v))
    if norm_q is not None:
        query = norm_q(query)
    if norm_k is not None:
        key = norm_k(key)
    return query, key, value


def _mochi_rotary(x: torch.Tensor, freqs_cos: torch.Tensor, freqs_sin: torch.Tensor) -> torch.Tensor:
    """Mochi's RoPE on interleaved pairs, in float32, as its stock processor applies it."""
    x_even, x_odd = x[..., 0::2].float(), x[..., 1::2].float()
    cos = (x_even * freqs_cos - x_odd * freqs_sin).to(x.dtype)
    sin = (x_even * freqs_sin + x_odd * freqs_cos).to(x.dtype)
    return torch.stack([cos, sin], dim=-1).flatten(-2)


def _stock_attention(query, key, value, text_query, text_key, text_value, attention_mask):
    """`MochiAttnProcessor2_0`'s attention unchanged: per batch element over [video, valid text], zero-padded."""
    total_length = query.size(2) + text_query.size(2)
    outputs = []
    for idx in range(query.shape[0]):
        valid = torch.nonzero(attention_mask[idx][None, :].flatten(), as_tuple=False).flatten()
        q = torch.cat([query[idx : idx + 1], text_query[idx : idx + 1, :, valid, :]], dim=2)
        k = torch.cat([key[idx : idx + 1], text_key[idx : idx + 1, :, valid, :]], dim=2)
        v = torch.cat([value[idx : idx + 1], text_value[idx : idx + 1, :, valid, :]], dim=2)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=0.0, is_causal=False)
        outputs.append(F.pad(out, (0, 0, 0, total_length - out.size(2))))
    return torch.cat(outputs, dim=0)


def _mochi_grid(model, hidden_states) -> tuple[int, int, int]:
    # hidden_states: [B, C, F, H, W]; each frame patchified in 2-D by config.patch_size
    _, _, f, h, w = hidden_states.shape
    p = model.config.patch_size
    return (f, h // p, w // p)


ADAPTERS = (
    dict(name="mochi", class_name="MochiTransformer3DModel", processor=MochiSparseProcessor,
         replaces=lambda key: ".attn1." in key, latent_grid=_mochi_grid, text_position="end"),
)
