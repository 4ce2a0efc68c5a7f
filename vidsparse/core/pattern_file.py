"""Pattern files: the searched per-head patterns of one model, saved as safetensors with JSON metadata.

A pattern file holds everything the `static` method needs and everything needed to choose again without
recalibrating:

    tensors   errors   float32 [L, H, C]  each candidate's aggregated error per replaced layer and head
              stats    float32 [L, H, 4]  where each head's attention mass goes (calibrate.STAT_NAMES), mean over calls
              density  float32 [C]        each candidate's density at the calibration layout
              choice   int64   [L, H]     the chosen candidate per head, -1 for full attention
    optional  dynamic.top_p_grid float32 [T]; dynamic.errors, dynamic.density float32 [L, H, T]: the `dynamic`
              method's measured error and realised density per head at each top_p; dynamic.top_p float32 [L, H]:
              each head's top_p chosen under one density budget (`select_top_p`), 1 for dense
    metadata  "vidsparse" -> JSON: schema version, model class, config fingerprint, candidates (grid units),
              search parameters (eps, lam, aggregate, blocks), calibration summary

Patterns are in grid units, so a file serves every resolution and frame count of its model. `check` refuses a file
made for another model class, config or number of layers and heads, with a message that says what differs.

Choosing per head is `vidsparse.core.select.select`: among candidates whose error is at most `eps`, the one minimising
`error + lam * density`; full attention when none qualifies (error 0, density 1). The file lives outside
`vidsparse.search` because the run-time `static` method reads it without importing the search.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from .patterns import Pattern
from .select import select, select_within

__all__ = ["SCHEMA_VERSION", "FINGERPRINT_KEYS", "DynamicCurves", "PatternFile", "fingerprint", "select"]

SCHEMA_VERSION = 1
FULL = Pattern("full")
# Config fields that decide the attention shapes and weights layout; resolution fields (sample_*) are left out.
FINGERPRINT_KEYS = (
    "num_layers", "num_single_layers", "num_refiner_layers", "num_attention_heads", "attention_head_dim",
    "in_channels", "out_channels", "patch_size", "patch_size_t", "text_embed_dim", "time_embed_dim",
    "use_rotary_positional_embeddings", "qk_norm", "ffn_dim", "cross_attn_norm", "rope_axes_dim",
)


def fingerprint(transformer) -> dict:
    """The model class and the shape-deciding config fields of a diffusers transformer, with a short hash."""
    config = getattr(transformer, "config", {})
    fields = {k: _jsonable(config[k]) for k in FINGERPRINT_KEYS if k in config}
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]
    return {"class": type(getattr(transformer, "_orig_mod", transformer)).__name__, "config": fields, "hash": digest}


def _jsonable(value):
    return list(value) if isinstance(value, tuple) else value


@dataclass
class DynamicCurves:
    """The `dynamic` method's calibration: per head, its error and realised density at each `top_p` of a grid, and
    the per-head `top_p` chosen from them (None until `PatternFile.select_top_p`)."""

    top_p_grid: torch.Tensor  # float32 [T], increasing, below 1
    errors: torch.Tensor  # float32 [L, H, T]
    density: torch.Tensor  # float32 [L, H, T]
    top_p: torch.Tensor | None = None  # float32 [L, H]; 1 = dense

    def choose(self, density: float) -> torch.Tensor:
        """float32 `[L, H]`: per head the grid's top_p (1 for dense) of least error such that the mean realised
        density over every layer and head is at most `density` (`select_within` over all heads as one row)."""
        l, h, t = self.errors.shape
        errors, dens = self.errors.reshape(1, l * h, t), self.density.reshape(1, l * h, t)
        choice = select_within(errors, dens, dens, density).reshape(l, h)
        grid = torch.cat([self.top_p_grid.float(), torch.ones(1)])
        return grid[torch.where(choice < 0, t, choice)]

    def realised(self, top_p: torch.Tensor) -> torch.Tensor:
        """float32 `[L, H]`: each head's calibrated density at a table of grid top_p values (1 where dense)."""
        index = (self.top_p_grid.view(1, 1, -1) - top_p.unsqueeze(-1)).abs().argmin(-1, keepdim=True)
        return torch.where(top_p >= 1, 1.0, self.density.gather(-1, index).squeeze(-1))


@dataclass
class PatternFile:
    """A searched pattern set; see the module docstring."""

    model: dict  # fingerprint()
    candidates: list[Pattern]
    errors: torch.Tensor
    stats: torch.Tensor
    density: torch.Tensor
    choice: torch.Tensor
    params: dict  # eps, lam, aggregate, q_block, k_block
    calibration: dict = field(default_factory=dict)
    columns: torch.Tensor | None = None  # float32 [L, H, k, 2]: each head's measured column blocks, grid positions
    dynamic: DynamicCurves | None = None  # the dynamic method's per-head curves and top_p (see the module docstring)
    schema_version: int = SCHEMA_VERSION

    @property
    def num_layers(self) -> int:
        return self.errors.shape[0]

    @property
    def num_heads(self) -> int:
        return self.errors.shape[1]

    def patterns(self, layer: int) -> list[Pattern]:
        """The pattern of every head of a replaced layer ("columns" patterns with that head's measured blocks)."""
        out = []
        for head, c in enumerate(self.choice[layer].tolist()):
            pattern = FULL if c < 0 else self.candidates[c]
            if pattern.columns:
                if self.columns is None:
                    raise ValueError("this pattern file chooses 'columns' patterns but holds no measured columns")
                pattern = pattern.with_points(self.columns[layer, head, : pattern.columns].tolist())
            out.append(pattern)
        return out

    def chosen_errors(self) -> torch.Tensor:
        """float32 `[L, H]`: the measured error of each head's chosen pattern (0 for full)."""
        idx = self.choice.clamp_min(0).unsqueeze(-1)
        return torch.where(self.choice < 0, 0.0, self.errors.gather(-1, idx).squeeze(-1))

    def chosen_density(self) -> torch.Tensor:
        """float32 `[L, H]`: the calibration-layout density of each head's chosen pattern (1 for full)."""
        return torch.where(self.choice < 0, 1.0, self.density[self.choice.clamp_min(0)])

    def reselect(self, eps: float | None = None, lam: float | None = None) -> "PatternFile":
        """The same calibration, chosen again under another budget (no recalibration needed)."""
        eps = self.params["eps"] if eps is None else eps
        lam = self.params["lam"] if lam is None else lam
        choice = select(self.errors, self.density, eps, lam)
        return replace(self, choice=choice, params={**self.params, "eps": eps, "lam": lam})

    def select_top_p(self, density: float) -> "PatternFile":
        """The same calibration with the dynamic method's per-head top_p chosen under mean density `density`."""
        if self.dynamic is None:
            raise ValueError("this pattern file holds no dynamic calibration: search again with this vidsparse "
                             "(`vidsparse search`, search.top_p_grid not empty)")
        dynamic = replace(self.dynamic, top_p=self.dynamic.choose(density))
        return replace(self, dynamic=dynamic, params={**self.params, "dynamic_density": density})

    def transplant(
        self, transformer, num_layers: int, num_heads: int, layout, q_block: int = 128, k_block: int = 128,
        seed: int = 0, device=None,
    ) -> "PatternFile":
        """For speed measurements only: this file's density distribution dealt out to another model's heads.

        Each head of the target draws (seeded) one head of this file; it gets the candidate of the same family whose
        density on the target `layout` is closest to that head's density here (full stays full). The result carries
        the target's fingerprint, so `static` accepts it, and says in `calibration` that it was never searched.
        """
        target = torch.tensor([c.density(layout, q_block, k_block, device) for c in self.candidates])
        families = [c.family for c in self.candidates]
        source_choice, source_density = self.choice.flatten(), self.chosen_density().flatten()
        gen = torch.Generator().manual_seed(seed)
        draw = torch.randint(source_choice.numel(), (num_layers, num_heads), generator=gen)
        choice = torch.full((num_layers, num_heads), -1, dtype=torch.long)
        for i, j in enumerate(draw.flatten().tolist()):
            c = int(source_choice[j])
            if c < 0:
                continue
            same = [k for k, f in enumerate(families) if f == families[c]]
            gap = (target[same] - source_density[j]).abs()
            choice.view(-1)[i] = same[int(gap.argmin())]
        return PatternFile(
            model=fingerprint(transformer), candidates=list(self.candidates),
            errors=torch.zeros(num_layers, num_heads, len(self.candidates)),
            stats=torch.zeros(num_layers, num_heads, self.stats.shape[-1]), density=target, choice=choice,
            params={**self.params, "q_block": q_block, "k_block": k_block},
            columns=None if self.columns is None else self.columns.flatten(0, 1)[draw],
            calibration={"transplanted_from": self.model["class"], "source_mean_density":
                         round(float(self.chosen_density().mean()), 4), "seed": seed,
                         "note": "for speed measurements only: these patterns were not searched on this model"},
        )

    def summary(self) -> dict:
        families: dict[str, int] = {}
        for layer in range(self.num_layers):
            for p in self.patterns(layer):
                families[p.family] = families.get(p.family, 0) + 1
        out = {
            "layers": self.num_layers, "heads": self.num_heads, "eps": self.params["eps"], "lam": self.params["lam"],
            "mean_density": round(float(self.chosen_density().mean()), 4),
            "max_error": round(float(self.chosen_errors().max()), 4), "families": families,
        }
        if self.dynamic is not None and self.dynamic.top_p is not None:
            out["dynamic"] = {"density_budget": self.params.get("dynamic_density"),
                              "mean_top_p": round(float(self.dynamic.top_p.mean()), 4),
                              "mean_density": round(float(self.dynamic.realised(self.dynamic.top_p).mean()), 4)}
        return out

    # ------------------------------------------------------------------ checking
    def check(self, transformer, num_layers: int, num_heads: int | None = None) -> None:
        """Refuse this file for a transformer it was not searched on (class, config, layers, heads)."""
        found = fingerprint(transformer)
        if found["class"] != self.model["class"]:
            raise ValueError(
                f"this pattern file was searched on {self.model['class']}, not {found['class']}: run "
                f"`vidsparse search` on this model to make one for it"
            )
        if found["hash"] != self.model["hash"]:
            diff = {k: (self.model["config"].get(k), v) for k, v in found["config"].items()
                    if self.model["config"].get(k) != v}
            raise ValueError(
                f"this pattern file was searched on a {self.model['class']} with another config "
                f"(file vs model: {diff}): run `vidsparse search` on this model to make one for it"
            )
        if num_layers != self.num_layers or (num_heads is not None and num_heads != self.num_heads):
            raise ValueError(
                f"this pattern file has {self.num_layers} layers x {self.num_heads} heads, the model "
                f"{num_layers} x {num_heads}: run `vidsparse search` on this model"
            )

    # ------------------------------------------------------------------ files
    def save(self, path: str | Path) -> Path:
        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {
            "schema_version": self.schema_version, "model": self.model,
            "candidates": [str(c) for c in self.candidates], "params": self.params,
            "calibration": self.calibration, "summary": self.summary(),
            "heads": [[str(p) for p in self.patterns(layer)] for layer in range(self.num_layers)],
        }
        tensors = {
            "errors": self.errors.float().contiguous(), "stats": self.stats.float().contiguous(),
            "density": self.density.float().contiguous(), "choice": self.choice.long().contiguous(),
        }
        if self.columns is not None:
            tensors["columns"] = self.columns.float().contiguous()
        if self.dynamic is not None:
            d = self.dynamic
            tensors.update({"dynamic.top_p_grid": d.top_p_grid.float().contiguous(),
                            "dynamic.errors": d.errors.float().contiguous(),
                            "dynamic.density": d.density.float().contiguous()})
            if d.top_p is not None:
                tensors["dynamic.top_p"] = d.top_p.float().contiguous()
        save_file(tensors, str(path), metadata={"vidsparse": json.dumps(meta)})
        return path

    @classmethod
    def load(cls, path: str | Path) -> "PatternFile":
        from safetensors.torch import load

        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no pattern file at {path}; make one with `vidsparse search`")
        # Read the bytes rather than memory-map the file (safe_open): some file systems refuse mmap.
        data = path.read_bytes()
        try:
            size = int.from_bytes(data[:8], "little")
            raw = (json.loads(data[8 : 8 + size]).get("__metadata__") or {}).get("vidsparse")
        except (ValueError, UnicodeDecodeError):
            raw = None
        if raw is None:
            raise ValueError(f"{path} is not a vidsparse pattern file (no 'vidsparse' metadata)")
        tensors = load(data)
        meta = json.loads(raw)
        if meta.get("schema_version") != SCHEMA_VERSION:
            raise ValueError(
                f"{path} has pattern-file schema {meta.get('schema_version')}, this vidsparse reads {SCHEMA_VERSION}: "
                "search again with this version"
            )
        return cls(
            model=meta["model"], candidates=[Pattern.parse(c) for c in meta["candidates"]], errors=tensors["errors"],
            stats=tensors["stats"], density=tensors["density"], choice=tensors["choice"], params=meta["params"],
            calibration=meta.get("calibration", {}), columns=tensors.get("columns"),
            dynamic=DynamicCurves(tensors["dynamic.top_p_grid"], tensors["dynamic.errors"], tensors["dynamic.density"],
                                  tensors.get("dynamic.top_p")) if "dynamic.errors" in tensors else None,
        )
