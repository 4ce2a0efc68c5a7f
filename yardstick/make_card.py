"""Measure the shipped yardstick model and draw the figures of its model card (`yardstick/README.md`).

    python yardstick/make_card.py [--weights DIR] [--run DIR] [--out yardstick]

On the CPU, with the shipped weights (or --weights), it writes into --out:
- `loss.png`: the training loss curve, from the training run's `loss.json` (--run, the folder `train.py --out` wrote);
- `samples.png`: frames of clips for training-style and held-out prompts (20 steps, CFG 6, seed 0);
- `heldout.json`: every held-out (colour, shape, motion) triple over two backgrounds (seeds: --seeds), checked by colour
  tracking (`vidsparse.yardstick.evaluate`), and the pass rate;
- `attention.png` + `attention.json`: per layer and head, where the attention mass of sampled video queries goes (own
  frame, own position in other frames, text) and how many keys hold 90% of it, averaged over 2 prompts x 5 steps;
- `card.json`: CPU seconds for one 20-step CFG generation, parameter counts, file sizes.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from vidsparse.yardstick import GENERATE, WEIGHTS_DIR, load_yardstick
from vidsparse.yardstick.evaluate import check_prompt
from vidsparse.yardstick.scenes import HELD_OUT, parse_prompt

SAMPLE_PROMPTS = [
    "a white circle bouncing over a navy striped background",
    "a orange square spinning and a green ring moving down over a gray checkered background",
    "a purple triangle moving right over a black dotted background, camera panning left",
    "a red square moving right over a gray plain background",  # held out
    "a blue circle moving up over a brown striped background",  # held out
    "a green triangle moving left over a black plain background",  # held out
]
HELD_OUT_BACKGROUNDS = ["gray plain", "navy striped"]


def _generate(pipe, prompt: str, seed: int, steps: int = 20) -> np.ndarray:
    out = pipe(prompt, output_type="np", generator=torch.Generator().manual_seed(seed),
               **{**GENERATE, "num_inference_steps": steps})
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


def loss_plot(run: Path, out: Path) -> None:
    """The loss of every stage (`stage<N>_loss.json` in `run`), stages one after another (matplotlib)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    steps, loss, offset, bounds = [], [], 0, []
    for path in sorted(run.glob("stage*_loss.json")):
        stage = json.loads(path.read_text())
        steps += [offset + s for s, _, _ in stage]
        loss += [v for _, v, _ in stage]
        offset = steps[-1]
        bounds.append(offset)
    steps, loss = np.array(steps, float), np.array(loss, float)
    smooth = np.convolve(loss, np.ones(9) / 9, mode="valid")
    fig = Figure(figsize=(7.2, 4.2), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot(steps, loss, ".", ms=3, color="#a0b4c8", label="per 25 steps")
    ax.plot(steps[4:-4], smooth, color="#1f77b4", lw=2, label="9-point mean")
    for b in bounds[:-1]:  # where a stage ended and the next started (fresh optimiser, new learning-rate schedule)
        ax.axvline(b, color="#ff7f0e", lw=1)
        ax.text(b, 0.97, " stage 2", color="#ff7f0e", transform=ax.get_xaxis_transform(), va="top")
    ax.set(title="Training loss (v-prediction MSE)", xlabel="step", ylabel="loss",
           ylim=(0, float(np.percentile(loss, 99)) * 1.05))
    ax.legend(frameon=False)
    ax.grid(alpha=0.3)
    fig.savefig(out / "loss.png", facecolor="white")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--weights", type=Path, default=WEIGHTS_DIR)
    parser.add_argument("--run", type=Path, default=Path("yardstick/training"),
                        help="the training logs: stage<N>_loss.json and stage<N>_train.json per stage")
    parser.add_argument("--out", type=Path, default=Path("yardstick"))
    parser.add_argument("--skip", action="append", default=[], choices=("samples", "heldout", "attention"))
    parser.add_argument("--seeds", default="0", help="seeds of the held-out check (comma list)")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    args.out.mkdir(parents=True, exist_ok=True)
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
