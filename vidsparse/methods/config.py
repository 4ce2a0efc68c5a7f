"""`SparseConfig`: how vidsparse replaces attention, as a validated dataclass with named presets.

A config has the fields every method shares (the method's name, the dense warm-up, the kernel backend) and the
method's own options, a dataclass that the method registered with its planner (`register_method`). One parser,
`SparseConfig.from_dict`, reads the flat form that `apply(pipe, dict)`, the YAML `methods:` sections and the
bench's method lists use: shared fields by name, every other key an option of the method.

Example::

    >>> cfg = SparseConfig.from_dict({"method": "spatial", "frames": 2, "warmup_steps": 5})
    >>> cfg.method, cfg.warmup_steps, cfg.options.frames
    ('spatial', 5, 2)
    >>> cfg.frames                     # options read through as attributes
    2
    >>> SparseConfig.from_dict({"method": "spatial", "radius": 1})
    Traceback (most recent call last):
    ValueError: method 'spatial' has no option 'radius'; its options: frames, q_block, k_block; shared fields: ...
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Any

from .registry import METHODS, SHARED_FIELDS, method_options, register_method

__all__ = ["BACKENDS", "METHODS", "PRESETS", "SHARED_FIELDS", "SparseConfig", "method_options", "register_method"]

# How sparse attention runs: "auto" (the Triton kernel where it can run, else PyTorch, each fallback reported),
# or one backend by name ("triton", "sdpa": torch SDPA with a token mask, "reference": the chunked reference).
BACKENDS = ("auto", "triton", "sdpa", "reference")


@dataclass(frozen=True)
class SparseConfig:
    """What each replaced attention layer computes.

    Attributes:
        method: a registered method: "dense" (the stock computation), "spatial", "temporal", "static",
            "profile", "delta", "hybrid", "dynamic" (see `METHODS` and each method's options class).
        warmup_steps: the first N denoising steps of every generation run dense (stock).
        warmup_layers: the first L replaced layers run dense at every step.
        backend: how sparse attention runs; one of `BACKENDS`.
        options: the method's options dataclass (None: its defaults). Its fields read through as attributes.
        schedule_steps: the denoising step count that the step schedules are stated for: `warmup_steps` and the
            options named in the options class's `STEP_FIELDS` (delta's `refresh_steps`, hybrid's `every`, ...).
            Where a generation's real step count is known (the pipeline's `num_inference_steps`, or the CLI's
            `--steps`), they are scaled to it (`for_steps`). None: they are step numbers, taken as stated.

    Text keys and text queries always stay dense.
    """

    method: str = "dense"
    warmup_steps: int = 0
    warmup_layers: int = 0
    backend: str = "auto"
    options: Any = None
    schedule_steps: int | None = None

    def __post_init__(self):
        options_cls = method_options(self.method)
        for name in ("warmup_steps", "warmup_layers"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be an int >= 0; got {value!r}")
        value = self.schedule_steps
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ValueError(f"schedule_steps must be an int >= 1 (the step count the schedule is stated for) or "
                             f"None; got {value!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}; got {self.backend!r}")
        if self.options is None:
            object.__setattr__(self, "options", options_cls())
        elif not isinstance(self.options, options_cls):
            raise ValueError(
                f"method {self.method!r} takes options {options_cls.__name__}; got {type(self.options).__name__}"
            )

    def __getattr__(self, name: str):
        # Only reached when normal lookup fails: read the method's options through.
        if name.startswith("_") or name == "options":
            raise AttributeError(name)
        options = self.__dict__.get("options")
        if options is not None and any(f.name == name for f in dataclasses.fields(options)):
            return getattr(options, name)
        raise AttributeError(f"SparseConfig(method={self.__dict__.get('method')!r}) has no field or option {name!r}")

    @classmethod
    def from_dict(cls, values: dict) -> "SparseConfig":
        """The one parser of the flat form: shared fields, plus the method's options by name (see module docstring)."""
        if not isinstance(values, dict):
            raise ValueError(f"a method config must be a mapping of fields; got {type(values).__name__}")
        values = dict(values)
        method = values.pop("method", "dense")
        options_cls = method_options(method)
        shared = {k: values.pop(k) for k in SHARED_FIELDS[1:] if k in values}
        names = [f.name for f in dataclasses.fields(options_cls)]
        unknown = [k for k in values if k not in names]
        if unknown:
            raise ValueError(
                f"method {method!r} has no option {unknown[0]!r}; its options: {', '.join(names) or 'none'}; "
                f"shared fields: {', '.join(SHARED_FIELDS)}"
            )
        for f in dataclasses.fields(options_cls):  # YAML lists arrive as lists; options hold tuples
            if isinstance(values.get(f.name), list):
                values[f.name] = tuple(values[f.name])
        return cls(method=method, options=options_cls(**values), **shared)

    @classmethod
    def make(cls, method: str, **fields) -> "SparseConfig":
        """`SparseConfig.from_dict({"method": method, **fields})`."""
        return cls.from_dict({"method": method, **fields})

    def to_dict(self) -> dict:
        """The flat form `from_dict` reads."""
        out = {k: getattr(self, k) for k in SHARED_FIELDS}
        out.update(dataclasses.asdict(self.options))
        return out

    @classmethod
    def preset(cls, name: str) -> "SparseConfig":
        """A named preset: one of `PRESETS`."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
        return PRESETS[name]

    def for_steps(self, num_steps: int | None) -> "SparseConfig":
        """This config with its step schedule scaled to a generation of `num_steps` steps (see `schedule_steps`):
        each step number `s` becomes `round(s * num_steps / schedule_steps)` (a list of steps stays as many distinct
        steps: each at least one after the one before), each period (`refresh_every`, `every`) likewise but at
        least 1 (a period of 0, "never", stays 0). The result is stated for `num_steps`. Unchanged where
        `num_steps` or `schedule_steps` is None, or they are equal.

            >>> delta = SparseConfig.make("delta", refresh_steps=[0, 1, 10, 40], schedule_steps=50)
            >>> delta.for_steps(30).refresh_steps, delta.for_steps(100).refresh_steps
            ((0, 1, 6, 24), (0, 2, 20, 80))
        """
        return _for_steps(self, num_steps)

    @property
    def schedule(self) -> dict:
        """The step schedule as stated: `{"stated_for": schedule_steps, "warmup_steps": ..., **STEP_FIELDS}`."""
        fields = getattr(type(self.options), "STEP_FIELDS", ())
        return {"stated_for": self.schedule_steps, "warmup_steps": self.warmup_steps,
                **{name: _jsonable(getattr(self.options, name)) for name in fields}}

    def replace(self, **changes) -> "SparseConfig":
        """A copy with shared fields or method options changed (a new `method` resets the options)."""
        if "method" in changes and changes["method"] != self.method:
            return SparseConfig.from_dict({k: v for k, v in {**self._shared(), **changes}.items()})
        return SparseConfig.from_dict({**self.to_dict(), **changes})

    def _shared(self) -> dict:
        return {k: getattr(self, k) for k in SHARED_FIELDS}


def _scale(value, num_steps: int, stated_for: int, period: bool):
    if isinstance(value, tuple):  # step numbers: scaled, and distinct steps stay distinct (0, 1 stays 0, 1)
        out: list[int] = []
        for v in sorted(set(value)):
            out.append(max(_scale(v, num_steps, stated_for, False), out[-1] + 1 if out else 0))
        return tuple(out)
    scaled = round(value * num_steps / stated_for)
    return max(1, scaled) if period and value else scaled


@functools.lru_cache(maxsize=256)
def _for_steps(config: SparseConfig, num_steps: int | None) -> SparseConfig:
    stated_for = config.schedule_steps
    if num_steps is None or stated_for is None or num_steps == stated_for:
        return config
    step_fields = getattr(type(config.options), "STEP_FIELDS", ())
    options = dataclasses.replace(config.options, **{
        name: _scale(getattr(config.options, name), num_steps, stated_for, not name.endswith("_steps"))
        for name in step_fields})
    return dataclasses.replace(config, warmup_steps=_scale(config.warmup_steps, num_steps, stated_for, False),
                               options=options, schedule_steps=num_steps)


def _jsonable(value):
    return list(value) if isinstance(value, tuple) else value


class _Presets(dict):
    """Named presets, built on first read (building one imports the planners)."""

    # Every step schedule here (warm-ups, refresh steps, periods) is stated for 50 steps, scaled to the real count.
    _ITEMS = {
        "dense": {},
        # Sparse VideoGen's defaults: dense for the first quarter of 50 steps, then fixed windows.
        "spatial": {"method": "spatial", "frames": 1, "warmup_steps": 12, "schedule_steps": 50},
        "temporal": {"method": "temporal", "radius": 0, "warmup_steps": 12, "schedule_steps": 50},
        # Sparse VideoGen's online profiling: warm-up 25% of 50 steps, first two layers dense, 25% computed.
        "profile": {"method": "profile", "fraction": 0.25, "warmup_steps": 12, "warmup_layers": 2,
                    "schedule_steps": 50},
        # Chipmunk: refresh at steps 0, 1, 10 and 40 of 50, 5% of the keys recomputed between.
        "delta": {"method": "delta", "top_keys": 0.05, "schedule_steps": 50},
        # per head the cheapest of spatial, temporal, a cached delta and dense within eps 0.2; delta's schedule
        "hybrid": {"method": "hybrid", "eps": 0.2, "schedule_steps": 50},
        # XAttention's and SVG2's top-p 0.9 of the estimated mass per query block, after SVG's warm-up (25% of 50)
        "dynamic": {"method": "dynamic", "top_p": 0.9, "warmup_steps": 12, "schedule_steps": 50},
    }

    def _fill(self):
        if not super().__len__():
            for name, values in self._ITEMS.items():
                super().__setitem__(name, SparseConfig.from_dict(values))

    def __getitem__(self, name):
        self._fill()
        return super().__getitem__(name)

    def __contains__(self, name):
        return name in self._ITEMS

    def get(self, name, default=None):
        return self[name] if name in self else default

    def __iter__(self):
        return iter(self._ITEMS)

    def __len__(self):
        return len(self._ITEMS)

    def keys(self):
        return self._ITEMS.keys()

    def items(self):
        self._fill()
        return super().items()

    def values(self):
        self._fill()
        return super().values()


PRESETS: dict[str, SparseConfig] = _Presets()
