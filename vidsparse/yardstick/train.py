"""Train the yardstick model on procedural videos: `python -m vidsparse.yardstick.train --out DIR`.

Reproduces the shipped weights from a fixed seed on one or more GPUs (`torchrun --nproc-per-node N -m
vidsparse.yardstick.train ...` for data parallelism); the shipped run's exact command is in `yardstick/README.md`.
`--frames`, `--height` and `--width` set the training size (default the yardstick's 9 x 64 x 64): the long yardstick
is `--frames 16 --height 128 --width 128 --init <the shipped transformer>` (`yardstick/long_session.sh`). RoPE gives
the positions, so weights carry over between sizes; the saved transformer config's `sample_*` are the new size, the
base grid of the pipeline's RoPE, and training uses the RoPE the pipeline computes from them.

Each step:
1. scenes are drawn from the grammar (held-out combinations excluded) and rendered by DataLoader workers on the CPU
   (on one core of a 2-core CPU, about 4 ms a clip at 9 x 64 x 64 and 25-33 ms at 16 x 128 x 128: `yardstick/README.md`);
2. the prompts go through the frozen T5 (10% replaced by "" so that classifier-free guidance works);
3. the videos go through the fixed latent transform and are scaled by the VAE's `scaling_factor`;
4. noise is added with the pipeline's own scheduler at uniform timesteps, and the transformer is trained to predict the
   velocity (`scheduler.get_velocity`), as CogVideoX is (v-prediction), in bfloat16 autocast with AdamW.

The learning rate warms up for 200 steps, then follows a cosine to 10% at the last step. With `--steps 0` the step count
comes from the time budget: the script times 30 steps after warm-up and fits as many as `--minutes` allows. An
exponential moving average of the weights (decay 0.999) is what gets saved, in float16, as a diffusers folder
(`DIR/weights`) every few minutes and at the end, with `DIR/loss.json` (loss every 25 steps) and `DIR/train.json`.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import FRAMES, HEIGHT, TEXT_LEN, WIDTH, build_components
from .scenes import render, sample_scenes

logger = logging.getLogger(__name__)


class SceneBatches(torch.utils.data.IterableDataset):
    """Endless batches of (videos [B, 3, F, H, W] float16 in [-1, 1], prompts, shape coverage [B, F, H, W] float16 in
    [0, 1]), one random stream per worker and rank."""

    def __init__(self, batch: int, seed: int, rank: int, size: tuple[int, int, int] = (FRAMES, HEIGHT, WIDTH)):
        self.batch, self.seed, self.rank, self.size = batch, seed, rank, size

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker = info.id if info is not None else 0
        torch.set_num_threads(1)
        rng = np.random.default_rng([self.seed, self.rank, worker])
        while True:
            scenes = sample_scenes(self.batch, rng)
            videos, cover = render(scenes, *self.size, coverage=True)
            yield videos.half(), [s.prompt for s in scenes], cover.half()


def shape_weighted_mse(pred: torch.Tensor, target: torch.Tensor, cover: torch.Tensor, shape_weight: float):
    """The mean squared error of latents `[B, F, C, h, w]`, each latent pixel weighted by `1 + shape_weight x` the
    shapes' coverage `cover` `[B, F, 2h, 2w]` pooled over the 2 x 2 pixels it folds, and divided by the mean weight
    (so that the loss keeps its scale). `shape_weight` 0 is the plain mean squared error."""
    if not shape_weight:
        return F.mse_loss(pred, target)
    weight = 1 + shape_weight * F.avg_pool2d(cover.float(), 2).unsqueeze(2)  # [B, F, 1, h, w]
    return (F.mse_loss(pred, target, reduction="none") * weight).mean() / weight.mean()


def _rotary_emb(transformer, frames: int, height: int, width: int):
    """(cos, sin) of the 3-D RoPE that CogVideoXPipeline gives a CogVideoX-5b-style transformer for these latent
    sizes (`_prepare_rotary_positional_embeddings`, without its pipeline)."""
    from diffusers.models.embeddings import get_3d_rotary_pos_embed
    from diffusers.pipelines.cogvideo.pipeline_cogvideox import get_resize_crop_region_for_grid

    config = transformer.config
    grid = (height // config.patch_size, width // config.patch_size)
    base = (config.sample_width // config.patch_size, config.sample_height // config.patch_size)
    crops = get_resize_crop_region_for_grid(grid, *base)
    return get_3d_rotary_pos_embed(embed_dim=config.attention_head_dim, crops_coords=crops, grid_size=grid,
                                   temporal_size=frames)


def _encode_prompts(tokenizer, text_encoder, prompts: list[str], device) -> torch.Tensor:
    ids = tokenizer(prompts, padding="max_length", max_length=TEXT_LEN, truncation=True, return_tensors="pt").input_ids
    return text_encoder(ids.to(device))[0]


def _save(transformer, ema: dict, components: dict, out: Path, losses: list | None = None) -> None:
    """Write the EMA weights in float16 with the rest of the pipeline as a diffusers folder, and the losses so far
    (beside it, in `loss.json`) when given.

    Copies are saved: the models being trained stay where and as they are.
    """
    from diffusers import CogVideoXPipeline

    half = type(transformer).from_config(transformer.config).to(torch.float16)
    half.load_state_dict({k: v.half() for k, v in ema.items()})
    text_encoder = copy.deepcopy(components["text_encoder"]).to("cpu", torch.float16)
    pipe = CogVideoXPipeline(
        tokenizer=components["tokenizer"], text_encoder=text_encoder, vae=components["vae"], transformer=half,
        scheduler=components["scheduler"],
    )
    pipe.save_pretrained(out)
    if losses is not None:
        (out.parent / "loss.json").write_text(json.dumps(losses))


def assemble(
    transformer_file: Path, out: Path, seed: int = 0, size: tuple[int, int, int] = (FRAMES, HEIGHT, WIDTH),
    transformer_only: bool = False, snr_shift_scale: float = 1.0,
) -> Path:
    """A complete pipeline folder from trained transformer weights alone: the other components are rebuilt from `seed`
    (the frozen T5 and the tokenizer are deterministic), so a GPU run only needs to bring back one file.

    `size` (frames, height, width in pixels) is the training size, written as the transformer config's `sample_*`.
    With `transformer_only`, `out` gets `transformer/` alone (the long yardstick's folder: `load_yardstick` takes
    the other components from the shipped yardstick's). A `snr_shift_scale` other than 1 (the training's) writes
    `scheduler/` too, since the sampler must use the noise levels the model was trained at.
    """
    from safetensors.torch import load_file

    components = build_components(seed, *size, snr_shift_scale=snr_shift_scale)
    ema = {k: v.float() for k, v in load_file(str(transformer_file)).items()}
    if transformer_only:
        half = type(components["transformer"]).from_config(components["transformer"].config).to(torch.float16)
        half.load_state_dict({k: v.half() for k, v in ema.items()})
        half.save_pretrained(out / "transformer")
        if snr_shift_scale != 1.0:
            components["scheduler"].save_pretrained(out / "scheduler")
    else:
        _save(components["transformer"], ema, components, out)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--init", type=Path, metavar="SAFETENSORS",
                        help="start from these transformer weights (a previous run's) instead of the seed's init")
    parser.add_argument("--assemble", type=Path, metavar="SAFETENSORS",
                        help="do not train: write a pipeline folder (--out) around these trained transformer weights")
    parser.add_argument("--transformer-only", action="store_true",
                        help="with --assemble: write --out/transformer alone (the long yardstick's folder)")
    parser.add_argument("--frames", type=int, default=FRAMES, help="video frames of the training clips")
    parser.add_argument("--height", type=int, default=HEIGHT, help="pixels; a multiple of 4 (2 x 2 latent, patch 2)")
    parser.add_argument("--width", type=int, default=WIDTH, help="pixels; a multiple of 4")
    parser.add_argument("--snr-shift-scale", type=float, default=1.0,
                        help="divide every noise level's signal-to-noise ratio by this (the scheduler's "
                             "snr_shift_scale): larger videos carry more redundant signal at the same level, so they "
                             "need more noise (CogVideoX-2b uses 3 at 480p)")
    parser.add_argument("--shape-weight", type=float, default=0.0,
                        help="weight the loss by 1 + this where the shapes are (their coverage, pooled to the latent "
                             "grid), normalised to the mean weight: the shapes' outlines and travel are a few pixels "
                             "of each frame, and the small model reads their words weakly "
                             "(yardstick/prompt_words.py); 0: the plain mean squared error")
    parser.add_argument("--minutes", type=float, default=9.0, help="time budget of the training loop")
    parser.add_argument("--steps", type=int, default=0, help="0: as many as --minutes allows (timed after warm-up)")
    parser.add_argument("--batch", type=int, default=48, help="per GPU")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=6, help="DataLoader workers per GPU that render scenes")
    parser.add_argument("--save-every-min", type=float, default=3.0)
    parser.add_argument("--compile", action="store_true", help="torch.compile the transformer (falls back if it fails)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.shape_weight < 0:
        parser.error(f"--shape-weight must be at least 0 (0: the plain loss); got {args.shape_weight}")
    if args.height % 4 or args.width % 4 or args.frames < 2:
        parser.error(f"--height and --width must be multiples of 4 and --frames at least 2; got "
                     f"{args.frames} x {args.height} x {args.width}")
    size = (args.frames, args.height, args.width)
    if args.assemble:
        assemble(args.assemble, args.out, args.seed, size, args.transformer_only, args.snr_shift_scale)
        return

    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu")
    if world > 1:
        torch.distributed.init_process_group("nccl", device_id=device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True

    logger.info("training at %d x %d x %d on %d x %s (%s), torch %s", *size, world, device,
                torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", torch.__version__)
    components = build_components(args.seed, *size, snr_shift_scale=args.snr_shift_scale)
    tokenizer, text_encoder, vae = components["tokenizer"], components["text_encoder"].to(device), components["vae"]
    scheduler, transformer = components["scheduler"], components["transformer"]
    if args.init:
        from safetensors.torch import load_file

        transformer.load_state_dict({k: v.float() for k, v in load_file(str(args.init)).items()})
    transformer = transformer.to(device).train()
    # The pipeline's own RoPE for the training size (latent frames x latent height x latent width).
    rope = tuple(r.to(device) for r in _rotary_emb(transformer, args.frames, args.height // 2, args.width // 2))
    alphas = scheduler.alphas_cumprod.to(device, torch.float32)
    with torch.no_grad():
        empty = _encode_prompts(tokenizer, text_encoder, [""], device)

    ema = {name: p.detach().clone().float() for name, p in transformer.state_dict().items()}
    model = transformer
    if args.compile:
        model = torch.compile(transformer)
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index])
    optimizer = torch.optim.AdamW(transformer.parameters(), lr=args.lr, betas=(0.9, 0.99), weight_decay=0.01)
    loader = torch.utils.data.DataLoader(
        SceneBatches(args.batch, args.seed, rank, size), batch_size=None, num_workers=args.workers,
        pin_memory=device.type == "cuda", prefetch_factor=4 if args.workers else None, persistent_workers=bool(args.workers),
    )
    gen = torch.Generator(device=device).manual_seed(args.seed * 1000 + rank)

    def train_step(videos: torch.Tensor, prompts: list[str], cover: torch.Tensor) -> torch.Tensor:
        videos = videos.to(device, non_blocking=True).float()
        with torch.no_grad():
            text = _encode_prompts(tokenizer, text_encoder, prompts, device)
            drop = torch.rand(len(prompts), device=device, generator=gen) < 0.1
            text = torch.where(drop.view(-1, 1, 1), empty, text)
            x0 = (vae.encode(videos).latents * vae.config.scaling_factor).transpose(1, 2)  # [B, F, C, H, W]
            noise = torch.randn(x0.shape, device=device, generator=gen)
            t = torch.randint(0, scheduler.config.num_train_timesteps, (len(prompts),), device=device, generator=gen)
            a = alphas[t].view(-1, 1, 1, 1, 1)
            noisy = a.sqrt() * x0 + (1 - a).sqrt() * noise  # scheduler.add_noise
            target = a.sqrt() * noise - (1 - a).sqrt() * x0  # scheduler.get_velocity
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            pred = model(hidden_states=noisy, encoder_hidden_states=text, timestep=t, image_rotary_emb=rope,
                         return_dict=False)[0]
        loss = shape_weighted_mse(pred.float(), target, cover.to(device), args.shape_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(transformer.parameters(), 1.0)
        optimizer.step()
        return loss.detach()

    args.out.mkdir(parents=True, exist_ok=True)
    total = args.steps or 10**9
    losses, started, last_save, step = [], time.perf_counter(), time.perf_counter(), 0
    timing, per_step = None, None
    budget = args.minutes * 60
    for videos, prompts, cover in loader:
        progress = min(step / total, 1.0)
        lr = args.lr * min(1.0, (step + 1) / 200) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss = train_step(videos, prompts, cover)
        step += 1
        with torch.no_grad():
            decay = min(0.999, (1 + step) / (10 + step))
            for name, p in transformer.state_dict().items():
                ema[name].lerp_(p.float(), 1 - decay)
        if step % 25 == 0:
            losses.append((step, round(float(loss), 5), round(time.perf_counter() - started, 1)))
            if rank == 0:
                logger.info("step %d loss %.4f lr %.2e %.1fs", step, float(loss), lr, time.perf_counter() - started)
        if not args.steps and step == 50:
            timing = time.perf_counter()
        if not args.steps and step == 80:
            per_step = (time.perf_counter() - timing) / 30
            total = int((budget - (time.perf_counter() - started)) / per_step) + step
            if world > 1:  # every rank must stop at the same step
                t_total = torch.tensor(total, device=device)
                torch.distributed.broadcast(t_total, 0)
                total = int(t_total)
            logger.info("%.3f s per step: training %d steps in all%s", per_step, total,
                        f" (peak {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB)" if device.type == "cuda" else "")
        if rank == 0 and time.perf_counter() - last_save > args.save_every_min * 60:
            _save(transformer, ema, components, args.out / "weights", losses)
            last_save = time.perf_counter()
        if step >= total:
            break
    elapsed = time.perf_counter() - started
    if rank == 0:
        _save(transformer, ema, components, args.out / "weights", losses)
        (args.out / "train.json").write_text(json.dumps({
            "steps": step, "batch_per_gpu": args.batch, "gpus": world, "lr": args.lr, "seed": args.seed,
            "frames": args.frames, "height": args.height, "width": args.width, "workers": args.workers,
            "minutes": args.minutes if not args.steps else None,
            "seconds_per_step": round(per_step, 4) if per_step else None,
            "compile": args.compile, "seconds": round(elapsed, 1), "init": str(args.init) if args.init else None,
            "snr_shift_scale": args.snr_shift_scale, "shape_weight": args.shape_weight,
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "peak_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 1) if device.type == "cuda" else None,
            "torch": torch.__version__,
        }, indent=1))
        logger.info("trained %d steps in %.0f s -> %s", step, elapsed, args.out)
    if world > 1:
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
