"""Benchmarks of the pattern search and the `static` method on full-size models (random weights, one GPU).

    python search/bench_search.py --patterns vidsparse/search/patterns/yardstick.safetensors

1. Search time on CogVideoX-5b at 480p x 49 frames (17,776 tokens, 42 layers x 48 heads): the default calibration
   (4 prompts x 5 denoising steps, batch 2 as CFG runs it, 32 sampled rows per frame, every default candidate) through
   `vidsparse.apply(..., "dense")` with a `Calibrator` observing every layer, then choosing. Random text embeddings
   and latents stand in for prompts: time does not depend on them. A plain dense forward is timed too, so the
   calibration overhead per step is known.
2. One HunyuanVideo step at 720p x 129 frames (119,056 tokens, 60 layers x 24 heads): stock diffusers, stock with the
   fast SDPA backends (cuDNN first: "dense cuDNN"), and `static` with the yardstick search's density distribution
   transplanted onto its heads (`PatternFile.transplant`: each head draws a yardstick head and takes the candidate of
   the same family whose density on this layout is closest).

Writes `search/BENCH_SEARCH.md` and `.json` stamped with the date, GPU, versions and this command. `--dry-run` runs
tiny models on the CPU (Triton interpreter) to test the script; it measures nothing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from vidsparse.app.bench import (
    FAST_SDPA, MODELS, Video, _forward, _sync, _time_forwards, build_transformer, cogvideox_inputs, environment,
    fast_sdpa, hunyuan_inputs,
)


def _search_time(device, dtype, tiny: bool, prompts: int, steps: int, progress) -> dict:
    import vidsparse
    from vidsparse.search import Calibrator, SearchConfig, build_pattern_file

    spec = MODELS["cogvideox-5b"]
    video = Video(17, 64, 128) if tiny else spec.video
    transformer = build_transformer(spec, tiny, device, dtype)
    gen = torch.Generator(device=device).manual_seed(0)
    text = spec.tiny_text if tiny else spec.text
    inputs = cogvideox_inputs(transformer, video, text, 2, device, dtype, gen)
    _forward(transformer, inputs)
    _sync(device)
    dense_ms = statistics.median(_time_forwards(transformer, inputs, 1 if tiny else 3, device))
    config = SearchConfig(q_block=16 if tiny else 128, k_block=16 if tiny else 128)
    calibrator = Calibrator(config.patterns(), None, config.rows_per_frame, config.q_block, config.k_block,
                            config.head_chunk)
    handle = vidsparse.apply(transformer, "dense", planner=calibrator)
    timesteps = torch.linspace(999, 20, steps).long().tolist()
    _sync(device)
    started = time.perf_counter()
    bar = progress(total=prompts * steps, desc="calibrating CogVideoX-5b")
    for p in range(prompts):
        gen.manual_seed(100 + p)
        case = cogvideox_inputs(transformer, video, text, 2, device, dtype, gen)
        for t in timesteps:
            case["timestep"] = torch.full((2,), t, device=device, dtype=torch.long)
            _forward(transformer, case)
            bar.update()
    bar.close()
    _sync(device)
    calibrate_s = time.perf_counter() - started
    chosen = time.perf_counter()
    result = build_pattern_file(calibrator, transformer, config, {"prompts": prompts, "steps": steps})
    choose_s = time.perf_counter() - chosen
    handle.remove()
    layout = calibrator.last_layout
    del transformer, inputs
    torch.cuda.empty_cache() if device.type == "cuda" else None
    forwards = prompts * steps
    return {
        "model": "cogvideox-5b", "video": str(video), "tokens": layout.seq_len,
        "grid": [layout.frames, layout.height, layout.width], "prompts": prompts, "steps": steps,
        "rows_per_frame": config.rows_per_frame, "candidates": len(config.patterns()),
        "dense_forward_ms": round(dense_ms, 1), "calibrate_s": round(calibrate_s, 1), "choose_s": round(choose_s, 2),
        "total_s": round(calibrate_s + choose_s, 1),
        "calibration_overhead_per_forward_ms": round(calibrate_s * 1e3 / forwards - dense_ms, 1),
        "summary_on_random_weights": result.summary(),
    }


def _hunyuan_speed(device, dtype, tiny: bool, patterns: Path, runs: int, budgets: list[float]) -> dict:
    import vidsparse
    from vidsparse.core.layout import TokenLayout
    from vidsparse.pipelines.adapters import adapter_for
    from vidsparse.search import PatternFile

    spec = MODELS["hunyuanvideo"]
    video = Video(17, 64, 128) if tiny else spec.video
    text = spec.tiny_text if tiny else spec.text
    transformer = build_transformer(spec, tiny, device, dtype)
    gen = torch.Generator(device=device).manual_seed(0)
    inputs = hunyuan_inputs(transformer, video, text, 1, device, dtype, gen)
    t, h, w = video.latent()
    layout = TokenLayout(t, h // 2, w // 2, text[0], "end")
    adapter = adapter_for(transformer)
    layers = sum(adapter.replaces(key) for key in transformer.attn_processors)
    heads = transformer.config.num_attention_heads
    block = 16 if tiny else 128
    source = PatternFile.load(patterns)
    moved = {}
    for eps in budgets:
        moved[eps] = source.reselect(eps=eps).transplant(transformer, layers, heads, layout, block, block, seed=0,
                                                         device=device)
        moved[eps].save(f"/tmp/vidsparse-hunyuan-transplant-{eps}.safetensors")
    rows = {}

    def timed(name, fn_enter=None):
        if fn_enter is None:
            out = _forward(transformer, inputs)
            _sync(device)
            ms = _time_forwards(transformer, inputs, runs, device)
        else:
            with fn_enter():
                out = _forward(transformer, inputs)
                _sync(device)
                ms = _time_forwards(transformer, inputs, runs, device)
        rows[name] = {"ms": round(statistics.median(ms), 1), "runs": runs}
        return out

    stock = timed("stock")
    timed("stock, fast SDPA (cuDNN first)", lambda: fast_sdpa(FAST_SDPA))
    for eps in budgets:
        name = f"vidsparse static, eps {eps}"
        handle = vidsparse.apply(transformer, {"method": "static",
                                               "patterns": f"/tmp/vidsparse-hunyuan-transplant-{eps}.safetensors"})
        out = timed(name)
        report = handle.report()
        handle.remove()
        rows[name]["density"] = round(report["density"], 4)
        rows[name]["rel_l2_vs_stock"] = round(float((out.float() - stock.float()).norm() / stock.float().norm()), 4)
    for name in rows:
        rows[name]["speedup_vs_stock"] = round(rows["stock"]["ms"] / rows[name]["ms"], 2)
        rows[name]["speedup_vs_fast_sdpa"] = round(rows["stock, fast SDPA (cuDNN first)"]["ms"] / rows[name]["ms"], 2)
    del transformer
    return {
        "model": "hunyuanvideo", "video": str(video), "tokens": layout.seq_len,
        "grid": [layout.frames, layout.height, layout.width], "layers": layers, "heads": heads,
        "patterns_from": str(patterns),
        "budgets": {str(eps): {"source_mean_density": m.calibration["source_mean_density"],
                               "planned_mean_density": round(float(m.chosen_density().mean()), 4),
                               "families": m.summary()["families"]} for eps, m in moved.items()},
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--patterns", type=Path, default=Path("vidsparse/search/patterns/yardstick.safetensors"))
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--runs", type=int, default=1, help="timed HunyuanVideo forwards per variant (31 s each)")
    parser.add_argument("--eps", default="0.1,0.3", help="error budgets whose yardstick choice to move (comma list)")
    parser.add_argument("--skip", choices=("search", "speed"), action="append", default=[])
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("search"))
    args = parser.parse_args(argv)
    from tqdm.auto import tqdm

    device = torch.device("cpu" if args.dry_run else "cuda")
    dtype = torch.float32 if args.dry_run else torch.bfloat16
    env = environment(["python", "search/bench_search.py", *(argv if argv is not None else sys.argv[1:])], device,
                      args.dry_run)
    results = {"environment": env}
    if "search" not in args.skip:
        results["search"] = _search_time(device, dtype, args.dry_run, args.prompts, args.steps, tqdm)
        print(json.dumps(results["search"], indent=1))
    if "speed" not in args.skip:
        results["speed"] = _hunyuan_speed(device, dtype, args.dry_run, args.patterns, args.runs,
                                          [float(e) for e in args.eps.split(",")])
        print(json.dumps(results["speed"], indent=1))
    stem = "BENCH_SEARCH-dry-run" if args.dry_run else "BENCH_SEARCH"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.json").write_text(json.dumps(results, indent=1, default=str))
    (args.out / f"{stem}.md").write_text(_markdown(results))
    print(f"wrote {args.out / stem}.md and .json")
    return 0


def _markdown(results: dict) -> str:
    env = results["environment"]
    lines = ["# Pattern search and `static`: full-size benchmarks", "",
             f"Command: `{env.get('command')}`  ", f"Date: {env.get('date')}, device: {env.get('device')}, "
             f"torch {env.get('torch')}, triton {env.get('triton')}, diffusers {env.get('diffusers')}", ""]
    if "search" in results:
        s = results["search"]
        lines += ["## Search time: CogVideoX-5b, " + s["video"], "",
                  f"{s['prompts']} prompts x {s['steps']} steps, batch 2, {s['rows_per_frame']} rows per frame, "
                  f"{s['candidates']} candidates, {s['tokens']:,} tokens (grid {s['grid']}).", "",
                  "| dense forward | calibration | choosing | total | overhead per forward |", "|---|---|---|---|---|",
                  f"| {s['dense_forward_ms']} ms | {s['calibrate_s']} s | {s['choose_s']} s | {s['total_s']} s | "
                  f"{s['calibration_overhead_per_forward_ms']} ms |", ""]
    if "speed" in results:
        p = results["speed"]
        lines += [f"## One HunyuanVideo step, {p['video']} ({p['tokens']:,} tokens, {p['layers']} layers x {p['heads']} heads)",
                  "", f"`static` with the yardstick search's density distribution (`{p['patterns_from']}`) moved "
                  "onto this model, per error budget:", ""]
        for eps, b in p["budgets"].items():
            lines.append(f"- eps {eps}: yardstick mean density {b['source_mean_density']}, planned here "
                         f"{b['planned_mean_density']}, families {b['families']}")
        lines += ["",
                  "| variant | ms / step | vs stock | vs stock fast SDPA (cuDNN) | density | rel. L2 vs stock |",
                  "|---|---|---|---|---|---|"]
        for name, r in p["rows"].items():
            lines.append(f"| {name} | {r['ms']:,} | {r['speedup_vs_stock']}x | {r['speedup_vs_fast_sdpa']}x | "
                         f"{r.get('density', 1.0)} | {r.get('rel_l2_vs_stock', '-')} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
