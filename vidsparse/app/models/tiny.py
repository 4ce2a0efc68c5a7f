"""The tiny CogVideoX, HunyuanVideo and Wan pipelines and transformers of the built-in models, with RANDOM
weights: they cover each supported architecture offline (`vidsparse.app.models` is their registry).

Nothing here downloads: every tiny model is built from a config written in this file, and the tokenizers are
word-level `tokenizers` vocabularies of a few dozen words wrapped in `transformers.PreTrainedTokenizerFast`.
Weights come from `torch.manual_seed(seed)` inside `torch.random.fork_rng`, so building a model neither depends
on nor disturbs the global random state of the caller.

Every tiny transformer keeps the real attention module layout and processors, with 2 heads of 64 and 1-2 layers, so
an attention processor sees the same kinds of tensors as at full size, only fewer of them. 64 is CogVideoX's real head
size; HunyuanVideo and Wan use 128 at full size.

The transformer builders are also what the tests build on; their forward inputs (`cogvideox_inputs`,
`hunyuan_inputs`, `wan_inputs`, `cogvideox_rotary_emb`) are test fixtures, in `tests/tiny_models.py`. The default
grids (latent frames x latent height x latent width ->
post-patchify grid T x H x W):

| builder | latent input | grid after patchify | text tokens | pipeline call that gives it |
|---|---|---|---|---|
| `cogvideox_transformer("2b" / "5b")` | 3 x 10 x 14 | 3 x 5 x 7 = 105 | 16, first | `num_frames=9, height=80, width=112` |
| `cogvideox_transformer("1.5")` | 6 x 10 x 14 | 3 x 5 x 7 = 105 | 16, first | `num_frames=17` (5 latent frames, padded to 6) |
| `hunyuan_transformer()` | 3 x 10 x 14 | 3 x 5 x 7 = 105 | 7 (3 padded in batch 1), last | `num_frames=9, height=80, width=112` |
| `wan_transformer()` | 3 x 10 x 14 | 3 x 5 x 7 = 105 | none in self-attention (cross-attention: 16) | `num_frames=9, height=80, width=112` |

Input layouts differ: CogVideoX takes `hidden_states` as [B, F, C, H, W]; HunyuanVideo and Wan take [B, C, F, H, W].
"""

from __future__ import annotations

import torch
from diffusers import (
    AutoencoderKLCogVideoX,
    AutoencoderKLHunyuanVideo,
    AutoencoderKLWan,
    CogVideoXDDIMScheduler,
    CogVideoXPipeline,
    CogVideoXTransformer3DModel,
    FlowMatchEulerDiscreteScheduler,
    HunyuanVideoPipeline,
    HunyuanVideoTransformer3DModel,
    UniPCMultistepScheduler,
    WanPipeline,
    WanTransformer3DModel,
)

from ...yardstick.wordlevel import BOS_ID, EOS_ID, PAD_ID, SPECIAL_TOKENS, WORDS, word_tokenizer

# transformers (the tiny text encoders) is imported by the builders that need it, not with this module.

__all__ = [
    "COGVIDEOX_TEXT_LEN", "COGVIDEOX_VARIANTS", "HEAD_DIM", "HUNYUAN_PROMPT_TEMPLATE", "NUM_HEADS", "POOLED_DIM",
    "TEXT_DIM", "WAN_TEXT_LEN", "cogvideox_pipeline", "cogvideox_transformer", "hunyuan_pipeline",
    "hunyuan_transformer", "wan_pipeline", "wan_transformer", "word_tokenizer",
]

HEAD_DIM = 64  # CogVideoX's real head size; HunyuanVideo and Wan use 128 at full size
NUM_HEADS = 2
TEXT_DIM = 32  # hidden size of the tiny text encoders, i.e. the transformers' text_embed_dim / text_dim
POOLED_DIM = 16  # hidden size of the tiny CLIP text model, i.e. HunyuanVideo's pooled_projection_dim
COGVIDEOX_TEXT_LEN = 16  # CogVideoX max_text_seq_length of the tiny models; real checkpoints use 226
WAN_TEXT_LEN = 16  # max_sequence_length to pass to the tiny Wan pipeline (its default is 512)

# HunyuanVideo's pipeline formats every prompt into a template, encodes it with the Llama model, then drops the first
# `crop_start` tokens (the template prefix). This template is "<s> describe the video : {}": 5 tokens before the prompt.
# Pass it with `max_sequence_length` to `hunyuan_pipeline()(...)`; the stock template (crop_start 95) also works with
# the tiny vocabulary, it is only longer.
HUNYUAN_PROMPT_TEMPLATE = {"template": "describe the video : {}", "crop_start": 5}

def _t5_fields() -> dict:
    """The tiny T5 / UMT5 text encoder's config (CogVideoX and Wan use the same shape)."""
    return dict(
        vocab_size=len(SPECIAL_TOKENS) + len(WORDS), d_model=TEXT_DIM, d_kv=8, d_ff=64, num_layers=2,
        num_heads=4, pad_token_id=PAD_ID, eos_token_id=EOS_ID, decoder_start_token_id=PAD_ID,
    )


def _seeded(seed: int, build):
    """Build a module in eval mode with weights drawn after torch.manual_seed(seed), leaving the global RNG as it was.

    Parameters are float32 (torch's default dtype); casting with `.to(torch.float32)` would only make diffusers warn.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = build()
    return module.eval()


# --------------------------------------------------------------------------------------------------------------------
# CogVideoX
# --------------------------------------------------------------------------------------------------------------------

COGVIDEOX_VARIANTS = ("2b", "5b", "1.5")


def cogvideox_transformer(
    variant: str = "5b", seed: int = 0, max_text_seq_length: int = COGVIDEOX_TEXT_LEN
) -> CogVideoXTransformer3DModel:
    """A 2-layer, 2-head x 64 `CogVideoXTransformer3DModel` (inner dim 128) with 4 latent channels and patch size 2.

    Variants follow the real transformer configs:
    - "2b": no RoPE; fixed 3-D sin/cos positional embeddings added to the tokens, sized by `sample_*` and
      `max_text_seq_length`. The text length must equal `max_text_seq_length` (the patch embedding adds one joint
      text+video table); other video sizes recompute the table.
    - "5b": RoPE on the video tokens (`use_rotary_positional_embeddings=True`), no additive embedding; any text length.
    - "1.5": as 5b, plus `patch_size_t=2` (a linear patch embedding over 2 x 2 x 2 patches), `patch_bias=False`, and
      RoPE of grid type "slice" bounded by `sample_height // 2 x sample_width // 2` (here 16 x 16). Latent frames
      must be a multiple of 2; the pipeline pads them, `cogvideox_inputs` picks 6 by default.

    The sample size is 3 latent frames (`sample_frames=9` before the 4x temporal compression) x 10 x 14, so the default
    grid after patchify is 3 x 5 x 7 (1.5: sample 32 x 32 latent pixels, which only bounds its RoPE table).
    """
    if variant not in COGVIDEOX_VARIANTS:
        raise ValueError(f"variant must be one of {COGVIDEOX_VARIANTS}, got {variant!r}")
    config = {
        "num_attention_heads": NUM_HEADS,
        "attention_head_dim": HEAD_DIM,
        "in_channels": 4,
        "out_channels": 4,
        "time_embed_dim": 32,
        "text_embed_dim": TEXT_DIM,
        "num_layers": 2,
        "sample_width": 14,
        "sample_height": 10,
        "sample_frames": 9,
        "patch_size": 2,
        "temporal_compression_ratio": 4,
        "max_text_seq_length": max_text_seq_length,
    }
    if variant == "5b":
        config.update(use_rotary_positional_embeddings=True, use_learned_positional_embeddings=False)
    elif variant == "1.5":
        config.update(
            patch_size_t=2,
            patch_bias=False,
            use_rotary_positional_embeddings=True,
            use_learned_positional_embeddings=False,
            sample_width=32,
            sample_height=32,
        )
    return _seeded(seed, lambda: CogVideoXTransformer3DModel(**config))


def cogvideox_pipeline(variant: str = "5b", seed: int = 0) -> CogVideoXPipeline:
    """A `CogVideoXPipeline` of the tiny transformer, a tiny VAE (8x spatial, 4x temporal), a tiny T5 and DDIM.

    Pass `max_sequence_length=16` (`COGVIDEOX_TEXT_LEN`): the pipeline's default of 226 fails for "2b", whose
    positional table is sized for 16 text tokens, and is only slower for the others.

    Example (latent 3 x 10 x 14 -> grid 3 x 5 x 7; for "1.5" use `num_frames=17`, 5 latent frames padded to 6):
        >>> pipe = cogvideox_pipeline("5b")
        >>> video = pipe(prompt="a red circle", negative_prompt="blue", num_inference_steps=2, guidance_scale=5.0,
        ...              height=80, width=112, num_frames=9, max_sequence_length=16, output_type="pt",
        ...              generator=torch.Generator().manual_seed(0)).frames  # [1, 9, 3, 80, 112]
    """
    transformer = cogvideox_transformer(variant, seed=seed)
    vae = _seeded(
        seed,
        lambda: AutoencoderKLCogVideoX(
            down_block_types=("CogVideoXDownBlock3D",) * 4,
            up_block_types=("CogVideoXUpBlock3D",) * 4,
            block_out_channels=(8, 8, 8, 8),
            latent_channels=transformer.config.in_channels,
            layers_per_block=1,
            norm_num_groups=2,
            temporal_compression_ratio=4,
        ),
    )
    from transformers import T5Config, T5EncoderModel

    text_encoder = _seeded(
        seed,
        lambda: T5EncoderModel(
            T5Config(**_t5_fields())
        ),
    )
    pipe = CogVideoXPipeline(
        tokenizer=word_tokenizer("$A </s>"),
        text_encoder=text_encoder,
        vae=vae,
        transformer=transformer,
        scheduler=CogVideoXDDIMScheduler(),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


# --------------------------------------------------------------------------------------------------------------------
# HunyuanVideo
# --------------------------------------------------------------------------------------------------------------------


def hunyuan_transformer(seed: int = 0) -> HunyuanVideoTransformer3DModel:
    """A `HunyuanVideoTransformer3DModel` of 1 dual-stream block, 1 single-stream block and 1 text-refiner block.

    2 heads x 64 (inner dim 128; the real model has 128 per head), RoPE axes (16, 24, 24) for (t, h, w), 4 latent
    channels, patch 2 x 2 spatially and 1 in time, guidance embedding on (as HunyuanVideo-T2V). Text comes after the
    video tokens; padded text tokens are masked.
    """
    return _seeded(
        seed,
        lambda: HunyuanVideoTransformer3DModel(
            in_channels=4,
            out_channels=4,
            num_attention_heads=NUM_HEADS,
            attention_head_dim=HEAD_DIM,
            num_layers=1,
            num_single_layers=1,
            num_refiner_layers=1,
            mlp_ratio=2.0,
            patch_size=2,
            patch_size_t=1,
            guidance_embeds=True,
            text_embed_dim=TEXT_DIM,
            pooled_projection_dim=POOLED_DIM,
            rope_axes_dim=(16, 24, 24),
        ),
    )


def hunyuan_pipeline(seed: int = 0) -> HunyuanVideoPipeline:
    """A `HunyuanVideoPipeline` of the tiny transformer, a tiny Llama (2 layers: the pipeline takes the hidden states
    of the third-from-last layer), a tiny CLIP text model, a tiny VAE (8x spatial, 4x temporal) and flow-match Euler.

    True CFG needs `true_cfg_scale > 1` and a negative prompt: then the transformer runs twice per step, in the
    cache contexts "cond" and "uncond", at batch 1 each. `guidance_scale` only feeds the guidance embedding.
    Height and width must be multiples of 16.

    Example (latent 3 x 10 x 14 -> grid 3 x 5 x 7, 16 text tokens of which the prompt fills 3):
        >>> pipe = hunyuan_pipeline()
        >>> video = pipe(prompt="a red circle", negative_prompt="blue", true_cfg_scale=5.0, num_inference_steps=2,
        ...              height=80, width=112, num_frames=9, prompt_template=HUNYUAN_PROMPT_TEMPLATE,
        ...              max_sequence_length=16, output_type="pt",
        ...              generator=torch.Generator().manual_seed(0)).frames  # [1, 9, 3, 80, 112]
    """
    from transformers import CLIPTextConfig, CLIPTextModel, LlamaConfig, LlamaModel

    vocab_size = len(SPECIAL_TOKENS) + len(WORDS)
    text_encoder = _seeded(
        seed,
        lambda: LlamaModel(
            LlamaConfig(
                vocab_size=vocab_size,
                hidden_size=TEXT_DIM,
                intermediate_size=64,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=4,
                max_position_embeddings=512,
                bos_token_id=BOS_ID,
                eos_token_id=EOS_ID,
                pad_token_id=PAD_ID,
            )
        ),
    )
    text_encoder_2 = _seeded(
        seed,
        lambda: CLIPTextModel(
            CLIPTextConfig(
                vocab_size=vocab_size,
                hidden_size=POOLED_DIM,
                intermediate_size=32,
                num_hidden_layers=2,
                num_attention_heads=2,
                max_position_embeddings=77,
                bos_token_id=BOS_ID,
                eos_token_id=EOS_ID,  # not 2, so CLIP pools at the first eos token rather than at argmax(input_ids)
                pad_token_id=PAD_ID,
            )
        ),
    )
    vae = _seeded(
        seed,
        lambda: AutoencoderKLHunyuanVideo(
            latent_channels=4,
            down_block_types=("HunyuanVideoDownBlock3D",) * 4,
            up_block_types=("HunyuanVideoUpBlock3D",) * 4,
            block_out_channels=(8, 8, 8, 8),
            layers_per_block=1,
            norm_num_groups=4,
            spatial_compression_ratio=8,
            temporal_compression_ratio=4,
        ),
    )
    pipe = HunyuanVideoPipeline(
        text_encoder=text_encoder,
        tokenizer=word_tokenizer("<s> $A"),
        transformer=hunyuan_transformer(seed=seed),
        vae=vae,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
        text_encoder_2=text_encoder_2,
        tokenizer_2=word_tokenizer("<s> $A </s>", model_max_length=77),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


# --------------------------------------------------------------------------------------------------------------------
# Wan 2.1 / 2.2
# --------------------------------------------------------------------------------------------------------------------


def wan_transformer(seed: int = 0) -> WanTransformer3DModel:
    """A 2-block, 2-head x 64 `WanTransformer3DModel` (inner dim 128; real heads are 128), patch (1, 2, 2), 4 channels.

    Each block has `attn1` (video self-attention with RoPE; its RoPE splits the head as t 24, h 20, w 20) and `attn2`
    (cross-attention to the text), both `WanAttention` with `WanAttnProcessor`.
    """
    return _seeded(
        seed,
        lambda: WanTransformer3DModel(
            patch_size=(1, 2, 2),
            num_attention_heads=NUM_HEADS,
            attention_head_dim=HEAD_DIM,
            in_channels=4,
            out_channels=4,
            text_dim=TEXT_DIM,
            freq_dim=32,
            ffn_dim=64,
            num_layers=2,
            cross_attn_norm=True,
            qk_norm="rms_norm_across_heads",
            rope_max_seq_len=64,
        ),
    )


def wan_pipeline(two_transformers: bool = False, seed: int = 0) -> WanPipeline:
    """A `WanPipeline` of the tiny transformer, a tiny UMT5 encoder, a tiny Wan VAE (8x spatial, 4x temporal) and
    UniPC with flow sigmas (as Wan 2.1).

    `two_transformers=True` builds a Wan 2.2 A14B-style pipeline: `transformer` (seed) runs the high-noise steps
    (t >= boundary_ratio x 1000) and `transformer_2` (seed + 1) the rest, `boundary_ratio=0.875`. With 2 steps of
    UniPC and flow_shift 3 the timesteps are 999 and 750, so each transformer runs one step.

    CFG runs two batch-1 forwards per step, in the cache contexts "cond" and "uncond". Height and width must be
    multiples of 16; pass `max_sequence_length=16` (`WAN_TEXT_LEN`; the default is 512 text tokens).

    Example (latent 3 x 10 x 14 -> grid 3 x 5 x 7):
        >>> pipe = wan_pipeline()
        >>> video = pipe(prompt="a red circle", negative_prompt="blue", num_inference_steps=2, guidance_scale=5.0,
        ...              height=80, width=112, num_frames=9, max_sequence_length=16, output_type="pt",
        ...              generator=torch.Generator().manual_seed(0)).frames  # [1, 9, 3, 80, 112]
    """
    from transformers import UMT5Config, UMT5EncoderModel

    text_encoder = _seeded(
        seed,
        lambda: UMT5EncoderModel(
            UMT5Config(**_t5_fields())
        ),
    )
    z_dim = 4
    vae = _seeded(
        seed,
        lambda: AutoencoderKLWan(
            base_dim=8,
            z_dim=z_dim,
            dim_mult=[1, 1, 1, 1],
            num_res_blocks=1,
            temperal_downsample=[False, True, True],
            latents_mean=[0.0] * z_dim,
            latents_std=[1.0] * z_dim,
        ),
    )
    pipe = WanPipeline(
        tokenizer=word_tokenizer("$A </s>"),
        text_encoder=text_encoder,
        vae=vae,
        scheduler=UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0),
        transformer=wan_transformer(seed=seed),
        transformer_2=wan_transformer(seed=seed + 1) if two_transformers else None,
        boundary_ratio=0.875 if two_transformers else None,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe
