"""`vidsparse search`: calibrate a model on prompts and write its pattern file (the `static` method's input)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

logger = logging.getLogger(__name__)


def cmd_search(args, argv) -> int:
    from .configs import search_config
    from .args import CLIError, read_prompts
    from .loading import generation_kwargs, load_pipeline
    from ..search.run import SearchConfig, search

    pipe, cfg, model = load_pipeline(args)
    kwargs = generation_kwargs(pipe, cfg, args)
    fields, prompts, seeds = search_config(cfg)
    if args.prompt or args.prompts_file:
        prompts = read_prompts(args)
    if not prompts:
        raise CLIError("no calibration prompts: give --prompt / --prompts-file, or a `search.prompts` list in the config")
    if args.seeds:
        seeds = [int(s) for s in args.seeds.split(",")]
    try:
        config = SearchConfig(**fields)
    except (TypeError, ValueError) as exc:
        raise CLIError(f"search config: {exc}") from exc
    out = Path(args.out)
    result = search(pipe, prompts, config, seeds=tuple(seeds), generate=kwargs, out=out)
    summary = result.summary()
    print(f"searched {summary['layers']} layers x {summary['heads']} heads on {len(prompts)} prompt(s) x "
          f"{len(seeds)} seed(s) in {result.calibration['seconds']:.0f} s")
    print(f"eps {summary['eps']}, lam {summary['lam']}: mean density {summary['mean_density']:.3f}, "
          f"largest chosen error {summary['max_error']:.3f}; patterns {summary['families']}")
    if "static" in cfg.methods:
        print(f"pattern file: {out}  (use it: vidsparse compare --model {model} methods.static.patterns={out})")
    else:
        print(f"pattern file: {out}  (use it: vidsparse.apply(pipe, {{'method': 'static', 'patterns': '{out}'}}), "
              "or add a `static` method with `patterns:` to the model config)")
    return 0


def add_parser(sub, common) -> None:
    from .args import add_generation_args

    p = sub.add_parser(
        "search", parents=[common], formatter_class=argparse.RawDescriptionHelpFormatter,
        help="offline per-head pattern search: write a pattern file for the static method",
        description=(
            "Run the pipeline on calibration prompts with dense attention, score every candidate pattern on every\n"
            "layer and head from sampled query rows at a spread of denoising steps, and choose per head the cheapest\n"
            "pattern within the error budget. Defaults come from the model config's `search` section.\n\n"
            "examples:\n"
            "  vidsparse search --out patterns.safetensors\n"
            "  vidsparse search --model /path/to/CogVideoX-5b --config cogvideox-5b --prompts-file prompts.txt \\\n"
            "      --out cogvideox-5b.safetensors search.eps=0.05 search.observe=5"
        ),
    )
    add_generation_args(p)
    p.add_argument("--seeds", default=None, help="comma list of seeds (default: the config's search.seeds, else 0)")
    p.add_argument("--out", default="patterns.safetensors", help="the pattern file to write (default: %(default)s); "
                   "<out>.ckpt.pt holds the calls measured so far, and a rerun resumes from it")
    p.set_defaults(func=cmd_search)
