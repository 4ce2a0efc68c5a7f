"""Does a yardstick move its shapes the way the prompt says? The colour check's travel per direction prompt.

For one prompt of each direction ("moving right / left / up / down") and each seed, `evaluate.check_prompt` measures
the shape's travel between the first and last thirds of the clip (dx, dy: fractions of the frame; y grows down).
A clip is "reversed" when the shape is found and travels against the prompted direction by more than the check's
minimum travel (0.12).

    python yardstick/directions.py                                   # the small yardstick on the CPU (about 3 min)
    python yardstick/directions.py --model yardstick-long --device cuda
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from vidsparse.yardstick import GENERATE, GENERATE_LONG, load_yardstick
from vidsparse.yardstick.evaluate import check_prompt
from vidsparse.yardstick.scenes import DIRECTIONS

PROMPTS = [
    "a purple triangle moving right over a black dotted background",
    "a red square moving left over a gray plain background",
    "a blue circle moving down over a brown striped background",
    "a yellow square moving up over a navy plain background",
]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=["yardstick", "yardstick-long"], default="yardstick")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="a JSON file for the results")
    args = parser.parse_args(argv)
    long = args.model == "yardstick-long"
    pipe = load_yardstick(long=long, device=args.device)
    pipe.set_progress_bar_config(disable=True)
    kwargs = GENERATE_LONG if long else GENERATE
    rows = []
    for prompt in PROMPTS:
        for seed in range(args.seeds):
            clip = pipe(prompt, output_type="np", generator=torch.Generator().manual_seed(seed), **kwargs).frames[0]
            check = check_prompt(clip, prompt)[0]
            ux, uy = DIRECTIONS[check["motion"].split()[1]]
            along = None if not check["present"] else check["dx"] * ux + check["dy"] * uy
            rows.append({"prompt": prompt, "seed": seed, "present": check["present"], "dx": check["dx"],
                         "dy": check["dy"], "along": along, "passed": check["passed"],
                         "reversed": along is not None and along < -0.12})
            print(f"{prompt} | seed {seed} | present {check['present']} | dx {check['dx']} dy {check['dy']} | "
                  f"along {along if along is None else round(along, 3)} | passed {check['passed']}", flush=True)
    found = [r for r in rows if r["present"]]
    summary = {"model": args.model, "device": args.device, "clips": len(rows), "found": len(found),
               "passed": sum(r["passed"] for r in rows), "reversed": sum(r["reversed"] for r in rows),
               "command": " ".join(["python yardstick/directions.py", *(sys.argv[1:] if argv is None else argv)])}
    print(json.dumps(summary))
    if args.out:
        args.out.write_text(json.dumps({"summary": summary, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
