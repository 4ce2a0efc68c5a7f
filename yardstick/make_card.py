"""Measure the shipped yardstick model and draw the figures of its model card (`yardstick/README.md`).

    python yardstick/make_card.py [--weights DIR] [--run DIR] [--out yardstick]
    python yardstick/make_card.py --long --device cuda [--weights DIR] [--run DIR] [--out DIR]

On the CPU, with the shipped weights (or --weights), it writes into --out:
- `loss.png`: the training loss curve, from the training run's `loss.json` (--run, the folder `train.py --out` wrote);
- `samples.png`: frames of clips for training-style and held-out prompts (20 steps, CFG 6, seed 0);
- `heldout.json`: every held-out (colour, shape, motion) triple over two backgrounds (seeds: --seeds), checked by colour
  tracking (`vidsparse.yardstick.evaluate`), and the pass rate;
- `attention.png` + `attention.json`: per layer and head, where the attention mass of sampled video queries goes (own
  frame, own position in other frames, text) and how many keys hold 90% of it, averaged over 2 prompts x 5 steps;
- `card.json`: CPU seconds for one 20-step CFG generation, parameter counts, file sizes.

With `--long` it measures the long yardstick (16 x 128 x 128, default weights `vidsparse/yardstick/weights-long/`)
instead, on --device (a GPU: `yardstick/long_session.sh` runs it after training), and writes:
- `long_loss.png`: the fine-tuning loss (`long_loss.json` in --run), with the small model's final loss for reference;
- `long_samples.png`: for each sample prompt, the model's clip (20 steps, CFG 6, seed 0) above the rendered truth,
  a scene of the renderer drawn for the same prompt (every other frame of 16);
- `long_card.json`: seconds for one 20-step CFG generation on --device, the final losses of both models, the colour
  check of the samples, parameter count, file sizes, and the training run's `long_train.json`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from vidsparse.yardstick import GENERATE, GENERATE_LONG, LONG_WEIGHTS_DIR, WEIGHTS_DIR, load_yardstick
from vidsparse.yardstick.evaluate import check_prompt
from vidsparse.yardstick.scenes import HELD_OUT, parse_prompt, render, scene_for_prompt

SAMPLE_PROMPTS = [
    "a white circle bouncing over a navy striped background",
    "a orange square spinning and a green ring moving down over a gray checkered background",
    "a purple triangle moving right over a black dotted background, camera panning left",
    "a red square moving right over a gray plain background",  # held out
    "a blue circle moving up over a brown striped background",  # held out
    "a green triangle moving left over a black plain background",  # held out
]
HELD_OUT_BACKGROUNDS = ["gray plain", "navy striped"]


def _generate(pipe, prompt: str, seed: int, steps: int = 20, kwargs: dict = GENERATE) -> np.ndarray:
    out = pipe(prompt, output_type="np", generator=torch.Generator().manual_seed(seed),
               **{**kwargs, "num_inference_steps": steps})
    return out.frames[0]


def _label(img: np.ndarray, text: str, xy) -> None:
    cv2.putText(img, text, xy, cv2.FONT_HERSHEY_SIMPLEX, 0.45, (40, 36, 31), 1, cv2.LINE_AA)


def samples(pipe, out: Path) -> None:
    rows = []
    for prompt in SAMPLE_PROMPTS:
        clip = (_generate(pipe, prompt, 0) * 255).round().astype(np.uint8)
        strip = np.concatenate([np.pad(f, ((0, 0), (0, 2), (0, 0)), constant_values=255) for f in clip], 1)
        strip = cv2.resize(strip, None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)[:, :, ::-1]
        header = np.full((22, strip.shape[1], 3), 255, np.uint8)
        held = " (held out)" if set(parse_prompt(prompt)) & HELD_OUT else ""
        _label(header, prompt + held, (4, 16))
        rows += [header, strip]
    cv2.imwrite(str(out / "samples.png"), np.concatenate(rows, 0))


def _strip(clip: np.ndarray, every: int, label: str) -> np.ndarray:
    """Frames [F, H, W, 3] uint8 RGB -> one BGR row of every `every`-th frame, a 2-pixel gap after each, labelled."""
    row = np.concatenate([np.pad(f, ((0, 0), (0, 2), (0, 0)), constant_values=255) for f in clip[::every]], 1)
    margin = np.full((row.shape[0], 56, 3), 255, np.uint8)
    _label(margin, label, (4, row.shape[0] // 2 + 5))
    return np.concatenate([margin, row[:, :, ::-1]], 1)


def truth_samples(pipe, out: Path, kwargs: dict = GENERATE_LONG, every: int = 2, steps: int = 20,
                  prompts: list[str] = SAMPLE_PROMPTS) -> list[dict]:
    """`long_samples.png`: per sample prompt, the model's clip (seed 0) above a rendered scene of the same prompt
    (`scenes.scene_for_prompt`, seed = the prompt's index), every `every`-th frame; returns the colour checks."""
    frames, height, width = kwargs["num_frames"], kwargs["height"], kwargs["width"]
    rows, checks = [], []
    for i, prompt in enumerate(prompts):
        clip = _generate(pipe, prompt, 0, steps, kwargs)
        checks.append({"prompt": prompt, "clauses": check_prompt(clip, prompt)})
        truth = render([scene_for_prompt(prompt, np.random.default_rng(i))], frames, height, width)[0]
        truth = ((truth.permute(1, 2, 3, 0).numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8)
        model = _strip((clip * 255).round().astype(np.uint8), every, "model")
        header = np.full((22, model.shape[1], 3), 255, np.uint8)
        held = " (held out)" if set(parse_prompt(prompt)) & HELD_OUT else ""
        _label(header, prompt + held, (4, 16))
        rows += [header, model, np.full((2, model.shape[1], 3), 255, np.uint8), _strip(truth, every, "truth"),
                 np.full((10, model.shape[1], 3), 255, np.uint8)]
    cv2.imwrite(str(out / "long_samples.png"), np.concatenate(rows, 0))
    return checks


def heldout(pipe, out: Path, seeds=(0, 1)) -> dict:
    cases = []
    for colour, shape, motion in sorted(HELD_OUT):
        for background in HELD_OUT_BACKGROUNDS:
            prompt = f"a {colour} {shape} {motion} over a {background} background"
            for seed in seeds:
                result = check_prompt(_generate(pipe, prompt, seed), prompt)[0]
                cases.append({"prompt": prompt, "seed": seed, **result})
                print(f"{'pass' if result['passed'] else 'FAIL'}  seed {seed}  {prompt}  {result}")
    summary = {"cases": len(cases), "passed": sum(c["passed"] for c in cases),
               "present": sum(c["present"] for c in cases)}
    (out / "heldout.json").write_text(json.dumps({"summary": summary, "cases": cases}, indent=1))
    return summary


def attention(pipe, out: Path) -> dict:
    import vidsparse
    from vidsparse.search import Calibrator

    calibrator = Calibrator((), steps={0, 5, 10, 15, 19}, rows_per_frame=32, q_block=32, k_block=32)
    handle = vidsparse.apply(pipe, "dense", planner=calibrator)
    for prompt in SAMPLE_PROMPTS[:2]:
        _generate(pipe, prompt, 0)
    handle.remove()
    layers = max(r.layer for r in calibrator.records) + 1
    stats = torch.stack([torch.cat([r.stats for r in calibrator.records if r.layer == i]).mean(0)
                         for i in range(layers)])  # [L, H, 4]
    own_frame, own_pos, text, keys_90 = (stats[..., i] for i in range(4))
    layout = calibrator.last_layout
    kind = []
    for l in range(layers):
        row = []
        for h in range(stats.shape[1]):
            if text[l, h] >= 0.5:
                row.append("text")
            elif own_frame[l, h] >= 0.5:
                row.append("spatial")
            elif own_pos[l, h] >= 0.25:
                row.append("temporal")
            else:
                row.append("global")
        kind.append(row)
    data = {"layout": [layout.frames, layout.height, layout.width, layout.text_len],
            "chance": {"own_frame": round(1 / layout.frames, 3),
                       "own_position": round(9 * (layout.frames - 1) / layout.video_len, 3)},
            "own_frame": own_frame.tolist(), "own_position": own_pos.tolist(), "text": text.tolist(),
            "keys_for_90": keys_90.tolist(), "kind": kind}
    (out / "attention.json").write_text(json.dumps(data, indent=1))
    _attention_figure(data, out / "attention.png")
    return data


def _attention_figure(data: dict, path: Path) -> None:
    colours = {"spatial": (180, 119, 31), "temporal": (14, 127, 255), "global": (127, 127, 127), "text": (44, 160, 44)}
    layers, heads = len(data["kind"]), len(data["kind"][0])
    cw, ch, x0, y0 = 150, 62, 70, 64
    img = np.full((y0 + layers * ch + 70, x0 + heads * cw + 20, 3), 255, np.uint8)
    _label(img, "Yardstick attention per layer and head (video queries; mean over 2 prompts x 5 steps)", (10, 22))
    _label(img, "F: own frame  P: own position +-1 in other frames  T: text  k90: keys holding 90% of the mass",
           (10, 44))
    for h in range(heads):
        _label(img, f"head {h}", (x0 + h * cw + 50, y0 - 6))
    for l in range(layers):
        _label(img, f"layer {l}", (8, y0 + l * ch + 36))
        for h in range(heads):
            x, y = x0 + h * cw, y0 + l * ch
            kind = data["kind"][l][h]
            cv2.rectangle(img, (x + 2, y + 2), (x + cw - 2, y + ch - 2), colours[kind], -1)
            light = tuple(int(c + (255 - c) * 0.75) for c in colours[kind])
            cv2.rectangle(img, (x + 5, y + 5), (x + cw - 5, y + ch - 5), light, -1)
            _label(img, f"{kind}", (x + 10, y + 22))
            _label(img, f"F{data['own_frame'][l][h]:.0%} P{data['own_position'][l][h]:.0%} "
                        f"T{data['text'][l][h]:.0%}".replace("%", ""), (x + 10, y + 40))
            _label(img, f"k90 {data['keys_for_90'][l][h]:.1%}", (x + 10, y + 56))
    y = y0 + layers * ch + 30
    for i, (name, colour) in enumerate(colours.items()):
        cv2.rectangle(img, (x0 + i * 150, y - 12), (x0 + i * 150 + 16, y + 4), colour, -1)
        _label(img, name, (x0 + i * 150 + 22, y))
    _label(img, f"chance: own frame {data['chance']['own_frame']:.0%}, own position "
                f"{data['chance']['own_position']:.1%}", (x0, y + 26))
    cv2.imwrite(str(path), img)


def final_loss(path: Path, points: int = 8) -> float:
    """The mean of the last `points` logged losses (every 25 steps) of a run's loss json."""
    return float(np.mean([v for _, v, _ in json.loads(path.read_text())[-points:]]))


def loss_plot(run: Path, out: Path, pattern: str = "stage*_loss.json", name: str = "loss.png",
              title: str = "Training loss (v-prediction MSE)", reference: tuple[str, float] | None = None) -> None:
    """The loss of every stage (`pattern` in `run`), stages one after another (matplotlib); `reference` draws a
    labelled level (e.g. the small model's final loss)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    steps, loss, offset, bounds = [], [], 0, []
    for path in sorted(run.glob(pattern)):
        stage = json.loads(path.read_text())
        steps += [offset + s for s, _, _ in stage]
        loss += [v for _, v, _ in stage]
        offset = steps[-1]
        bounds.append(offset)
    steps, loss = np.array(steps, float), np.array(loss, float)
    if not len(loss):
        return
    fig = Figure(figsize=(7.2, 4.2), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot(steps, loss, ".", ms=3, color="#a0b4c8", label="per 25 steps")
    if len(loss) >= 9:
        ax.plot(steps[4:-4], np.convolve(loss, np.ones(9) / 9, mode="valid"), color="#1f77b4", lw=2,
                label="9-point mean")
    for b in bounds[:-1]:  # where a stage ended and the next started (fresh optimiser, new learning-rate schedule)
        ax.axvline(b, color="#ff7f0e", lw=1)
        ax.text(b, 0.97, " stage 2", color="#ff7f0e", transform=ax.get_xaxis_transform(), va="top")
    if reference is not None:
        ax.axhline(reference[1], color="#2ca02c", lw=1, ls="--", label=reference[0])
    ax.set(title=title, xlabel="step", ylabel="loss", ylim=(0, float(np.percentile(loss, 99)) * 1.05))
    ax.legend(frameon=False)
    ax.grid(alpha=0.3)
    fig.savefig(out / name, facecolor="white")


def long_card(args) -> dict:
    """The long yardstick's measurements and figures (`--long`): see the module docstring."""
    import sys

    from vidsparse.app.runinfo import environment

    weights = args.weights or LONG_WEIGHTS_DIR
    pipe = load_yardstick(weights, device=args.device, long=True)
    pipe.set_progress_bar_config(disable=True)
    kwargs = dict(GENERATE_LONG, **{k: v for k, v in (("num_frames", args.frames), ("height", args.height),
                                                           ("width", args.width)) if v})
    card = {"weights": str(weights), "size": [kwargs["num_frames"], kwargs["height"], kwargs["width"]],
            "measured": environment(["python", *sys.argv], args.device)}
    _generate(pipe, SAMPLE_PROMPTS[0], 0, args.steps, kwargs)  # warm-up: kernels and caches
    if args.device == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    _generate(pipe, SAMPLE_PROMPTS[0], 0, args.steps, kwargs)
    card[f"{args.device}_seconds_{args.steps}_steps_cfg"] = round(time.perf_counter() - started, 2)
    card["parameters"] = sum(p.numel() for p in pipe.transformer.parameters())
    card["transformer_mb"] = round(sum(f.stat().st_size for f in (Path(weights) / "transformer").rglob("*")
                                       if f.is_file()) / 1e6, 1)
    small = Path("yardstick/training/stage2_loss.json")
    losses = args.run / "long_loss.json"
    if losses.is_file() and json.loads(losses.read_text()):
        card["final_loss"] = {"long": round(final_loss(losses), 4)}
        reference = None
        if small.is_file():
            card["final_loss"]["small_stage2"] = round(final_loss(small), 4)
            card["final_loss"]["ratio"] = round(card["final_loss"]["long"] / card["final_loss"]["small_stage2"], 3)
            reference = ("small yardstick's final loss (stage 2, mean of its last 8 points)",
                         card["final_loss"]["small_stage2"])
        loss_plot(args.run, args.out, "long_loss.json", "long_loss.png",
                  "Long yardstick fine-tuning loss (v-prediction MSE, 16 x 128 x 128)", reference)
    if (args.run / "long_train.json").is_file():
        card["training"] = json.loads((args.run / "long_train.json").read_text())
    (args.out / "long_card.json").write_text(json.dumps(card, indent=1, default=float))  # kept if samples time out
    if "samples" not in args.skip:
        checks = truth_samples(pipe, args.out, kwargs, steps=args.steps, prompts=SAMPLE_PROMPTS[:args.samples])
        card["samples"] = {"present": sum(all(c["present"] for c in s["clauses"]) for s in checks),
                           "passed": sum(all(c["passed"] for c in s["clauses"]) for s in checks),
                           "of": len(checks), "checks": checks}
    (args.out / "long_card.json").write_text(json.dumps(card, indent=1, default=float))
    print(json.dumps({k: v for k, v in card.items() if k not in ("measured", "samples")}, indent=1, default=float))
    return card


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--weights", type=Path, default=None, help="default: the shipped weights (of --long's model)")
    parser.add_argument("--long", action="store_true", help="the long yardstick: loss, samples beside the truth, card")
    parser.add_argument("--device", default="cpu", help="where the model runs (--long: cuda)")
    parser.add_argument("--steps", type=int, default=20, help="--long: denoising steps of each generation")
    parser.add_argument("--samples", type=int, default=len(SAMPLE_PROMPTS), help="--long: sample prompts to draw")
    parser.add_argument("--frames", type=int, help="--long: a smaller size for a dry run (default 16)")
    parser.add_argument("--height", type=int, help="--long: default 128")
    parser.add_argument("--width", type=int, help="--long: default 128")
    parser.add_argument("--run", type=Path, default=Path("yardstick/training"),
                        help="the training logs: stage<N>_loss.json and stage<N>_train.json per stage")
    parser.add_argument("--out", type=Path, default=Path("yardstick"))
    parser.add_argument("--skip", action="append", default=[], choices=("samples", "heldout", "attention"))
    parser.add_argument("--seeds", default="0", help="seeds of the held-out check (comma list)")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    args.out.mkdir(parents=True, exist_ok=True)
    if args.long:
        long_card(args)
        return
    args.weights = args.weights or WEIGHTS_DIR
    pipe = load_yardstick(args.weights)
    pipe.set_progress_bar_config(disable=True)
    weights = args.weights.resolve()
    card = {"weights": str(weights.relative_to(Path.cwd().resolve())) if weights.is_relative_to(Path.cwd().resolve())
            else str(weights), "threads": torch.get_num_threads()}
    import sys

    from vidsparse.app.runinfo import environment

    card["measured"] = environment(["python", *sys.argv], "cpu")
    started = time.perf_counter()
    _generate(pipe, SAMPLE_PROMPTS[0], 0)
    card["cpu_seconds_20_steps_cfg"] = round(time.perf_counter() - started, 1)
    card["parameters"] = {"transformer": sum(p.numel() for p in pipe.transformer.parameters()),
                          "text_encoder": sum(p.numel() for p in pipe.text_encoder.parameters())}
    card["weights_mb"] = round(sum(f.stat().st_size for f in Path(args.weights).rglob("*") if f.is_file()) / 1e6, 1)
    if args.run and args.run.is_dir():
        loss_plot(args.run, args.out)
        card["training"] = [json.loads(p.read_text()) for p in sorted(args.run.glob("stage*_train.json"))]
    if "samples" not in args.skip:
        samples(pipe, args.out)
    if "attention" not in args.skip:
        data = attention(pipe, args.out)
        card["head_kinds"] = {k: sum(row.count(k) for row in data["kind"]) for k in ("spatial", "temporal", "global", "text")}
    if "heldout" not in args.skip:
        card["heldout"] = heldout(pipe, args.out, tuple(int(x) for x in args.seeds.split(",")))
    (args.out / "card.json").write_text(json.dumps(card, indent=1))
    print(json.dumps(card, indent=1))


if __name__ == "__main__":
    main()
