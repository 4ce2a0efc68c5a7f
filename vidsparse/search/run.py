"""The offline search: calibrate a pipeline on a few prompts and seeds, then choose each head's pattern.

    >>> from vidsparse.search import SearchConfig, search
    >>> result = search(pipe, ["a red circle moving right over a gray plain background"], SearchConfig(eps=0.1),
    ...                 generate={"num_inference_steps": 20}, out="patterns.safetensors")
    >>> vidsparse.apply(pipe, {"method": "static", "patterns": "patterns.safetensors"})

The pipeline runs with vidsparse's dense processors (stock numerics) and a `Calibrator` watching every attention call
at `config.observe` denoising steps spread over the run. After each (prompt, seed) the calls measured so far are saved
to `<out>.ckpt.safetensors` (the records' tensors, with the cases, the config and the layout as JSON metadata: no
pickle); a search started again with the same output resumes after the last finished case. The checkpoint is removed
once the pattern file is written.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .calibrate import Calibrator, CallRecord
from .candidates import DEFAULT_CANDIDATES, Pattern
from ..core.layout import TokenLayout
from .pattern_file import DynamicCurves, PatternFile, fingerprint, select

logger = logging.getLogger(__name__)

__all__ = ["AGGREGATES", "SearchConfig", "aggregate", "search", "build_pattern_file"]

AGGREGATES = ("max", "p90", "p75", "mean")


@dataclass(frozen=True)
class SearchConfig:
    """How the search calibrates and chooses.

    Attributes:
        eps: error budget: the largest relative L2 error of a head's output (on the sampled rows) a pattern may have.
        lam: weight of the cost (the pattern's density) against the error in argmin(error + lam * density).
        aggregate: how each head's errors over prompts, seeds, steps and CFG branches combine: "max" (worst case),
            "p90" / "p75" (percentiles) or "mean".
        observe: how many denoising steps to calibrate at, spread evenly over the run (first and last included).
        rows_per_frame: sampled query rows per latent frame.
        q_block, k_block: the kernel block sizes the patterns compile at.
        candidates: the patterns to choose from (strings as `Pattern.parse` reads); empty: `DEFAULT_CANDIDATES`.
        head_chunk: heads per exact-attention chunk (memory bound).
        top_p_grid: the `dynamic` method's `top_p` values to measure per head (empty: no dynamic calibration).
        dynamic_density: the one density budget the per-head `top_p` is chosen under: the least error whose mean
            realised density over every layer and head is at most this (`PatternFile.select_top_p`; the dynamic
            method can choose again under another budget from the same file).
    """

    eps: float = 0.1
    lam: float = 1.0
    aggregate: str = "p90"
    observe: int = 5
    rows_per_frame: int = 32
    q_block: int = 128
    k_block: int = 128
    candidates: tuple[str, ...] = ()
    head_chunk: int = 4
    top_p_grid: tuple[float, ...] = (0.5, 0.7, 0.8, 0.9, 0.95, 0.98)
    dynamic_density: float = 0.3

    def __post_init__(self):
        object.__setattr__(self, "top_p_grid", tuple(float(t) for t in self.top_p_grid))
        if any(not 0 < t < 1 for t in self.top_p_grid) or list(self.top_p_grid) != sorted(set(self.top_p_grid)):
            raise ValueError(f"top_p_grid must be increasing values in (0, 1) (1 is dense, always a choice); "
                             f"got {list(self.top_p_grid)}")
        if not 0 < self.dynamic_density <= 1:
            raise ValueError(f"dynamic_density must be in (0, 1]; got {self.dynamic_density}")
        if self.aggregate not in AGGREGATES:
            raise ValueError(f"aggregate must be one of {AGGREGATES}; got {self.aggregate!r}")
        if self.eps < 0 or self.lam < 0:
            raise ValueError(f"eps and lam must be >= 0; got eps={self.eps}, lam={self.lam}")
        if self.observe < 1 or self.rows_per_frame < 1:
            raise ValueError("observe and rows_per_frame must be >= 1")
        for name in ("q_block", "k_block"):
            value = getattr(self, name)
            if value < 16 or value & (value - 1):
                raise ValueError(f"{name} must be a power of two >= 16; got {value}")

    def patterns(self) -> tuple[Pattern, ...]:
        return tuple(Pattern.parse(c) for c in self.candidates) if self.candidates else DEFAULT_CANDIDATES

    def observed_steps(self, num_steps: int) -> set[int]:
        k = min(self.observe, num_steps)
        if k == 1:
            return {num_steps // 2}
        return {round(i * (num_steps - 1) / (k - 1)) for i in range(k)}


def aggregate(records: list[CallRecord], how: str, fields: tuple[str, str] = ("errors", "stats")
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Errors `[L, H, C]` aggregated over every observed call and batch element, and mean stats `[L, H, 4]`.

    `fields=("dynamic_errors", "dynamic_density")` does the same for the dynamic method's curves: `[L, H, T]` each.
    """
    layers = sorted({r.layer for r in records})
    if layers != list(range(len(layers))):
        raise ValueError(f"calibration saw layers {layers}; expected 0..{len(layers) - 1} (did every layer run?)")
    errors, stats = [], []
    for layer in layers:
        e = torch.cat([getattr(r, fields[0]) for r in records if r.layer == layer])  # [N, H, C]
        s = torch.cat([getattr(r, fields[1]) for r in records if r.layer == layer])
        if how == "max":
            errors.append(e.amax(0))
        elif how == "mean":
            errors.append(e.mean(0))
        else:
            errors.append(e.quantile(int(how[1:]) / 100, dim=0))
        stats.append(s.mean(0))
    return torch.stack(errors), torch.stack(stats)


def build_pattern_file(calibrator: Calibrator, transformer, config: SearchConfig, calibration: dict) -> PatternFile:
    """Aggregate the calibrator's records and choose per head under `config`."""
    if not calibrator.records:
        raise ValueError("no attention call was observed: is vidsparse's processor installed and did the model run?")
    errors, stats = aggregate(calibrator.records, config.aggregate)
    layout = calibrator.last_layout
    density = calibrator.densities(layout)
    count = max((c.columns for c in calibrator.candidates), default=0)
    columns = calibrator.column_points(layout, count) if count else None
    dynamic = None
    if calibrator.top_p_grid and all(r.dynamic_errors is not None for r in calibrator.records):
        dynamic = DynamicCurves(torch.tensor(calibrator.top_p_grid),
                                *aggregate(calibrator.records, config.aggregate, ("dynamic_errors", "dynamic_density")))
    file = PatternFile(
        model=fingerprint(transformer), candidates=list(calibrator.candidates), errors=errors, stats=stats,
        density=density, choice=select(errors, density, config.eps, config.lam), columns=columns,
        params={"eps": config.eps, "lam": config.lam, "aggregate": config.aggregate,
                "q_block": config.q_block, "k_block": config.k_block},
        calibration={**calibration, "layout": [layout.frames, layout.height, layout.width, layout.text_len],
                     "calls": len(calibrator.records), "config": asdict(config)},
        dynamic=dynamic,
    )
    return file.select_top_p(config.dynamic_density) if dynamic is not None else file


_CKPT_TENSORS = ("errors", "stats", "mass", "dynamic_errors", "dynamic_density")  # the last two optional


def save_checkpoint(path: Path, cases: list, done: int, config: SearchConfig, calibrator: Calibrator) -> None:
    """The calibration so far, as safetensors (each record's tensors) with JSON metadata (cases, config, layout)."""
    from safetensors.torch import save_file

    tensors = {f"records.{i}.{name}": getattr(r, name).contiguous()
               for i, r in enumerate(calibrator.records) for name in _CKPT_TENSORS if getattr(r, name) is not None}
    layout = calibrator.last_layout
    meta = {"cases": [list(c) for c in cases], "done": done, "config": asdict(config),
            "records": [[r.layer, r.step] for r in calibrator.records],
            "layout": None if layout is None else asdict(layout)}
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    save_file(tensors, str(partial), metadata={"vidsparse_search_checkpoint": json.dumps(meta)})
    partial.replace(path)  # a search killed while saving keeps the previous checkpoint


def load_checkpoint(path: Path) -> tuple[dict, list[CallRecord], TokenLayout | None]:
    """(metadata, records, last layout) of a checkpoint `save_checkpoint` wrote."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = json.loads((f.metadata() or {})["vidsparse_search_checkpoint"])
        names = set(f.keys())
        records = [CallRecord(layer, step, *(f.get_tensor(f"records.{i}.{name}") if f"records.{i}.{name}" in names
                                             else None for name in _CKPT_TENSORS))
                   for i, (layer, step) in enumerate(meta["records"])]
    layout = TokenLayout(**meta["layout"]) if meta.get("layout") else None
    return meta, records, layout


def search(
    pipe,
    prompts: list[str],
    config: SearchConfig = SearchConfig(),
    *,
    seeds: tuple[int, ...] = (0,),
    generate: dict | None = None,
    out: str | Path | None = None,
    progress: bool = True,
) -> PatternFile:
    """Calibrate `pipe` on every (prompt, seed) and return (and save to `out`) the chosen patterns."""
    from ..pipelines.apply import apply

    generate = dict(generate or {})
    num_steps = int(generate.get("num_inference_steps", 50))
    steps = config.observed_steps(num_steps)
    calibrator = Calibrator(config.patterns(), steps, config.rows_per_frame, config.q_block, config.k_block,
                            config.head_chunk, top_p_grid=config.top_p_grid)
    cases = [(p, s) for p in prompts for s in seeds]
    ckpt = Path(str(out) + ".ckpt.safetensors") if out is not None else None
    done = 0
    if ckpt is not None and ckpt.exists():
        state, records, layout = load_checkpoint(ckpt)
        saved = [tuple(c) for c in state["cases"][: state["done"]]]
        if saved == cases[: state["done"]] and state["config"] == json.loads(json.dumps(asdict(config))):
            calibrator.records, calibrator.last_layout, done = records, layout, state["done"]
            logger.info("resuming the search after %d of %d cases (%s)", done, len(cases), ckpt)
    if getattr(pipe, "transformer_2", None) is not None:
        raise ValueError(
            "this pipeline has two transformers (Wan 2.2's experts); a pattern file holds one transformer's "
            "patterns, and searching both at once is not supported yet"
        )
    transformer = pipe.transformer
    handle = apply(pipe, "dense", planner=calibrator)  # dense attention, every call shown to the calibrator
    started = time.perf_counter()
    try:
        from tqdm.auto import tqdm

        for i in tqdm(range(done, len(cases)), desc="calibrating", disable=not progress, initial=done, total=len(cases)):
            prompt, seed = cases[i]
            generator = torch.Generator(device="cpu").manual_seed(seed)
            pipe(prompt=prompt, generator=generator, output_type="latent", **generate)
            if ckpt is not None:
                save_checkpoint(ckpt, cases, i + 1, config, calibrator)
    finally:
        handle.remove()
    seconds = time.perf_counter() - started
    result = build_pattern_file(calibrator, transformer, config, {
        "prompts": prompts, "seeds": list(seeds), "num_inference_steps": num_steps, "observed_steps": sorted(steps),
        "seconds": round(seconds, 1),
    })
    if out is not None:
        result.save(out)
        logger.info("pattern file written: %s (%s)", out, result.summary())
        if ckpt is not None:
            ckpt.unlink(missing_ok=True)  # the search is done: nothing to resume
    return result
