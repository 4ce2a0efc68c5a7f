"""Which words of a prompt does a yardstick read? Its one-step error on rendered truth, with one word swapped.

    python yardstick/prompt_words.py --out yardstick/prompt_words.json                    # the small one, ~4 min CPU
    python yardstick/prompt_words.py --model yardstick-long --device cuda --out yardstick/prompt_words_long.json

For each of the four direction prompts of `directions.py`, two scenes are rendered (`scenes.scene_for_prompt`,
seeds 0 and 1), encoded with the pixel transform and noised with the scheduler at t = 999, 900 and 700 (one fixed
noise per clip). The transformer predicts the clean latent, `x0 = sqrt(a) x_t - sqrt(1 - a) v`, from the true prompt
and from the prompt with one word swapped: the shape's colour, its shape, its direction (the opposite one), or the
background's colour; and from the empty prompt. The script reports each swap's error relative to the true prompt's
(mean over prompts and seeds), over the whole clip and over the shapes' pixels alone (weighted by their coverage,
since a shape is a few percent of a frame), and how far the swap moves the frozen text encoder's output (the largest
change of one token's embedding, beside the tokens' mean norm). A word the model reads makes the wrong word cost: a ratio well above 1. A ratio of 1
means the prediction does not depend on that word, so generation cannot follow it, whatever the sampler does.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from directions import PROMPTS  # yardstick/directions.py, beside this script

LEVELS = (999, 900, 700)
OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up"}


def swaps(prompt: str) -> dict[str, str]:
    """The prompt with one word swapped, per kind of word: colour, shape, direction, background."""
    from vidsparse.yardstick.scenes import BG_COLOURS, COLOURS, SHAPES

    words = prompt.split()  # "a <colour> <shape> moving <direction> over a <bg> <texture> background"
    colour, shape, direction, bg = words[1], words[2], words[4], words[7]

    def other(choices, word):
        choices = list(choices)
        return choices[(choices.index(word) + 1) % len(choices)]

    def swap(i, word):
        return " ".join(words[:i] + [word] + words[i + 1:])

    return {"colour": swap(1, other(COLOURS, colour)), "shape": swap(2, other(SHAPES, shape)),
            "direction": swap(4, OPPOSITE[direction]), "background": swap(7, other(BG_COLOURS, bg)), "empty": ""}


def main(argv=None) -> None:
    from vidsparse.yardstick import FRAMES, HEIGHT, LONG_FRAMES, LONG_HEIGHT, LONG_WIDTH, WIDTH, load_yardstick
    from vidsparse.yardstick.scenes import render, scene_for_prompt
    from vidsparse.yardstick.train import _encode_prompts, _rotary_emb

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=("yardstick", "yardstick-long"), default="yardstick")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--size", type=int, nargs=3, metavar=("FRAMES", "HEIGHT", "WIDTH"), default=None,
                        help="render at this size instead of the model's own (RoPE lets the weights run at others)")
    parser.add_argument("--out", type=Path, default=None, help="a JSON file for the results")
    args = parser.parse_args(argv)
    long = args.model == "yardstick-long"
    f, h, w = args.size or ((LONG_FRAMES, LONG_HEIGHT, LONG_WIDTH) if long else (FRAMES, HEIGHT, WIDTH))
    pipe = load_yardstick(long=long, device=args.device)
    transformer, vae = pipe.transformer, pipe.vae
    alphas = pipe.scheduler.alphas_cumprod.float()
    rows = []
    with torch.inference_mode():
        for prompt in PROMPTS:
            video, cover = render([scene_for_prompt(prompt, np.random.default_rng(s)) for s in range(args.seeds)],
                                  f, h, w, coverage=True)
            # where the shapes are, on the latent grid [B, F, 1, h/2, w/2] (the pixel transform folds 2 x 2 pixels)
            cover = torch.nn.functional.avg_pool2d(cover, 2).unsqueeze(2).to(args.device)
            x0 = (vae.encode(video.to(args.device)).latents * vae.config.scaling_factor).transpose(1, 2).float()
            rope = tuple(r.to(args.device) for r in _rotary_emb(transformer, x0.shape[1], h // 2, w // 2))
            noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0)).to(args.device)
            dims = (1, 2, 3, 4)
            var = x0.var(dim=dims)
            variants = {"true": prompt, **swaps(prompt)}
            texts = {name: _encode_prompts(pipe.tokenizer, pipe.text_encoder, [p] * args.seeds, args.device)
                     for name, p in variants.items()}
            # How far each swap moves the text encoder's output: the largest change of one token's embedding
            text_change = {name: round(float((texts[name][0] - texts["true"][0]).norm(dim=-1).max()), 2)
                           for name in variants if name not in ("true", "empty")}
            token_norm = round(float(texts["true"][0].norm(dim=-1).mean()), 2)
            print(f"{prompt} | token norm {token_norm} | text change {text_change}", flush=True)
            for t in LEVELS:
                a = alphas[t].to(args.device)
                noisy = a.sqrt() * x0 + (1 - a).sqrt() * noise
                errors, on_shapes = {}, {}
                for name, text in texts.items():
                    v = transformer(hidden_states=noisy, encoder_hidden_states=text,
                                    timestep=torch.full((args.seeds,), t, device=args.device),
                                    image_rotary_emb=rope, return_dict=False)[0]
                    x0_hat = a.sqrt() * noisy - (1 - a).sqrt() * v
                    squared = (x0_hat - x0) ** 2
                    errors[name] = (squared.mean(dim=dims) / var).tolist()
                    on_shapes[name] = ((squared * cover).mean(dim=dims) / cover.mean(dim=dims) / var).tolist()
                for seed in range(args.seeds):
                    row = {"prompt": prompt, "seed": seed, "t": t, "error_true": round(errors["true"][seed], 4),
                           "token_norm": token_norm, **{f"text_change_{n}": c for n, c in text_change.items()}}
                    row.update({f"ratio_{name}": round(errors[name][seed] / errors["true"][seed], 3)
                                for name in variants if name != "true"})
                    row.update({f"shape_ratio_{name}": round(on_shapes[name][seed] / on_shapes["true"][seed], 3)
                                for name in variants if name != "true"})
                    rows.append(row)
                print(f"{prompt} | t {t} | " + ", ".join(
                    f"{n} {np.mean(e) / np.mean(errors['true']):.3f}" for n, e in errors.items() if n != "true"),
                    flush=True)
    def by_level(prefix):
        kinds = [k for k in rows[0] if k.startswith(prefix)]
        return {str(t): {k[len(prefix):]: round(float(np.mean([r[k] for r in rows if r["t"] == t])), 3)
                         for k in kinds} for t in LEVELS}

    summary, shape_summary = by_level("ratio_"), by_level("shape_ratio_")
    changes = {k[len("text_change_"):]: round(float(np.mean([r[k] for r in rows])), 2)
               for k in rows[0] if k.startswith("text_change_")}
    from vidsparse.app.runinfo import environment

    command = ["python", "yardstick/prompt_words.py", *(sys.argv[1:] if argv is None else argv)]
    result = {"environment": environment(command, args.device),
              "model": args.model, "device": args.device, "size": [f, h, w], "levels": LEVELS, "seeds": args.seeds,
              "mean_error_ratio_by_level": summary, "mean_error_ratio_on_the_shapes_by_level": shape_summary,
              "mean_text_change": changes,
              "mean_token_norm": round(float(np.mean([r["token_norm"] for r in rows])), 2), "rows": rows,
              "command": " ".join(command)}
    print(json.dumps({"error_ratio": summary, "on_the_shapes": shape_summary, "text_change": changes}))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
