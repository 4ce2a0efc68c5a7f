"""Kernel benchmark: vidsparse's block-sparse attention against cuDNN SDPA, FlashAttention-2
(SDPA flash) and FlexAttention on the identical mask, all in one process, on real vDiT shapes.

Run on a CUDA GPU (the figures in RESULTS.md come from one H200):

    python kernels/bench.py                      # every shape -> kernels/RESULTS.md + kernels/results.json
    python kernels/bench.py --shapes cogvideox-5b --densities 1,0.25
    python kernels/bench.py --tune               # sweep tile configs -> kernels/tuning.json + TUNING.md

Method (../METHOD.md of the device tool): every case is checked for correctness first (kernel and
FlexAttention against a float32 reference on sampled query blocks), then warmed up and timed with
CUDA events; the median is reported. Effective TFLOP/s counts only the work the mask keeps:
density x 4*B*H*S*S*D / time.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import shlex
import statistics
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.flex_attention import flex_attention

import triton
from vidsparse import KernelConfig, SparseMask, block_sparse_attention
from vidsparse.kernels.block_sparse import default_config
from vidsparse.layout import TokenLayout
from vidsparse.patterns import frame_band, temporal

HERE = Path(__file__).resolve().parent

# name -> (layout after patchify, heads, head_dim). Sequence lengths as in DESIGN.md.
SHAPES = {
    "cogvideox-5b": (TokenLayout(13, 30, 45, 226, "start"), 48, 64),  # 49f 480x720: 17,776 tokens
    "cogvideox1.5-5b": (TokenLayout(11, 48, 85, 226, "start"), 48, 64),  # 81f 768x1360: 45,106
    "hunyuanvideo-544p": (TokenLayout(33, 34, 60, 256, "end"), 24, 128),  # 129f 544x960: 67,576
    "hunyuanvideo-720p": (TokenLayout(33, 45, 80, 256, "end"), 24, 128),  # 129f 720x1280: 119,056
}
DENSITIES = (1.0, 0.5, 0.25, 0.1)


# ---------------------------------------------------------------------------- timing
def time_ms(fn, *, target_ms: float = 1500.0, min_runs: int = 5, max_runs: int = 100) -> float:
    """Median CUDA-event time of `fn` after a warm-up; the run count fits about target_ms."""
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    torch.cuda.synchronize()
    estimate = max(start.elapsed_time(end), 1e-3)
    for _ in range(min(10, max(1, int(200 / estimate)))):
        fn()
    runs = int(min(max_runs, max(min_runs, target_ms / estimate)))
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(runs)]
    for s, e in events:
        s.record()
        fn()
        e.record()
    torch.cuda.synchronize()
    return statistics.median(s.elapsed_time(e) for s, e in events)


# ---------------------------------------------------------------------------- correctness
def sampled_error(out: torch.Tensor, q, k, v, mask: SparseMask, q_blocks: list[int]) -> float:
    """Relative L2 error of `out` on the given query blocks against float32 masked attention."""
    s = q.shape[2]
    scale = 1.0 / math.sqrt(q.shape[-1])
    blocks = mask.to_blocks()[0]  # [H, nQ, nK]; benchmark masks are batch-shared
    num, den = 0.0, 0.0
    for qb in q_blocks:
        rows = slice(qb * mask.q_block, min(s, (qb + 1) * mask.q_block))
        allowed = blocks[:, qb].repeat_interleave(mask.k_block, -1)[:, :s]  # [H, S]
        scores = torch.einsum("hqd,hkd->hqk", q[0, :, rows].float(), k[0].float()) * scale
        scores.masked_fill_(~allowed[:, None, :], float("-inf"))
        ref = torch.einsum("hqk,hkd->hqd", torch.softmax(scores, -1), v[0].float())
        del scores
        num += (out[0, :, rows].float() - ref).pow(2).sum().item()
        den += ref.pow(2).sum().item()
    return math.sqrt(num / den)


# ---------------------------------------------------------------------------- cases
def make_masks(layout: TokenLayout, heads: int, densities, patterns, device) -> list[tuple[str, SparseMask]]:
    gen = torch.Generator(device=device).manual_seed(0)
    masks = []
    if "random" in patterns:
        for d in densities:
            name = "full" if d == 1.0 else f"random {d:g}"
            masks.append((name, SparseMask.random(d, heads, layout.seq_len, generator=gen, device=device)))
    if "spatial" in patterns:
        masks.append(("spatial +-1 frame", frame_band(layout, heads, frames=1, device=device)))
    if "temporal" in patterns:
        masks.append(("temporal", temporal(layout, heads, radius=0, device=device)))
    return masks


def bench_shape(name: str, densities, patterns, compiled_flex) -> dict:
    layout, heads, dim = SHAPES[name]
    s = layout.seq_len
    dev = torch.device("cuda")
    q, k, v = (torch.randn(1, heads, s, dim, device=dev, dtype=torch.bfloat16) for _ in range(3))
    flops = 4.0 * heads * s * s * dim

    t0 = time.perf_counter()
    block_sparse_attention(q, k, v, SparseMask.full(heads, s, device=dev))
    torch.cuda.synchronize()
    first_call_s = time.perf_counter() - t0

    with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
        cudnn_ms = time_ms(lambda: F.scaled_dot_product_attention(q, k, v))
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        fa2_ms = time_ms(lambda: F.scaled_dot_product_attention(q, k, v))
    row = {
        "shape": name, "seq_len": s, "heads": heads, "head_dim": dim, "grid": [layout.frames, layout.height, layout.width],
        "config": asdict(default_config(q, SparseMask.full(heads, 128, device=dev))),
        "first_call_s": first_call_s, "cudnn_ms": cudnn_ms, "fa2_ms": fa2_ms,
        "cudnn_tflops": flops / cudnn_ms / 1e9, "cases": [],
    }
    probe = sorted({0, (s // 128) // 3, (s // 128) // 2, s // 128 - 1} if s > 128 else {0})
    for pattern, mask in make_masks(layout, heads, densities, patterns, dev):
        density = mask.density()
        flex_mask = mask.to_flex_block_mask()
        ours = block_sparse_attention(q, k, v, mask)
        flex = compiled_flex(q, k, v, block_mask=flex_mask)
        err_ours = sampled_error(ours, q, k, v, mask, probe)
        err_flex = sampled_error(flex, q, k, v, mask, probe)
        ours_ms = time_ms(lambda: block_sparse_attention(q, k, v, mask))
        flex_ms = time_ms(lambda: compiled_flex(q, k, v, block_mask=flex_mask))
        case = {
            "pattern": pattern, "density": density, "ours_ms": ours_ms, "flex_ms": flex_ms,
            "ours_tflops": density * flops / ours_ms / 1e9, "flex_tflops": density * flops / flex_ms / 1e9,
            "vs_cudnn": cudnn_ms / ours_ms, "vs_fa2": fa2_ms / ours_ms, "vs_flex": flex_ms / ours_ms,
            "err_ours": err_ours, "err_flex": err_flex, "correct": err_ours <= max(2 * err_flex, 1e-2),
        }
        row["cases"].append(case)
        print(
            f"{name:18s} {pattern:18s} d={density:.3f} ours {ours_ms:8.2f} ms ({case['ours_tflops']:5.0f} TF/s) "
            f"flex {flex_ms:8.2f} cudnn {cudnn_ms:8.2f} | x{case['vs_cudnn']:.2f} cudnn x{case['vs_flex']:.2f} flex "
            f"| err {err_ours:.1e} (flex {err_flex:.1e})",
            flush=True,
        )
    del q, k, v
    torch.cuda.empty_cache()
    return row


def launch_overhead(name: str = "hunyuanvideo-720p", density: float = 0.1) -> dict:
    """Host cost of building a mask and launching the kernel, and proof that neither syncs."""
    layout, heads, dim = SHAPES[name]
    s = layout.seq_len
    dev = torch.device("cuda")
    q, k, v = (torch.randn(1, heads, s, dim, device=dev, dtype=torch.bfloat16) for _ in range(3))
    n_blk = -(-s // 128)
    blocks = torch.rand(heads, n_blk, n_blk, device=dev) < density
    mask = SparseMask.from_block_mask(blocks, 128, 128, s)
    block_sparse_attention(q, k, v, mask)
    torch.cuda.synchronize()
    kernel_ms = time_ms(lambda: block_sparse_attention(q, k, v, mask))
    torch.cuda.set_sync_debug_mode("error")  # any host-device sync below raises
    try:
        host, build = [], []
        for _ in range(20):
            t0 = time.perf_counter()
            m = SparseMask.from_block_mask(blocks, 128, 128, s)
            t1 = time.perf_counter()
            block_sparse_attention(q, k, v, m)
            t2 = time.perf_counter()
            build.append((t1 - t0) * 1e3)
            host.append((t2 - t1) * 1e3)
        synced = False
    except RuntimeError:
        synced = True
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
    build_gpu_ms = time_ms(lambda: SparseMask.from_block_mask(blocks, 128, 128, s))
    return {
        "shape": name, "density": density, "kernel_ms": kernel_ms, "syncs": synced,
        "launch_host_ms": statistics.median(host) if not synced else None,
        "mask_build_host_ms": statistics.median(build) if not synced else None,
        "mask_build_gpu_ms": build_gpu_ms,
    }


# ---------------------------------------------------------------------------- tuning
def tune_space(head_dim: int) -> list[KernelConfig]:
    """Tile configs to sweep, all with TMA loads, plus the pointer-load fallback for comparison.
    Earlier sweeps (NOTES.md) showed TMA always winning and 64-row tiles wanting 4 warps."""
    space = [
        KernelConfig(bm, bn, w, st, use_tma=True)
        for bm in (128, 64) for bn in (128, 64) for w in (4, 8) for st in (1, 2, 3)
        if not (bm == 64 and w == 8)
    ]
    return space + [KernelConfig(64, 64, 4, 2, use_tma=False)]


def tune(shapes, densities) -> list[dict]:
    rows = []
    for name in shapes:
        layout, heads, dim = SHAPES[name]
        s = layout.seq_len
        q, k, v = (torch.randn(1, heads, s, dim, device="cuda", dtype=torch.bfloat16) for _ in range(3))
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            cudnn_ms = time_ms(lambda: F.scaled_dot_product_attention(q, k, v))
        masks = [(d, SparseMask.random(d, heads, s, device="cuda")) for d in densities]
        for cfg in tune_space(dim):
            entry = {"shape": name, "head_dim": dim, "config": asdict(cfg), "cudnn_ms": cudnn_ms}
            try:
                t0 = time.perf_counter()
                out = block_sparse_attention(q, k, v, masks[0][1], config=cfg)
                torch.cuda.synchronize()
                entry["compile_s"] = time.perf_counter() - t0
                entry["err"] = sampled_error(out, q, k, v, masks[0][1], [0, s // 256])
                for d, m in masks:
                    entry[f"ms@{d:g}"] = time_ms(lambda: block_sparse_attention(q, k, v, m, config=cfg), target_ms=400)
            except Exception as exc:  # a config that does not compile or fit is recorded, not fatal
                entry["error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
            rows.append(entry)
            print(json.dumps(entry), flush=True)
        del q, k, v
        torch.cuda.empty_cache()
    return rows


# ---------------------------------------------------------------------------- reporting
def environment(argv) -> dict:
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "gpu": torch.cuda.get_device_name(),
        "torch": torch.__version__, "triton": triton.__version__, "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(), "python": platform.python_version(),
        "command": "python " + " ".join(shlex.quote(a) for a in ["kernels/bench.py", *argv]),
    }


def geomean(xs) -> float:
    xs = list(xs)
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else float("nan")


def write_results(env: dict, rows: list[dict], overhead: dict | None, out_dir: Path) -> None:
    cases = [c for r in rows for c in r["cases"]]
    summary = {
        "geomean_vs_flex": geomean(c["vs_flex"] for c in cases),
        "min_vs_flex": min((c["vs_flex"] for c in cases), default=float("nan")),
        "all_correct": all(c["correct"] for c in cases),
        "density1_vs_cudnn": {r["shape"]: c["vs_cudnn"] for r in rows for c in r["cases"] if c["pattern"] == "full"},
        "random0.25_vs_cudnn": {r["shape"]: c["vs_cudnn"] for r in rows for c in r["cases"] if c["pattern"] == "random 0.25"},
        "random0.1_vs_cudnn": {r["shape"]: c["vs_cudnn"] for r in rows for c in r["cases"] if c["pattern"] == "random 0.1"},
    }
    (out_dir / "results.json").write_text(json.dumps({**env, "summary": summary, "overhead": overhead, "shapes": rows}, indent=1))

    lines = [
        "# Kernel benchmark results",
        "",
        f"Produced by `{env['command']}` on {env['date']}.",
        f"GPU {env['gpu']}, torch {env['torch']}, triton {env['triton']}, CUDA {env['cuda']}, cuDNN {env['cudnn']}. "
        "bf16, B=1, block 128x128. Times are medians of CUDA-event timings after warm-up; effective TFLOP/s = "
        "density x 4·H·S²·D / time. Errors are relative L2 against float32 masked attention on sampled query blocks.",
        "",
        "## Summary",
        "",
        f"- geometric-mean speedup vs FlexAttention (identical mask), all cases: **{summary['geomean_vs_flex']:.2f}x** "
        f"(lowest case {summary['min_vs_flex']:.2f}x)",
        f"- every case within 2x FlexAttention's error (or 1e-2): {summary['all_correct']}",
    ]
    for key, label in (("density1_vs_cudnn", "density 1"), ("random0.25_vs_cudnn", "density 0.25"), ("random0.1_vs_cudnn", "density 0.1")):
        vals = ", ".join(f"{k} {v:.2f}x" for k, v in summary[key].items())
        lines.append(f"- speed vs dense cuDNN at {label}: {vals}")
    if overhead:
        lines.append(
            f"- launch ({overhead['shape']}, density {overhead['density']}): host-device syncs while building the mask "
            f"and launching: {'yes' if overhead['syncs'] else 'none'}; host time per launch "
            f"{overhead['launch_host_ms']:.3f} ms = {100 * overhead['launch_host_ms'] / overhead['kernel_ms']:.2f}% of the "
            f"{overhead['kernel_ms']:.1f} ms kernel; mask build {overhead['mask_build_host_ms']:.3f} ms host, "
            f"{overhead['mask_build_gpu_ms']:.3f} ms GPU"
        )
    lines.append("- first call (compile, no autotuning): " + ", ".join(f"{r['shape']} {r['first_call_s']:.1f} s" for r in rows))
    for r in rows:
        lines += [
            "",
            f"## {r['shape']}: S={r['seq_len']:,}, {r['heads']}x{r['head_dim']}, grid {r['grid']}",
            "",
            f"cuDNN SDPA {r['cudnn_ms']:.2f} ms ({r['cudnn_tflops']:.0f} TFLOP/s), FA2 (SDPA flash) {r['fa2_ms']:.2f} ms. "
            f"Kernel config {r['config']}.",
            "",
            "| mask | density | vidsparse ms | TFLOP/s | FlexAttention ms | TFLOP/s | vs cuDNN | vs FA2 | vs Flex | err (ours / flex) |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for c in r["cases"]:
            lines.append(
                f"| {c['pattern']} | {c['density']:.3f} | {c['ours_ms']:.2f} | {c['ours_tflops']:.0f} | {c['flex_ms']:.2f} | "
                f"{c['flex_tflops']:.0f} | {c['vs_cudnn']:.2f}x | {c['vs_fa2']:.2f}x | {c['vs_flex']:.2f}x | "
                f"{c['err_ours']:.1e} / {c['err_flex']:.1e} |"
            )
    (out_dir / "RESULTS.md").write_text("\n".join(lines) + "\n")


def write_tuning(env: dict, rows: list[dict], out_dir: Path) -> None:
    (out_dir / "tuning.json").write_text(json.dumps({**env, "rows": rows}, indent=1))
    keys = sorted({k for r in rows for k in r if k.startswith("ms@")}, reverse=True)
    lines = [
        "# Kernel tile-config sweep", "", f"Produced by `{env['command']}` on {env['date']}, {env['gpu']}, "
        f"torch {env['torch']}, triton {env['triton']}. Random block masks, bf16, median ms.", "",
        "| shape | block_m | block_n | warps | stages | tma | compile s | " + " | ".join(keys) + " | vs cuDNN @1 |",
        "|---" * (8 + len(keys)) + "|",
    ]
    for r in sorted(rows, key=lambda r: (r["shape"], r.get(keys[0], 1e9) if keys else 0)):
        c = r["config"]
        if "error" in r:
            lines.append(f"| {r['shape']} | {c['block_m']} | {c['block_n']} | {c['num_warps']} | {c['num_stages']} | "
                         f"{c['use_tma']} | failed: {r['error'][:60]} |" + " |" * (len(keys) + 1))
            continue
        ms = " | ".join(f"{r[k]:.2f}" for k in keys)
        ratio = r["cudnn_ms"] / r["ms@1"] if "ms@1" in r else float("nan")
        lines.append(f"| {r['shape']} | {c['block_m']} | {c['block_n']} | {c['num_warps']} | {c['num_stages']} | "
                     f"{c['use_tma']} | {r['compile_s']:.1f} | {ms} | {ratio:.2f} |")
    (out_dir / "TUNING.md").write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default=",".join(SHAPES), help=f"comma list of {', '.join(SHAPES)}")
    parser.add_argument("--densities", default=",".join(f"{d:g}" for d in DENSITIES), help="random-mask densities")
    parser.add_argument("--patterns", default="random,spatial,temporal", help="random, spatial, temporal")
    parser.add_argument("--tune", action="store_true", help="sweep kernel tile configs instead of benchmarking")
    parser.add_argument("--out", type=Path, default=HERE, help="folder for the results files")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        parser.error("the benchmark needs a CUDA GPU")
    shapes = [s for s in args.shapes.split(",") if s]
    unknown = [s for s in shapes if s not in SHAPES]
    if unknown:
        parser.error(f"unknown shapes {unknown}; choose from {list(SHAPES)}")
    densities = [float(d) for d in args.densities.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    env = environment(argv)
    if args.tune:
        write_tuning(env, tune(shapes, densities), args.out)
        return 0
    torch._dynamo.config.cache_size_limit = 64  # one flex graph per shape
    compiled_flex = torch.compile(flex_attention, dynamic=False)
    rows = []
    for name in shapes:
        rows.append(bench_shape(name, densities, args.patterns.split(","), compiled_flex))
        write_results(env, rows, None, args.out)  # a run cut short still leaves what it measured
    overhead = launch_overhead() if "hunyuanvideo-720p" in shapes else None
    write_results(env, rows, overhead, args.out)
    print((args.out / "RESULTS.md").read_text())
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
