"""Dynamic block attention's own cost: block scoring, top-p selection and the Hilbert permutation, against dense
cuDNN SDPA and against the block-sparse kernel run on the mask they choose, at HunyuanVideo 720p
(B=1, H=24, S=119,056 of which 256 text at the end, D=128, bf16).

Run on a CUDA GPU (about a minute on an H200):

    python kernels/bench_dynamic.py                       # -> kernels/DYNAMIC.md + kernels/dynamic.json
    python kernels/bench_dynamic.py --top-p 0.8 --caps 0.1,0.25
    python kernels/bench_dynamic.py --device cpu --tiny   # the same flow at a tiny shape, in the interpreter

Method (as kernels/bench.py): first correctness at a small shape (the Triton scores against their PyTorch
reference, the selection's invariants, the block-sparse kernel on a dynamic mask against the float32 reference),
then at the full shape each part is warmed up and timed with CUDA events, median reported. Inputs are random
bf16 with a smooth positional component shared by q and k (stronger in later heads), so that attention is local
and top_p has something to choose; `--structure 0` gives plain noise, where nearly every block is needed.

Parts timed, per attention call of one layer:
- scoring: `estimate_block_mass` (pool q and k through the permutation, then the block softmax);
- selection: `top_p_blocks`, `SparseMask.from_block_mask` and the per-head density;
- permutation: q, k and v into the Hilbert order and the output back (what the executor does for the group);
- attention: `block_sparse_attention` on the chosen mask (uncapped, and with each `--caps` max_density).
The overhead is scoring + selection + permutation; its share of a dynamic step's attention is overhead / (overhead
+ sparse attention), the issue's target at most 5%, and overhead / dense cuDNN at most 3% for the scoring.
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
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _parse(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument("--tiny", action="store_true", help="a tiny shape (seconds on a CPU, in Triton's interpreter)")
    p.add_argument("--top-p", type=float, default=0.9)
    p.add_argument("--caps", default="0.1,0.25", help="max_density values to also time the kernel at ('' for none)")
    p.add_argument("--structure", type=float, default=1.0, help="strength of the positional component of q and k")
    p.add_argument("--block", type=int, default=None, help="q and k block size (default 128, tiny 16)")
    p.add_argument("--out", type=Path, default=None,
                   help="folder for DYNAMIC.md and dynamic.json (default kernels/, with --tiny a temporary folder)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _parse(argv)
    if args.device == "cpu":
        # Triton reads this when it is first imported (below): the interpreter runs the kernels on CPU tensors
        os.environ.setdefault("TRITON_INTERPRET", "1")
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA GPU: run with --device cpu --tiny", file=sys.stderr)
        return 2
    out = args.out or (Path(tempfile.mkdtemp(prefix="bench_dynamic_")) if args.tiny else HERE)
    out.mkdir(parents=True, exist_ok=True)
    result = run(args, argv, torch)
    write(result, out)
    print((out / "DYNAMIC.md").read_text())
    ok = result["correctness"]["ok"]
    return 0 if ok else 1


def run(args, argv, torch) -> dict:
    import torch.nn.functional as F
    import triton
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from vidsparse.core.layout import HILBERT, TokenLayout
    from vidsparse.core.mask import SparseMask
    from vidsparse.kernels import block_sparse_attention, block_sparse_attention_reference, permute_tokens
    from vidsparse.kernels.block_scores import estimate_block_mass, estimate_block_mass_reference
    from vidsparse.methods.dynamic import forced_blocks, top_p_blocks

    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    dtype = torch.bfloat16
    if args.tiny:
        layout, heads, dim = TokenLayout(3, 5, 7, text_len=20, text_position="end"), 2, 64
        small, small_heads = TokenLayout(2, 4, 6, text_len=16, text_position="end"), 2
    else:  # HunyuanVideo 129 frames at 720 x 1280: 33 x 45 x 80 latents, 256 text tokens last
        layout, heads, dim = TokenLayout(33, 45, 80, text_len=256, text_position="end"), 24, 128
        small, small_heads = TokenLayout(5, 9, 16, text_len=256, text_position="end"), 4
    block = args.block or (16 if args.tiny else 128)
    caps = [float(c) for c in args.caps.split(",") if c]

    if cuda:
        import bench  # kernels/bench.py beside this script (its folder is sys.path[0]): the house timer

        def timed(fn, target_ms=600.0):
            return bench.time_ms(fn, target_ms=target_ms, min_runs=5)
    else:
        def timed(fn, target_ms=None):
            fn()
            runs = []
            for _ in range(3):
                t0 = time.perf_counter()
                fn()
                runs.append((time.perf_counter() - t0) * 1e3)
            return statistics.median(runs)

    def sync():
        if cuda:
            torch.cuda.synchronize()

    def inputs(lay, h, seed=0):
        """q, k, v `[1, h, S, D]` bf16: noise plus a smooth function of (t, h, w), sharper in later heads."""
        gen = torch.Generator(device=dev).manual_seed(seed)
        t, r, c = (x.float() for x in lay.video_coords(dev))
        freq = torch.randn(3, dim // 2, generator=gen, device=dev) * 0.5
        angle = torch.stack([t, r, c], 1) @ freq
        pos = torch.cat([angle.sin(), angle.cos()], 1)  # [V, D], norm sqrt(D / 2)
        sharp = torch.linspace(0.5, 3.0, h, device=dev).view(1, h, 1, 1) * args.structure
        qkv = [torch.randn(1, h, lay.seq_len, dim, generator=gen, device=dev, dtype=torch.float32) for _ in range(3)]
        a = lay.video_start
        for x in qkv[:2]:
            x[:, :, a : a + lay.video_len] += sharp * pos
        return [x.to(dtype) for x in qkv]

    def select(lay, q, k, perm, forced, max_density=1.0):
        probs, _ = estimate_block_mass(q, k, block, block, perm=perm, text=lay.text_range)
        blocks = top_p_blocks(probs, args.top_p, forced, max_blocks=math.ceil(max_density * probs.shape[-1]))
        return probs, SparseMask.from_block_mask(blocks, block, block, lay.seq_len, text=lay.text_range)

    # ------------------------------------------------------------------ correctness at a small shape
    q, k, v = inputs(small, small_heads, seed=1)
    perm = HILBERT.permutation(small, dev)
    forced = forced_blocks(small, block, block, True, dev)
    probs, mask = select(small, q, k, perm, forced)
    ref, _ = estimate_block_mass_reference(q, k, block, block, perm=perm, text=small.text_range)
    score_err = float((probs - ref).abs().max())
    kept = mask.to_blocks()
    mass = (probs * kept).sum(-1)
    video_rows = slice(0, small.video_len // block)  # text query blocks are dense, not chosen
    mass_ok = bool((mass[..., video_rows] >= args.top_p - 1e-4).all())
    forced_ok = bool((kept | ~forced).all())
    qp, kp, vp = (permute_tokens(x, perm.view(1, -1)) for x in (q, k, v))
    o = block_sparse_attention(qp, kp, vp, mask)
    o_ref = block_sparse_attention_reference(qp.float(), kp.float(), vp.float(), mask)
    attn_err = float((o.float() - o_ref).norm() / o_ref.norm())
    eager = F.scaled_dot_product_attention(qp, kp, vp, attn_mask=mask.to_dense())  # bf16 PyTorch on the same mask
    eager_err = float((eager.float() - o_ref).norm() / o_ref.norm())
    correctness = {
        "shape": [small.frames, small.height, small.width, small.text_len, small_heads, dim],
        "score_max_abs_err": score_err, "mass_reaches_top_p": mass_ok, "forced_kept": forced_ok,
        "attention_rel_err": attn_err, "eager_bf16_rel_err": eager_err,
    }
    correctness["ok"] = score_err < 1e-4 and mass_ok and forced_ok and attn_err <= max(2 * eager_err, 1e-2)
    print("correctness", json.dumps(correctness), flush=True)
    del q, k, v, qp, kp, vp, o, o_ref, eager, probs, ref

    # ------------------------------------------------------------------ timing at the full shape
    s = layout.seq_len
    q, k, v = inputs(layout, heads)
    t0 = time.perf_counter()
    perm = HILBERT.permutation(layout, dev)  # once per layout, memoised by the planner and the runtime
    forced = forced_blocks(layout, block, block, True, dev)
    sync()
    layout_ms = (time.perf_counter() - t0) * 1e3
    perms = perm.view(1, -1)

    t0 = time.perf_counter()
    probs, mask = select(layout, q, k, perm, forced)  # compiles the kernels
    sync()
    first_call_s = time.perf_counter() - t0
    text = layout.text_range

    def scoring():
        return estimate_block_mass(q, k, block, block, perm=perm, text=text)

    def selection():
        blocks = top_p_blocks(probs, args.top_p, forced)
        m = SparseMask.from_block_mask(blocks, block, block, s, text=text)
        return m, m.density_per_head()

    def permutation():
        for x in (q, k, v):
            permute_tokens(x, perms)
        permute_tokens(q, perms, inverse=True)  # the output's way back (same size as q)

    syncs = None
    if cuda:
        syncs = {"scoring": bench._syncs(scoring), "selection": bench._syncs(selection)}
    scoring_ms, selection_ms, permutation_ms = timed(scoring), timed(selection), timed(permutation)
    overhead_ms = scoring_ms + selection_ms + permutation_ms
    if cuda:
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            dense_ms = timed(lambda: F.scaled_dot_product_attention(q, k, v), target_ms=1500.0)
        dense_name = "cuDNN SDPA"
    else:
        dense_ms = timed(lambda: F.scaled_dot_product_attention(q, k, v))
        dense_name = "SDPA (CPU)"

    qp, kp, vp = (permute_tokens(x, perms) for x in (q, k, v))
    cases = []
    for cap in [None, *caps]:
        m = mask if cap is None else select(layout, q, k, perm, forced, cap)[1]
        density = m.density()
        attn_ms = timed(lambda: block_sparse_attention(qp, kp, vp, m), target_ms=1000.0)
        step_ms = overhead_ms + attn_ms
        cases.append({
            "max_density": cap, "density": density, "attention_ms": attn_ms, "step_ms": step_ms,
            "overhead_share": overhead_ms / step_ms, "speedup_vs_dense": dense_ms / step_ms,
            "kernel_vs_dense": dense_ms / attn_ms,
        })
        print(f"max_density={cap} density={density:.3f} attention {attn_ms:.2f} ms, step {step_ms:.2f} ms, "
              f"overhead {100 * overhead_ms / step_ms:.1f}% of it, x{dense_ms / step_ms:.2f} vs dense", flush=True)
    heads_density = mask.density_per_head()[0].tolist()

    env = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name() if cuda else platform.processor() or "cpu",
        "torch": torch.__version__, "triton": triton.__version__, "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None, "python": platform.python_version(),
        "command": "python " + " ".join(shlex.quote(a) for a in ["kernels/bench_dynamic.py", *argv]),
    }
    return {
        **env, "correctness": correctness,
        "shape": {"grid": [layout.frames, layout.height, layout.width], "text": layout.text_len, "seq_len": s,
                  "heads": heads, "head_dim": dim, "block": block, "dtype": str(dtype).removeprefix("torch.")},
        "top_p": args.top_p, "structure": args.structure, "first_call_s": first_call_s,
        "layout_once_ms": layout_ms, "scoring_ms": scoring_ms, "selection_ms": selection_ms,
        "permutation_ms": permutation_ms, "overhead_ms": overhead_ms, "dense_name": dense_name, "dense_ms": dense_ms,
        "scoring_vs_dense": scoring_ms / dense_ms, "overhead_vs_dense": overhead_ms / dense_ms, "syncs": syncs,
        "head_density": heads_density, "cases": cases,
    }


def write(r: dict, out: Path) -> None:
    (out / "dynamic.json").write_text(json.dumps(r, indent=1))
    sh = r["shape"]
    c = r["correctness"]
    lines = [
        "# Dynamic block attention: scoring, selection and permutation cost",
        "",
        f"Produced by `{r['command']}` on {r['date']}.",
        f"Device {r['device']}, torch {r['torch']}, triton {r['triton']}, CUDA {r['cuda']}, cuDNN {r['cudnn']}, "
        f"python {r['python']}. Grid {sh['grid']} + {sh['text']} text tokens (S = {sh['seq_len']:,}), "
        f"{sh['heads']} heads x {sh['head_dim']}, {sh['dtype']}, blocks {sh['block']}x{sh['block']}, top_p "
        f"{r['top_p']}, input structure {r['structure']}. Times are medians after warm-up.",
        "",
        f"Correctness first (shape {c['shape']}): scores vs reference max abs error {c['score_max_abs_err']:.1e}; "
        f"kept mass >= top_p: {c['mass_reaches_top_p']}; forced blocks kept: {c['forced_kept']}; block-sparse kernel "
        f"on the dynamic mask, relative error {c['attention_rel_err']:.1e} (bf16 PyTorch {c['eager_bf16_rel_err']:.1e})"
        f". **All correct: {c['ok']}.**",
        "",
        "| part | ms | of dense |",
        "|---|---|---|",
        f"| scoring (pool q, k + block softmax) | {r['scoring_ms']:.3f} | {100 * r['scoring_vs_dense']:.2f}% |",
        f"| selection (top-p, mask, density) | {r['selection_ms']:.3f} | {100 * r['selection_ms'] / r['dense_ms']:.2f}% |",
        f"| permutation (q, k, v in, o out) | {r['permutation_ms']:.3f} | "
        f"{100 * r['permutation_ms'] / r['dense_ms']:.2f}% |",
        f"| **overhead** | **{r['overhead_ms']:.3f}** | **{100 * r['overhead_vs_dense']:.2f}%** |",
        f"| dense attention ({r['dense_name']}) | {r['dense_ms']:.2f} | 100% |",
        "",
        f"Once per layout (not per call): the Hilbert permutation and forced blocks, {r['layout_once_ms']:.1f} ms. "
        f"First call (compiles): {r['first_call_s']:.1f} s. Host-device syncs: {r['syncs']}.",
        "",
        "| max_density | realised density | block-sparse ms | step ms (overhead + attention) | overhead share "
        "| step vs dense | kernel vs dense |",
        "|---|---|---|---|---|---|---|",
    ]
    for case in r["cases"]:
        cap = "none" if case["max_density"] is None else f"{case['max_density']:g}"
        lines.append(f"| {cap} | {case['density']:.3f} | {case['attention_ms']:.2f} | {case['step_ms']:.2f} | "
                     f"{100 * case['overhead_share']:.1f}% | {case['speedup_vs_dense']:.2f}x | "
                     f"{case['kernel_vs_dense']:.2f}x |")
    lines += ["", "Per-head density (uncapped): " + ", ".join(f"{d:.2f}" for d in r["head_density"]) + "."]
    (out / "DYNAMIC.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
