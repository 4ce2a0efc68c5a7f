"""SkyReels-V2 (`SkyReelsV2Transformer3DModel`: T2V, I2V and diffusion forcing): Wan 2.1's architecture with its
own copy of Wan's attention (same projections, QK-norm and interleaved RoPE; its fused QKV is built under the same
condition for self-attention), so Wan's sparse processor makes q, k and v exactly as stock.

Layout: `blocks.N.attn1` sees the video tokens only, frame-major on the grid of `hidden_states` after patchify;
text (and the I2V image tokens) reach only the cross-attention (`attn2`), which keeps its stock processor.

Diffusion forcing with `causal_block_size > 1` (the asynchronous mode, `num_frame_per_block > 1` in the config)
gives self-attention a block-causal mask over frames. Sparse attention does not take a general mask yet: those calls
run the stock dense attention and are reported as a fallback. The synchronous mode (`causal_block_size=1`) has no
mask and runs sparse.
"""

from __future__ import annotations

from ..processors import WanSparseProcessor
from ._grid import patch_grid


class SkyReelsV2SparseProcessor(WanSparseProcessor):
    """Wan's sparse processor; a block-causal mask (diffusion forcing) sends the call to the stock dense attention
    with a reported reason."""

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        if attention_mask is not None:
            self.runtime.fall_back("SkyReels-V2 diffusion forcing with causal_block_size > 1 masks self-attention "
                                   "block-causally; sparse attention takes no such mask yet: dense")
        return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, rotary_emb)


ADAPTERS = (
    dict(name="skyreels-v2", class_name="SkyReelsV2Transformer3DModel", processor=SkyReelsV2SparseProcessor,
         replaces=lambda key: ".attn1." in key, latent_grid=patch_grid, text_position=None),
)
