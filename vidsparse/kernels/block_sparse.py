"""`block_sparse_attention`: the validated launcher of the block-sparse flash-attention forward."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from ..core.mask import SparseMask

__all__ = ["block_sparse_attention", "KernelConfig", "SUPPORTED_HEAD_DIMS"]

SUPPORTED_HEAD_DIMS = (64, 128)
_GPU_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_CPU_DTYPES = (torch.float16, torch.bfloat16, torch.float32)  # the interpreter computes in numpy


@dataclass(frozen=True)
class KernelConfig:
    """Tile sizes and launch parameters of one kernel build.

    BLOCK_M and BLOCK_N must divide the mask's q_block and k_block. `use_tma` loads tiles with the
    Hopper bulk-copy engine through tensor descriptors (inputs must be 16-byte aligned).
    """

    block_m: int = 128
    block_n: int = 128
    num_warps: int = 8
    num_stages: int = 3
    use_tma: bool = True

    def __post_init__(self):
        for name in ("block_m", "block_n"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 16 or value & (value - 1):
                raise ValueError(f"KernelConfig.{name} must be a power of two >= 16 (tl.dot's minimum); got {value!r}")
        if self.num_warps not in (1, 2, 4, 8, 16):
            raise ValueError(f"KernelConfig.num_warps must be one of 1, 2, 4, 8, 16; got {self.num_warps!r}")
        if not isinstance(self.num_stages, int) or self.num_stages < 1:
            raise ValueError(f"KernelConfig.num_stages must be an int >= 1; got {self.num_stages!r}")


# Tuned on one H200 (bf16, triton 3.6) by `python kernels/bench.py --tune`: kernels/TUNING.md and NOTES.md.
# Keyed by (head_dim, element bytes). Shipped, not autotuned: a first call compiles one kernel.
_TUNED_HOPPER: dict[tuple[int, int], KernelConfig] = {
    (64, 2): KernelConfig(block_m=64, block_n=128, num_warps=4, num_stages=3),
    (128, 2): KernelConfig(block_m=128, block_n=64, num_warps=4, num_stages=2),
}
# The rest pass of the delta refresh (`exclude=`): at head dim 128 the shipped tiles spill once the left-out keys'
# bits are read (255 registers and 64 bytes of stack for sm_90 under `python kernels/resources.py`, against 254 and 0
# without them); 64 x 128 with one stage keeps 160 and no stack, and measured within 2% of the best plain config at
# HunyuanVideo 544p (kernels/TUNING.md). Screened, not yet timed with the bits: `kernels/bench_refresh.py` times it.
_TUNED_HOPPER_EXCLUDE: dict[tuple[int, int], KernelConfig] = {
    (128, 2): KernelConfig(block_m=64, block_n=128, num_warps=4, num_stages=1),
}
_FALLBACK_GPU = KernelConfig(block_m=64, block_n=64, num_warps=4, num_stages=2, use_tma=False)


def _interpreting() -> bool:
    import triton

    return bool(triton.knobs.runtime.interpret) if hasattr(triton, "knobs") else False


def default_config(q: torch.Tensor, mask: SparseMask, exclude: bool = False) -> KernelConfig:
    """The shipped configuration for these inputs (`exclude`: with left-out keys), shrunk to divide the mask's
    block sizes."""
    if q.device.type != "cuda":
        # The interpreter runs a numpy op per tile: big tiles mean fewer of them.
        cfg = KernelConfig(block_m=64, block_n=64, num_warps=4, num_stages=1, use_tma=False)
    elif torch.cuda.get_device_capability(q.device)[0] >= 9 and q.element_size() == 2:
        key = (q.shape[-1], 2)
        cfg = _TUNED_HOPPER_EXCLUDE.get(key) if exclude else None
        cfg = cfg or _TUNED_HOPPER.get(key, _FALLBACK_GPU)
    else:
        cfg = _FALLBACK_GPU
    return dataclasses.replace(cfg, block_m=min(cfg.block_m, mask.q_block), block_n=min(cfg.block_n, mask.k_block))


def validate_inputs(q, k, v, mask, key_padding_mask, *, need_kernel: bool) -> None:
    """Raise a ValueError naming the expected and the given values for any input the kernel
    (or, with need_kernel=False, the reference) cannot take."""
    if not isinstance(mask, SparseMask):
        raise ValueError(f"mask must be a vidsparse.SparseMask; got {type(mask).__name__}")
    validate_qkv(q, k, v)
    if not (q.device == k.device == v.device == mask.device):
        raise ValueError(
            f"q, k, v and mask must be on one device; got q {q.device}, k {k.device}, v {v.device}, "
            f"mask {mask.device} (move the mask with mask.to(q.device))"
        )
    b, h, s, d = q.shape
    if mask.seq_len != s:
        raise ValueError(f"mask was built for seq_len={mask.seq_len}, but q has S={s}; build the mask for S={s}")
    if mask.num_heads != h:
        raise ValueError(f"mask has {mask.num_heads} heads, but q has H={h}; build one mask row per head")
    if mask.batch not in (1, b):
        raise ValueError(f"mask batch must be 1 (shared) or B={b}; got {mask.batch}")
    validate_key_padding(key_padding_mask, q)
    if need_kernel:
        validate_kernel_support(q, "vidsparse.block_sparse_attention_reference")
    elif not q.is_floating_point():
        raise ValueError(f"q, k and v must be floating point; got {q.dtype}")


def validate_exclude(exclude, q, mask: SparseMask) -> None:
    """None, or an int32 `[B or 1, H, nQ, ceil(S / 32)]` bitmask on q's device, last dim contiguous."""
    if exclude is None:
        return
    b, h, s, _ = q.shape
    want = (h, mask.num_q_blocks, -(-s // 32))
    if (not isinstance(exclude, torch.Tensor) or exclude.dtype != torch.int32 or exclude.dim() != 4
            or exclude.shape[0] not in (1, b) or tuple(exclude.shape[1:]) != want or exclude.stride(-1) != 1):
        got = (exclude.dtype, tuple(exclude.shape)) if isinstance(exclude, torch.Tensor) else type(exclude).__name__
        raise ValueError(f"exclude must be an int32 bitmask, last dim contiguous, [B or 1, H, nQ, ceil(S / 32)] = "
                         f"[{b}, {want[0]}, {want[1]}, {want[2]}] (column_bitmask builds one); got {got}")
    if exclude.device != q.device:
        raise ValueError(f"exclude is on {exclude.device}, q on {q.device}")


def validate_qkv(q, k, v) -> None:
    """q, k and v: 4-D `[B, H, S, D]` tensors of one shape and dtype (devices are checked by the caller)."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor) or t.dim() != 4:
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"{name} must be a 4-D tensor [B, H, S, D]; got {shape}")
    if not (q.shape == k.shape == v.shape):
        raise ValueError(
            f"q, k and v must have the same shape [B, H, S, D]; got q {tuple(q.shape)}, "
            f"k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k and v must share a dtype; got {q.dtype}, {k.dtype}, {v.dtype}")


def validate_key_padding(key_padding_mask, q) -> None:
    """None, or a bool `[B, S]` tensor on q's device (True = ignore the key)."""
    if key_padding_mask is None:
        return
    b, _, s, _ = q.shape
    if key_padding_mask.dtype != torch.bool or tuple(key_padding_mask.shape) != (b, s):
        raise ValueError(
            f"key_padding_mask must be a bool tensor [B, S] = [{b}, {s}] (True = ignore the key); got "
            f"{key_padding_mask.dtype} {tuple(key_padding_mask.shape)}"
        )
    if key_padding_mask.device != q.device:
        raise ValueError(f"key_padding_mask is on {key_padding_mask.device}, q on {q.device}")


def validate_kernel_support(q, reference: str) -> None:
    """The head dim, dtype and device a Triton attention kernel takes; `reference` names the fallback."""
    d = q.shape[-1]
    if d not in SUPPORTED_HEAD_DIMS:
        raise ValueError(
            f"head dim {d} is not supported by the Triton kernel (supported: {SUPPORTED_HEAD_DIMS}); "
            f"use {reference} for other sizes"
        )
    if q.device.type == "cuda":
        if q.dtype not in _GPU_DTYPES:
            raise ValueError(f"dtype {q.dtype} is not supported on GPU (supported: bfloat16, float16, float32)")
    else:
        if not _interpreting():
            raise ValueError(
                f"the Triton kernel needs a CUDA tensor, or the interpreter (TRITON_INTERPRET=1 set before "
                f"triton is first imported) for {q.device} tensors; or call {reference}"
            )
        if q.dtype not in _CPU_DTYPES:
            raise ValueError(f"dtype {q.dtype} is not supported (supported: bfloat16, float16, float32)")


def _key_bias(key_padding_mask, b: int, s: int, n_k: int, k_block: int, device) -> torch.Tensor | None:
    """Additive key bias [B or 1, nK * k_block]: 0 for live keys, -inf for padding and the ragged tail.

    None when every key is live (no padding, and S fills its last key block).
    """
    padded = n_k * k_block
    if key_padding_mask is None and padded == s:
        return None
    rows = 1 if key_padding_mask is None else b
    bias = torch.zeros(rows, padded, dtype=torch.float32, device=device)
    bias[:, s:] = float("-inf")
    if key_padding_mask is not None:
        bias[:, :s].masked_fill_(key_padding_mask, float("-inf"))
    return bias


def _tma_ready(t: torch.Tensor) -> bool:
    return t.stride(-1) == 1 and t.data_ptr() % 16 == 0 and all((st * t.element_size()) % 16 == 0 for st in t.stride()[:-1])


def block_sparse_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: SparseMask,
    *,
    scale: float | None = None,
    key_padding_mask: torch.Tensor | None = None,
    return_lse: bool = False,
    config: KernelConfig | None = None,
    out_dtype: torch.dtype | None = None,
    exclude: torch.Tensor | None = None,
):
    """Block-sparse attention forward: softmax(scale * q k^T) v over the key blocks `mask` selects.

    Args:
        q, k, v: `[B, H, S, D]`, any strides (the last dim is copied to contiguous if it is not).
            bf16, fp16 or fp32; D in {64, 128}.
        mask: the `SparseMask` for this S and H (shared over the batch, or one per element).
        scale: softmax scale, default `1 / sqrt(D)`.
        key_padding_mask: optional bool `[B, S]`; True marks keys to ignore (padded text).
        return_lse: also return the float32 natural-log log-sum-exp `[B, H, S]` of each row,
            -inf for a row that selects no key, so that partial attentions can be merged.
        config: override the shipped tile configuration (benchmarks and tuning).
        out_dtype: the output's dtype: the input dtype (None) or torch.float32, which keeps the float32
            accumulator unrounded and shifts the softmax by whole powers of two: a key's p then rounds alike in
            both kernels, and the two outputs subtract without amplifying that rounding (`kernels/bench_refresh.py`'s
            subtracting refresh; the runtime's refresh leaves the columns out instead, `exclude`).
        exclude: optional int32 bitmask `[B or 1, H, nQ, ceil(S / 32)]` over the mask's query blocks: bit
            `j % 32` of word `j // 32` set leaves key j out of that block's attention, inside the blocks it
            visits (`column_bitmask` builds it from column lists: the delta refresh's rest, every key but the
            columns and the text).

    Returns:
        `o` `[B, H, S, D]` in the input dtype or `out_dtype` (zeros for a row that selects no key), or `(o, lse)`.

    Example::

        >>> mask = SparseMask.random(0.25, num_heads=24, seq_len=q.shape[2], device="cuda")
        >>> o = block_sparse_attention(q, k, v, mask)
    """
    validate_inputs(q, k, v, mask, key_padding_mask, need_kernel=True)
    validate_exclude(exclude, q, mask)
    if out_dtype not in (None, q.dtype, torch.float32):
        raise ValueError(f"out_dtype must be None (the input dtype) or torch.float32; got {out_dtype}")
    from . import _block_sparse_fwd as kern  # lazily: see the module docstring

    b, h, s, d = q.shape
    cfg = config or default_config(q, mask, exclude is not None)
    if mask.q_block % cfg.block_m or mask.k_block % cfg.block_n:
        raise ValueError(
            f"config tiles {cfg.block_m}x{cfg.block_n} must divide the mask blocks {mask.q_block}x{mask.k_block}"
        )
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    use_tma = cfg.use_tma and out_dtype in (None, q.dtype)  # the TMA store is tuned for the input dtype
    if use_tma and not all(_tma_ready(t) for t in (q, k, v)):
        q, k, v = (t if _tma_ready(t) else t.contiguous() for t in (q, k, v))
    o = torch.empty(b, h, s, d, dtype=out_dtype or q.dtype, device=q.device)
    lse = torch.empty(b, h, s, dtype=torch.float32, device=q.device) if return_lse else o
    bias = _key_bias(key_padding_mask, b, s, mask.num_k_blocks, mask.k_block, q.device)
    scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
    if not scale > 0:
        raise ValueError(f"scale must be positive; got {scale}")

    if use_tma:
        from triton.tools.tensor_descriptor import TensorDescriptor

        q_desc = TensorDescriptor(q, list(q.shape), list(q.stride()), [1, 1, cfg.block_m, d])
        k_desc = TensorDescriptor(k, list(k.shape), list(k.stride()), [1, 1, cfg.block_n, d])
        v_desc = TensorDescriptor(v, list(v.shape), list(v.stride()), [1, 1, cfg.block_n, d])
        o_desc = TensorDescriptor(o, list(o.shape), list(o.stride()), [1, 1, cfg.block_m, d])
    else:
        q_desc, k_desc, v_desc, o_desc = q, k, v, o

    num, idx = mask.kv_num_blocks, mask.kv_indices
    shared = mask.batch == 1
    xs = (0, 0, 0) if exclude is None else (0 if exclude.shape[0] == 1 else exclude.stride(0), *exclude.stride()[1:3])
    grid = (triton_cdiv(s, cfg.block_m), b * h)
    kern._block_sparse_fwd[grid](
        q, k, v, o, lse, bias if bias is not None else o, num, idx, exclude if exclude is not None else num,
        q_desc, k_desc, v_desc, o_desc,
        q.stride(0), q.stride(1), q.stride(2),
        k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2),
        o.stride(0), o.stride(1), o.stride(2),
        0 if bias is None or bias.shape[0] == 1 else bias.stride(0),
        0 if shared else num.stride(0), num.stride(1), num.stride(2),
        0 if shared else idx.stride(0), idx.stride(1), idx.stride(2),
        *xs,
        h, s, scale * 1.4426950408889634,  # log2(e): the kernel works in base 2
        Q_BLOCK=mask.q_block, K_BLOCK=mask.k_block,
        BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, HEAD_DIM=d,
        HAS_BIAS=bias is not None, HAS_EXCLUDE=exclude is not None, RETURN_LSE=return_lse, USE_TMA=use_tma,
        DOT_F32=q.dtype == torch.bfloat16 and _interpreting(),
        DOT_PRECISION="ieee" if q.dtype == torch.float32 else "tf32",  # fp32 inputs get fp32 products
        POW2_MAX=out_dtype == torch.float32,  # outputs meant to be subtracted: see the kernel
        num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )
    return (o, lse) if return_lse else o


def triton_cdiv(a: int, b: int) -> int:
    return -(-a // b)
