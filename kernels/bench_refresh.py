"""The delta refresh at HunyuanVideo 720p's attention shape, part by part: the subtracting refresh against the one
that leaves the columns out (issue 21, the refresh).

Subtracting (the reference and sdpa backends' way, and the Triton path's until this bench): a full pass with float32
outputs and its log-sum-exp, `topk_columns` over it, the columns' attention in float32, `subtract_attention`.
Leaving out (the Triton path now): the sampled rows' log-sum-exp (QK only), `topk_columns` from it, `column_bitmask`,
one full pass that leaves each block's columns and the text out (the rest itself), the columns' attention, and
`merge_attention` for the output. cuDNN SDPA and FlashAttention-2 (through SDPA) run the full attention beside them.
FlexAttention is not run: building its block mask from a per-block key bitmask evaluates the mask at every one of
the 119,056^2 pairs.

Correctness first: both refreshes' outputs against each other, and their cached rests against a float32 rest on a
few query blocks. Then median CUDA-event times (`kernels/bench.py`'s `time_ms`: a warm-up, then at least 5 runs,
about 1.5 s of them; the run committed on 2026-12-04 took 5 after 2 warm-ups), with the peak memory of each whole
refresh beyond its inputs. Random bf16 inputs, 24 heads, head dim 128, 7% of the keys a query block of 128, 256 text
keys at the end.

    python kernels/bench_refresh.py --out kernels/refresh.json
    TRITON_INTERPRET=1 python kernels/bench_refresh.py --dry-run    # the flow on the CPU at 2 heads x 600 tokens
"""

import argparse
import json
import sys
from pathlib import Path

import torch


def median_ms(fn):
    if not torch.cuda.is_available():  # --dry-run: the flow, not a time
        fn()
        return 0.0
    from bench import time_ms  # kernels/bench.py, beside this script

    return time_ms(fn)


def peak_gib(fn) -> float:
    if not torch.cuda.is_available():
        fn()
        return 0.0
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**30


def main(argv=None):
    from vidsparse import SparseMask
    from vidsparse.app.runinfo import environment
    from vidsparse.kernels import (
        block_sparse_attention, column_bitmask, column_sparse_attention, merge_attention, subtract_attention,
        topk_columns,
    )
    from vidsparse.kernels.column_sparse import _sample_rows, sampled_lse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--heads", type=int, default=24)
    parser.add_argument("--tokens", type=int, default=119_056 + 256)
    parser.add_argument("--text", type=int, default=256, help="text keys at the end")
    parser.add_argument("--fraction", type=float, default=0.07)
    parser.add_argument("--dry-run", action="store_true", help="the CPU (TRITON_INTERPRET=1), tiny, no timings")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    device = "cpu" if args.dry_run else "cuda"
    if args.dry_run:
        args.heads, args.tokens, args.text = 2, 600, 40
    h, s, d, qb = args.heads, args.tokens, 128, 128
    text = (s - args.text, s) if args.text else None
    gen = torch.Generator(device=device).manual_seed(0)
    q, k, v = (torch.randn(1, h, s, d, device=device, dtype=torch.bfloat16, generator=gen) for _ in range(3))
    full = SparseMask.full(h, s, qb, qb, device=device)
    topk = dict(q_block=qb, fraction=args.fraction, rows_per_block=16, text=text)

    def subtracting():
        out, lse = block_sparse_attention(q, k, v, full, return_lse=True, out_dtype=torch.float32)
        columns, counts = topk_columns(q, k, lse, **topk)
        o_k, lse_k = column_sparse_attention(q, k, v, columns, counts, q_block=qb, text=text, return_lse=True,
                                             out_dtype=torch.float32)
        o_rest, lse_rest = subtract_attention(out, lse, o_k, lse_k, out=o_k)
        return out.to(q.dtype), columns, counts, o_rest.to(q.dtype), lse_rest

    def leaving_out():
        columns, counts = topk_columns(q, k, None, **topk)
        o_rest, lse_rest = block_sparse_attention(q, k, v, full, return_lse=True,
                                                  exclude=column_bitmask(columns, counts, s, text))
        o_k, lse_k = column_sparse_attention(q, k, v, columns, counts, q_block=qb, text=text, return_lse=True)
        out, _ = merge_attention(o_rest, lse_rest, o_k, lse_k)
        return out, columns, counts, o_rest, lse_rest

    # ---- correctness: the two refreshes, and each cached rest against float32 on a few query blocks
    old, new = subtracting(), leaving_out()
    rel = lambda a, b: ((a.float() - b.float()).norm() / b.float().norm()).item()  # noqa: E731
    same_columns = bool(torch.equal(old[1], new[1]) and torch.equal(old[2], new[2]))
    checks = {"out_rel_diff": rel(new[0], old[0]), "same_columns": same_columns}
    blocks = sorted({0, min(400, (s - 1) // qb), max(0, (s - 1) // qb - 3)})
    errors = {"subtracting": [], "leaving_out": []}
    for blk in blocks:
        rows = slice(blk * qb, min(s, (blk + 1) * qb))
        scores = (q[0, :, rows].float() @ k[0].float().transpose(-1, -2)) * d**-0.5  # [H, rows, S]
        left_out = torch.zeros(h, s, dtype=torch.bool, device=device)
        live = torch.arange(new[1].shape[-1], device=device) < new[2][0, :, blk, None]  # [H, K]
        heads = torch.arange(h, device=device)[:, None].expand_as(live)
        left_out[heads[live], new[1][0, :, blk][live].long()] = True
        if text:
            left_out[:, text[0]:text[1]] = True
        rest = scores.masked_fill(left_out[:, None, :], float("-inf")).softmax(-1) @ v[0].float()
        # the rest's share of each row's mass, exp(lse_rest - lse)
        share = (scores.masked_fill(left_out[:, None, :], float("-inf")).logsumexp(-1) - scores.logsumexp(-1)).exp()
        for name, got in (("subtracting", old), ("leaving_out", new)):
            if name == "subtracting" and not same_columns:
                continue  # another draw of columns: another rest
            # the rest's error as it enters a merged output: weighted by its share of the mass
            diff = (share[..., None] * (got[3][0, :, rows].float() - rest)).norm() / (share[..., None] * rest).norm()
            errors[name].append(diff.item())
    checks["rest_rel_err_weighted"] = {n: max(e) if e else None for n, e in errors.items()}
    print(json.dumps(checks), flush=True)
    del old, new

    # ---- the parts
    rows = _sample_rows(s, qb, 16, 0, q.device)
    lse_rows = sampled_lse(q, k, rows, None, d**-0.5)
    columns, counts = topk_columns(q, k, lse_rows, **topk)
    words = column_bitmask(columns, counts, s, text)
    o_rest, lse_rest = block_sparse_attention(q, k, v, full, return_lse=True, exclude=words)
    o_k, lse_k = column_sparse_attention(q, k, v, columns, counts, q_block=qb, text=text, return_lse=True)
    _, lse_full = block_sparse_attention(q, k, v, full, return_lse=True, out_dtype=torch.float32)
    o_k32, lse_k32 = column_sparse_attention(q, k, v, columns, counts, q_block=qb, text=text, return_lse=True,
                                             out_dtype=torch.float32)
    out32, _ = block_sparse_attention(q, k, v, full, return_lse=True, out_dtype=torch.float32)
    sdpa = torch.nn.functional.scaled_dot_product_attention
    backends = torch.nn.attention.SDPBackend
    parts = {}
    for name, backend in (("cudnn_sdpa", backends.CUDNN_ATTENTION), ("fa2_sdpa", backends.FLASH_ATTENTION)):
        with torch.nn.attention.sdpa_kernel(backend if device == "cuda" else backends.MATH):
            parts[name] = median_ms(lambda: sdpa(q, k, v))
    parts["full_plain"] = median_ms(lambda: block_sparse_attention(q, k, v, full, return_lse=True))
    parts["old_full_float32"] = median_ms(lambda: block_sparse_attention(q, k, v, full, return_lse=True,
                                                                         out_dtype=torch.float32))
    parts["old_topk_columns"] = median_ms(lambda: topk_columns(q, k, lse_full, **topk))
    parts["old_columns_float32"] = median_ms(lambda: column_sparse_attention(
        q, k, v, columns, counts, q_block=qb, text=text, return_lse=True, out_dtype=torch.float32))
    parts["old_subtract"] = median_ms(lambda: subtract_attention(out32, lse_full, o_k32.clone(), lse_k32))
    parts["new_sampled_lse"] = median_ms(lambda: sampled_lse(q, k, rows, None, d**-0.5))
    parts["new_topk_columns_given_lse"] = median_ms(lambda: topk_columns(q, k, lse_rows, **topk))
    # topk_columns' two halves, at its chunk of two heads (the chunk 2^28 mass elements allow here)
    from vidsparse.kernels.column_sparse import _banned_keys, _block_mass, _top_columns

    lse_safe = lse_rows.masked_fill(~torch.isfinite(lse_rows), float("inf"))[:, :2]
    n_q, banned = rows.shape[0], _banned_keys(1, s, text, None, q.device)
    mass = _block_mass(q[:, :2], k[:, :2], lse_safe, rows, 0, n_q, d**-0.5)
    parts["topk_mass_kernel_2_heads"] = median_ms(lambda: _block_mass(q[:, :2], k[:, :2], lse_safe, rows, 0, n_q,
                                                                      d**-0.5))
    # The selection both ways: the radix-select kernel (what topk_columns runs) and torch.topk plus a sort (before it)
    picked = [_top_columns(mass.clone(), banned, columns.shape[-1], kernel=kernel) for kernel in (True, False)]
    # Lists can differ only where masses tie at the K-th largest; the masses they pick cannot.
    chosen = [mass.masked_fill(banned[:, None, None, :], -1.0).gather(-1, cols.long()).sort(-1).values
              for cols, _ in picked]
    checks["select_rows_differing"] = int((picked[0][0] != picked[1][0]).any(-1).sum())
    checks["select_same_masses_and_counts"] = torch.equal(*chosen) and torch.equal(picked[0][1], picked[1][1])
    del picked, chosen
    parts["topk_select_2_heads_kernel"] = median_ms(lambda: _top_columns(mass.clone(), banned, columns.shape[-1],
                                                                         kernel=True))
    parts["topk_select_2_heads_torch"] = median_ms(lambda: _top_columns(mass.clone(), banned, columns.shape[-1],
                                                                        kernel=False))
    parts["topk_clone_2_heads"] = median_ms(lambda: mass.clone())
    del mass
    parts["new_column_bitmask"] = median_ms(lambda: column_bitmask(columns, counts, s, text))
    parts["new_rest_pass"] = median_ms(lambda: block_sparse_attention(q, k, v, full, return_lse=True, exclude=words))
    if device == "cuda":  # the rest pass on the plain pass's tiles, which spill with the bits (kernels/resources.py)
        from vidsparse.kernels.block_sparse import _TUNED_HOPPER

        plain_tiles = _TUNED_HOPPER[(d, 2)]
        parts["new_rest_pass_plain_tiles"] = median_ms(lambda: block_sparse_attention(
            q, k, v, full, return_lse=True, exclude=words, config=plain_tiles))
    parts["new_columns"] = median_ms(lambda: column_sparse_attention(q, k, v, columns, counts, q_block=qb, text=text,
                                                                     return_lse=True))
    parts["new_merge"] = median_ms(lambda: merge_attention(o_rest, lse_rest, o_k, lse_k))
    del o_k32, out32, lse_full
    whole = {"subtracting_ms": median_ms(subtracting), "leaving_out_ms": median_ms(leaving_out)}
    memory = {"subtracting_peak_gib": peak_gib(subtracting), "leaving_out_peak_gib": peak_gib(leaving_out)}
    result = {
        "command": " ".join(["python kernels/bench_refresh.py", *(sys.argv[1:] if argv is None else argv)]),
        "environment": environment([], device),
        "shape": [1, h, s, d], "text": text, "fraction": args.fraction, "K": int(columns.shape[-1]),
        "checks": checks,
        "parts_ms": {k_: round(v_, 3) for k_, v_ in parts.items()},
        "whole_ms": {k_: round(v_, 3) for k_, v_ in whole.items()},
        "peak_beyond_inputs": {k_: round(v_, 2) for k_, v_ in memory.items()},
    }
    if not args.dry_run:
        result.update(
            leaving_out_vs_subtracting=round(whole["subtracting_ms"] / whole["leaving_out_ms"], 3),
            leaving_out_vs_cudnn_full=round(parts["cudnn_sdpa"] / whole["leaving_out_ms"], 3),
            rest_pass_vs_full_plain=round(parts["new_rest_pass"] / parts["full_plain"], 3),
        )
    print(json.dumps(result, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
