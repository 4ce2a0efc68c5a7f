"""The benchmark's markdown and JSON reports."""

from __future__ import annotations

import json
from pathlib import Path

from .timing import FAST_SDPA

__all__ = ["fmt_number", "summary_rows", "summary_table", "write_results"]


def summary_rows(rows: list[dict]) -> list[dict]:
    """One row per (model, variant): time and speedups, error against stock, density, peak memory."""
    out = []
    for r in rows:
        stock = r["variants"][0]
        fast = next((v for v in r["variants"] if "backends" in v), None)
        for v in r["variants"]:
            err = v.get("error_vs_stock", {})
            out.append({
                "model": r["model"], "tokens": r["seq_len"], "variant": v["name"], "window": v["window"],
                "ms": v["ms"], "speedup_vs_stock": stock["ms"] / v["ms"],
                "speedup_vs_fast_sdpa": fast["ms"] / v["ms"] if fast else None,
                "rel_l2": err.get("rel_l2"), "max_abs": err.get("max_abs"),
                "density": v["report"]["density"] if "report" in v else 1.0, "peak_gib": v["peak_gib"],
                "attention_share": stock["attention_share_in_situ"], "finite": v["finite"],
            })
    return out


def fmt_number(value, fmt: str, suffix: str = "") -> str:
    """`value` in `fmt` with `suffix`, or "-" for None (a number that was not measured)."""
    return "-" if value is None else format(value, fmt) + suffix


def summary_table(summary: list[dict]) -> list[str]:
    lines = [
        ("| model | tokens | variant | window | ms / step | vs stock | vs fast SDPA | rel L2 err | max abs err | "
         "density | peak GiB | stock attention share |"),
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summary:
        flag = "" if s["finite"] else " (non-finite)"
        lines.append(
            f"| {s['model']} | {s['tokens']:,} | {s['variant']}{flag} | {s['window']} | {s['ms']:.1f} | "
            f"{s['speedup_vs_stock']:.2f}x | {fmt_number(s['speedup_vs_fast_sdpa'], '.2f', 'x')} | "
            f"{fmt_number(s['rel_l2'], '.1e')} | "
            f"{fmt_number(s['max_abs'], '.1e')} | {s['density']:.3f} | {fmt_number(s['peak_gib'], '.1f')} | "
            f"{100 * s['attention_share']:.0f}% |"
        )
    return lines


_METHOD_TEXT = (
    "Full-size transformers with random weights (the models' own init), built on the GPU; one denoising step "
    "(one forward) on the same random inputs for every variant. Times are medians of CUDA-event timings after "
    "one warm-up forward (a method given untimed=N: N forwards, e.g. a cached method's refresh and choosing "
    "steps), under torch.inference_mode(); peak memory is over the timed forwards. Errors compare "
    "the output latent with stock's (max abs, relative L2). Density is vidsparse's realised mean attention "
    "density over replaced layers and calls (1 for stock). \"fast SDPA\" runs the stock forward under "
    "sdpa_kernel([" + ", ".join(FAST_SDPA) + "], set_priority=True); the backend of each call shape is the first "
    "of that list that runs it when replayed alone. Stock attention share: CUDA events around every stock "
    "F.scaled_dot_product_attention call during the timed forwards, median per call shape x calls per step, "
    "over the stock step time; also each call shape replayed alone on captured inputs."
)


def _model_section(r: dict) -> list[str]:
    stock = r["variants"][0]
    lines = [
        "",
        f"## {r['model']}: {r['class']}, {r['params'] / 1e9:.2f}B parameters",
        "",
        f"- config: {r['config_source']}",
        (f"- video {r['video']['frames']} frames at {r['video']['height']}x{r['video']['width']} -> latent "
         f"{r['latent']}, grid (T, H, W) {r['grid']}, {r['text_tokens']} text tokens in self-attention, "
         f"{r['seq_len']:,} tokens, {r['heads']} heads x {r['head_dim']}, batch {r['batch']}, {r['dtype']}; "
         f"{r['runs']} timed forwards per variant"),
        f"- build {r['build_s']:.1f} s" + (f", weights {r['weights_gib']:.1f} GiB" if r["weights_gib"] else ""),
        "",
        ("| variant | window | ms / step | all runs ms | warm-up s | peak GiB | vs stock | max abs err | "
         "rel L2 err | density | sparse calls / calls | fallbacks | heads ran |"),
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for v in r["variants"]:
        err, rep = v.get("error_vs_stock"), v.get("report")
        errs = f"{fmt_number(err['max_abs'], '.2e')} | {fmt_number(err['rel_l2'], '.2e')}" if err else "- | -"
        ran = ", ".join(f"{k} {v:.2f}" for k, v in rep.get("choices", {}).items()) if rep else ""
        dens = (f"{rep['density']:.3f} | {rep['sparse_calls']} / {rep['calls']} | "
                f"{', '.join(rep['fallbacks']) or 'none'} | {ran or '-'}"
                if rep else "1.000 | - | - | stock")
        flag = "" if v["finite"] else " (non-finite output)"
        lines.append(
            f"| {v['name']}{flag} | {v['window']} | {v['ms']:.1f} | {', '.join(f'{t:.1f}' for t in v['times_ms'])} | "
            f"{v['warmup_s']:.1f} | {fmt_number(v['peak_gib'], '.1f')} | {stock['ms'] / v['ms']:.2f}x | {errs} | {dens} |"
        )
    att, share = stock["attention"], stock["attention_share_in_situ"]
    limit = f"{1 / (1 - share):.1f}x" if share < 1 else "unbounded"
    fast = next((v for v in r["variants"] if "backends" in v), None)
    lines += [
        "",
        f"Stock attention: {att['calls']} SDPA calls per step, {att['in_situ_ms']:.1f} ms in situ "
        f"({100 * share:.0f}% of the step), {att['replay_ms']:.1f} ms replayed alone "
        f"({100 * stock['attention_share_replay']:.0f}%); with attention free the step would be {limit} faster."
        + ("" if fast is None else
           " Fast SDPA ran " + ", ".join(f"{k} ({n} calls)" for k, n in fast["backends"].items()) + "."),
        "",
        "| SDPA call shape | calls per step | in situ ms (median) | replayed ms, default | "
        + " | ".join(f"{b} ms" for b in FAST_SDPA) + " | fast SDPA ran |",
        "|---|---|---|---|" + "---|" * len(FAST_SDPA) + "---|",
    ]
    refusals = []
    for s in att["shapes"]:
        cells = [f"{b['ms']:.2f}" if "ms" in b else "refused" for b in s["backends"].values()]
        lines.append(f"| {s['shape']} | {s['calls']} | {fmt_number(s['in_situ_ms'], '.2f')} | {s['default_ms']:.2f} | "
                     + " | ".join(cells) + f" | {s['fast']} |")
        refusals += [f"- {s['shape']}: {name} refused: {b['refused']}"
                     for name, b in s["backends"].items() if "refused" in b]
    lines += ["", *refusals] if refusals else []
    lines += ["", "Removal: " + "; ".join(
        f"after {c['after']}: processors and hooks restored {c['state_restored']}"
        + (f", stock rerun max abs {fmt_number(c['stock_rerun']['max_abs'], '.1e')} "
           f"(bitwise {c['stock_rerun']['bitwise_equal']})"
           if "stock_rerun" in c else "")
        for c in r["restore_checks"]
    )]
    return lines


def write_results(env: dict, rows: list[dict], out_dir: Path, names: tuple[str, str]) -> list[str]:
    """Write the markdown and JSON reports; return the summary table's lines."""
    summary = summary_rows(rows)
    payload = {**env, "summary": summary, "models": rows}
    (out_dir / names[1]).write_text(json.dumps(payload, indent=1, allow_nan=False) + "\n")
    lines = [
        "# vidsparse bench: one denoising step, stock diffusers against vidsparse",
        "",
        f"Produced by `{env['command']}` on {env['date']}.",
        *(["", "**Dry run**: tiny models on the CPU. It tests the benchmark; its numbers measure nothing.", ""]
          if env["dry_run"] else []),
        f"Device {env['device']}; " + ", ".join(f"{name} {version}" for name, version in env["versions"].items()) + ".",
        "",
        _METHOD_TEXT,
        "",
        "## Summary",
        "",
        *summary_table(summary),
    ]
    for r in rows:
        lines += _model_section(r)
    (out_dir / names[0]).write_text("\n".join(lines) + "\n")
    return summary_table(summary)
