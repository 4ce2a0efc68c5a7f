"""Compile the block-sparse, column-sparse, column-mass, column-select and permute kernels for Hopper (sm_90)
without a GPU and report what each build uses: registers, spill stack, shared memory, and whether the K/V loads
became pipelined asynchronous copies (`cp.async`, or `cp.async.bulk.tensor` for the block-sparse
kernel's tensor-descriptor loads) and the matmuls `wgmma`.

    python kernels/resources.py                    # the shipped configs
    python kernels/resources.py --sweep            # the column kernel's tune space too

It runs on any machine with triton (its bundled ptxas and cuobjdump do the work), so tile configs
can be screened before GPU time is spent: a build that spills (stack > 0) or does not pipeline its
gathers is not worth timing. The arguments are specialised as a real launch at HunyuanVideo sizes
would be (pointers and strides divisible by 16), which is what lets the loads vectorise.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from vidsparse.kernels import ColumnKernelConfig
from vidsparse.kernels.column_sparse import _TUNED_HOPPER

HOPPER = GPUTarget("cuda", 90, 64)
POINTERS = {  # pointer arguments by name -> element type
    "Q": "bf16", "K": "bf16", "V": "bf16", "O": "bf16", "X": "bf16", "Y": "bf16",
    "LSE": "fp32", "BIAS": "fp32", "MASS": "fp32",
    "COUNTS": "i32", "COLUMNS": "i32", "COLS": "i32", "ROWS": "i64", "PERMS": "i64", "ORDER": "i64",
    "KV_NUM": "i32", "KV_IDX": "i32", "EXCLUDE": "i32", "WRAPS": "i32",
}
FLOATS = {"qk_scale"}
# Integers not divisible by 16 at HunyuanVideo 720p (H = 24, K = 8,316 columns, unit strides).
NOT_ALIGNED = {"H", "NUM_COLS", "text_start", "text_stop", "n_blocks", "block0", "D",
               "stride_nb", "stride_nh", "stride_nq", "stride_cb", "stride_ch", "stride_cq", "stride_ck",
               "stride_ps", "stride_ob", "stride_oh", "stride_xd", "S", "stride_bias_b", "stride_xb", "stride_xh",
               "stride_xq", "stride_cr", "top_k", "stride_wb", "stride_wh", "stride_wq"}


def build(fn, constexprs: dict, num_warps: int, num_stages: int, descriptors: dict | None = None) -> dict:
    """Compile one specialisation of `fn` for sm_90 and read its resource use (`descriptors`: argument name ->
    tensor-descriptor type, for the TMA loads, or pointer type, such as "*i16" for packed column lists)."""
    sig, attrs = {}, {}
    for i, name in enumerate(fn.arg_names):
        if name in constexprs:
            sig[name] = "constexpr"
            continue
        if descriptors and name in descriptors:
            sig[name] = descriptors[name]
            if descriptors[name].startswith("*"):
                attrs[(i,)] = [["tt.divisibility", 16]]
            continue
        sig[name] = f"*{POINTERS[name]}" if name in POINTERS else "fp32" if name in FLOATS else "i32"
        if name in POINTERS or (name not in FLOATS and name not in NOT_ALIGNED):
            attrs[(i,)] = [["tt.divisibility", 16]]
    kernel = triton.compile(
        ASTSource(fn=fn, signature=sig, constexprs=constexprs, attrs=attrs),
        target=HOPPER, options={"num_warps": num_warps, "num_stages": num_stages},
    )
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
        f.write(kernel.asm["cubin"])
    cuobjdump = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    usage = subprocess.run([cuobjdump, "--dump-resource-usage", f.name], capture_output=True, text=True).stdout
    os.unlink(f.name)
    ptx = kernel.asm["ptx"]
    return {
        "regs": int(re.search(r"REG:(\d+)", usage).group(1)),
        "stack": int(re.search(r"STACK:(\d+)", usage).group(1)),
        "shared": kernel.metadata.shared,
        "cp_async": len(re.findall(r"cp\.async\.cg|cp\.async\.ca|cp\.async\.bulk\.tensor", ptx)),
        "wgmma": len(re.findall(r"wgmma\.mma_async", ptx)),
    }


def column_builds(configs: dict[tuple[int, int], list[ColumnKernelConfig]]):
    from vidsparse.kernels import _column_sparse_fwd as kern

    for (head_dim, _), cfgs in configs.items():
        for cfg in cfgs:
            for has_bias, packed in ((False, False), (True, False), (True, True)):
                consts = dict(
                    stride_ck=1, Q_BLOCK=128, BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, HEAD_DIM=head_dim,
                    HAS_TEXT=True, HAS_BIAS=has_bias, RETURN_LSE=True, DOT_F32=False, DOT_PRECISION="tf32",
                    PACKED=packed, N_WRAPS=int(packed),  # 720p's lists: one wrap
                )
                if packed:  # one wrap a list: its query-block stride is 1, which Triton specialises as a constant
                    consts["stride_wq"] = 1
                name = (f"column_sparse D={head_dim} {cfg.block_m}x{cfg.block_n} warps={cfg.num_warps} "
                        f"stages={cfg.num_stages} padding={has_bias} packed={packed}")
                yield (name, kern._column_sparse_fwd, consts, cfg.num_warps, cfg.num_stages,
                       {"COLUMNS": "*i16"} if packed else None)


def block_sparse_builds():
    """The shipped Hopper configs (tensor-descriptor loads), plain and with left-out keys (the delta refresh's rest
    pass, which has its own config where the shipped one spills)."""
    from vidsparse.kernels import _block_sparse_fwd as kern
    from vidsparse.kernels.block_sparse import _TUNED_HOPPER, _TUNED_HOPPER_EXCLUDE

    builds = [(exclude, bias, table) for exclude, table in
              ((False, _TUNED_HOPPER), (True, _TUNED_HOPPER), (True, _TUNED_HOPPER_EXCLUDE)) for bias in (False, True)]
    for exclude, bias, table in builds:  # bias: padded or ragged keys, as every HunyuanVideo launch has
        for (head_dim, _), cfg in table.items():
            rows = {"q_desc": cfg.block_m, "o_desc": cfg.block_m, "k_desc": cfg.block_n, "v_desc": cfg.block_n}
            descriptors = {n: f"tensordesc<bf16[1,1,{r},{head_dim}]>" for n, r in rows.items()}
            consts = dict(Q_BLOCK=128, K_BLOCK=128, BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, HEAD_DIM=head_dim,
                          HAS_BIAS=bias, HAS_EXCLUDE=exclude, RETURN_LSE=True, USE_TMA=True, DOT_F32=False,
                          DOT_PRECISION="tf32", POW2_MAX=False)
            name = (f"block_sparse D={head_dim} {cfg.block_m}x{cfg.block_n} warps={cfg.num_warps} "
                    f"stages={cfg.num_stages} exclude={exclude} padding={bias}")
            yield name, kern._block_sparse_fwd, consts, cfg.num_warps, cfg.num_stages, descriptors


def other_builds():
    from vidsparse.kernels import _column_mass, _column_select, _permute
    from vidsparse.kernels.column_sparse import _SELECT_BLOCK

    for head_dim in (64, 128):
        consts = dict(R=16, R_PAD=16, GROUP=8, BLOCK_N=64, HEAD_DIM=head_dim, DOT_F32=False, DOT_PRECISION="tf32")
        yield f"column_mass D={head_dim} 16 rows x 8 blocks", _column_mass._column_mass, consts, 4, 3
    yield f"select_top {_SELECT_BLOCK} masses a step", _column_select._select_top, dict(BLOCK=_SELECT_BLOCK), 4, 1
    for inverse in (False, True):
        consts = dict(BLOCK_S=64, BLOCK_D=128, HAS_ORDER=True, INVERSE=inverse)
        yield f"permute_tokens D=128 inverse={inverse}", _permute._permute_tokens, consts, 4, 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sweep", action="store_true", help="build the column kernel's tune space instead (minutes)")
    args = parser.parse_args(argv)
    configs = {key: [cfg] for key, cfg in _TUNED_HOPPER.items()}
    if args.sweep:
        from bench import column_tune_space  # kernels/bench.py: run as a script, this folder is on sys.path

        configs = {key: column_tune_space(key[0]) for key in _TUNED_HOPPER}
    builds = list(column_builds(configs)) + ([] if args.sweep else list(block_sparse_builds()) + list(other_builds()))
    print(f"triton {triton.__version__}, target sm_90")
    print(f"{'kernel':70s} {'regs':>5s} {'stack':>6s} {'shared':>8s} {'cp.async':>9s} {'wgmma':>6s}")
    for name, fn, consts, warps, stages, *descriptors in builds:
        try:
            r = build(fn, consts, warps, stages, *descriptors)
            print(f"{name:70s} {r['regs']:5d} {r['stack']:6d} {r['shared']:8d} {r['cp_async']:9d} {r['wgmma']:6d}", flush=True)
        except Exception as exc:  # a config that does not compile is reported, not fatal
            print(f"{name:70s} failed: {type(exc).__name__}: {str(exc)[:80]}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
