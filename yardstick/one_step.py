"""How well a yardstick predicts the clean latent in one step, from rendered truth noised to each level.

    python yardstick/one_step.py --model yardstick        # the small one: seconds on a CPU
    python yardstick/one_step.py --model yardstick-long   # the long one: about 6 minutes on 2 CPU cores

Two training-style prompts are rendered (`scenes.scene_for_prompt`, seed 0), encoded with the yardstick's pixel
transform and noised with its scheduler at t = 999 (pure noise: the schedule has zero terminal SNR), 900, 700, 500,
300 and 100. The transformer's velocity gives `x0 = sqrt(a) x_t - sqrt(1 - a) v`; the script prints its mean squared
error relative to the latent's variance, per prompt, with the prompt and with the empty one, beside the error of the
per-channel mean of the scene (the best a prediction can do that places nothing). This is what showed that the long
model from pure noise predicts a flat colour (`yardstick/README.md`, "Why CFG 2").
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

PROMPTS = ["a white circle bouncing over a navy striped background",
           "a red square moving right over a gray plain background"]
LEVELS = (999, 900, 700, 500, 300, 100)


def main(argv=None) -> None:
    from vidsparse.yardstick import FRAMES, HEIGHT, LONG_FRAMES, LONG_HEIGHT, LONG_WIDTH, WIDTH, load_yardstick
    from vidsparse.yardstick.scenes import render, scene_for_prompt
    from vidsparse.yardstick.train import _encode_prompts, _rotary_emb

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=("yardstick", "yardstick-long"), default="yardstick")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    long = args.model == "yardstick-long"
    f, h, w = (LONG_FRAMES, LONG_HEIGHT, LONG_WIDTH) if long else (FRAMES, HEIGHT, WIDTH)
    pipe = load_yardstick(long=long, device=args.device)
    transformer, vae = pipe.transformer, pipe.vae
    alphas = pipe.scheduler.alphas_cumprod.float()
    video = render([scene_for_prompt(p, np.random.default_rng(0)) for p in PROMPTS], f, h, w).to(args.device)
    with torch.inference_mode():
        x0 = (vae.encode(video).latents * vae.config.scaling_factor).transpose(1, 2).float()  # [B, F, C, H, W]
        rope = tuple(r.to(args.device) for r in _rotary_emb(transformer, x0.shape[1], h // 2, w // 2))
        texts = {"prompt": _encode_prompts(pipe.tokenizer, pipe.text_encoder, PROMPTS, args.device),
                 "empty": _encode_prompts(pipe.tokenizer, pipe.text_encoder, [""] * len(PROMPTS), args.device)}
        noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0)).to(args.device)
        dims = (1, 2, 3, 4)
        var = x0.var(dim=dims)
        flat = ((x0 - x0.mean(dim=(1, 3, 4), keepdim=True)) ** 2).mean(dim=dims) / var
        print(f"{args.model}: latent {tuple(x0.shape)}; relative error of the per-channel mean "
              f"{', '.join(f'{e:.3f}' for e in flat.tolist())}")
        for t in LEVELS:
            a = alphas[t].to(args.device)
            noisy = a.sqrt() * x0 + (1 - a).sqrt() * noise
            errors = []
            for name, text in texts.items():
                v = transformer(hidden_states=noisy, encoder_hidden_states=text,
                                timestep=torch.full((len(PROMPTS),), t, device=args.device), image_rotary_emb=rope,
                                return_dict=False)[0]
                x0_hat = a.sqrt() * noisy - (1 - a).sqrt() * v
                err = ((x0_hat - x0) ** 2).mean(dim=dims) / var
                errors.append(f"{name} {', '.join(f'{e:.3f}' for e in err.tolist())}")
            print(f"t = {t:3d} (SNR {float(a / (1 - a)):.3g}): relative error of x0, " + "; ".join(errors), flush=True)


if __name__ == "__main__":
    main()
