"""The kernel self-check behind `vidsparse selfcheck`: `block_sparse_attention` on a handful of awkward cases
(ragged S, batch 2, per-head masks, text ranges, key padding, strided inputs, head dims 64 and 128), each output
compared with `block_sparse_attention_reference` computed in float64, and held to a small multiple of the error
eager PyTorch makes in the same dtype.

    >>> runinfo.use_interpreter_if_needed(device)              # on a CPU, before triton is first imported
    >>> results = run_suite(device, seed=0)
    >>> md_path, json_path = write_report(Path("out"), "selfcheck-cpu", stamp, results)
    >>> print(format_table(results, markdown=False))

Without a CUDA device the kernel runs in Triton's interpreter (numpy on the CPU), on small shapes.
"""

from __future__ import annotations

import json
import logging
import math
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .runinfo import json_safe

logger = logging.getLogger(__name__)

__all__ = ["ERROR_FLOOR", "ERROR_MULTIPLE", "LSE_ATOL", "Case", "Result", "build_suite", "format_table", "run_case",
           "run_suite", "write_report"]

# The kernel may err by at most ERROR_MULTIPLE times eager PyTorch's own error in the input dtype
# (both measured against float64), as flash-attention's and FlexAttention's tests do. The floor
# keeps float32 fair: there eager's error is a few ulps, and the kernel's online softmax adds a few.
ERROR_MULTIPLE = 2.0
ERROR_FLOOR = {"float32": 1e-6, "float16": 1e-4, "bfloat16": 1e-3}
# The log-sum-exp is accumulated in float32 from the same rounded inputs as the reference's.
LSE_ATOL = 1e-3


# ---------------------------------------------------------------------------------------------- cases
@dataclass(frozen=True)
class Case:
    """One selfcheck case: the inputs' shape and dtype, and how the mask is built.

    Attributes:
        name: short label shown in the table.
        batch, heads, seq_len, head_dim: the `[B, H, S, D]` shape of q, k and v.
        dtype: torch dtype name of q, k and v.
        q_block, k_block: the mask's block sizes.
        densities: per-head key-block density, one value for every head or one per head.
            0 gives a head that visits no key block (a skipped head: output zeros, lse -inf).
        per_batch: one mask per batch element instead of one shared by the batch.
        text: a `(start, stop)` text token range that every query sees and that sees every key.
        padded_keys: per batch element, how many keys at the end of the sequence are padding
            (key_padding_mask), as HunyuanVideo pads its text.
        strided: q and k are views of one packed `[B, S, 3, H, D]` projection (as diffusers makes
            them), and v is a transposed view whose last stride is not 1.
    """

    name: str
    batch: int
    heads: int
    seq_len: int
    head_dim: int
    dtype: str
    q_block: int
    k_block: int
    densities: tuple[float, ...] = (1.0,)
    per_batch: bool = False
    text: tuple[int, int] | None = None
    padded_keys: tuple[int, ...] | None = None
    strided: bool = False

    @property
    def shape(self) -> str:
        return f"{self.batch}x{self.heads}x{self.seq_len}x{self.head_dim}"


def build_suite(gpu: bool) -> list[Case]:
    """The cases: small shapes for the interpreter, real-sized ones in bf16 on a GPU.

    S is ragged (not a multiple of any block size) except in the one case that checks the
    path without a key bias.
    """
    main = "bfloat16"  # what the pipelines run in; float16 and float32 get a case each
    if gpu:
        s, s_even, blk, h, text_len, pad = 4173, 4096, 128, 4, 226, (100, 10)
    else:
        s, s_even, blk, h, text_len, pad = 217, 192, 32, 2, 40, (25, 8)
    cases = [
        Case("full, ragged S", 2, h, s, 64, main, blk, blk),
        Case("full, S = k * block", 2, h, s_even, 128, main, blk, blk),
        Case("random 0.1 per head", 2, h, s, 128, main, blk, blk, (0.1,)),
        Case("random 0.4 per batch", 2, h, s, 64, main, blk, blk, (0.4,), per_batch=True),
        Case("mixed densities, q 2x k", 2, 4, s, 64, main, 2 * blk, blk, (0.1, 0.3, 0.6, 1.0)),
        Case("text first", 2, h, s, 64, main, blk, blk, (0.2,), text=(0, text_len)),
        Case("text last + key padding", 2, h, s, 128, main, blk, blk, (0.2,),
             text=(s - text_len, s), padded_keys=pad),
        Case("strided q, k, v", 2, h, s, 64, main, blk, blk, (0.5,), strided=True),
        Case("skipped head", 2, 2, s, 64, main, blk, blk, (0.5, 0.0)),
        Case("float16 + text", 2, h, s, 128, "float16", blk, blk, (0.3,), text=(0, text_len)),
        Case("float32", 2, h, s, 64, "float32", blk, blk, (0.3,)),
    ]
    return cases


# ---------------------------------------------------------------------------------------------- inputs
def _make_mask(case: Case, gen: torch.Generator, device: torch.device):
    from vidsparse import SparseMask

    dens = case.densities * case.heads if len(case.densities) == 1 else case.densities
    if len(dens) != case.heads:
        raise ValueError(f"case {case.name!r}: {len(dens)} densities for {case.heads} heads")
    batch = case.batch if case.per_batch else None
    panels = []
    for d in dens:  # one head at a time, so that each head can have its own density
        if d == 0.0:
            n_q, n_k = -(-case.seq_len // case.q_block), -(-case.seq_len // case.k_block)
            panels.append(torch.zeros(batch or 1, 1, n_q, n_k, dtype=torch.bool))
        else:
            one = SparseMask.random(d, 1, case.seq_len, case.q_block, case.k_block, batch=batch, generator=gen)
            panels.append(one.to_blocks())
    blocks = torch.cat(panels, dim=1).to(device)  # [B', H, nQ, nK]
    return SparseMask.from_block_mask(blocks, case.q_block, case.k_block, case.seq_len, text=case.text)


def _make_inputs(case: Case, gen: torch.Generator, device: torch.device):
    """Fresh standard-normal q, k, v `[B, H, S, D]` (never zeros) and the key padding mask."""
    b, h, s, d = case.batch, case.heads, case.seq_len, case.head_dim
    dtype = getattr(torch, case.dtype)

    def randn(*shape):
        return torch.randn(*shape, generator=gen).to(device=device, dtype=dtype)

    if case.strided:
        packed = randn(b, s, 3, h, d)  # one fused projection, as with fuse_qkv_projections
        q, k = packed[:, :, 0].transpose(1, 2), packed[:, :, 1].transpose(1, 2)
        v = randn(b, h, d, s).transpose(-1, -2)  # last stride S, not 1: the launcher must copy
    else:
        q, k, v = randn(b, h, s, d), randn(b, h, s, d), randn(b, h, s, d)
    kpm = None
    if case.padded_keys is not None:
        kpm = torch.zeros(b, s, dtype=torch.bool, device=device)
        for i, n in enumerate(case.padded_keys):
            kpm[i, s - n :] = True
    return q, k, v, kpm


def _eager_attention(q, k, v, mask, kpm):
    """Masked attention the plain way, in the input dtype: the error PyTorch itself would make."""
    allowed = mask.to_dense()  # [B', H, S, S]
    if kpm is not None:
        allowed = allowed & ~kpm[:, None, None, :]
    scores = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(q.shape[-1]))
    probs = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1)
    return probs.nan_to_num(0.0) @ v  # a row that selects no key gives zeros, as the kernel's


def _rel_error(x: torch.Tensor, gold: torch.Tensor) -> float:
    return float((x.double() - gold).norm() / gold.norm().clamp_min(1e-300))


def _lse_error(lse: torch.Tensor, gold: torch.Tensor) -> float:
    """Largest absolute difference where the reference is finite; inf if -inf rows disagree."""
    finite = torch.isfinite(gold)
    if not torch.equal(finite, torch.isfinite(lse)) or bool((gold[~finite] != lse[~finite]).any()):
        return math.inf
    return float((lse[finite].double() - gold[finite].double()).abs().max()) if finite.any() else 0.0


# ---------------------------------------------------------------------------------------------- running
@dataclass
class Result:
    case: Case
    density: float = math.nan
    rel_error: float = math.nan
    eager_rel_error: float = math.nan
    budget: float = math.nan
    lse_error: float = math.nan
    seconds: float = math.nan
    ok: bool = False
    error: str | None = None


def run_case(case: Case, device: torch.device, seed: int) -> Result:
    """Run one case; any exception becomes a failed result carrying its message."""
    from vidsparse import block_sparse_attention, block_sparse_attention_reference

    res = Result(case)
    try:
        gen = torch.Generator().manual_seed(seed)
        mask = _make_mask(case, gen, device)
        q, k, v, kpm = _make_inputs(case, gen, device)
        res.density = mask.density()

        gold, gold_lse = block_sparse_attention_reference(
            q.double(), k.double(), v.double(), mask, key_padding_mask=kpm, return_lse=True
        )
        eager = _eager_attention(q, k, v, mask, kpm)

        start = time.perf_counter()
        with warnings.catch_warnings():
            # In the interpreter, a skipped row's log2(0) = -inf (wanted) makes numpy warn.
            warnings.filterwarnings("ignore", "divide by zero", RuntimeWarning)
            o = block_sparse_attention(q, k, v, mask, key_padding_mask=kpm)
            o_lse, lse = block_sparse_attention(q, k, v, mask, key_padding_mask=kpm, return_lse=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        res.seconds = time.perf_counter() - start  # includes the first call's compile

        res.eager_rel_error = _rel_error(eager, gold)
        res.budget = max(ERROR_MULTIPLE * res.eager_rel_error, ERROR_FLOOR[case.dtype])
        res.rel_error = max(_rel_error(o, gold), _rel_error(o_lse, gold))
        res.lse_error = _lse_error(lse, gold_lse)
        problems = []
        if not (torch.isfinite(o).all() and torch.isfinite(o_lse).all()):
            problems.append("output has NaN or inf")
        if not res.rel_error <= res.budget:
            problems.append(f"rel. error {res.rel_error:.2e} above budget {res.budget:.2e}")
        if not res.lse_error <= LSE_ATOL:
            problems.append(f"log-sum-exp off by {res.lse_error:.2e} (allowed {LSE_ATOL:g})")
        res.ok = not problems
        res.error = "; ".join(problems) or None
    except Exception as exc:  # one broken case must not hide the others
        logger.debug("case %r raised", case.name, exc_info=True)
        res.error = f"{type(exc).__name__}: {exc}"
    return res


def format_table(results: list[Result], markdown: bool) -> str:
    head = ["case", "shape BxHxSxD", "dtype", "density", "rel. error", "budget", "ok"]
    rows = []
    for r in results:
        c = r.case
        rows.append([
            c.name, c.shape, c.dtype, f"{r.density:.3f}", f"{r.rel_error:.2e}", f"{r.budget:.2e}",
            "ok" if r.ok else "FAIL",
        ])
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(x) for x in col) for col in zip(head, *rows)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*head), fmt.format(*("-" * w for w in widths))] + [fmt.format(*r) for r in rows])


def write_report(out: Path, stem: str, stamp: dict, results: list[Result]) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    passed = sum(r.ok for r in results)
    md = [
        "# vidsparse selfcheck",
        "",
        f"- date: {stamp['date']}",
        f"- device: {stamp['device']}",
        "- " + ", ".join(f"{name} {version}" for name, version in stamp["versions"].items()),
        f"- command: `{stamp['command']}`",
        f"- result: {passed} of {len(results)} cases passed",
        "",
        "rel. error = ||o - o64|| / ||o64|| (Frobenius), where o64 is `block_sparse_attention_reference` "
        "in float64 on the same inputs; the worse of the kernel's two calls (with and without `return_lse`). "
        f"budget = max({ERROR_MULTIPLE:g} x eager PyTorch's rel. error in the input dtype, "
        f"{', '.join(f'{k} {v:g}' for k, v in ERROR_FLOOR.items())}). "
        f"The log-sum-exp must also match within {LSE_ATOL:g}.",
        "",
        format_table(results, markdown=True),
    ]
    failures = [r for r in results if r.error]
    if failures:
        md += ["", "## Failures", ""] + [f"- {r.case.name}: {r.error}" for r in failures]
    md_path, json_path = out / f"{stem}.md", out / f"{stem}.json"
    md_path.write_text("\n".join(md) + "\n")
    payload = dict(stamp, passed=passed, failed=len(results) - passed, error_multiple=ERROR_MULTIPLE,
                   error_floor=ERROR_FLOOR, lse_atol=LSE_ATOL, cases=[])
    for r in results:
        entry = asdict(r.case)
        entry.update(shape=r.case.shape, density=r.density, rel_error=r.rel_error,
                     eager_rel_error=r.eager_rel_error, budget=r.budget, lse_error=r.lse_error,
                     seconds=r.seconds, ok=r.ok, error=r.error)
        payload["cases"].append(entry)
    json_path.write_text(json.dumps(json_safe(payload), indent=2, allow_nan=False) + "\n")
    return md_path, json_path


def run_suite(device: torch.device, seed: int = 0, progress: bool = True) -> list[Result]:
    """Every case of `build_suite` on `device`, case i with inputs drawn from `seed + i`; failures are logged."""
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    results = []
    suite = build_suite(gpu=device.type == "cuda")
    with logging_redirect_tqdm(loggers=[logging.getLogger("vidsparse")]):
        for i, case in enumerate(tqdm(suite, desc="selfcheck", unit="case", disable=not progress)):
            res = run_case(case, device, seed + i)
            if not res.ok:
                logger.warning("FAIL %s: %s", case.name, res.error)
            results.append(res)
    return results
