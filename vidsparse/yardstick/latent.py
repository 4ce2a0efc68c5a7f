"""The yardstick's latent space: a fixed, invertible pixel transform in place of a trained VAE.

The space-to-depth is a permutation (exact); the offset round-trips to float rounding (one ulp).

`PixelUnshuffleVAE` folds each 2 x 2 block of pixels into the channels (3 -> 12) and removes a constant offset:

    encode: x [B, 3, F, H, W] in [-1, 1] -> z = pixel_unshuffle(x, 2) - shift    [B, 12, F, H/2, W/2]
    decode: z -> pixel_shuffle(z + shift, 2)                                     (the inverse)

It has no weights, compresses nothing in time (`temporal_compression_ratio=1`: one latent frame per video frame) and
speaks the interface `CogVideoXPipeline` uses: `config.block_out_channels` (its length gives the spatial factor,
2 ** (len - 1)), `config.temporal_compression_ratio`, `config.scaling_factor` (the pipeline divides latents by it
before `decode`) and `decode(z).sample`. `encode(x).latents` is what diffusers' `retrieve_latents` reads.

Why not a trained `AutoencoderKLCogVideoX`: training one would spend GPU time the model needs more, and its blur would
be one more thing between the attention and the pixels that the quality metrics compare. A fixed transform keeps the
latent space exact and documented; the price is a 2x spatial factor instead of 8x, so videos are small (64 x 64).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.vae import DecoderOutput
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput

__all__ = ["EncoderOutput", "PixelUnshuffleVAE"]


@dataclass
class EncoderOutput(BaseOutput):
    latents: torch.Tensor


class PixelUnshuffleVAE(ModelMixin, ConfigMixin):
    """Space-to-depth by 2 with a fixed offset; see the module docstring. Example:

    >>> vae = PixelUnshuffleVAE()
    >>> x = torch.rand(1, 3, 9, 64, 64) * 2 - 1
    >>> z = vae.encode(x).latents  # [1, 12, 9, 32, 32]
    >>> torch.allclose(vae.decode(z).sample, x, atol=1e-6)
    True
    """

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        latent_channels: int = 12,
        block_out_channels: tuple[int, ...] = (3, 12),
        temporal_compression_ratio: int = 1,
        shift: float = -0.3,
        scaling_factor: float = 2.0,
    ):
        super().__init__()
        factor = 2 ** (len(block_out_channels) - 1)
        if latent_channels != in_channels * factor * factor:
            raise ValueError(
                f"latent_channels must be in_channels x factor^2 = {in_channels * factor * factor} for a spatial factor "
                f"of {factor} (len(block_out_channels) = {len(block_out_channels)}), got {latent_channels}"
            )
        if temporal_compression_ratio != 1:
            raise ValueError("PixelUnshuffleVAE does not compress time: temporal_compression_ratio must be 1")
        self.factor = factor
        # The offset as a (saved) buffer too: diffusers needs a module to hold a tensor to tell its dtype and device,
        # and a saved weights file to load it with `from_pretrained`.
        self.register_buffer("offset", torch.tensor(float(shift)))

    def _fold(self, x: torch.Tensor, fn, arg: int) -> torch.Tensor:
        # x: [B, C, F, H, W] -> frames into the batch, (un)shuffle each frame, back to [B, C', F, H', W'].
        b, c, f, h, w = x.shape
        y = fn(x.transpose(1, 2).reshape(b * f, c, h, w), arg)
        return y.reshape(b, f, *y.shape[1:]).transpose(1, 2)

    def encode(self, x: torch.Tensor, return_dict: bool = True):
        if x.ndim != 5 or x.shape[1] != self.config.in_channels:
            raise ValueError(f"expected video [B, {self.config.in_channels}, F, H, W], got {tuple(x.shape)}")
        if x.shape[-2] % self.factor or x.shape[-1] % self.factor:
            raise ValueError(f"height and width must be multiples of {self.factor}, got {tuple(x.shape[-2:])}")
        z = self._fold(x, F.pixel_unshuffle, self.factor) - self.offset.to(x.dtype)
        return EncoderOutput(latents=z) if return_dict else (z,)

    def decode(self, z: torch.Tensor, return_dict: bool = True):
        if z.ndim != 5 or z.shape[1] != self.config.latent_channels:
            raise ValueError(f"expected latents [B, {self.config.latent_channels}, F, H, W], got {tuple(z.shape)}")
        x = self._fold(z + self.offset.to(z.dtype), F.pixel_shuffle, self.factor)
        return DecoderOutput(sample=x) if return_dict else (x,)
