"""Kernel benchmark: vidsparse's block-sparse and column-sparse attention against cuDNN SDPA,
FlashAttention-2 (SDPA flash) and FlexAttention on the identical mask, all in one process, on real
vDiT shapes.

Run on a CUDA GPU (the figures in RESULTS.md and COLUMNS.md come from one H200):

    python kernels/bench.py                      # every shape -> kernels/RESULTS.md + kernels/results.json,
                                                 #   then the column cases -> kernels/COLUMNS.md + columns.json
    python kernels/bench.py --shapes cogvideox-5b --densities 1,0.25
    python kernels/bench.py --only columns       # the column-sparse cases, topk_columns and permute_tokens
    python kernels/bench.py --tune               # sweep tile configs -> kernels/tuning.json + TUNING.md
    python kernels/bench.py --only columns --tune  # column-kernel tiles -> tuning_columns.json + TUNING_COLUMNS.md

Method (../METHOD.md of the device tool): every case is checked for correctness first (kernel and
FlexAttention against a float32 reference on sampled query blocks), then warmed up and timed with
CUDA events; the median is reported. Effective TFLOP/s counts only the work the mask keeps:
density x 4*B*H*S*S*D / time. Column cases count 4*B*H*S*(K + text)*D, K the columns per query
block; their FlexAttention runs the same token-level mask through a `mask_mod` (every key block
that holds a column is a partial block).
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
from vidsparse.kernels import ColumnKernelConfig, column_sparse_attention, permute_tokens, topk_columns
from vidsparse.kernels.block_sparse import default_config
from vidsparse.kernels.column_sparse import default_column_config
from vidsparse.core.columns import pack_columns
from vidsparse.core.layout import TokenLayout
from vidsparse.core.patterns import frame_band, temporal

HERE = Path(__file__).resolve().parent

# name -> (layout after patchify, heads, head_dim). Sequence lengths as in DESIGN.md.
SHAPES = {
    "cogvideox-5b": (TokenLayout(13, 30, 45, 226, "start"), 48, 64),  # 49f 480x720: 17,776 tokens
    "cogvideox1.5-5b": (TokenLayout(11, 48, 85, 226, "start"), 48, 64),  # 81f 768x1360: 45,106
    "hunyuanvideo-544p": (TokenLayout(33, 34, 60, 256, "end"), 24, 128),  # 129f 544x960: 67,576
    "hunyuanvideo-720p": (TokenLayout(33, 45, 80, 256, "end"), 24, 128),  # 129f 720x1280: 119,056
}
DENSITIES = (1.0, 0.5, 0.25, 0.1)
# Column-sparse cases: (shape, fraction of the video keys each query block keeps).
COLUMN_CASES = (("hunyuanvideo-720p", 0.07), ("cogvideox-5b", 0.07), ("cogvideox-5b", 0.15))
COLUMN_Q_BLOCK = 128


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


# ---------------------------------------------------------------------------- column-sparse cases
def random_columns(heads: int, s: int, text, n_cols: int, q_block: int, device, seed: int = 0):
    """Column lists `[1, H, nQ, K]` of K distinct video keys a query block, drawn uniformly and
    sorted ascending (the launcher's fast order), and counts `[1, H, nQ]` all K. Text keys are
    left out, as callers must. One head at a time: the draw holds nQ x S floats."""
    n_q = -(-s // q_block)
    video = torch.ones(s, dtype=torch.bool, device=device)
    if text is not None:
        video[text[0] : text[1]] = False
    keys = video.nonzero().squeeze(1)  # video token indices, ascending
    gen = torch.Generator(device=device).manual_seed(seed)
    columns = torch.empty(1, heads, n_q, n_cols, dtype=torch.int32, device=device)
    for h in range(heads):
        pick = torch.rand(n_q, keys.numel(), generator=gen, device=device).topk(n_cols, dim=-1).indices
        columns[0, h] = keys[pick.sort(-1).values].to(torch.int32)
    return columns, torch.full((1, heads, n_q), n_cols, dtype=torch.int32, device=device)


def sampled_column_error(out, q, k, v, columns, counts, text, q_block: int, q_blocks: list[int]) -> float:
    """Relative L2 error of `out` on the given query blocks against float32 attention over each
    block's columns and the text keys (batch element 0; the benchmark's lists are shared)."""
    s, d = q.shape[2], q.shape[-1]
    scale = 1.0 / math.sqrt(d)
    text_keys = torch.arange(*text, device=q.device) if text is not None else None
    num, den = 0.0, 0.0
    for qb in q_blocks:
        rows = slice(qb * q_block, min(s, (qb + 1) * q_block))
        idx = columns[0, :, qb].long()  # [H, K]
        live = torch.arange(idx.shape[-1], device=q.device) < counts[0, :, qb, None]
        if text_keys is not None:
            idx = torch.cat([idx, text_keys.expand(idx.shape[0], -1)], dim=-1)
            live = torch.cat([live, torch.ones_like(idx[:, : text_keys.numel()], dtype=torch.bool)], dim=-1)
        gather = idx[..., None].expand(-1, -1, d)
        k_sel, v_sel = k[0].gather(1, gather).float(), v[0].gather(1, gather).float()  # [H, K + T, D]
        scores = torch.einsum("hqd,hkd->hqk", q[0, :, rows].float(), k_sel) * scale
        scores.masked_fill_(~live[:, None, :], float("-inf"))
        ref = torch.einsum("hqk,hkd->hqd", torch.softmax(scores, -1), v_sel)
        num += (out[0, :, rows].float() - ref).pow(2).sum().item()
        den += ref.pow(2).sum().item()
    return math.sqrt(num / den)


def column_flex_block_mask(columns, counts, text, q_block: int, s: int):
    """The column lists as a FlexAttention `BlockMask`: a token-level `mask_mod` over a boolean
    table `[H, nQ, S]` (the lists plus the text keys), on every 128-key block that holds a live key.
    q_block must be FlexAttention's 128-row block."""
    from torch.nn.attention.flex_attention import BlockMask

    heads, n_q, n_cols = columns.shape[1:]
    table = torch.zeros(heads, n_q, s, dtype=torch.bool, device=columns.device)
    live = torch.arange(n_cols, device=columns.device) < counts[0, ..., None]
    table.scatter_(-1, columns[0].long(), live)
    if text is not None:
        table[..., text[0] : text[1]] = True
    n_k = -(-s // 128)
    blocks = torch.nn.functional.pad(table, (0, n_k * 128 - s)).view(heads, n_q, n_k, 128).any(-1)
    kv_num = blocks.sum(-1, dtype=torch.int32)[None]
    kv_idx = torch.sort(blocks.to(torch.uint8), dim=-1, descending=True, stable=True).indices.to(torch.int32)[None]

    def listed(b, h, q_idx, kv_idx):
        return table[h, q_idx // q_block, kv_idx]

    return BlockMask.from_kv_blocks(kv_num, kv_idx, BLOCK_SIZE=(q_block, 128), mask_mod=listed, seq_lengths=(s, s))


def _dense_times(q, k, v) -> tuple[float, float]:
    with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
        cudnn_ms = time_ms(lambda: F.scaled_dot_product_attention(q, k, v))
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        fa2_ms = time_ms(lambda: F.scaled_dot_product_attention(q, k, v))
    return cudnn_ms, fa2_ms


def bench_columns(cases, compiled_flex, *, flex: bool = True, device: str = "cuda") -> list[dict]:
    """Each (shape, fraction): column-sparse kernel vs dense cuDNN / FA2, block-sparse at the same
    density, and FlexAttention with the same token-level mask. Correctness first, then timing."""
    rows = []
    dev = torch.device(device)
    dense_cache: dict[str, tuple[float, float]] = {}
    for name, fraction in cases:
        layout, heads, dim = SHAPES[name]
        s, text = layout.seq_len, layout.text_range
        q, k, v = (torch.randn(1, heads, s, dim, device=dev, dtype=torch.bfloat16) for _ in range(3))
        if name not in dense_cache:
            dense_cache[name] = _dense_times(q, k, v)
        cudnn_ms, fa2_ms = dense_cache[name]
        n_cols = max(1, round(fraction * layout.video_len))
        columns, counts = random_columns(heads, s, text, n_cols, COLUMN_Q_BLOCK, dev)
        kw = dict(q_block=COLUMN_Q_BLOCK, text=text)
        keys = n_cols + (layout.text_len if text else 0)
        density = keys / s
        flops = 4.0 * heads * s * keys * dim

        t0 = time.perf_counter()
        ours = column_sparse_attention(q, k, v, columns, counts, **kw)
        torch.cuda.synchronize()
        first_call_s = time.perf_counter() - t0
        n_q = columns.shape[2]
        probe = sorted({0, n_q // 3, n_q // 2, n_q - 1})
        err_ours = sampled_column_error(ours, q, k, v, columns, counts, text, COLUMN_Q_BLOCK, probe)
        err_flex = flex_ms = None
        if flex:
            flex_mask = column_flex_block_mask(columns, counts, text, COLUMN_Q_BLOCK, s)
            out_flex = compiled_flex(q, k, v, block_mask=flex_mask)
            err_flex = sampled_column_error(out_flex, q, k, v, columns, counts, text, COLUMN_Q_BLOCK, probe)
            del out_flex
        del ours
        ours_ms = time_ms(lambda: column_sparse_attention(q, k, v, columns, counts, **kw))
        # The same lists packed to 16 bits a column (what a cached delta keeps): the same output, bit for bit
        low, wraps = pack_columns(columns, counts, s)
        packed_equal = torch.equal(column_sparse_attention(q, k, v, low, counts, wraps=wraps, **kw),
                                   column_sparse_attention(q, k, v, columns, counts, **kw))
        packed_ms = time_ms(lambda: column_sparse_attention(q, k, v, low, counts, wraps=wraps, **kw))
        del low, wraps
        if flex:
            flex_ms = time_ms(lambda: compiled_flex(q, k, v, block_mask=flex_mask))
            del flex_mask
        block_mask = SparseMask.random(density, heads, s, generator=torch.Generator(device=dev).manual_seed(0), device=dev)
        block_ms = time_ms(lambda: block_sparse_attention(q, k, v, block_mask))
        case = {
            "shape": name, "seq_len": s, "heads": heads, "head_dim": dim, "fraction": fraction,
            "q_block": COLUMN_Q_BLOCK, "columns": n_cols, "text_len": layout.text_len, "density": density,
            "config": asdict(default_column_config(q, COLUMN_Q_BLOCK)), "first_call_s": first_call_s,
            "ours_ms": ours_ms, "ours_tflops": flops / ours_ms / 1e9, "cudnn_ms": cudnn_ms, "fa2_ms": fa2_ms,
            "flex_ms": flex_ms, "block_sparse_ms": block_ms, "block_sparse_density": block_mask.density(),
            "vs_cudnn": cudnn_ms / ours_ms, "vs_fa2": fa2_ms / ours_ms,
            "vs_flex": flex_ms / ours_ms if flex else None, "vs_block_sparse": block_ms / ours_ms,
            "err_ours": err_ours, "err_flex": err_flex, "packed_ms": packed_ms, "packed_equal": packed_equal,
            "correct": err_ours <= (max(2 * err_flex, 1e-2) if flex else 1e-2) and packed_equal,
        }
        rows.append(case)
        flex_txt = f"flex {flex_ms:8.2f} (x{case['vs_flex']:.2f}) " if flex else ""
        print(
            f"{name:18s} columns {fraction:.0%} K={n_cols} d={density:.3f} ours {ours_ms:8.2f} ms "
            f"({case['ours_tflops']:5.0f} TF/s) packed {packed_ms:8.2f} {flex_txt}block-sparse {block_ms:8.2f} "
            f"cudnn {cudnn_ms:8.2f} "
            f"| x{case['vs_cudnn']:.2f} cudnn | err {err_ours:.1e}" + (f" (flex {err_flex:.1e})" if flex else ""),
            flush=True,
        )
        del q, k, v, columns, counts, block_mask
        torch.cuda.empty_cache()
    return rows


def _syncs(fn) -> bool:
    """Whether fn makes a host-device synchronisation (CUDA sync debug mode raises on one)."""
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        fn()
        return False
    except RuntimeError:
        return True
    finally:
        torch.cuda.set_sync_debug_mode("default")
        torch.cuda.synchronize()


def _peak_gb(fn) -> float:
    """Peak memory fn allocates beyond what was allocated before it, in GB."""
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 1e9


def column_overheads(name: str = "hunyuanvideo-720p", fraction: float = 0.07, *, device: str = "cuda") -> dict:
    """Time, memory and host syncs of topk_columns (from the full attention's lse) and of
    permute_tokens (a per-head choice among 4 permutations, forward and inverse)."""
    layout, heads, dim = SHAPES[name]
    s, text = layout.seq_len, layout.text_range
    dev = torch.device(device)
    q, k, v = (torch.randn(1, heads, s, dim, device=dev, dtype=torch.bfloat16) for _ in range(3))
    _, lse = block_sparse_attention(q, k, v, SparseMask.full(heads, s, device=dev), return_lse=True)
    del v

    def topk():
        return topk_columns(q, k, lse, q_block=COLUMN_Q_BLOCK, fraction=fraction, text=text)

    columns, counts = topk()  # compiles the mass kernel
    torch.cuda.synchronize()
    expected_k = max(1, round(fraction * layout.video_len))
    topk_ok = tuple(columns.shape) == (1, heads, -(-s // COLUMN_Q_BLOCK), expected_k) and bool(
        (counts == expected_k).all() and (columns.diff(dim=-1) > 0).all()
    )
    del columns, counts
    topk_syncs = _syncs(topk)
    topk_peak = _peak_gb(topk)
    topk_ms = time_ms(topk, target_ms=1000, min_runs=3)

    gen = torch.Generator(device=dev).manual_seed(0)
    perms = torch.stack([torch.randperm(s, generator=gen, device=dev) for _ in range(4)])
    order = torch.arange(heads, device=dev) % 4
    y = permute_tokens(q, perms, order)
    permute_ok = torch.equal(permute_tokens(y, perms, order, inverse=True), q) and torch.equal(y[0, 1], q[0, 1, perms[1]])
    del y
    permute_syncs = _syncs(lambda: permute_tokens(q, perms, order))
    fwd_ms = time_ms(lambda: permute_tokens(q, perms, order))
    inv_ms = time_ms(lambda: permute_tokens(q, perms, order, inverse=True))
    moved = 2 * q.numel() * q.element_size()  # read and write every element once
    result = {
        "shape": name, "fraction": fraction, "q_block": COLUMN_Q_BLOCK, "columns": expected_k,
        "topk_ms": topk_ms, "topk_peak_gb": topk_peak, "topk_syncs": topk_syncs, "topk_ok": topk_ok,
        "permute_ms": fwd_ms, "permute_inverse_ms": inv_ms, "permute_gbps": moved / fwd_ms / 1e6,
        "permute_inverse_gbps": moved / inv_ms / 1e6, "permute_syncs": permute_syncs, "permute_ok": permute_ok,
    }
    print(json.dumps(result), flush=True)
    del q, k, lse, perms
    torch.cuda.empty_cache()
    return result


def write_columns(env: dict, rows: list[dict], overheads: dict | None, out_dir: Path) -> None:
    (out_dir / "columns.json").write_text(json.dumps({**env, "cases": rows, "overheads": overheads}, indent=1))
    lines = [
        "# Column-sparse kernel results",
        "",
        f"Produced by `{env['command']}` on {env['date']}.",
        f"GPU {env['gpu']}, torch {env['torch']}, triton {env['triton']}, CUDA {env['cuda']}, cuDNN {env['cudnn']}. "
        f"bf16, B=1, q_block {COLUMN_Q_BLOCK}, K uniformly drawn video keys a query block (sorted) plus every text key. "
        "Times are medians of CUDA-event timings after warm-up; effective TFLOP/s = 4·H·S·(K + text)·D / time. "
        "Block-sparse: `block_sparse_attention` on a random 128x128 block mask of the same density. FlexAttention: "
        "the identical token-level mask as a `mask_mod`. Errors are relative L2 against float32 attention over the "
        "same keys on sampled query blocks. Packed: the same lists at 16 bits a column with their wrap positions "
        "(`vidsparse.core.columns`, what a cached delta keeps), which give the same output bit for bit.",
        "",
        "| shape | S | heads x D | keys kept | K | density | columns ms | TFLOP/s | packed ms | block-sparse ms "
        "| Flex ms | cuDNN ms | FA2 ms | vs cuDNN | vs FA2 | vs Flex | vs block-sparse | err (ours / flex) |",
        "|---" * 18 + "|",
    ]
    for c in rows:
        flex_ms = f"{c['flex_ms']:.2f}" if c["flex_ms"] is not None else "-"
        vs_flex = f"{c['vs_flex']:.2f}x" if c["vs_flex"] is not None else "-"
        err_flex = f"{c['err_flex']:.1e}" if c["err_flex"] is not None else "-"
        packed_ms = f"{c['packed_ms']:.2f}" if c.get("packed_ms") is not None else "-"
        lines.append(
            f"| {c['shape']} | {c['seq_len']:,} | {c['heads']}x{c['head_dim']} | {c['fraction']:.0%} | {c['columns']:,} | "
            f"{c['density']:.3f} | {c['ours_ms']:.2f} | {c['ours_tflops']:.0f} | {packed_ms} | "
            f"{c['block_sparse_ms']:.2f} | {flex_ms} | "
            f"{c['cudnn_ms']:.2f} | {c['fa2_ms']:.2f} | {c['vs_cudnn']:.2f}x | {c['vs_fa2']:.2f}x | {vs_flex} | "
            f"{c['vs_block_sparse']:.2f}x | {c['err_ours']:.1e} / {err_flex} |"
        )
    lines += ["", "Kernel configs: " + "; ".join(f"{c['shape']} {c['config']}" for c in rows[:1] + rows[1:2]),
              "First call (compile): " + ", ".join(f"{c['shape']} {c['first_call_s']:.1f} s" for c in rows)]
    if overheads:
        o = overheads
        lines += [
            "",
            f"## Overheads at {o['shape']} ({o['fraction']:.0%} of the keys, K={o['columns']:,})",
            "",
            f"- `topk_columns` (16 sampled rows a block, from the full attention's lse): {o['topk_ms']:.2f} ms, "
            f"peak {o['topk_peak_gb']:.2f} GB beyond its inputs, host syncs: {'yes' if o['topk_syncs'] else 'none'}, "
            f"output checked: {o['topk_ok']}",
            f"- `permute_tokens` (per-head choice among 4 permutations): forward {o['permute_ms']:.3f} ms "
            f"({o['permute_gbps']:.0f} GB/s), inverse {o['permute_inverse_ms']:.3f} ms ({o['permute_inverse_gbps']:.0f} GB/s), "
            f"host syncs: {'yes' if o['permute_syncs'] else 'none'}, round trip exact: {o['permute_ok']}",
        ]
    (out_dir / "COLUMNS.md").write_text("\n".join(lines) + "\n")


def column_tune_space(head_dim: int) -> list[ColumnKernelConfig]:
    """Column-kernel tiles to sweep. Pruned with `python kernels/resources.py --sweep` (sm_90 builds,
    triton 3.9): at D = 128 every 4-warp tile of 128 rows spills hundreds of bytes, 128 x 128 tiles
    spill a little even with 8 warps, and 4 stages of 128 x 128 pass the 227 KB of shared memory."""
    if head_dim == 128:
        return [ColumnKernelConfig(128, 64, 8, st) for st in (2, 3, 4)] + [
            ColumnKernelConfig(64, 64, 4, st) for st in (2, 3, 4)
        ] + [ColumnKernelConfig(128, 128, 8, st) for st in (2, 3)]
    return [ColumnKernelConfig(128, 64, w, st) for w in (4, 8) for st in (2, 3, 4)] + [
        ColumnKernelConfig(128, 128, 8, st) for st in (2, 3)
    ] + [ColumnKernelConfig(64, 64, 4, st) for st in (2, 3)] + [ColumnKernelConfig(64, 128, 4, 3)]


def tune_columns(cases, *, device: str = "cuda") -> list[dict]:
    rows = []
    dev = torch.device(device)
    for name, fraction in cases:
        layout, heads, dim = SHAPES[name]
        s, text = layout.seq_len, layout.text_range
        q, k, v = (torch.randn(1, heads, s, dim, device=dev, dtype=torch.bfloat16) for _ in range(3))
        n_cols = max(1, round(fraction * layout.video_len))
        columns, counts = random_columns(heads, s, text, n_cols, COLUMN_Q_BLOCK, dev)
        n_q = columns.shape[2]
        for cfg in column_tune_space(dim):
            entry = {"shape": name, "fraction": fraction, "head_dim": dim, "config": asdict(cfg)}
            try:
                run = lambda: column_sparse_attention(q, k, v, columns, counts, q_block=COLUMN_Q_BLOCK, text=text, config=cfg)  # noqa: E731
                t0 = time.perf_counter()
                out = run()
                torch.cuda.synchronize()
                entry["compile_s"] = time.perf_counter() - t0
                entry["err"] = sampled_column_error(out, q, k, v, columns, counts, text, COLUMN_Q_BLOCK, [0, n_q // 2])
                del out
                entry["ms"] = time_ms(run, target_ms=400)
            except Exception as exc:  # a config that does not compile or fit is recorded, not fatal
                entry["error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
            rows.append(entry)
            print(json.dumps(entry), flush=True)
        del q, k, v, columns, counts
        torch.cuda.empty_cache()
    return rows


def write_column_tuning(env: dict, rows: list[dict], out_dir: Path) -> None:
    (out_dir / "tuning_columns.json").write_text(json.dumps({**env, "rows": rows}, indent=1))
    lines = [
        "# Column-kernel tile-config sweep", "", f"Produced by `{env['command']}` on {env['date']}, {env['gpu']}, "
        f"torch {env['torch']}, triton {env['triton']}. Random sorted column lists, bf16, q_block {COLUMN_Q_BLOCK}, "
        "median ms.", "",
        "| shape | keys kept | block_m | block_n | warps | stages | compile s | ms | err |",
        "|---" * 9 + "|",
    ]
    for r in sorted(rows, key=lambda r: (r["shape"], r["fraction"], r.get("ms", 1e9))):
        c = r["config"]
        head = f"| {r['shape']} | {r['fraction']:.0%} | {c['block_m']} | {c['block_n']} | {c['num_warps']} | {c['num_stages']} |"
        if "error" in r:
            lines.append(f"{head} failed: {r['error'][:60]} | | |")
        else:
            lines.append(f"{head} {r['compile_s']:.1f} | {r['ms']:.2f} | {r['err']:.1e} |")
    (out_dir / "TUNING_COLUMNS.md").write_text("\n".join(lines) + "\n")


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
    parser.add_argument(
        "--only", choices=("blocks", "columns"), default=None,
        help="run only the block-sparse cases, or only the column-sparse ones (with topk_columns and "
        "permute_tokens at HunyuanVideo 720p); default both",
    )
    parser.add_argument("--no-flex-columns", action="store_true", help="skip FlexAttention in the column cases")
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
    blocks, columns = args.only in (None, "blocks"), args.only in (None, "columns")
    if args.tune:
        if blocks:
            write_tuning(env, tune(shapes, densities), args.out)
        if columns:
            write_column_tuning(env, tune_columns(COLUMN_CASES), args.out)
        return 0
    torch._dynamo.config.cache_size_limit = 64  # one flex graph per shape
    compiled_flex = torch.compile(flex_attention, dynamic=False)
    if blocks:
        rows = []
        for name in shapes:
            rows.append(bench_shape(name, densities, args.patterns.split(","), compiled_flex))
            write_results(env, rows, None, args.out)  # a run cut short still leaves what it measured
        overhead = launch_overhead() if "hunyuanvideo-720p" in shapes else None
        write_results(env, rows, overhead, args.out)
        print((args.out / "RESULTS.md").read_text())
    if columns:
        col_rows = []
        for case in COLUMN_CASES:
            col_rows += bench_columns([case], compiled_flex, flex=not args.no_flex_columns)
            write_columns(env, col_rows, None, args.out)  # a run cut short still leaves what it measured
        write_columns(env, col_rows, column_overheads(), args.out)
        print((args.out / "COLUMNS.md").read_text())
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
