"""The yardstick: a small CogVideoX-architecture video model that vidsparse trains itself and ships.

Random weights give attention without the spatial and temporal structure that sparse attention exploits, and no
machine here can download real weights. So vidsparse trains a small model on procedural videos of moving shapes
(`vidsparse.yardstick.scenes`) and ships it (`vidsparse/yardstick/weights/`, about 17 MB). It is the default model of
`vidsparse generate` and `vidsparse compare`, the quality yardstick of the tests, and what the pattern search is tuned on.

The model (`build_components`):
- transformer: `CogVideoXTransformer3DModel`, CogVideoX-5b's design (3-D RoPE, QK layer norm, head dim 64, text first)
  at 8 layers x 4 heads x 64, a 64-wide time embedding (small adaLN layers), patch 2; 8.0M parameters.
- latent space: `PixelUnshuffleVAE`, a fixed invertible 2 x 2 space-to-depth (no compression in time).
- text: a frozen 2-layer T5 encoder (d_model 128) with weights from a fixed seed, over a word-level tokenizer of the
  scene grammar's words (`scenes.VOCABULARY`).
- scheduler: `CogVideoXDDIMScheduler` as CogVideoX-5b's (v-prediction, zero terminal SNR, trailing spacing).

At the default size (9 frames of 64 x 64 -> latents 9 x 32 x 32 -> grid 9 x 16 x 16) a generation has 2,304 video
tokens, 18 key blocks of 128, plus 32 text tokens.

The long yardstick (`load_yardstick(long=True)`, weights in `vidsparse/yardstick/weights-long/`) is the same model
fine-tuned at 16 frames of 128 x 128 (latents 16 x 64 x 64, grid 16 x 32 x 32 = 16,384 video tokens, about
CogVideoX-5b's length), for GPU runs: quality at the lengths where sparse attention is used. Only its transformer
differs; its folder holds the transformer alone, and the loader takes the tokenizer, text encoder, VAE and scheduler
from the shipped yardstick's. Positions come only from RoPE, so the same weights run at any size; the transformer
config's `sample_*` sizes are the training size in latents, which the pipeline's RoPE takes as its base grid (at that
size, positions are 0, 1, 2, ... along each axis, as in training).

Example:
    >>> from vidsparse.yardstick import load_yardstick, GENERATE, GENERATE_LONG
    >>> pipe = load_yardstick()
    >>> video = pipe("a red circle moving right over a navy striped background", **GENERATE).frames[0]  # 9 x 64 x 64
    >>> long = load_yardstick(long=True, device="cuda")
    >>> video = long("a red circle moving right over a navy striped background", **GENERATE_LONG).frames[0]  # 16 x 128 x 128
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import CogVideoXDDIMScheduler, CogVideoXPipeline, CogVideoXTransformer3DModel
from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel

from .wordlevel import EOS_ID, PAD_ID, word_tokenizer
from .latent import PixelUnshuffleVAE
from .scenes import VOCABULARY

__all__ = [
    "FRAMES", "GENERATE", "GENERATE_LONG", "HEIGHT", "LONG_FRAMES", "LONG_HEIGHT", "LONG_WEIGHTS_DIR", "LONG_WIDTH",
    "TEXT_LEN", "WEIGHTS_DIR", "WIDTH", "PixelUnshuffleVAE", "build_components", "load_yardstick", "transformer_config",
]

WEIGHTS_DIR = Path(__file__).parent / "weights"
LONG_WEIGHTS_DIR = Path(__file__).parent / "weights-long"  # the long yardstick's transformer alone
FRAMES, HEIGHT, WIDTH = 9, 64, 64
LONG_FRAMES, LONG_HEIGHT, LONG_WIDTH = 16, 128, 128
TEXT_LEN = 32  # max_sequence_length: the longest prompt of the grammar is 24 tokens with "</s>"
GENERATE = dict(
    num_frames=FRAMES, height=HEIGHT, width=WIDTH, num_inference_steps=20, guidance_scale=6.0,
    max_sequence_length=TEXT_LEN,
)
# CFG 2 for the long model: under CFG 6 its flat first prediction (from pure noise it predicts the scene's mean
# colour) is pushed into a saturated field that the later steps keep; `yardstick/long_settings.py` measured 12 of 18
# samples drawing their prompt's colours at CFG 2 against 4 at CFG 6 (6 prompts x 3 seeds, 20 steps).
GENERATE_LONG = dict(GENERATE, num_frames=LONG_FRAMES, height=LONG_HEIGHT, width=LONG_WIDTH, guidance_scale=2.0)


def transformer_config(frames: int = FRAMES, height: int = HEIGHT, width: int = WIDTH) -> dict:
    """The yardstick transformer's config for a training size in pixels (the latents are half as high and wide).

    The size only sets `sample_*`, the pipeline's RoPE base grid and default size: with RoPE and no learned
    positions the weights do not depend on it.
    """
    return dict(
        num_attention_heads=4, attention_head_dim=64, in_channels=12, out_channels=12, time_embed_dim=64,
        text_embed_dim=128, num_layers=8, sample_width=width // 2, sample_height=height // 2, sample_frames=frames,
        patch_size=2, temporal_compression_ratio=1, max_text_seq_length=TEXT_LEN,
        use_rotary_positional_embeddings=True, use_learned_positional_embeddings=False,
    )


TRANSFORMER_CONFIG = transformer_config()
# CogVideoX-5b's scheduler_config.json.
SCHEDULER_CONFIG = dict(
    beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False, num_train_timesteps=1000,
    prediction_type="v_prediction", rescale_betas_zero_snr=True, set_alpha_to_one=True, snr_shift_scale=1.0,
    steps_offset=0, timestep_spacing="trailing",
)


def _text_encoder_config(vocab_size: int) -> T5Config:
    return T5Config(
        vocab_size=vocab_size, d_model=128, d_kv=32, d_ff=256, num_layers=2, num_heads=4, pad_token_id=PAD_ID,
        eos_token_id=EOS_ID, decoder_start_token_id=PAD_ID,
    )


def build_components(
    seed: int = 0, frames: int = FRAMES, height: int = HEIGHT, width: int = WIDTH, snr_shift_scale: float = 1.0,
) -> dict:
    """Fresh, untrained components of the yardstick pipeline; weights drawn from `seed` (the training script's start).

    `frames`, `height` and `width` (pixels) are the training size: the transformer's `sample_*` (`transformer_config`).
    `snr_shift_scale` is the scheduler's (1: CogVideoX-5b's; the long yardstick trains at more noise).

    The T5 encoder's weights come from `seed` and stay frozen in training; both it and the transformer are then saved
    with the trained weights, so loading never depends on torch's random number generator.
    """
    tokenizer = word_tokenizer("$A </s>", model_max_length=TEXT_LEN, words=VOCABULARY)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        text_encoder = T5EncoderModel(_text_encoder_config(len(tokenizer))).eval().requires_grad_(False)
        transformer = CogVideoXTransformer3DModel(**transformer_config(frames, height, width))
    return dict(
        tokenizer=tokenizer, text_encoder=text_encoder, vae=PixelUnshuffleVAE(), transformer=transformer,
        scheduler=CogVideoXDDIMScheduler(**{**SCHEDULER_CONFIG, "snr_shift_scale": snr_shift_scale}),
    )


def load_yardstick(
    path: str | Path | None = None, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
    long: bool = False,
) -> CogVideoXPipeline:
    """The trained yardstick as a stock `CogVideoXPipeline` (weights from `path`, default the shipped ones).

    `long=True` loads the long yardstick (`LONG_WEIGHTS_DIR`; call it with `GENERATE_LONG`, on a GPU). A folder
    that lacks a component (the long one holds only `transformer/`) takes it from the shipped yardstick's folder.
    The weights are stored in float16; they are cast to `dtype` on load (float32 on a CPU, bfloat16 on a GPU).
    """
    path = Path(path) if path is not None else LONG_WEIGHTS_DIR if long else WEIGHTS_DIR
    weights = path / "transformer" / "diffusion_pytorch_model.safetensors"
    if not weights.exists():
        size = "--frames 16 --height 128 --width 128 " if long else ""
        raise FileNotFoundError(
            f"no yardstick weights at {path} ({weights.name} missing); train them with "
            f"`python -m vidsparse.yardstick.train {size}--out DIR` on a GPU, or pass the folder it wrote"
            + (" (the long yardstick's session: yardstick/long_session.sh)" if long else "")
        )

    def part(name: str) -> Path:
        return path / name if (path / name).is_dir() else WEIGHTS_DIR / name

    pipe = CogVideoXPipeline(
        tokenizer=PreTrainedTokenizerFast.from_pretrained(part("tokenizer")),
        text_encoder=T5EncoderModel.from_pretrained(part("text_encoder"), torch_dtype=dtype),
        vae=PixelUnshuffleVAE.from_config(PixelUnshuffleVAE.load_config(part("vae"))),
        transformer=CogVideoXTransformer3DModel.from_pretrained(path / "transformer", torch_dtype=dtype),
        scheduler=CogVideoXDDIMScheduler.from_pretrained(part("scheduler")),
    )
    return pipe.to(device)
