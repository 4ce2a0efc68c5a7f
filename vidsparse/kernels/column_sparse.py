"""`column_sparse_attention`: attention over a per-query-block list of key tokens (columns),
Chipmunk-style, and `topk_columns`, which picks those lists from sampled rows' attention probabilities.

Block sparsity keeps whole 128 x 128 tiles; column sparsity keeps, for each block of `q_block`
queries, an arbitrary set of individual key tokens. The kernel gathers their K and V rows by index,
so the tokens a query block attends to need not be contiguous. The contract:

    columns  int32 [B', H, nQ, K]   key token indices of each query block, nQ = ceil(S / q_block)
    counts   int32 [B', H, nQ]      how many of the K entries are live; entries past it are never read

`B'` is 1 when the lists are shared by every batch element. Indices may be in any order, but
ascending order is fastest: K and V reads then move forward through memory and neighbouring rows
share cache lines. Every live index must be in `[0, S)`; the kernel does not check (reading the
lists on the host would sync), the reference does.

`text=(start, stop)` declares a contiguous key range that every query also attends to densely; it is
read as plain tiles, not gathered. Callers must leave text keys out of the column lists (`topk_columns`
does): a key listed in both is counted twice, by the kernel and the reference alike.

The partial attention over the columns merges with the attention over the other keys by the
log-sum-exp (`return_lse=True`, then `vidsparse.kernels.merge_attention`), exactly like
`block_sparse_attention`'s partial results.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
from dataclasses import dataclass

import torch

from ..core.columns import packed_wraps
from .block_sparse import _interpreting, triton_cdiv, validate_key_padding, validate_kernel_support, validate_qkv

__all__ = ["ColumnKernelConfig", "attention_topk_and_rest", "column_bitmask", "column_sparse_attention",
           "topk_columns"]

_INDEX_DTYPE = torch.int32
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ColumnKernelConfig:
    """Tile sizes and launch parameters of one column-sparse kernel build.

    `block_m` query rows share one column list, so it must divide the launch's `q_block`;
    `block_n` columns are gathered per loop iteration. Gathers are pointer loads (the bulk-copy
    engine cannot gather rows on Hopper); `num_stages` is the software-pipelining depth that keeps
    several tiles of them in flight.
    """

    block_m: int = 128
    block_n: int = 64
    num_warps: int = 4
    num_stages: int = 3

    def __post_init__(self):
        for name in ("block_m", "block_n"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 16 or value & (value - 1):
                raise ValueError(
                    f"ColumnKernelConfig.{name} must be a power of two >= 16 (tl.dot's minimum); got {value!r}"
                )
        if self.num_warps not in (1, 2, 4, 8, 16):
            raise ValueError(f"ColumnKernelConfig.num_warps must be one of 1, 2, 4, 8, 16; got {self.num_warps!r}")
        if not isinstance(self.num_stages, int) or self.num_stages < 1:
            raise ValueError(f"ColumnKernelConfig.num_stages must be an int >= 1; got {self.num_stages!r}")


# Chosen for Hopper bf16 from the sm_90 builds, not yet timed (`python kernels/resources.py` prints
# registers and spills without a GPU; `python kernels/bench.py --only columns --tune` times the space).
# 128 query rows a tile: each gathered K/V row then feeds 128 rows of work (128 FLOP per gathered
# byte). 8 warps: with 4, the pointer gathers' address registers push a 128 x 64 tile at D = 128
# past 255 registers into spills; with 8 it takes 202 (212 with key padding) and none. 3 stages of
# cp.async keep the gathers of the next tiles in flight (128 KB of shared memory at D = 128).
_TUNED_HOPPER: dict[tuple[int, int], ColumnKernelConfig] = {
    (64, 2): ColumnKernelConfig(block_m=128, block_n=64, num_warps=8, num_stages=3),
    (128, 2): ColumnKernelConfig(block_m=128, block_n=64, num_warps=8, num_stages=3),
}
_FALLBACK_GPU = ColumnKernelConfig(block_m=64, block_n=64, num_warps=4, num_stages=2)


def _largest_power_of_two_dividing(n: int, cap: int) -> int:
    p = cap
    while n % p:
        p //= 2
    return p


def default_column_config(q: torch.Tensor, q_block: int) -> ColumnKernelConfig:
    """The shipped configuration for these inputs, its block_m shrunk to divide q_block."""
    if q.device.type != "cuda":
        # The interpreter runs a numpy op per tile: big tiles mean fewer of them.
        cfg = ColumnKernelConfig(block_m=64, block_n=64, num_warps=4, num_stages=1)
    elif torch.cuda.get_device_capability(q.device)[0] >= 9 and q.element_size() == 2:
        cfg = _TUNED_HOPPER.get((q.shape[-1], 2), _FALLBACK_GPU)
    else:
        cfg = _FALLBACK_GPU
    return dataclasses.replace(cfg, block_m=_largest_power_of_two_dividing(q_block, cfg.block_m))


def _check_q_block(q_block) -> None:
    if not isinstance(q_block, int) or isinstance(q_block, bool) or q_block < 16 or q_block % 16:
        raise ValueError(f"q_block must be a positive multiple of 16 (e.g. 64, 128, 192); got {q_block!r}")


def _check_text(text, s: int) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        start, stop = (int(t) for t in text)
    except (TypeError, ValueError):
        raise ValueError(f"text must be a (start, stop) token range or None; got {text!r}") from None
    if not 0 <= start < stop <= s:
        raise ValueError(f"text must be a non-empty token range (start, stop) with 0 <= start < stop <= S={s}; got {text!r}")
    return start, stop


def validate_column_inputs(q, k, v, columns, counts, q_block, text, key_padding_mask, *, need_kernel: bool,
                           wraps: torch.Tensor | None = None):
    """Raise a ValueError naming the expected and the given values for any input the kernel (or,
    with need_kernel=False, the reference) cannot take. Returns the text range as a tuple or None.

    Index values are not read here (that would sync): see the module docstring."""
    validate_qkv(q, k, v)
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k and v must be on one device; got q {q.device}, k {k.device}, v {v.device}")
    _check_q_block(q_block)
    b, h, s, d = q.shape
    n_q = triton_cdiv(s, q_block)
    if not isinstance(columns, torch.Tensor) or columns.dim() != 4 or columns.shape[0] not in (1, b) or tuple(
        columns.shape[1:3]
    ) != (h, n_q):
        shape = tuple(columns.shape) if isinstance(columns, torch.Tensor) else type(columns).__name__
        raise ValueError(
            f"columns must be a tensor [B', H, nQ, K] = [1 or {b}, {h}, {n_q}, K] (nQ = ceil(S={s} / "
            f"q_block={q_block})); got {shape}"
        )
    expected = (columns.shape[0], h, n_q)
    if not isinstance(counts, torch.Tensor) or tuple(counts.shape) != expected:
        shape = tuple(counts.shape) if isinstance(counts, torch.Tensor) else type(counts).__name__
        raise ValueError(f"counts must be a tensor [B', H, nQ] = {list(expected)}, matching columns; got {shape}")
    if wraps is None and columns.dtype == torch.int16:
        raise ValueError("int16 columns are packed lists: pass their wraps too (vidsparse.core.columns.pack_columns)")
    if wraps is not None:
        want = (*expected, packed_wraps(s))
        if not isinstance(wraps, torch.Tensor) or tuple(wraps.shape) != want or wraps.dtype != torch.int32:
            shape = (tuple(wraps.shape), wraps.dtype) if isinstance(wraps, torch.Tensor) else type(wraps).__name__
            raise ValueError(f"wraps must be int32 [B', H, nQ, W] = {list(want)} (W = ceil(S / 65536) - 1), as "
                             f"pack_columns gives them; got {shape}")
        if columns.dtype != torch.int16:
            raise ValueError(f"packed columns (given with wraps) must be int16; got {columns.dtype}")
    checked = (("counts", counts),) if wraps is not None else (("columns", columns), ("counts", counts))
    for name, t in checked:
        if t.dtype != _INDEX_DTYPE:
            raise ValueError(f"{name} must be int32; got {t.dtype}")
    for name, t in (("columns", columns), ("counts", counts), ("wraps", wraps)):
        if t is not None and t.device != q.device:
            raise ValueError(f"{name} is on {t.device}, q on {q.device}")
    validate_key_padding(key_padding_mask, q)
    text = _check_text(text, s)
    if need_kernel:
        validate_kernel_support(q, "vidsparse.kernels.column_sparse_attention_reference")
    elif not q.is_floating_point():
        raise ValueError(f"q, k and v must be floating point; got {q.dtype}")
    return text


def column_sparse_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    columns: torch.Tensor,
    counts: torch.Tensor,
    *,
    q_block: int,
    text: tuple[int, int] | None = None,
    scale: float | None = None,
    key_padding_mask: torch.Tensor | None = None,
    return_lse: bool = False,
    config: ColumnKernelConfig | None = None,
    out_dtype: torch.dtype | None = None,
    wraps: torch.Tensor | None = None,
):
    """Column-sparse attention forward: each block of `q_block` queries attends to its listed key
    tokens (and to the text range), softmax(scale * q k^T) v over them.

    Args:
        q, k, v: `[B, H, S, D]`, any strides (the last dim is copied to contiguous if it is not).
            bf16, fp16 or fp32; D in {64, 128}.
        columns: int32 `[B', H, nQ, K]`, key token indices of each query block (B' in {1, B},
            nQ = ceil(S / q_block)); any order, ascending is fastest; live entries in `[0, S)`.
            Or int16 packed lists with their `wraps` (`vidsparse.core.columns.pack_columns`, half the bytes;
            ascending lists only), which the kernel decodes as it gathers.
        counts: int32 `[B', H, nQ]`, the live entries of each list (at most K; larger reads K).
        q_block: query tokens per column list, a multiple of 16 (64, 128, 192, ...).
        text: optional `(start, stop)` key range every query also attends to; not listed in columns.
        scale: softmax scale, default `1 / sqrt(D)`.
        key_padding_mask: optional bool `[B, S]`; True marks keys to ignore, listed or text.
        return_lse: also return the float32 natural-log log-sum-exp `[B, H, S]`, -inf for a row
            without a live key, as `block_sparse_attention` does.
        config: override the shipped tile configuration (benchmarks and tuning).
        out_dtype: the output's dtype: the input dtype (None) or torch.float32, which keeps the float32
            accumulator unrounded and shifts the softmax by whole powers of two: a key's p then rounds alike in
            both kernels, and the two outputs subtract without amplifying that rounding (`kernels/bench_refresh.py`'s
            subtracting refresh; the runtime's refresh no longer subtracts on this path).
        wraps: int32 `[B', H, nQ, ceil(S / 65536) - 1]`, with int16 `columns`: where each packed list's high part
            steps up.

    Returns:
        `o` `[B, H, S, D]` in the input dtype or `out_dtype` (zeros for a row without a live key), or `(o, lse)`.

    Example::

        >>> _, lse = block_sparse_attention(q, k, v, SparseMask.full(h, s, device="cuda"), return_lse=True)
        >>> columns, counts = topk_columns(q, k, lse, q_block=128, fraction=0.07)
        >>> o = column_sparse_attention(q, k, v, columns, counts, q_block=128)
    """
    text = validate_column_inputs(q, k, v, columns, counts, q_block, text, key_padding_mask, need_kernel=True,
                                  wraps=wraps)
    if out_dtype not in (None, q.dtype, torch.float32):
        raise ValueError(f"out_dtype must be None (the input dtype) or torch.float32; got {out_dtype}")
    from . import _column_sparse_fwd as kern  # lazily: see _block_sparse_fwd's docstring

    b, h, s, d = q.shape
    cfg = config or default_column_config(q, q_block)
    if q_block % cfg.block_m:
        raise ValueError(f"config block_m={cfg.block_m} must divide q_block={q_block}")
    scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
    if not scale > 0:
        raise ValueError(f"scale must be positive; got {scale}")
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    o = torch.empty(b, h, s, d, dtype=out_dtype or q.dtype, device=q.device)
    lse = torch.empty(b, h, s, dtype=torch.float32, device=q.device) if return_lse else o
    bias = None
    if key_padding_mask is not None:
        bias = torch.zeros(b, s, dtype=torch.float32, device=q.device).masked_fill_(key_padding_mask, float("-inf"))
    if columns.shape[-1] == 1:
        # Triton specialises an integer argument equal to 1; with a width-1 list both the width and the list's
        # query-block stride are 1, and ptxas (triton 3.6, sm_90) crashes on that variant. One unused slot past
        # every count avoids it (the counts are clamped to the old width, so the slot is never read).
        columns, counts = torch.nn.functional.pad(columns, (0, 1)), counts.clamp(max=1)
    n_cols = columns.shape[-1]
    shared = columns.shape[0] == 1
    if wraps is not None and wraps.shape[-1] and wraps.stride(-1) != 1:
        wraps = wraps.contiguous()
    n_wraps = 0 if wraps is None else wraps.shape[-1]
    wrap_strides = (0, 0, 0) if not n_wraps else (0 if shared else wraps.stride(0), wraps.stride(1), wraps.stride(2))
    grid = (triton_cdiv(s, cfg.block_m), b * h)
    kern._column_sparse_fwd[grid](
        q, k, v, o, lse, bias if bias is not None else o, counts, columns if n_cols else counts,
        wraps if n_wraps else counts,
        q.stride(0), q.stride(1), q.stride(2),
        k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2),
        o.stride(0), o.stride(1), o.stride(2),
        0 if bias is None else bias.stride(0),
        0 if shared else counts.stride(0), counts.stride(1), counts.stride(2),
        0 if shared else columns.stride(0), columns.stride(1), columns.stride(2), columns.stride(3),
        *wrap_strides,
        h, s, n_cols, *(text or (0, 0)), scale * 1.4426950408889634,  # log2(e): the kernel works in base 2
        PACKED=wraps is not None, N_WRAPS=n_wraps,
        Q_BLOCK=q_block, BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, HEAD_DIM=d,
        HAS_TEXT=text is not None, HAS_BIAS=bias is not None, RETURN_LSE=return_lse,
        DOT_F32=q.dtype == torch.bfloat16 and _interpreting(),
        DOT_PRECISION="ieee" if q.dtype == torch.float32 else "tf32",  # fp32 inputs get fp32 products
        POW2_MAX=out_dtype == torch.float32,  # outputs meant to be subtracted: see _block_sparse_fwd
        num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )
    return (o, lse) if return_lse else o


def _sample_rows(s: int, q_block: int, rows_per_block: int, seed: int, device) -> torch.Tensor:
    """int64 `[nQ, R]`: R query rows of each block, one in each of R equal strata of the block.

    Row i of a block of n rows is floor((i + phase) n / R), with phase = frac(1/2 + seed * golden
    ratio): the strata's centres for seed 0. The ragged last block is strided over its own rows
    (repeating rows when it has fewer than R). Built on the device from the sizes alone: no sync.
    """
    phase = (0.5 + seed * 0.6180339887498949) % 1.0
    starts = torch.arange(0, s, q_block, device=device)  # [nQ]
    sizes = (s - starts).clamp(max=q_block)
    offs = ((torch.arange(rows_per_block, device=device, dtype=torch.float64) + phase) / rows_per_block)
    within = (offs[None, :] * sizes[:, None]).long().clamp(max=sizes[:, None] - 1)
    return starts[:, None] + within


def topk_columns(
    q: torch.Tensor,
    k: torch.Tensor,
    lse: torch.Tensor,
    *,
    q_block: int,
    fraction: float | None = None,
    count: int | None = None,
    rows_per_block: int = 16,
    text: tuple[int, int] | None = None,
    key_padding_mask: torch.Tensor | None = None,
    scale: float | None = None,
    seed: int = 0,
    max_elements: int = 1 << 28,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per query block, the key columns that carry the most attention mass.

    The mass of key j for a block is estimated from `rows_per_block` of its query rows (evenly
    strided, deterministic; `seed` shifts them within their strata): `sum_r exp(scale q_r.k_j - lse_r)`,
    the attention probabilities of the full attention, whose per-row `lse` normalises them (from
    `block_sparse_attention(..., return_lse=True)` with a full mask, or the reference; rows with
    lse = -inf add nothing). Text keys and padded keys are never chosen.

    Args:
        q, k: `[B, H, S, D]`, any strides and floating dtype. The kernel multiplies in it
            (float32 accumulation) for D in {64, 128}; other sizes take the PyTorch path.
        lse: float `[B, H, S]`, the full attention's natural-log log-sum-exp per row; or None, to compute it
            here for the sampled rows alone (QK products against every live key, no values), so that the
            columns can be chosen before any attention pass (the GPU delta refresh).
        q_block: query tokens per column list (a multiple of 16), as given to `column_sparse_attention`.
        fraction / count: how many columns each block keeps, K (exactly one of the two):
            `count`, or `round(fraction * video keys)` with video keys = S minus the text length.
            K is fixed from the shapes alone (padding is not counted), so no host sync.
        rows_per_block: sampled query rows per block.
        text: the `(start, stop)` text key range to leave out (attend to it through `text=`).
        key_padding_mask: optional bool `[B, S]`, True = padded key, never chosen.
        scale: softmax scale of the attention, default `1 / sqrt(D)`.
        seed: shifts the sampled rows (see `_sample_rows`).
        max_elements: bound on the float32 elements held at once. The work is chunked over heads,
            and over query blocks within a head: the Triton kernel (CUDA, or the interpreter) and the
            PyTorch path (other head dims, CPU without the interpreter, which computes the per-row
            scores a few query blocks at a time) write only the masses, `B x S` a query block, so peak
            extra memory is about `4 x max_elements` bytes: at the default 2^28, 0.9 GB for
            HunyuanVideo 720p (two heads a chunk), whatever the head count.

    Returns:
        `(columns, counts)`: int32 `[B, H, nQ, K]` ascending, and int32 `[B, H, nQ]`. Counts are K
        except where padding leaves fewer than K keys to choose; entries past a count are 0.
    """
    count, text, scale = _check_topk(q, k, q_block, fraction, count, rows_per_block, text, key_padding_mask, scale)
    b, h, s, d = q.shape
    if lse is not None and (not isinstance(lse, torch.Tensor) or tuple(lse.shape) != (b, h, s)
                            or not lse.is_floating_point()):
        shape = (lse.dtype, tuple(lse.shape)) if isinstance(lse, torch.Tensor) else type(lse).__name__
        raise ValueError(f"lse must be None or a float tensor [B, H, S] = [{b}, {h}, {s}]; got {shape}")
    if lse is not None and lse.device != q.device:
        raise ValueError(f"lse is on {lse.device}, q on {q.device}")

    n_q = triton_cdiv(s, q_block)
    rows = _sample_rows(s, q_block, rows_per_block, seed, q.device)  # [nQ, R]
    banned = _banned_keys(b, s, text, key_padding_mask, q.device)
    if lse is None:
        lse = sampled_lse(q, k, rows, key_padding_mask, scale)
    # Rows with lse = -inf (no live key) contribute exp(score - inf) = 0.
    lse_safe = lse.float().masked_fill(~torch.isfinite(lse), float("inf"))

    use_kernel = _mass_kernel_runs(q, rows_per_block)
    select_kernel = (q.device.type == "cuda" or _interpreting()) and _selection_kernel_works(q.device)
    per_block = b * s  # mass elements held per (head, query block)
    heads_per_chunk = max(1, min(h, max_elements // max(1, per_block * n_q)))
    blocks_per_chunk = n_q if heads_per_chunk > 1 else max(1, min(n_q, max_elements // max(1, per_block)))
    columns = torch.empty(b, h, n_q, count, dtype=_INDEX_DTYPE, device=q.device)
    counts = torch.empty(b, h, n_q, dtype=_INDEX_DTYPE, device=q.device)
    for h0 in range(0, h, heads_per_chunk):
        h1 = min(h, h0 + heads_per_chunk)
        for q0 in range(0, n_q, blocks_per_chunk):
            q1 = min(n_q, q0 + blocks_per_chunk)
            mass_of = _block_mass if use_kernel else _block_mass_reference
            mass = mass_of(q[:, h0:h1], k[:, h0:h1], lse_safe[:, h0:h1], rows, q0, q1, scale)  # [B, hc, n, S]
            columns[:, h0:h1, q0:q1], counts[:, h0:h1, q0:q1] = _top_columns(mass, banned, count, select_kernel)
            del mass
    return columns, counts


def sampled_lse(q, k, rows: torch.Tensor, key_padding_mask, scale: float) -> torch.Tensor:
    """float32 `[B, H, S]`: the natural-log log-sum-exp over every live key of rows `rows` (int64 `[nQ, R]`, as
    `_sample_rows` gives them), -inf at every other row (and at a row without a live key). The Triton kernel
    where the mass kernel runs, else PyTorch a head at a time."""
    b, h, s, d = q.shape
    lse = torch.full((b, h, s), float("-inf"), dtype=torch.float32, device=q.device)
    n_q, r = rows.shape
    if not _mass_kernel_runs(q, r):
        flat = rows.reshape(-1)
        compute = torch.float64 if q.dtype == torch.float64 else torch.float32
        for i in range(b):
            keys = k[i] if key_padding_mask is None else k[i][:, ~key_padding_mask[i]]
            for j in range(h):
                scores = torch.matmul(q[i, j, flat].to(compute), keys[j].to(compute).transpose(0, 1)) * scale
                lse[i, j, flat] = torch.logsumexp(scores, -1).float() if scores.shape[-1] else float("-inf")
        return lse
    from . import _column_mass as kern  # lazily: see _block_sparse_fwd's docstring

    q, k = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k))
    bias = None
    if key_padding_mask is not None:
        bias = torch.zeros(b, s, dtype=torch.float32, device=q.device).masked_fill_(key_padding_mask, float("-inf"))
    r_pad = max(1, 1 << (r - 1).bit_length())
    group = max(1, _MAX_KERNEL_ROWS // r_pad) if q.device.type == "cuda" else max(1, 64 // r_pad)
    group = max(group, -(-16 // r_pad))  # tl.dot needs at least 16 rows
    kern._sampled_lse[(triton_cdiv(n_q, group), b * h)](
        q, k, bias if bias is not None else lse, rows, lse,
        q.stride(0), q.stride(1), q.stride(2),
        k.stride(0), k.stride(1), k.stride(2),
        0 if bias is None else bias.stride(0),
        lse.stride(0), lse.stride(1),
        h, s, n_q, scale * 1.4426950408889634,  # log2(e): the kernel works in base 2
        R=r, R_PAD=r_pad, GROUP=group, BLOCK_N=_MASS_BLOCK_N, HEAD_DIM=d, HAS_BIAS=bias is not None,
        DOT_F32=q.dtype == torch.bfloat16 and _interpreting(),
        DOT_PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
        num_warps=4, num_stages=3 if q.device.type == "cuda" else 1,
    )
    return lse


def column_bitmask(columns: torch.Tensor, counts: torch.Tensor, seq_len: int,
                   text: tuple[int, int] | None = None) -> torch.Tensor:
    """int32 `[B', H, nQ, ceil(seq_len / 32)]`: per query block, bit `j % 32` of word `j // 32` set for each of its
    live columns and every text key, the keys `block_sparse_attention(..., exclude=)` leaves out (the delta
    refresh's rest is the attention over the others). Entries past a count are not read. Live columns must be
    distinct within a block (`topk_columns`' are): bits are summed into their words, which for distinct bits is the
    bitwise or (a repeated column would carry into its neighbour). Built a head at a time, so that the int64 word
    indices stay one head's size."""
    b, h, n_q, width = *columns.shape[:3], triton_cdiv(seq_len, 32)
    words = torch.zeros(b, h, n_q, width, dtype=torch.int32, device=columns.device)
    live = torch.arange(columns.shape[-1], device=columns.device) < counts[..., None].to(torch.int64)
    one = torch.ones((), dtype=torch.int32, device=columns.device)
    for j in range(h):
        cols = torch.where(live[:, j], columns[:, j].to(torch.int32), 0)  # entries past a count are never read
        bits = torch.where(live[:, j], torch.bitwise_left_shift(one, cols & 31), 0)  # bit 31 wraps to INT_MIN
        words[:, j].scatter_add_(-1, (cols >> 5).to(torch.int64), bits)
    if text is not None and text[1] > text[0]:
        keys = torch.zeros(width * 32, dtype=torch.bool, device=columns.device)
        keys[text[0]:text[1]] = True
        weights = torch.bitwise_left_shift(one, torch.arange(32, dtype=torch.int32, device=columns.device))
        pattern = (keys.view(width, 32).to(torch.int32) * weights).sum(-1, dtype=torch.int32)  # distinct bits: or
        words |= pattern
    return words


def _check_topk(q, k, q_block, fraction, count, rows_per_block, text, key_padding_mask, scale):
    """The checks `topk_columns` and `attention_topk_and_rest` share; returns (K, text, scale)."""
    for name, t in (("q", q), ("k", k)):
        if not isinstance(t, torch.Tensor) or t.dim() != 4:
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"{name} must be a 4-D tensor [B, H, S, D]; got {shape}")
    if q.shape != k.shape or q.dtype != k.dtype or q.device != k.device:
        raise ValueError(
            f"q and k must share shape, dtype and device; got q {tuple(q.shape)} {q.dtype} {q.device}, "
            f"k {tuple(k.shape)} {k.dtype} {k.device}"
        )
    if not q.is_floating_point():
        raise ValueError(f"q and k must be floating point; got {q.dtype}")
    _check_q_block(q_block)
    s, d = q.shape[2], q.shape[3]
    validate_key_padding(key_padding_mask, q)
    text = _check_text(text, s)
    if not isinstance(rows_per_block, int) or rows_per_block < 1:
        raise ValueError(f"rows_per_block must be a positive int; got {rows_per_block!r}")
    video_keys = s - (0 if text is None else text[1] - text[0])
    if (fraction is None) == (count is None):
        raise ValueError("give exactly one of fraction and count")
    if count is None:
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"fraction must be in (0, 1]; got {fraction}")
        count = max(1, round(fraction * video_keys))
    if not isinstance(count, int) or not 1 <= count <= video_keys:
        raise ValueError(f"count must be an int in [1, {video_keys}] (the video keys); got {count!r}")
    return count, text, 1.0 / math.sqrt(d) if scale is None else float(scale)


def _banned_keys(b: int, s: int, text, key_padding_mask, device) -> torch.Tensor:
    """bool `[B, S]`: the keys never chosen (text and padding)."""
    banned = torch.zeros(b, s, dtype=torch.bool, device=device)
    if key_padding_mask is not None:
        banned |= key_padding_mask
    if text is not None:
        banned[:, text[0] : text[1]] = True
    return banned


def _top_columns(mass: torch.Tensor, banned: torch.Tensor, count: int,
                 kernel: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """`(columns, counts)` of masses `[B, H, n, S]` (overwritten): the `count` largest, ascending, no banned key.
    `kernel`: by the Triton radix select (`_column_select`), which breaks ties at the K-th largest mass by taking
    the lowest keys; else `torch.topk` and a sort, which break them as `torch.topk` does."""
    s = mass.shape[-1]
    mass.masked_fill_(banned[:, None, None, :], -1.0)  # below any real mass (>= 0)
    if kernel:
        return _select_columns(mass, count)
    top, idx = torch.topk(mass, count, dim=-1, sorted=False)
    live = top >= 0
    # Ascending, with the unchosen slots (index S) sorted to the end, then zeroed.
    idx = torch.sort(torch.where(live, idx, s), dim=-1).values
    return torch.where(idx == s, 0, idx).to(_INDEX_DTYPE), live.sum(-1, dtype=_INDEX_DTYPE)


# Masses a selection program reads at a time.
_SELECT_BLOCK = 1024


@functools.lru_cache(maxsize=None)
def _selection_kernel_works(device: torch.device) -> bool:
    """Whether the selection kernel builds and picks what torch.topk picks on this device, checked once on a small
    row with ties, zeros and banned keys (it is the newest kernel; where it does not, topk_columns keeps torch.topk
    and says so once in the log)."""
    g = torch.Generator().manual_seed(0)
    mass = torch.randint(0, 50, (1, 1, 3, 300), generator=g).float().div_(7).to(device)
    mass[..., :9] = 0.0
    banned = torch.zeros(1, 300, dtype=torch.bool, device=device)
    banned[0, 100:140] = True
    try:
        got = _top_columns(mass.clone(), banned, 64, kernel=True)
    except Exception as exc:  # a build error on this triton or GPU: the PyTorch selection still runs
        logger.warning("vidsparse: the column selection kernel does not build here (%s: %s); topk_columns uses "
                       "torch.topk instead", type(exc).__name__, str(exc).splitlines()[0][:200] if str(exc) else "")
        return False
    live = mass.masked_fill(banned[:, None, None, :], -1.0)
    want = _top_columns(mass.clone(), banned, 64, kernel=False)
    same = torch.equal(got[1], want[1]) and torch.equal(live.gather(-1, got[0].long()).sort(-1).values,
                                                        live.gather(-1, want[0].long()).sort(-1).values)
    if not same:
        logger.warning("vidsparse: the column selection kernel disagrees with torch.topk on %s; topk_columns uses "
                       "torch.topk instead", device)
    return same


def _select_columns(mass: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`_top_columns` by the Triton kernel: float32 masses `[..., S]`, negative where banned."""
    from . import _column_select as kern  # lazily: see _block_sparse_fwd's docstring

    *lead, s = mass.shape
    rows = mass.reshape(-1, s)
    if rows.stride(-1) != 1:
        rows = rows.contiguous()
    columns = torch.empty(rows.shape[0], count, dtype=_INDEX_DTYPE, device=mass.device)
    counts = torch.empty(rows.shape[0], dtype=_INDEX_DTYPE, device=mass.device)
    if rows.shape[0]:
        kern._select_top[(rows.shape[0],)](
            rows, columns, counts, rows.stride(0), columns.stride(0), s, count,
            BLOCK=_SELECT_BLOCK if mass.device.type == "cuda" else 64, num_warps=4,
        )
    return columns.view(*lead, count), counts.view(lead)


def attention_topk_and_rest(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    q_block: int,
    fraction: float | None = None,
    count: int | None = None,
    rows_per_block: int = 16,
    text: tuple[int, int] | None = None,
    key_padding_mask: torch.Tensor | None = None,
    seed: int = 0,
) -> tuple[torch.Tensor, ...]:
    """A whole cached-delta refresh on the CPU, from one score matrix: `(out, lse, columns, counts, o_rest, lse_rest)`.

    What the reference backend's refresh computes in four calls: full attention with its log-sum-exp, `topk_columns`
    over it, the column attention (the listed keys and the text), and `subtract_attention` for the rest. Here each
    chunk of (batch, head) pairs and query blocks scores its rows against every key once, in float32 and base 2: the
    probabilities give the output, the sampled rows' column mass, and, gathered at the chosen columns and the text,
    the part that the rest subtracts. The rest is `(sum p v - sum_part p v) / (sum p - sum_part p)` over the same
    probabilities, so it carries float32 rounding only (no bf16 output enters it; see `subtract_attention`), and the
    columns' scores are read from the matrix: only their V rows are gathered, no K row.

    Arguments are `topk_columns`' (with the default scale). `out` and `o_rest` are float32 (float64 for float64
    inputs), `lse` and `lse_rest` float32. A row whose keys are all padded gets zeros and -inf; a rest that holds no
    mass beyond rounding is empty (zeros and -inf), as `subtract_attention` leaves it.
    """
    count, text, scale = _check_topk(q, k, q_block, fraction, count, rows_per_block, text, key_padding_mask, None)
    validate_qkv(q, k, v)
    if q.device.type != "cpu":
        raise ValueError(f"attention_topk_and_rest runs on the CPU; got {q.device} (use topk_columns)")
    b, h, s, d = q.shape
    compute = torch.float64 if q.dtype == torch.float64 else torch.float32
    bh, n_q = b * h, triton_cdiv(s, q_block)
    # Scores in base 2 (q scaled by log2(e) too): exp2 is several times cheaper than exp on the CPU.
    q = torch.nn.functional.pad(q.to(compute) * (scale * _LOG2E), (0, 0, 0, n_q * q_block - s))
    q = q.reshape(bh, n_q * q_block, d)
    keys, values = k.to(compute).reshape(bh, s, d).transpose(1, 2), v.to(compute).reshape(bh, s, d)
    # Each block's sampled rows as weights: a row sampled twice (a ragged last block) counts twice, as in topk_columns.
    rows = _sample_rows(s, q_block, rows_per_block, seed, q.device)  # [nQ, R], absolute
    weight = torch.zeros(n_q, q_block, dtype=compute)
    weight.scatter_add_(1, rows - torch.arange(0, s, q_block).view(-1, 1), torch.ones(rows.shape, dtype=compute))
    pad = None
    if key_padding_mask is not None:  # [B H, 1, S]: -inf on padded keys
        pad = torch.zeros(b, 1, s, dtype=compute).masked_fill_(key_padding_mask.view(b, 1, s), float("-inf"))
        pad = pad.repeat_interleave(h, 0)
    banned = _banned_keys(b, s, text, key_padding_mask, q.device).repeat_interleave(h, 0)  # [B H, S]
    text_keys = None if text is None else slice(*text)

    out = torch.empty(bh, n_q * q_block, d, dtype=compute)
    o_rest = torch.empty_like(out)
    lse = torch.empty(bh, n_q * q_block, 1, dtype=compute)
    lse_rest = torch.empty_like(lse)
    columns = torch.empty(bh, n_q, count, dtype=_INDEX_DTYPE)
    counts = torch.empty(bh, n_q, dtype=_INDEX_DTYPE)
    # A chunk: `group` (batch, head) pairs x `per` query blocks, so that its scores (about _ROWS_PIECE) stay in the
    # CPU's cache and its memory stays bounded at any length. Every temporary is a view of a buffer allocated once:
    # a fresh allocation of this size costs a page fault per page.
    group = min(bh, max(1, _ROWS_PIECE // (q_block * s)))
    per = min(n_q, max(1, _ROWS_PIECE // (group * q_block * s)))
    rows_most = group * per * q_block
    buffers = {name: torch.empty(size, dtype=compute) for name, size in (
        ("p", rows_most * s), ("whole", rows_most * d), ("part", rows_most * d), ("p_cols", rows_most * count),
        ("v_cols", group * per * count * d), ("mass", group * per * s))}

    def take(name, *shape):  # a contiguous view of the start of a buffer
        return buffers[name][: math.prod(shape)].view(shape)

    slot = torch.arange(count).view(1, 1, 1, count)
    for g0 in range(0, bh, group):
        heads = slice(g0, min(bh, g0 + group))
        g = heads.stop - g0
        keys_g, values_g = keys[heads], values[heads]
        for n0 in range(0, n_q, per):
            n1 = min(n_q, n0 + per)
            n, piece = n1 - n0, slice(n0 * q_block, n1 * q_block)
            p = torch.bmm(q[heads, piece], keys_g, out=take("p", g, n * q_block, s))  # log2 scores
            if pad is not None:
                p.add_(pad[heads])
            peak = p.amax(-1, keepdim=True)
            if pad is not None:
                peak.nan_to_num_(neginf=0.0)  # a row whose keys are all padded: its total is 0
            p.sub_(peak).exp2_()
            total = p.sum(-1, keepdim=True)  # [g, n Q, 1]
            whole = torch.bmm(p, values_g, out=take("whole", g, n * q_block, d))  # sum p v
            inverse = total.reciprocal().nan_to_num_(posinf=0.0)
            torch.mul(whole, inverse, out=out[heads, piece])
            torch.add(total.log2(), peak, out=lse[heads, piece])
            # the columns: per block, the keys that its sampled rows give the most probability, sum_r p_r / total_r
            mass = torch.matmul(weight[n0:n1].view(1, n, 1, q_block) * inverse.view(g, n, 1, q_block),
                                p.view(g, n, q_block, s), out=take("mass", g, n, 1, s))
            cols, live = _top_columns(mass.view(g, 1, n, s), banned[heads], count)
            cols, live = cols.view(g, n, count), live.view(g, n)
            columns[heads, n0:n1], counts[heads, n0:n1] = cols, live
            # the part the delta steps recompute: the live columns' and the text's probabilities, and their sum p v
            index = cols.view(g, n, 1, count).long()
            p_cols = torch.gather(p.view(g, n, q_block, s), -1, index.expand(g, n, q_block, count),
                                  out=take("p_cols", g, n, q_block, count))
            p_cols.masked_fill_(slot >= live.view(g, n, 1, 1), 0.0)
            v_cols = torch.gather(values_g, 1, index.view(g, n * count, 1).expand(g, n * count, d),
                                  out=take("v_cols", g, n * count, d)).view(g, n, count, d)
            part = torch.matmul(p_cols, v_cols, out=take("part", g, n, q_block, d)).view(g, n * q_block, d)
            part_total = p_cols.sum(-1).view(g, n * q_block, 1)
            if text_keys is not None:
                p_text = p[:, :, text_keys]
                part.baddbmm_(p_text, values_g[:, text_keys])
                part_total += p_text.sum(-1, keepdim=True)
            rest_total = total.sub_(part_total)
            empty = ~(rest_total > 4 * torch.finfo(compute).eps * (rest_total + part_total))  # all in the part
            rest_total.masked_fill_(empty, 1.0)
            torch.div(whole.sub_(part), rest_total, out=o_rest[heads, piece]).masked_fill_(empty, 0.0)
            torch.add(rest_total.log2_(), peak, out=lse_rest[heads, piece]).masked_fill_(empty, float("-inf"))
    shape = (b, h, n_q * q_block)
    # the ragged last block's padded rows cut off (a copy then, so that no cached tensor keeps them)
    out, o_rest = (t.view(*shape, d)[:, :, :s] for t in (out, o_rest))
    if n_q * q_block != s:
        out, o_rest = out.contiguous(), o_rest.contiguous()
    lse, lse_rest = (t.view(shape)[:, :, :s].mul(_LN2).float() for t in (lse, lse_rest))
    return out, lse, columns.view(b, h, n_q, count), counts.view(b, h, n_q), o_rest, lse_rest


_LOG2E, _LN2 = math.log2(math.e), math.log(2.0)
_MAX_KERNEL_ROWS = 128  # sampled rows a block for the mass kernel (one tile of rows)
_MASS_PIECE = 1 << 19  # float32 scores the PyTorch mass path holds at a time (2 MB)
_ROWS_PIECE = 1 << 21  # scores that attention_topk_and_rest holds at a time (8 MB in float32; at least one
# query block of one head)
_MASS_BLOCK_N = 64


def _mass_kernel_runs(q: torch.Tensor, rows_per_block: int) -> bool:
    """Whether the Triton mass kernel takes these inputs (else the PyTorch path runs)."""
    if q.device.type != "cuda" and not _interpreting():
        return False
    return q.shape[-1] in (64, 128) and q.dtype in (torch.float16, torch.bfloat16, torch.float32) and (
        rows_per_block <= _MAX_KERNEL_ROWS
    )


def _mass_key_splits(tiles: int, s: int, device: torch.device) -> int:
    """Into how many key ranges the mass kernel splits S, so that there are a few waves of programs:
    a chunk of two heads at HunyuanVideo sizes is only ~230 row tiles, under two a multiprocessor.
    One range in the interpreter, where more programs only cost time."""
    if device.type != "cuda":
        return 1
    want = 4 * torch.cuda.get_device_properties(device).multi_processor_count
    return max(1, min(triton_cdiv(s, 1024), triton_cdiv(want, tiles)))  # at least 1024 keys a program


def _block_mass(q, k, lse_safe, rows, q0: int, q1: int, scale: float) -> torch.Tensor:
    """float32 `[B, hc, q1 - q0, S]`: the summed attention probability of every key over the
    sampled rows of query blocks q0..q1, by the Triton kernel."""
    from . import _column_mass as kern  # lazily: see _block_sparse_fwd's docstring

    b, hc, s, d = q.shape
    n, r = q1 - q0, rows.shape[1]
    q, k = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k))
    mass = torch.empty(b, hc, n, s, dtype=torch.float32, device=q.device)
    r_pad = max(1, 1 << (r - 1).bit_length())
    group = max(1, _MAX_KERNEL_ROWS // r_pad)
    if q.device.type != "cuda":
        group = max(1, 64 // r_pad)  # the interpreter: smaller tiles, fewer wasted rows
    group = max(group, -(-16 // r_pad))  # tl.dot needs at least 16 rows
    splits = _mass_key_splits(triton_cdiv(n, group) * b * hc, s, q.device)
    keys_per_program = triton_cdiv(triton_cdiv(s, splits), _MASS_BLOCK_N) * _MASS_BLOCK_N
    grid = (triton_cdiv(n, group), triton_cdiv(s, keys_per_program), b * hc)
    kern._column_mass[grid](
        q, k, lse_safe, rows, mass,
        q.stride(0), q.stride(1), q.stride(2),
        k.stride(0), k.stride(1), k.stride(2),
        lse_safe.stride(0), lse_safe.stride(1),
        mass.stride(0), mass.stride(1), mass.stride(2),
        hc, s, n, q0, keys_per_program, scale * 1.4426950408889634,  # log2(e): the kernel works in base 2
        R=r, R_PAD=r_pad, GROUP=group, BLOCK_N=_MASS_BLOCK_N, HEAD_DIM=d,
        DOT_F32=q.dtype == torch.bfloat16 and _interpreting(),
        DOT_PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
        num_warps=4, num_stages=3 if q.device.type == "cuda" else 1,
    )
    return mass


def _block_mass_reference(q, k, lse_safe, rows, q0: int, q1: int, scale: float) -> torch.Tensor:
    """`_block_mass` in PyTorch: the per-row scores are computed in q's dtype, then float32, a few query blocks
    of one (batch, head) at a time (about `_MASS_PIECE` scores, which stay in the CPU's cache)."""
    b, hc, s, _ = q.shape
    n, r = q1 - q0, rows.shape[1]
    sel = rows[q0:q1].reshape(-1)  # [n * R]
    q_rows, lse_rows = q[:, :, sel], lse_safe[:, :, sel].unsqueeze(-1)
    mass = torch.empty(b, hc, n, s, dtype=torch.float32, device=q.device)
    per = max(1, _MASS_PIECE // (r * s))  # query blocks a piece
    for i in range(b):
        for j in range(hc):
            keys = k[i, j].transpose(0, 1)
            for n0 in range(0, n, per):
                n1 = min(n, n0 + per)
                scores = torch.matmul(q_rows[i, j, n0 * r : n1 * r], keys).float()
                scores.mul_(scale).sub_(lse_rows[i, j, n0 * r : n1 * r]).exp_()
                torch.sum(scores.view(n1 - n0, r, s), 1, out=mass[i, j, n0:n1])
    return mass
