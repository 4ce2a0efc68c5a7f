"""Put the long yardstick's GPU session results in the repository and fill its model card's numbers.

    python yardstick/fill_long_card.py --from OUT

`OUT` is the folder `yardstick/long_session.sh` wrote (on the device, $OUT). This script, on the CPU:
1. copies each file to its place (`weights-long/{transformer,scheduler}/*` -> `vidsparse/yardstick/weights-long/...`,
   `patterns/*` -> `vidsparse/search/patterns/`, `yardstick/*` -> `yardstick/`, `training/*` -> `yardstick/training/`);
2. draws `yardstick/long_loss.png` from `yardstick/training/long_loss.json` (`make_card.loss_plot`);
3. replaces every `TODO(gpu):NAME` in `yardstick/README.md` with that number from `long_card.json`, the training
   run's `long_train.json` and the pattern file's metadata, and lists the names it could not fill.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
from pathlib import Path

from make_card import final_loss, loss_plot

ROOT = Path(__file__).resolve().parent.parent
PLACES = {
    "weights-long/transformer": ROOT / "vidsparse/yardstick/weights-long/transformer",
    "weights-long/scheduler": ROOT / "vidsparse/yardstick/weights-long/scheduler",  # a shifted noise schedule
    "patterns": ROOT / "vidsparse/search/patterns",
    "yardstick": ROOT / "yardstick",
    "training": ROOT / "yardstick/training",
}


def install(out: Path) -> list[Path]:
    copied = []
    for sub, dest in PLACES.items():
        for src in sorted((out / sub).glob("*")) if (out / sub).is_dir() else []:
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dest / src.name)
            copied.append(dest / src.name)
    return copied


def numbers() -> dict[str, str]:
    """The card's numbers by placeholder name, from the files now in the repository."""
    values: dict[str, str] = {}
    train_file = ROOT / "yardstick/training/long_train.json"
    if train_file.is_file():
        train = json.loads(train_file.read_text())
        values.update(
            steps=f"{train['steps']:,}", batch=str(train["batch_per_gpu"]), lr=f"{train['lr']:g}",
            train_seconds=f"{train['seconds']:.0f}", clips=f"{train['steps'] * train['batch_per_gpu'] * train['gpus']:,}",
            device=train["device"], workers=str(train["workers"]),
        )
        if train.get("minutes"):
            values["minutes"] = f"{train['minutes']:g}"
        if train.get("seconds_per_step"):
            values["seconds_per_step"] = f"{train['seconds_per_step']:.3f}"
        if train.get("peak_gib"):
            values["peak_gib"] = f"{train['peak_gib']:.1f}"
    loss_file = ROOT / "yardstick/training/long_loss.json"
    small_file = ROOT / "yardstick/training/stage2_loss.json"
    if loss_file.is_file() and json.loads(loss_file.read_text()):
        long, small = final_loss(loss_file), final_loss(small_file)
        values.update(final_loss=f"{long:.4f}", small_loss=f"{small:.4f}", loss_ratio=f"{long / small:.2f}")
    card_file = ROOT / "yardstick/long_card.json"
    if card_file.is_file():
        card = json.loads(card_file.read_text())
        seconds = next((v for k, v in card.items() if k.endswith("_steps_cfg")), None)
        if seconds is not None:
            values["gen_seconds"] = f"{seconds:.1f}"
        if "samples" in card:
            values["samples_present"] = f"{card['samples']['present']} of {card['samples']['of']}"
            values["samples_passed"] = f"{card['samples']['passed']} of {card['samples']['of']}"
        values["transformer_mb"] = f"{card['transformer_mb']:.1f}"
    patterns = ROOT / "vidsparse/search/patterns/yardstick-long.safetensors"
    if patterns.is_file():
        from safetensors import safe_open

        with safe_open(str(patterns), "pt") as f:
            meta = json.loads(f.metadata()["vidsparse"])
        summary = meta["summary"]
        values.update(
            search_seconds=f"{meta['calibration']['seconds']:.0f}",
            search_density=f"{summary['mean_density']:.3f}",
            search_families=", ".join(f"{name} {count}" for name, count in sorted(summary["families"].items(),
                                                                                 key=lambda kv: -kv[1])),
        )
    return values


def fill(readme: Path, values: dict[str, str]) -> list[str]:
    """Replace `TODO(gpu):NAME` in `readme` by `values[NAME]`; the names left unfilled."""
    text = readme.read_text()
    missing = sorted({name for name in re.findall(r"TODO\(gpu\):(\w+)", text) if name not in values})
    text = re.sub(r"TODO\(gpu\):(\w+)", lambda m: values.get(m.group(1), m.group(0)), text)
    readme.write_text(text)
    return missing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--from", dest="out", type=Path, required=True, help="the folder the GPU session wrote")
    args = parser.parse_args()
    for path in install(args.out):
        print(f"copied {path.relative_to(ROOT)} ({path.stat().st_size:,} bytes)")
    values = numbers()
    if "final_loss" in values:
        loss_plot(ROOT / "yardstick/training", ROOT / "yardstick", "long_loss.json", "long_loss.png",
                  "Long yardstick fine-tuning loss (v-prediction MSE, 16 x 128 x 128)",
                  ("small yardstick's final loss (stage 2, mean of its last 8 points)", float(values["small_loss"])))
        print("drew yardstick/long_loss.png")
    missing = fill(ROOT / "yardstick/README.md", values)
    print(f"filled {len(values)} numbers in yardstick/README.md" + (f"; not filled: {', '.join(missing)}" if missing else ""))


if __name__ == "__main__":
    main()
