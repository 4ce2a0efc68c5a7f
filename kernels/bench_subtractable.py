"""What `out_dtype=torch.float32` (the delta refresh's subtractable outputs, issue 23 defect 5) costs on the GPU.
The runtime's Triton refresh no longer uses them: it leaves the columns out (`kernels/bench_refresh.py`).

At HunyuanVideo 720p's attention shape (24 heads, 119,056 tokens, head dim 128, bf16): the full-mask block-sparse
kernel and the column kernel at 7% of the keys, each with its plain output and with the float32, whole-number-shift
output the refresh uses, beside cuDNN SDPA, in one process; medians of 10 after 3 warm-ups. Checks first that
both modes agree with each other to bf16 rounding.

    python kernels/bench_subtractable.py --out kernels/subtractable.json
"""

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch


def median_ms(fn, reps=10, warmup=3):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(stop))
    return statistics.median(times)


def main(argv=None):
    from vidsparse import SparseMask
    from vidsparse.app.runinfo import environment
    from vidsparse.kernels import block_sparse_attention, column_sparse_attention, topk_columns

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--heads", type=int, default=24)
    parser.add_argument("--tokens", type=int, default=119_056)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    h, s, d = args.heads, args.tokens, 128
    gen = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(1, h, s, d, device="cuda", dtype=torch.bfloat16, generator=gen) for _ in range(3))
    full = SparseMask.full(h, s, 128, 128, device="cuda")
    plain = lambda: block_sparse_attention(q, k, v, full, return_lse=True)  # noqa: E731
    exact = lambda: block_sparse_attention(q, k, v, full, return_lse=True, out_dtype=torch.float32)  # noqa: E731
    o1, lse = plain()
    o2, _ = exact()
    err = ((o1.float() - o2).norm() / o2.norm()).item()
    columns, counts = topk_columns(q, k, lse, q_block=128, fraction=0.07)
    col_plain = lambda: column_sparse_attention(q, k, v, columns, counts, q_block=128, return_lse=True)  # noqa: E731
    col_exact = lambda: column_sparse_attention(q, k, v, columns, counts, q_block=128, return_lse=True,  # noqa: E731
                                                out_dtype=torch.float32)
    c1, c2 = col_plain()[0], col_exact()[0]
    col_err = ((c1.float() - c2).norm() / c2.norm()).item()
    cudnn = lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v)  # noqa: E731
    with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.CUDNN_ATTENTION):
        t_cudnn = median_ms(cudnn)
    rows = {"cudnn_sdpa_ms": t_cudnn, "full_plain_ms": median_ms(plain), "full_float32_ms": median_ms(exact),
            "columns_plain_ms": median_ms(col_plain), "columns_float32_ms": median_ms(col_exact)}
    result = {
        "command": " ".join(["python kernels/bench_subtractable.py", *(sys.argv[1:] if argv is None else argv)]),
        "environment": environment([], "cuda"),
        "shape": [1, h, s, d], "rel_diff_full": err, "rel_diff_columns": col_err,
        **{k_: round(v_, 3) for k_, v_ in rows.items()},
        "full_float32_vs_plain": round(rows["full_float32_ms"] / rows["full_plain_ms"], 3),
        "columns_float32_vs_plain": round(rows["columns_float32_ms"] / rows["columns_plain_ms"], 3),
        "full_plain_vs_cudnn": round(t_cudnn / rows["full_plain_ms"], 3),
    }
    print(json.dumps(result, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
