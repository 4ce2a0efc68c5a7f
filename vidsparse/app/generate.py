"""`vidsparse generate` and `vidsparse compare`: videos from a diffusers pipeline with a sparse method,
and a quality/speed report of methods against dense attention on the same prompts and seeds.

The model is a local diffusers folder or a built-in name (`vidsparse.app.models`; by default the trained
yardstick, `vidsparse.yardstick`); generation defaults and method presets come from the model's YAML
config (`vidsparse.app.configs`), which `--config` replaces and `key=value` arguments override
(`generate.num_inference_steps=10`, `methods.spatial.frames=2`).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_PROMPT", "CLIError", "MethodPlan", "MethodResult", "add_parsers", "plan_method", "run_method"]

# A prompt of the yardstick's grammar (vidsparse.yardstick.scenes), the default model's: two shapes, a textured
# background and a camera pan, so that both the spatial and the temporal structure of attention matter.
DEFAULT_PROMPT = (
    "a red circle moving right and a yellow square spinning over a navy striped background, camera panning up"
)


class CLIError(ValueError):
    """A usage error the command line reports in one line, exiting with status 2."""


# ---------------------------------------------------------------------------------------- checking
_POSITIVE_FLAGS = ("steps", "height", "width", "frames")
VIDEO_SUFFIXES = (".mp4", ".gif")


def _check_flags(args) -> None:
    """Refuse sizes and step counts that no pipeline can run, before anything loads."""
    for flag in _POSITIVE_FLAGS:
        value = getattr(args, flag, None)
        if value is not None and value < 1:
            what = "denoising steps" if flag == "steps" else f"video {flag} (pixels)" if flag != "frames" else "frames"
            raise CLIError(f"--{flag} {value}: the number of {what} must be at least 1")


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise CLIError(f"--seeds {text!r}: give a comma list of integers, e.g. --seeds 0,1,2") from None
    if not seeds:
        raise CLIError("--seeds is empty: give a comma list of integers, e.g. --seeds 0,1,2")
    return seeds


# ---------------------------------------------------------------------------------------- loading
def _load(args) -> tuple[object, object, str]:
    """(pipeline, model config, model label) for --model / --config / overrides."""
    from .models import BUILTIN_MODELS, DEFAULT_BUILTIN, load_builtin
    from .configs import apply_scheduler_config

    _check_flags(args)
    args.model = args.model or DEFAULT_BUILTIN
    if args.model in BUILTIN_MODELS:
        config_name = args.config or args.model
        cfg = _config(config_name, args.overrides)
        pipe, _ = load_builtin(args.model)
    elif Path(args.model).is_dir():
        if not args.config:
            raise CLIError(
                f"--config is needed with a local model folder ({args.model}): name the model's YAML, e.g. "
                "--config cogvideox-5b, or give a path to one"
            )
        cfg = _config(args.config, args.overrides)
        pipe = _from_pretrained(Path(args.model), getattr(torch, str(cfg.generate.get("dtype", "bfloat16"))))
    else:
        raise CLIError(
            f"unknown model {args.model!r}: give a local diffusers folder or a built-in name "
            f"({', '.join(sorted(BUILTIN_MODELS))})"
        )
    try:
        apply_scheduler_config(pipe, cfg)  # e.g. the flow shift of HunyuanVideo and Wan
    except ValueError as exc:
        raise CLIError(str(exc)) from exc
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    pipe = pipe.to(device)
    return pipe, cfg, args.model


def _config(name: str, overrides):
    from .configs import load_model_config

    try:
        return load_model_config(name, overrides)
    except ValueError as exc:
        raise CLIError(str(exc)) from exc


def _from_pretrained(folder: Path, dtype: torch.dtype):
    """A local diffusers pipeline folder, or a one-line error that says what the folder lacks."""
    from diffusers import DiffusionPipeline

    if not (folder / "model_index.json").is_file():
        raise CLIError(
            f"--model {folder}: not a diffusers pipeline folder (it has no model_index.json); give the folder "
            "that `save_pretrained` wrote or a Hugging Face snapshot, e.g. a local copy of THUDM/CogVideoX-5b"
        )
    try:
        return DiffusionPipeline.from_pretrained(folder, dtype=dtype)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        reason = " ".join(str(exc).split())[:400]
        raise CLIError(f"--model {folder}: diffusers cannot load this folder: {reason}") from exc


@dataclass
class MethodPlan:
    """A method as one run uses it: its SparseConfig for this run's step count, and what the report must say.

    Attributes:
        name: the config's method name.
        config: the SparseConfig; its step schedule (warm-up, refresh steps, periods) scaled to this run's step
            count when --steps differs from the config's own (`SparseConfig.for_steps`: `round(s * steps /
            config_steps)`), except the fields an override sets.
        notes: sentences for the terminal and the report (a scaled schedule, a run that stays dense throughout).
        dense_throughout: a sparse method whose warm-up covers every step: it ran dense.
    """

    name: str
    config: object
    notes: list[str] = field(default_factory=list)
    dense_throughout: bool = False


def plan_method(cfg, name: str, steps: int | None, overrides=()) -> MethodPlan:
    """The `MethodPlan` of method `name` of `cfg` for a run of `steps` denoising steps (None: the config's).

    The config's step schedule is stated for its own `generate.num_inference_steps` (the method's
    `schedule_steps`); when the run has a different step count, each step keeps its share of the steps, unless an
    override sets that field (`methods.NAME.warmup_steps=15` is stated for the run's own steps).
    """
    from .configs import method_config

    try:
        config = method_config(cfg, name)
    except ValueError as exc:
        raise CLIError(str(exc)) from exc
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
        if steps != cfg.generate.get("num_inference_steps"):  # with the config's own, configs has warned already
            logger.warning("method %s: %s", name, plan.notes[-1])
    patterns = getattr(config.options, "patterns", None)  # the static method's pattern file
    if patterns and not Path(patterns).is_file():
        raise CLIError(f"method {name}: pattern file {patterns} does not exist; write it with "
                       f"`vidsparse search --out {patterns}`, or name a shipped one (methods.{name}.patterns="
                       "yardstick)")
    return plan


def _steps_text(value) -> str:
    return ", ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def _prompts(args) -> list[str]:
    prompts = list(args.prompt or [])
    if args.prompts_file:
        path = Path(args.prompts_file)
        if not path.is_file():
            raise CLIError(f"prompts file {path} does not exist")
        prompts += [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    return prompts or [DEFAULT_PROMPT]


def _call_kwargs(pipe, cfg, args) -> dict:
    """The pipeline call's keyword arguments: the config's `generate` section, then the flags."""
    from .configs import call_kwargs

    _check_flags(args)
    kwargs = call_kwargs(cfg)
    for flag, key in (("steps", "num_inference_steps"), ("height", "height"), ("width", "width"), ("frames", "num_frames")):
        if getattr(args, flag, None) is not None:
            kwargs[key] = getattr(args, flag)
    factor = pipe.vae_scale_factor_spatial * _patch(pipe.transformer)
    for key in ("height", "width"):
        if key in kwargs and kwargs[key] % factor:
            raise CLIError(
                f"--{key} {kwargs[key]} must be divisible by {factor} (the VAE's {pipe.vae_scale_factor_spatial}x "
                f"downsampling times the transformer's patch size {_patch(pipe.transformer)})"
            )
    return kwargs


def _patch(transformer) -> int:
    patch = transformer.config.patch_size
    return patch[-1] if isinstance(patch, (tuple, list)) else patch


def _writable(folder: Path) -> Path:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".vidsparse-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise CLIError(f"cannot write to the output folder {folder}: {exc.strerror or exc}") from exc
    return folder


# ---------------------------------------------------------------------------------------- running
@dataclass
class MethodResult:
    """What one method's generations gave: the videos, the handle's report, and the time of every step.

    Attributes:
        seconds_total: wall time of every generation (text encoding and decoding included).
        step_seconds: the duration of every denoising step but each video's first (from one step's end to the
            next's; the first also holds the text encoding). Empty when each video has one step.
    """

    videos: list[np.ndarray]
    seconds_total: float
    step_seconds: list[float]
    report: dict

    @property
    def seconds_per_step(self) -> float:
        """The median step; with one step per video, the mean over the whole generations."""
        if self.step_seconds:
            return float(statistics.median(self.step_seconds))
        steps = max(1, len(self.videos))
        return self.seconds_total / steps


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _generate(pipe, prompt: str, seed: int, kwargs: dict, desc: str, marks: list[float]) -> np.ndarray:
    """One video as uint8 [F, H, W, 3]; appends the time at the end of every denoising step to `marks`."""

    def on_step_end(pipeline, step, timestep, callback_kwargs):
        _sync()
        marks.append(time.perf_counter())
        return {}

    generator = torch.Generator(device="cpu").manual_seed(seed)
    pipe.set_progress_bar_config(desc=desc, leave=False)
    with torch.inference_mode():
        frames = pipe(prompt=prompt, generator=generator, output_type="np", callback_on_step_end=on_step_end,
                      **kwargs).frames[0]
    return (np.clip(np.asarray(frames, dtype=np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def run_method(pipe, plan: MethodPlan, cases: list[dict], kwargs: dict, prepare=None) -> MethodResult:
    """Generate every case with one method installed; the handle is removed before returning. `prepare(pipe)`, if
    given, runs once after installation (context parallelism goes on there)."""
    import vidsparse

    handle = vidsparse.apply(pipe, plan.config)
    try:
        if prepare is not None:
            prepare(pipe)
        videos, steps, start = [], [], time.perf_counter()
        for i, case in enumerate(cases):
            marks: list[float] = []
            videos.append(_generate(pipe, case["prompt"], case["seed"], kwargs,
                                    f"{plan.name} {i + 1}/{len(cases)}", marks))
            steps += [b - a for a, b in zip(marks, marks[1:])]
        _sync()
        return MethodResult(videos, time.perf_counter() - start, steps, handle.report())
    finally:
        handle.remove()


def gpu_kernel_ran(plan: MethodPlan, result: MethodResult, device) -> bool:
    """Whether a sparse method's times measure the Triton kernel: a CUDA device and no fallback."""
    return torch.device(device).type == "cuda" and not result.report["fallbacks"]


def _meta(argv, model: str, kwargs: dict, device) -> dict:
    from .runinfo import environment, invocation

    stamp = environment([*invocation(), *argv], device)
    return {"model": model, **stamp, "steps": kwargs.get("num_inference_steps"), "generate": kwargs}


def _shown_path(path: str) -> str:
    """A path for reports: relative to the vidsparse package's parent or to the working folder when inside them."""
    p = Path(path).resolve()
    for base in (Path(__file__).resolve().parents[2], Path.cwd().resolve()):
        if p.is_relative_to(base):
            return str(p.relative_to(base))
    return path


def _shown_config(config) -> dict:
    fields = asdict(config)
    if fields.get("patterns"):
        fields["patterns"] = _shown_path(fields["patterns"])
    return fields


def _outputs(out: Path, cases: list[dict], method: str) -> list[Path]:
    """The video path of each case: `--out` itself when it ends in .mp4 or .gif (one video only), else
    `OUT/<method>_<case>_seed<seed>.mp4`. The folder is created and checked for writing."""
    if out.suffix.lower() in VIDEO_SUFFIXES:
        if len(cases) != 1:
            raise CLIError(f"--out {out} names one video file, but {len(cases)} videos are made (one per prompt): "
                           "give a folder instead")
        _writable(out.parent)
        return [out]
    _writable(out)
    return [out / f"{method}_{i:02d}_seed{case['seed']}.mp4" for i, case in enumerate(cases)]


def cmd_generate(args, argv) -> int:
    from tqdm.contrib.logging import logging_redirect_tqdm

    _check_flags(args)
    prompts = _prompts(args)
    cases = [{"prompt": p, "seed": args.seed} for p in prompts]
    paths = _outputs(Path(args.out), cases, args.method)
    # Data parallel: launched by `torchrun` or `accelerate launch`, each process takes its share of the prompts,
    # on its own GPU (accelerate's PartialState; a plain run is one process with every prompt).
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())  # cpu=True: torchrun on CPUs is multi-process too
    cp = 1 if args.cp is None else args.cp
    if cp < 1:
        raise CLIError(f"--cp {cp}: give the number of processes that split each attention's heads, at least 1")
    if cp > 1 and state.num_processes != cp:
        raise CLIError(f"--cp {cp} needs {cp} processes, one a GPU; this run has {state.num_processes}: launch with "
                       f"`torchrun --nproc-per-node {cp} -m vidsparse generate ... --cp {cp}`")
    if state.num_processes > 1:
        args.device = args.device or str(state.device)
        if cp == 1:  # data parallel: each process its share of the prompts
            with state.split_between_processes(list(zip(cases, paths))) as mine:
                cases, paths = [c for c, _ in mine], [p for _, p in mine]
            if not cases:
                return 0
    pipe, cfg, model = _load(args)
    kwargs = _call_kwargs(pipe, cfg, args)
    plan = plan_method(cfg, args.method, kwargs.get("num_inference_steps"), args.overrides)
    if cp > 1:  # context parallel: every process every prompt, each rank heads/cp of every attention
        result = _run_context_parallel(pipe, plan, cases, kwargs, cp)
        if not state.is_main_process:
            return 0
        return _write_results(args, cfg, plan, pipe, cases, paths, result)
    with logging_redirect_tqdm(loggers=[logging.getLogger("vidsparse")]):
        result = run_method(pipe, plan, cases, kwargs)
    return _write_results(args, cfg, plan, pipe, cases, paths, result)


def _run_context_parallel(pipe, plan, cases, kwargs, cp: int) -> "MethodResult":
    """`run_method` with every transformer of the pipeline under Ulysses context parallelism of `cp` ranks."""
    from ..pipelines import enable_context_parallel

    def prepare(pipe):
        for name in ("transformer", "transformer_2"):
            module = getattr(pipe, name, None)
            if module is not None:
                try:
                    enable_context_parallel(module, cp)
                except ValueError as exc:
                    raise CLIError(str(exc)) from None

    return run_method(pipe, plan, cases, kwargs, prepare)


def _write_results(args, cfg, plan, pipe, cases, paths, result) -> int:
    from .media import write_video

    fps = int(cfg.generate.get("fps", 8))
    for case, video, path in zip(cases, result.videos, paths):
        written = [path]
        write_video(path, video, fps)
        if args.gif and path.suffix.lower() != ".gif":
            written.append(path.with_suffix(".gif"))
            write_video(written[-1], video, fps)
        if args.save_frames:
            import imageio.v3 as iio

            frame_dir = path.parent / (path.stem + "_frames")
            frame_dir.mkdir(exist_ok=True)
            for f, frame in enumerate(video):
                iio.imwrite(frame_dir / f"{f:04d}.png", frame)
            written.append(frame_dir)
        for item in written:
            print(f"wrote {item}  ({video.shape[0]} frames, {video.shape[2]}x{video.shape[1]})")
    speed = (f"{result.seconds_per_step:.2f} s per step (median)" if gpu_kernel_ran(plan, result, pipe.device)
             or plan.config.method == "dense" else "speed: fallback (no GPU kernel), times measure nothing")
    print(f"method {args.method}: realised attention density {result.report['density']:.3f}, {speed}, "
          f"{result.seconds_total:.1f} s for {len(cases)} video(s)")
    for note in plan.notes:
        print(f"note: {note}")
    for reason in result.report["fallbacks"]:
        print(f"note: {reason}")
    return 0


def cmd_compare(args, argv) -> int:
    from tqdm.contrib.logging import logging_redirect_tqdm

    from .report import MethodRun, write_compare_report

    _check_flags(args)
    out = Path(args.out)
    if out.suffix.lower() in (*VIDEO_SUFFIXES, ".html", ".md", ".json"):
        raise CLIError(f"--out {out}: compare writes a report folder (report.html, report.md, results.json, media); "
                       "give a folder name")
    seeds = _seeds(args.seeds)
    cases = [{"prompt": p, "seed": s} for p in _prompts(args) for s in seeds]
    out = _writable(out)
    pipe, cfg, model = _load(args)
    kwargs = _call_kwargs(pipe, cfg, args)
    names = ["dense", *[m for m in (args.method or list(cfg.methods)) if m != "dense"]]
    steps = kwargs.get("num_inference_steps")
    plans = [plan_method(cfg, name, steps, args.overrides) for name in names]  # every name checked before running
    runs = []
    with logging_redirect_tqdm(loggers=[logging.getLogger("vidsparse")]):
        for plan in plans:
            result = run_method(pipe, plan, cases, kwargs)
            runs.append(MethodRun(
                name=plan.name, config=_shown_config(plan.config), videos=result.videos,
                seconds_total=result.seconds_total, seconds_per_step=result.seconds_per_step,
                density=result.report["density"], heads=result.report["transformers"][0]["heads"],
                fallbacks=result.report["fallbacks"], notes=plan.notes,
                gpu_kernel=plan.config.method == "dense" or gpu_kernel_ran(plan, result, pipe.device),
                step_samples=len(result.step_seconds),
            ))
            logger.info("%s: %.1f s, density %.3f", plan.name, result.seconds_total, result.report["density"])
    results = write_compare_report(out, cases, runs, _meta(argv, model, kwargs, pipe.device),
                                   fps=int(cfg.generate.get("fps", 8)))
    print(terminal_table(results))
    for run in runs:
        for note in run.notes:
            print(f"note: {run.name}: {note}")
    print(f"report: {out / 'report.html'} (and report.md, results.json)")
    return 0


def terminal_table(results: dict) -> str:
    """The summary as aligned plain text: one row per method."""
    header = ["method", "PSNR dB", "SSIM", "s/step", "speed vs dense", "density"]
    rows = []
    for m in results["methods"]:
        psnr = m["psnr_mean"]
        psnr = "inf" if psnr in (None, "inf") else f"{psnr:.2f}"
        rows.append([m["name"], psnr, f"{m['ssim_mean']:.3f}", f"{m['seconds_per_step']:.2f}",
                     m["speed"], f"{m['density']:.3f}"])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    left = {0, 4}

    def line(cells):
        return "  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    return "\n".join([line(header), *(line(r) for r in rows)])


# ---------------------------------------------------------------------------------------- parsers
def _common_generation_args(p: argparse.ArgumentParser) -> None:
    # The default is resolved in _load (vidsparse.app.models.DEFAULT_BUILTIN): importing vidsparse.app.models here would
    # import diffusers and transformers, and make every `vidsparse --help` seconds slower.
    p.add_argument("--model", default=None,
                   help="a local diffusers pipeline folder, or a built-in name (default: yardstick, a small trained "
                        "model of moving shapes; yardstick-long, the same model at 16 x 128 x 128 (16,384 video "
                        "tokens), is for GPU runs; the tiny-* built-ins have random weights; all run anywhere)")
    p.add_argument("--config", default=None, metavar="NAME|YAML",
                   help="model config: a shipped name (cogvideox-5b, hunyuanvideo, ...) or a YAML path; "
                        "default: the built-in model's own")
    p.add_argument("--prompt", action="append",
                   help="a prompt (repeat for several; default: a scene of the yardstick's grammar, "
                        f"{DEFAULT_PROMPT!r})")
    p.add_argument("--prompts-file", metavar="FILE", help="one prompt per line; '#' starts a comment line")
    p.add_argument("--steps", type=int, help="denoising steps (default: the config's)")
    p.add_argument("--height", type=int, help="video height in pixels, divisible by the VAE factor x patch size")
    p.add_argument("--width", type=int, help="video width in pixels, divisible by the VAE factor x patch size")
    p.add_argument("--frames", type=int, help="video frames (default: the config's)")
    p.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="config overrides in omegaconf dot-list form, e.g. generate.guidance_scale=4 "
                        "methods.spatial.frames=2")


def _method_presets() -> str:
    """Help text: each shipped model config and its method presets (the YAML read as is, without diffusers)."""
    from importlib import resources

    from omegaconf import OmegaConf

    lines = ["method presets of each shipped config (--config NAME --method PRESET; a built-in model uses the config of its name):"]
    for entry in sorted(resources.files("vidsparse.app.configs").iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            methods = OmegaConf.create(entry.read_text()).get("methods") or {}
            lines.append(f"  {entry.name[:-5]:18s} {', '.join(methods)}")
    return "\n".join(lines)


def add_parsers(sub, common) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    presets = _method_presets()
    p = sub.add_parser(
        "generate", parents=[common], formatter_class=fmt,
        help="generate videos with a sparse attention method",
        description=(
            "Generate one video per prompt with vidsparse installed on the pipeline, write each as an mp4\n"
            "(optionally a GIF and PNG frames), and print the realised attention density and the time.\n"
            "Methods are the config's presets (listed below): dense, spatial (own frame +-N), temporal (own\n"
            "position in every frame), static (each head's searched pattern); text tokens always stay dense.\n"
            "A preset's step schedule (its warm-up, refresh steps and periods) keeps its share of the steps when\n"
            "--steps differs from the config's; a sparse method whose warm-up covers every step runs dense, and\n"
            "says so."
        ),
        epilog=(
            presets + "\n\n"
            "examples:\n"
            "  vidsparse generate --prompt 'a red circle bouncing over a gray plain background'   # hybrid\n"
            "  vidsparse generate --model tiny-wan --prompt 'a red ball rolling' --method temporal\n"
            "  vidsparse generate --model /models/CogVideoX-5b --config cogvideox-5b --method spatial \\\n"
            "      --prompt 'a cat surfing' --seed 3 methods.spatial.warmup_steps=15"
        ),
    )
    _common_generation_args(p)
    p.add_argument("--method", default="hybrid",
                   help="a method preset of the config (default: %(default)s, on the yardstick's Pareto front at every "
                        "error budget measured: yardstick/SWEEP.md)")
    p.add_argument("--seed", type=int, default=0, help="generator seed (default: %(default)s)")
    p.add_argument("--cp", type=int, default=None, metavar="N",
                   help="context parallelism: each attention's heads split over N processes (Ulysses), launched by "
                        "`torchrun --nproc-per-node N -m vidsparse generate ... --cp N`; without it, several "
                        "processes split the prompts")
    p.add_argument("--out", default="vidsparse-videos", metavar="DIR|FILE",
                   help="output folder (default: %(default)s), or with one prompt the video file itself (a path "
                        "ending in .mp4 or .gif)")
    p.add_argument("--gif", action="store_true", help="also write a GIF of each video (listed in the 'wrote' lines)")
    p.add_argument("--save-frames", action="store_true", help="also write each frame as a PNG")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser(
        "compare", parents=[common], formatter_class=fmt,
        help="compare sparse methods with dense attention: quality, speed, density report",
        description=(
            "Generate the same prompts and seeds with dense attention and with each method, then write a\n"
            "report folder: report.md, a self-contained report.html (opens offline), results.json, PSNR and\n"
            "SSIM against dense per frame, time per step and speedup, the realised density per layer and\n"
            "head as a heat map with each head's pattern, and side-by-side videos (dense | method | diff)."
        ),
        epilog=(
            presets + "\n\n"
            "examples:\n"
            "  vidsparse compare                                  # the yardstick, every preset\n"
            "  vidsparse compare --method spatial --seeds 0,1,2 --prompts-file prompts.txt"
        ),
    )
    _common_generation_args(p)
    p.add_argument("--method", action="append", help="a method to compare (repeat; default: every preset but dense)")
    p.add_argument("--seeds", default="0", help="comma list of seeds; every prompt runs with each (default: %(default)s)")
    p.add_argument("--out", default="vidsparse-report", metavar="DIR",
                   help="report folder (default: %(default)s; `--out samples/compare` regenerates the committed "
                        "sample report)")
    p.set_defaults(func=cmd_compare)
