"""Wan2.2-Animate (`WanAnimateTransformer3DModel`): Wan 2.1 I2V blocks plus face-adapter cross-attention.

Its self-attention processor is diffusers' copy of `WanAttnProcessor` (same code, another class), so Wan's sparse
processor makes q, k and v exactly as it does. Layout: `blocks.N.attn1` sees the video tokens only, frame-major on
the grid of `hidden_states` `[B, 2C + 4, T + 1, H, W]` after patchify; the first latent frame is the reference
image, which the grid counts as a frame (the pose latents are added to the other frames token by token). The
cross-attention (`attn2`, text and CLIP image tokens) and the face adapter (`face_adapter.N`, per-frame attention to
the motion vectors) keep their stock processors.

The pipeline denoises a long video in segments of `segment_frame_length` frames, each with its own
`num_inference_steps`, in one generation: segments after the first count on as later steps (no warm-up, and a
cached method's refresh steps fall in the first segment).
"""

from __future__ import annotations

from ..processors import WanSparseProcessor
from ._grid import patch_grid

ADAPTERS = (
    dict(name="wan-animate", class_name="WanAnimateTransformer3DModel", processor=WanSparseProcessor,
         replaces=lambda key: ".attn1." in key, latent_grid=patch_grid, text_position=None),
)
