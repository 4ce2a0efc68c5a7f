"""Sparse attention processors for diffusers' CogVideoX, HunyuanVideo and Wan transformers (the other families'
processors live in `families/`).

Each processor makes q, k and v exactly as the stock processor of its family does (projections,
fused QKV where diffusers supports it, QK-norm, RoPE), makes one runtime call (`SparseAttnProcessor.attend`:
plan and execute, see `runtime`), and projects out as stock. Where the plan is the stock computation the
processor runs the stock attention call unchanged (same function, same arguments), so dense equals stock
to the bit. Only q/k/v preparation and the output projection differ per family.

The `__call__` signatures name exactly the keyword arguments each family's stock processor takes:
old-style `Attention` passes a processor only the arguments its signature names.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.attention_dispatch import dispatch_attention_fn
from diffusers.models.embeddings import apply_rotary_emb

from ..runtime.runtime import SparseRuntime
from .context_parallel import ulysses_attention

__all__ = ["SparseAttnProcessor", "CogVideoXSparseProcessor", "HunyuanVideoSparseProcessor", "WanSparseProcessor"]


class SparseAttnProcessor:
    """Base of the family processors: one instance per replaced attention layer.

    Attributes:
        runtime: the installation's shared `SparseRuntime` (config, planner, step, reports).
        layer: index of this layer among the replaced ones, in `attn_processors` order.
        name: the processor key in `transformer.attn_processors`.
    """

    # diffusers' context parallelism sets these on every processor; see `_sparse_or_none`.
    _attention_backend = None
    _parallel_config = None

    def __init__(self, runtime: SparseRuntime, layer: int, name: str):
        self.runtime = runtime
        self.layer = layer
        self.name = name

    def attend_or_stock(self, stock, query, key, value, *, sparse: bool = True, bshd: bool = False, **kwargs):
        """The planned attention of this call, or `stock()`, the family's own dense call unchanged, where the plan
        is the stock computation or where sparse attention cannot apply (`sparse=False`: a general attention mask,
        counted as a dense call)."""
        out = None
        if sparse:
            out = self.attend(query, key, value, bshd=bshd, **kwargs)
        else:
            self.runtime.count_dense(self.layer, query.shape[2 if bshd else 1])
        return stock() if out is None else out

    def attend(self, query, key, value, *, text_len: int = 0, key_padding=None, bshd: bool = False):
        """The planned attention of this call, or None for the family's stock dense call.

        q, k, v: `[B, H, S, D]`, or `[B, S, H, D]` with `bshd=True` (the result comes back in the same layout);
        `key_padding`: bool `[B, S]`, True = ignore that key. Under diffusers' context parallelism, plain Ulysses
        runs through the runtime; every other parallel form falls back to the stock call (reported).
        """
        runtime = self.runtime
        if self._parallel_config is not None:
            if not bshd:
                runtime.fall_back(
                    f"context parallelism in {type(self).__name__} is not supported by sparse attention yet: dense"
                )
                runtime.count_dense(self.layer, query.shape[1])
                return None
            return ulysses_attention(runtime, self.layer, query, key, value, self._parallel_config, text_len,
                                     key_padding)
        if bshd:
            out = runtime.attention(self.layer, query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2),
                                    text_len=text_len, key_padding=key_padding)
            return None if out is None else out.transpose(1, 2)
        return runtime.attention(self.layer, query, key, value, text_len=text_len, key_padding=key_padding)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(layer={self.layer}, method={self.runtime.config.method!r})"


class CogVideoXSparseProcessor(SparseAttnProcessor):
    """CogVideoX (2b, 5b, 1.5): joint attention over [text, video], RoPE on the video part."""

    def __call__(
        self,
        attn,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        image_rotary_emb: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        text_seq_length = encoder_hidden_states.size(1)
        hidden_states = torch.cat([encoder_hidden_states, hidden_states], dim=1)
        batch_size, sequence_length, _ = hidden_states.shape

        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
            attention_mask = attention_mask.view(batch_size, attn.heads, -1, attention_mask.shape[-1])

        if getattr(attn, "fused_projections", False):  # after transformer.fuse_qkv_projections()
            query, key, value = attn.to_qkv(hidden_states).chunk(3, dim=-1)
        else:
            query, key, value = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
        head_dim = key.shape[-1] // attn.heads

        # [B, S, H*D] -> [B, H, S, D]
        query = query.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        if image_rotary_emb is not None:
            query[:, :, text_seq_length:] = apply_rotary_emb(query[:, :, text_seq_length:], image_rotary_emb)
            if not attn.is_cross_attention:
                key[:, :, text_seq_length:] = apply_rotary_emb(key[:, :, text_seq_length:], image_rotary_emb)

        hidden_states = self.attend_or_stock(
            lambda: F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, dropout_p=0.0,
                                                   is_causal=False),
            query, key, value, sparse=attention_mask is None, text_len=text_seq_length,
        )

        hidden_states = hidden_states.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim)
        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        encoder_hidden_states, hidden_states = hidden_states.split(
            [text_seq_length, hidden_states.size(1) - text_seq_length], dim=1
        )
        return hidden_states, encoder_hidden_states


class HunyuanVideoSparseProcessor(SparseAttnProcessor):
    """HunyuanVideo dual- and single-stream blocks: attention over [video, text], padded text keys masked."""

    def __call__(
        self,
        attn,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        image_rotary_emb: torch.Tensor | None = None,
    ):
        text_len = 0 if encoder_hidden_states is None else encoder_hidden_states.shape[1]
        joint_input = attn.add_q_proj is None and encoder_hidden_states is not None  # single-stream blocks
        if joint_input:
            hidden_states = torch.cat([hidden_states, encoder_hidden_states], dim=1)

        # 1-2. QKV projections and QK normalization, [B, S, H, D]
        query, key, value = _heads_qkv(
            hidden_states, attn.heads, attn.to_q, attn.to_k, attn.to_v, attn.norm_q, attn.norm_k
        )

        # 3. RoPE on the video tokens
        if image_rotary_emb is not None:
            def rope(x):
                if not joint_input:
                    return apply_rotary_emb(x, image_rotary_emb, sequence_dim=1)
                video = apply_rotary_emb(x[:, :-text_len], image_rotary_emb, sequence_dim=1)
                return torch.cat([video, x[:, -text_len:]], dim=1)

            query, key = rope(query), rope(key)

        # 4. Text QKV projection and normalization (dual-stream blocks)
        if attn.add_q_proj is not None and encoder_hidden_states is not None:
            encoder_query, encoder_key, encoder_value = _heads_qkv(
                encoder_hidden_states, attn.heads, attn.add_q_proj, attn.add_k_proj, attn.add_v_proj,
                attn.norm_added_q, attn.norm_added_k,
            )
            query = torch.cat([query, encoder_query], dim=1)
            key = torch.cat([key, encoder_key], dim=1)
            value = torch.cat([value, encoder_value], dim=1)

        # 5. Attention; under context parallelism the mask is the full-length one (vidsparse's CP plan keeps it whole)
        world = 1 if self._parallel_config is None else self._parallel_config.context_parallel_config.ulysses_degree
        key_padding = _hunyuan_key_padding(attention_mask, query.shape[0], query.shape[1] * world)
        hidden_states = self.attend_or_stock(
            lambda: dispatch_attention_fn(query, key, value, attn_mask=attention_mask, dropout_p=0.0, is_causal=False,
                                          backend=self._attention_backend, parallel_config=self._parallel_config),
            query, key, value, sparse=key_padding is not False, bshd=True, text_len=text_len,
            key_padding=key_padding,
        )
        hidden_states = hidden_states.flatten(2, 3)
        hidden_states = hidden_states.to(query.dtype)
        return self._hunyuan_out(attn, hidden_states, encoder_hidden_states, text_len)

    @staticmethod
    def _hunyuan_out(attn, hidden_states, encoder_hidden_states, text_len: int):
        # 6. Output projection
        if encoder_hidden_states is not None:
            hidden_states, encoder_hidden_states = hidden_states[:, :-text_len], hidden_states[:, -text_len:]
            if getattr(attn, "to_out", None) is not None:
                hidden_states = attn.to_out[0](hidden_states)
                hidden_states = attn.to_out[1](hidden_states)
            if getattr(attn, "to_add_out", None) is not None:
                encoder_hidden_states = attn.to_add_out(encoder_hidden_states)
        return hidden_states, encoder_hidden_states


def _heads_qkv(states, heads: int, to_q, to_k, to_v, norm_q, norm_k):
    """HunyuanVideo's projections to `[B, S, H, D]` and its optional QK-norm, for either stream."""
    query, key, value = (proj(states).unflatten(2, (heads, -1)) for proj in (to_q, to_k, to_v))
    if norm_q is not None:
        query = norm_q(query)
    if norm_k is not None:
        key = norm_k(key)
    return query, key, value


def _hunyuan_key_padding(attention_mask, batch: int, seq_len: int):
    """HunyuanVideo's boolean keep-mask `[B, 1, 1, S]` as a key padding mask `[B, S]` (True = ignore);
    None without a mask; False for a mask of another form, which only the dense path can take."""
    if attention_mask is None:
        return None
    if attention_mask.dtype != torch.bool or attention_mask.numel() != batch * seq_len:
        return False
    return ~attention_mask.reshape(batch, seq_len)


class WanSparseProcessor(SparseAttnProcessor):
    """Wan 2.1/2.2 self-attention (attn1): video tokens only, no text."""

    def __call__(
        self,
        attn,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        from diffusers.models.transformers.transformer_wan import _get_qkv_projections

        if attn.add_k_proj is not None or encoder_hidden_states is not None:
            raise ValueError(
                f"{self.name}: vidsparse replaces Wan self-attention (attn1) only; this layer gets text or image "
                "context, which means the adapter selected a cross-attention layer"
            )
        query, key, value = _get_qkv_projections(attn, hidden_states, None)
        query = attn.norm_q(query)
        key = attn.norm_k(key)
        # [B, S, H, D]
        query = query.unflatten(2, (attn.heads, -1))
        key = key.unflatten(2, (attn.heads, -1))
        value = value.unflatten(2, (attn.heads, -1))
        if rotary_emb is not None:
            query = _wan_rotary(query, *rotary_emb)
            key = _wan_rotary(key, *rotary_emb)

        hidden_states = self.attend_or_stock(
            lambda: dispatch_attention_fn(query, key, value, attn_mask=attention_mask, dropout_p=0.0, is_causal=False,
                                          backend=self._attention_backend, parallel_config=self._parallel_config),
            query, key, value, sparse=attention_mask is None, bshd=True,
        )
        hidden_states = hidden_states.flatten(2, 3)
        hidden_states = hidden_states.type_as(query)
        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        return hidden_states


def _wan_rotary(hidden_states: torch.Tensor, freqs_cos: torch.Tensor, freqs_sin: torch.Tensor) -> torch.Tensor:
    """Wan's interleaved RoPE, as its stock processor applies it."""
    x1, x2 = hidden_states.unflatten(-1, (-1, 2)).unbind(-1)
    cos = freqs_cos[..., 0::2]
    sin = freqs_sin[..., 1::2]
    out = torch.empty_like(hidden_states)
    out[..., 0::2] = x1 * cos - x2 * sin
    out[..., 1::2] = x1 * sin + x2 * cos
    return out.type_as(hidden_states)
