"""Model configs: per-model generation defaults and sparse-method presets, as YAML loaded through omegaconf.

Every supported model has a YAML file shipped inside the package, in `vidsparse/app/configs/<name>.yaml`, so
that a pip-installed vidsparse finds it without the repository. A file has three sections:

- `model`: the diffusers pipeline and transformer classes the config is for, the Hugging Face repository whose
  weights it expects (informational: vidsparse never downloads; the user gives a local folder), scheduler settings
  to apply on top of the weights' own (`scheduler`, see `apply_scheduler_config`), and for the built-in tiny models
  the `builtin` name (`vidsparse.app.models`).
- `generate`: keyword arguments of the pipeline call (height, width, num_frames, num_inference_steps,
  guidance_scale, ...), plus `fps` (of the written video) and `dtype` (to load the weights in), which are not call
  arguments. `call_kwargs(cfg)` gives the call arguments alone.
- `methods`: named method presets, each the fields of a `vidsparse.SparseConfig`. Step schedules (warm-up steps,
  refresh steps, periods) are stated for the config's own step count, `generate.num_inference_steps`, which becomes
  each method's `schedule_steps` unless it states its own; a run of another step count scales them. A "static" method's `patterns` is a path, or the name of
  a pattern file shipped in `vidsparse/search/patterns/` (`search_config` and `resolve_patterns`).
- `search` (optional): `vidsparse search` defaults: the fields of `vidsparse.search.SearchConfig`, plus the
  calibration `prompts` (a list) and `seeds`.

Dot-list overrides (the command line's `key=value` arguments) apply on top, then the result is validated: the
known sections only, `generate` keys that the pipeline's `__call__` accepts (but not the per-call `prompt`,
`generator`, `output_type`, `return_dict` and `latents`), sizes that are positive integers, a
known dtype, and every method a valid `SparseConfig` (a "dense" method is required: comparisons run it as the
baseline).

Example::

    >>> cfg = load_model_config("cogvideox-5b", ["generate.num_inference_steps=30", "methods.spatial.frames=2"])
    >>> cfg.generate.num_inference_steps, cfg.generate.height
    (30, 480)
    >>> method_config(cfg, "spatial")
    SparseConfig(method='spatial', warmup_steps=12, warmup_layers=0, backend='auto', options=SpatialOptions(frames=2, q_block=128, k_block=128), schedule_steps=30)
    >>> plan_method(cfg, "spatial", 10).config.warmup_steps  # a run of 10 steps: the warm-up keeps its share
    4
    >>> sorted(call_kwargs(cfg))[:3]
    ['guidance_scale', 'height', 'num_frames']
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ...methods.config import SparseConfig

logger = logging.getLogger(__name__)

__all__ = [
    "NON_CALL_KEYS", "MethodPlan", "ModelConfigError", "apply_scheduler_config", "call_kwargs", "load_model_config",
    "method_config", "model_names", "plan_method",
]

SECTIONS = ("model", "generate", "methods", "search")
# `generate` keys that are not pipeline call arguments.
NON_CALL_KEYS = ("dtype", "fps")
DTYPES = ("float32", "float16", "bfloat16")
_POSITIVE_INTS = ("height", "width", "num_frames", "num_inference_steps")
# Call arguments the caller supplies for each video, never a config.
_PER_CALL = ("prompt", "generator", "output_type", "return_dict", "latents")


class ModelConfigError(ValueError):
    """A model config that cannot be found, parsed or validated, or an override that does not apply."""


def _config_dir():
    return resources.files(__name__)


def model_names() -> list[str]:
    """Names of the model configs shipped with vidsparse (file names without `.yaml`)."""
    return sorted(entry.name[: -len(".yaml")] for entry in _config_dir().iterdir() if entry.name.endswith(".yaml"))


def _read(name_or_path: str | Path) -> tuple[DictConfig, str]:
    """The YAML as a DictConfig, and a label for error messages."""
    text = str(name_or_path)
    is_path = isinstance(name_or_path, Path) or text.endswith((".yaml", ".yml")) or "/" in text or "\\" in text
    if is_path:
        path = Path(text).expanduser()
        if not path.is_file():
            raise ModelConfigError(f"model config file {path} does not exist")
        source, label = path.read_text(), str(path)
    else:
        entry = _config_dir() / f"{text}.yaml"
        if not entry.is_file():
            raise ModelConfigError(
                f"unknown model config {text!r}; known: {', '.join(model_names())} (or give a YAML path)"
            )
        source, label = entry.read_text(), text
    try:
        cfg = OmegaConf.create(source)
    except OmegaConfBaseException as exc:  # a YAML syntax error is wrapped by omegaconf
        raise ModelConfigError(f"model config {label}: cannot parse: {exc}") from exc
    if not isinstance(cfg, DictConfig):
        raise ModelConfigError(f"model config {label}: expected a mapping at the top level")
    return cfg, label


def _parse_overrides(overrides: Sequence[str]) -> DictConfig:
    for item in overrides:
        key, sep, _ = item.partition("=")
        parts = key.split(".")
        if not sep or not all(parts):
            raise ModelConfigError(
                f"override {item!r} is not of the form section.key=value (e.g. generate.num_frames=49)"
            )
        if parts[0] not in SECTIONS:
            raise ModelConfigError(f"override {item!r}: unknown section {parts[0]!r}; sections: {', '.join(SECTIONS)}")
    try:
        return OmegaConf.from_dotlist(list(overrides))
    except OmegaConfBaseException as exc:
        raise ModelConfigError(f"cannot parse overrides {list(overrides)}: {exc}") from exc


def load_model_config(name_or_path: str | Path, overrides: Sequence[str] = ()) -> DictConfig:
    """Load a model config by name (`cogvideox-5b`, `tiny-cogvideox`, ...; see `model_names()`) or from a YAML path,
    apply dot-list `overrides` (`["generate.num_inference_steps=10", "methods.spatial.frames=2"]`) and validate it.

    Raises `ModelConfigError` (a ValueError) for an unknown name, a missing file, a malformed override or an
    invalid config; the message names the offending key and lists what is allowed.
    """
    cfg, label = _read(name_or_path)
    if overrides:
        _check_override_keys(cfg, overrides, label)
        try:
            cfg = OmegaConf.merge(cfg, _parse_overrides(overrides))
        except OmegaConfBaseException as exc:  # e.g. replacing a section by a scalar
            raise ModelConfigError(f"model config {label}: cannot apply overrides {list(overrides)}: {exc}") from exc
    _validate(cfg, label)
    return cfg


def _check_override_keys(cfg: DictConfig, overrides: Sequence[str], label: str) -> None:
    """Refuse an override that names no key the config has or can have, listing the valid keys.

    New keys are allowed where the config's own checks list what may go there: `generate` (the pipeline's call
    arguments), `model.scheduler` (the scheduler's settings), `search` (SearchConfig fields), and the fields of an
    existing method (SparseConfig fields). A method the config does not define is an error (a typo like
    `methods.spatail.frames=2` would otherwise add a method no one runs), unless the same overrides give its
    `methods.NAME.method`, which defines it.
    """
    _parse_overrides(overrides)  # the form section.key=value and a known section first
    defined = {o.partition("=")[0].split(".")[1] for o in overrides
               if o.partition("=")[0].startswith("methods.") and o.partition("=")[0].count(".") == 2
               and o.partition("=")[0].endswith(".method")}
    for item in overrides:
        parts = item.partition("=")[0].split(".")
        section = parts[0]
        if section == "methods" and len(parts) >= 2:
            name = parts[1]
            if name not in cfg.methods and name not in defined:
                keys = [f"methods.{m}.{f}" for m in cfg.methods for f in cfg.methods[m]]
                raise ModelConfigError(
                    f"override {item!r}: model config {label} has no method {name!r}; its methods: "
                    f"{', '.join(cfg.methods)} (valid keys include {', '.join(keys)}; any SparseConfig field of a "
                    f"method can be set, and methods.{name}.method=... defines a new one)"
                )
        elif section == "model" and len(parts) >= 2 and parts[1] not in cfg.model and parts[1] != "scheduler":
            keys = [f"model.{k}" for k in cfg.model] + ["model.scheduler.*"]
            raise ModelConfigError(f"override {item!r}: model config {label} has no key {'.'.join(parts)}; "
                                   f"valid keys: {', '.join(dict.fromkeys(keys))}")


def _validate(cfg: DictConfig, label: str) -> None:
    unknown = [key for key in cfg if key not in SECTIONS]
    if unknown:
        raise ModelConfigError(f"model config {label}: unknown section(s) {unknown}; sections: {', '.join(SECTIONS)}")
    for section in SECTIONS:
        if section == "search" and cfg.get(section) is None:
            continue  # optional
        if not isinstance(cfg.get(section), DictConfig):
            raise ModelConfigError(f"model config {label}: the {section!r} section is missing or not a mapping")
    for key in ("pipeline", "transformer"):
        if not isinstance(cfg.model.get(key), str):
            raise ModelConfigError(f"model config {label}: model.{key} must name a diffusers class")
    _validate_generate(cfg, label)
    if "dense" not in cfg.methods:
        raise ModelConfigError(f"model config {label}: methods must include 'dense' (the baseline of comparisons)")
    for name in cfg.methods:
        method_config(cfg, name)
    if cfg.get("search") is not None:
        search_config(cfg)


def _validate_generate(cfg: DictConfig, label: str) -> None:
    gen = cfg.generate
    for key in _POSITIVE_INTS:
        value = gen.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
            raise ModelConfigError(f"model config {label}: generate.{key} must be a positive integer; got {value!r}")
    fps = gen.get("fps")
    if fps is not None and (not isinstance(fps, (int, float)) or isinstance(fps, bool) or fps <= 0):
        raise ModelConfigError(f"model config {label}: generate.fps must be a positive number; got {fps!r}")
    dtype = gen.get("dtype")
    if dtype is not None and dtype not in DTYPES:
        raise ModelConfigError(f"model config {label}: generate.dtype must be one of {DTYPES}; got {dtype!r}")
    per_call = [key for key in gen if key in _PER_CALL]
    if per_call:
        raise ModelConfigError(f"model config {label}: generate.{per_call[0]} is given per call, not by the config")
    accepted = _call_parameters(cfg.model.pipeline)
    if accepted is None:
        return
    unknown = sorted(key for key in gen if key not in NON_CALL_KEYS and key not in accepted)
    if unknown:
        raise ModelConfigError(
            f"model config {label}: {cfg.model.pipeline}.__call__ takes no argument(s) {unknown}; "
            f"it takes: {', '.join(sorted(accepted))} (plus generate.fps and generate.dtype)"
        )


def _call_parameters(pipeline: str) -> set[str] | None:
    """Names the pipeline class's `__call__` accepts, or None when diffusers has no such class (not checked)."""
    import diffusers

    cls = getattr(diffusers, pipeline, None)
    if not isinstance(cls, type):
        logger.warning("diffusers has no pipeline class %r: the generate keys are not checked", pipeline)
        return None
    params = inspect.signature(cls.__call__).parameters
    return {name for name, p in params.items() if name != "self" and p.kind is not inspect.Parameter.VAR_KEYWORD}


def method_config(cfg: DictConfig, name: str) -> SparseConfig:
    """The `SparseConfig` of method preset `name` in a loaded model config.

    Raises `ModelConfigError` (a ValueError) for a method the config does not define (listing those it does) or
    invalid fields. Warns when the warm-up covers every denoising step (the method would run dense throughout).
    """
    if name not in cfg.methods:
        raise ModelConfigError(f"unknown method {name!r}; this model config defines: {', '.join(cfg.methods)}")
    fields = cfg.methods[name]
    if not isinstance(fields, DictConfig):
        raise ModelConfigError(f"methods.{name} must be a mapping of SparseConfig fields; got {fields!r}")
    values = OmegaConf.to_container(fields, resolve=True)
    if values.get("patterns"):
        try:
            values["patterns"] = str(resolve_patterns(values["patterns"]))
        except ModelConfigError:
            pass  # a file still to be written by `vidsparse search`: the static method says so when it loads
    steps = cfg.generate.get("num_inference_steps")
    if values.get("method", "dense") != "dense" and values.get("schedule_steps") is None:
        values["schedule_steps"] = steps  # the schedule is stated for the config's own step count
    try:
        sparse = SparseConfig.from_dict(values)
    except ValueError as exc:
        raise ModelConfigError(f"methods.{name}: {exc}") from exc
    if sparse.method != "dense" and steps is not None and sparse.warmup_steps >= steps:
        logger.warning(
            "methods.%s: warmup_steps %d >= num_inference_steps %d, so every step runs dense",
            name, sparse.warmup_steps, steps,
        )
    return sparse


@dataclasses.dataclass
class MethodPlan:
    """A method as one run uses it: its SparseConfig for this run's step count, and what the report must say.

    Attributes:
        name: the config's method name.
        config: the SparseConfig; its warm-up scaled to this run's step count when the run's steps differ from the
            config's own (`round(warmup_steps * steps / config_steps)`).
        notes: sentences for the terminal and the report (a scaled warm-up, a run that stays dense throughout).
        dense_throughout: a sparse method whose warm-up covers every step: it ran dense.
    """

    name: str
    config: SparseConfig
    notes: list[str] = dataclasses.field(default_factory=list)
    dense_throughout: bool = False


def plan_method(cfg: DictConfig, name: str, steps: int | None, overrides: Sequence[str] = ()) -> MethodPlan:
    """The `MethodPlan` of method `name` of `cfg` for a run of `steps` denoising steps (None: the config's).

    The config's step schedule is stated for its own `generate.num_inference_steps` (the method's
    `schedule_steps`): its warm-up, refresh steps and periods. When the run has a different step count, each keeps
    its share of the steps (`SparseConfig.for_steps`), except a field an override sets (`methods.NAME.warmup_steps=15`
    is stated for the run's own steps). Raises `ModelConfigError` as `method_config` does, and for a static method
    whose pattern file does not exist.

    Example::

        >>> plan = plan_method(load_model_config("yardstick"), "spatial", 8)  # 5 warm-up steps of 20
        >>> plan.config.warmup_steps, plan.notes
        (2, ['warm-up scaled with the steps: 5 dense steps of 20 become 2 of 8'])
    """
    config = method_config(cfg, name)
    plan = MethodPlan(name, config)
    steps = steps or config.schedule_steps
    if config.method == "dense" or steps is None:
        return plan
    if config.schedule_steps and steps != config.schedule_steps:
        explicit = {o.split("=", 1)[0].split(".")[-1] for o in overrides
                    if o.split("=", 1)[0].startswith(f"methods.{name}.")}
        stated, scaled = config.schedule, config.for_steps(steps)
        kept = {k: getattr(config, k) for k in stated if k in explicit and k != "stated_for"}
        scaled = scaled.replace(**kept) if kept else scaled
        of = config.schedule_steps
        for k, v in stated.items():
            now = scaled.schedule[k]
            if k == "stated_for" or now == v:
                continue
            plan.notes.append(f"warm-up scaled with the steps: {v} dense steps of {of} become {now} of {steps}"
                              if k == "warmup_steps" else
                              f"{k} scaled with the steps: {_steps_text(v)} of {of} become {_steps_text(now)} of {steps}")
        plan.config = config = scaled
    if config.warmup_steps >= steps:
        plan.dense_throughout = True
        plan.notes.append(f"ran dense throughout: its {config.warmup_steps} warm-up steps cover all {steps} steps "
                          f"(set methods.{name}.warmup_steps lower, or run more --steps)")
        if steps != cfg.generate.get("num_inference_steps"):  # with the config's own, method_config has warned
            logger.warning("method %s: %s", name, plan.notes[-1])
    patterns = getattr(config.options, "patterns", None)  # the static method's pattern file
    if patterns and not Path(patterns).is_file():
        raise ModelConfigError(f"method {name}: pattern file {patterns} does not exist; write it with "
                               f"`vidsparse search --out {patterns}`, or name a shipped one (methods.{name}.patterns="
                               "yardstick)")
    return plan


def _steps_text(value) -> str:
    return ", ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def resolve_patterns(value: str) -> Path:
    """A pattern file's path: `value` itself when it names a file, else the shipped `vidsparse/search/patterns/<value>.safetensors`."""
    path = Path(value).expanduser()
    if path.is_file():
        return path
    shipped = Path(__file__).parents[2] / "search" / "patterns" / f"{value}.safetensors"
    if shipped.exists():
        return shipped
    names = sorted(p.stem for p in shipped.parent.glob("*.safetensors"))
    raise ModelConfigError(
        f"no pattern file {value!r}: give a path to one (`vidsparse search --out PATH` writes it) or a shipped name "
        f"({', '.join(names) or 'none shipped'})"
    )


def search_config(cfg: DictConfig) -> tuple[dict, list[str], list[int]]:
    """(`SearchConfig` fields, calibration prompts, seeds) from a model config's optional `search` section."""
    from ...search.run import SearchConfig

    section = OmegaConf.to_container(cfg.get("search") or OmegaConf.create({}), resolve=True)
    prompts = list(section.pop("prompts", []) or [])
    seeds = [int(s) for s in section.pop("seeds", [0]) or [0]]
    allowed = [f.name for f in dataclasses.fields(SearchConfig)]
    unknown = [key for key in section if key not in allowed]
    if unknown:
        raise ModelConfigError(f"search: unknown field(s) {unknown}; fields: prompts, seeds, {', '.join(allowed)}")
    if "candidates" in section:
        section["candidates"] = tuple(section["candidates"])
    return section, prompts, seeds


def call_kwargs(cfg: DictConfig) -> dict:
    """The pipeline call's keyword arguments: the `generate` section without `fps` and `dtype`, as plain Python."""
    kwargs = OmegaConf.to_container(cfg.generate, resolve=True)
    for key in NON_CALL_KEYS:
        kwargs.pop(key, None)
    return kwargs


def apply_scheduler_config(pipe, cfg: DictConfig) -> None:
    """Rebuild `pipe.scheduler` with the config's `model.scheduler` settings over its own (e.g. Wan's flow_shift).

    Example::

        >>> apply_scheduler_config(pipe, load_model_config("wan2.1-t2v-14b"))  # UniPC with flow_shift 5.0
    """
    settings = cfg.model.get("scheduler")
    if not settings:
        return
    settings = OmegaConf.to_container(settings, resolve=True)
    unknown = [key for key in settings if key not in pipe.scheduler.config]
    if unknown:
        raise ModelConfigError(
            f"model.scheduler: {type(pipe.scheduler).__name__} has no setting(s) {unknown}; "
            f"it has: {', '.join(sorted(k for k in pipe.scheduler.config if not k.startswith('_')))}"
        )
    pipe.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config, **settings)
