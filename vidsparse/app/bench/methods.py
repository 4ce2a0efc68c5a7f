"""`--methods` entries: SparseConfig presets with fields replaced, or a target density that picks the window."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ...methods.config import PRESETS, SparseConfig
from ...core.layout import TokenLayout

__all__ = ["BenchError", "MethodSpec", "bench_method_config", "mask_density", "parse_methods", "window_text"]


class BenchError(ValueError):
    """A usage error: an unknown model or method, a bad size, no GPU."""


@dataclass(frozen=True)
class MethodSpec:
    """One `--methods` entry: a SparseConfig preset with fields replaced, and optionally a target density
    that picks the window per model.

    Attributes:
        text: the entry as written, e.g. "spatial:frames=2,q_block=64".
        preset: the `vidsparse.PRESETS` name.
        fields: SparseConfig fields to replace.
        density: the bench-only `density=` target, or None.
        untimed: the bench-only `untimed=N`: forwards run before the timed ones (default 1, the warm-up). A
            cached method's first steps are refreshes and choices: `hybrid:refresh_steps=0,untimed=2` times its
            reusing steps.
    """

    text: str
    preset: str
    fields: tuple[tuple[str, int], ...] = ()
    density: float | None = None
    untimed: int = 1


_WINDOW = {"spatial": "frames", "temporal": "radius"}


def parse_methods(text: str) -> list[MethodSpec]:
    """`spatial,temporal:radius=1,q_block=64` -> two MethodSpecs; `FIELD=VALUE` items after a method belong to it.

    Raises BenchError for an unknown preset or field, a bad value, or a method that asks for warm-up steps.
    """
    groups: list[list[str]] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        if "=" in item and ":" not in item:
            if not groups:
                raise BenchError(f"--methods: {item!r} comes before any method name")
            groups[-1].append(item)
        else:
            groups.append([item])
    return [_method_spec(group) for group in groups]


def _method_spec(group: list[str]) -> MethodSpec:
    label = ",".join(group)
    name, _, first = group[0].partition(":")
    sparse = [p for p in PRESETS if p != "dense"]
    if name not in sparse:
        raise BenchError(f"--methods {label!r}: unknown method {name!r}; choose from {sparse} (dense always runs)")
    fields, density, untimed = {}, None, 1
    defaults = dataclasses.asdict(SparseConfig.preset(name).options)
    for item in ([first] if first else []) + group[1:]:
        key, _, value = item.partition("=")
        try:
            number = float(value) if key == "density" else _value(value)
        except ValueError:
            raise BenchError(f"--methods {label!r}: bad value for {key}: {value!r}") from None
        if isinstance(defaults.get(key), tuple) and isinstance(number, int):
            number = (number,)  # a one-entry list: refresh_steps=0
        if key == "untimed":
            if not isinstance(number, int) or number < 1:
                raise BenchError(f"--methods {label!r}: untimed must be an int of at least 1; got {value!r}")
            untimed = number
        elif key != "density" or name not in _WINDOW:  # hybrid's own density= option passes through
            fields[key] = number
        elif 0.0 < number <= 1.0:
            density = number
        else:
            raise BenchError(f"--methods {label!r}: density must be in (0, 1]; got {value}")
    if fields.get("warmup_steps"):
        raise BenchError(f"--methods {label!r}: one step is timed, and it must be a sparse one: drop warmup_steps")
    if density is not None and name not in _WINDOW:
        raise BenchError(f"--methods {label!r}: density= picks the window of {sorted(_WINDOW)} only")
    if density is not None and _WINDOW[name] in fields:
        raise BenchError(f"--methods {label!r}: give {_WINDOW[name]} or density, not both")
    try:
        SparseConfig.preset(name).replace(warmup_steps=0, **fields)
    except ValueError as exc:
        raise BenchError(f"--methods {label!r}: {exc}") from exc
    return MethodSpec(label, name, tuple(sorted(fields.items())), density, untimed)


def _value(text: str):
    """A --methods value: an int, else a float, else a '/'-separated list of ints, else the string itself
    (`SparseConfig.from_dict` validates it)."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    if "/" in text:
        try:
            return tuple(int(part) for part in text.split("/"))
        except ValueError:
            pass
    return text


def bench_method_config(spec: MethodSpec, layout: TokenLayout, block: int | None, device) -> SparseConfig:
    """The method's SparseConfig on this model: the preset without warm-up steps, the spec's fields, `block` as
    the block sizes the spec does not set, and for a `density=` target the window whose mask density on
    `layout` is closest to it (density grows with the window, so the search stops once past the target)."""
    fields = dict(spec.fields)
    options = {f.name for f in dataclasses.fields(SparseConfig.preset(spec.preset).options)}
    if block is not None:
        for key in ("q_block", "k_block"):
            if key in options:
                fields.setdefault(key, block)
    config = SparseConfig.preset(spec.preset).replace(warmup_steps=0, warmup_layers=0, **fields)
    if spec.density is None:
        return config
    key = _WINDOW[config.method]
    widest = layout.frames - 1 if key == "frames" else max(layout.height, layout.width) - 1
    best, best_gap = config, float("inf")
    for width in range(widest + 1):
        candidate = config.replace(**{key: width})
        density = mask_density(candidate, layout, device)
        if abs(density - spec.density) < best_gap:
            best, best_gap = candidate, abs(density - spec.density)
        if density >= spec.density:
            break
    return best


def mask_density(config: SparseConfig, layout: TokenLayout, device) -> float:
    """Density of the mask vidsparse's planner builds for `config` on `layout` (what the report will realise)."""
    from ...methods.base import PlanContext, planner_for

    plan = planner_for(config).plan(PlanContext(config.warmup_layers, config.warmup_steps, None, layout, 1, device),
                                    None)
    mask = plan.groups[0].mask
    return 1.0 if mask is None else mask.density()


def window_text(config: SparseConfig | None) -> str:
    """The report's window column: the window and block sizes of a spatial or temporal config, else its options."""
    if config is None or config.method == "dense":
        return "-"
    if config.method not in _WINDOW:  # the options set away from the preset's, then the blocks
        options, preset = dataclasses.asdict(config.options), dataclasses.asdict(SparseConfig.preset(config.method).options)
        changed = [f"{k}={v}" for k, v in options.items() if v != preset[k] and not (k in ("q_block", "k_block") and "k_block" in options)]
        blocks = [f"blocks {options['q_block']}x{options['k_block']}"] if "k_block" in options else []
        return ", ".join(changed + blocks) or "preset"
    key = _WINDOW[config.method]
    return f"{key}={getattr(config, key)}, blocks {config.q_block}x{config.k_block}"
