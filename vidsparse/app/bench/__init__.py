"""`vidsparse bench`: one denoising step of full-size video transformers, stock diffusers against vidsparse.

Each model is built from its published config with random weights (the model's own init), directly on the GPU
in the run's dtype: nothing is downloaded, and a 14B model never passes through the CPU or float32. It then
runs one transformer forward (one denoising step) on random inputs shaped as its diffusers pipeline feeds them,
the same inputs for every variant:

    stock                 diffusers' own processors, with torch's default SDPA backend choice
    stock, fast SDPA      the same forward under `sdpa_kernel([cuDNN, flash, efficient], set_priority=True)`:
                          torch runs the first backend of the list that accepts each call. HunyuanVideo passes
                          a boolean text-padding mask, which flash refuses; the backend that ran each call shape
                          is reported, and the math backend joins the list only if no fast one accepts a shape.
    vidsparse dense       `vidsparse.apply(transformer, "dense")`: vidsparse's processors, stock attention calls
    each --methods entry  `vidsparse.apply(transformer, SparseConfig(...))`, warm-up steps dropped (see below)

Per variant: one warm-up forward (it compiles the Triton kernels) whose output is compared with stock's (max abs
and relative L2 error), then the median of N timed forwards (CUDA events, all under `torch.inference_mode()`),
peak memory over the timed forwards, and for vidsparse the realised attention density from `handle.report()`.

The attention share of the stock step is measured two ways: CUDA events around every
`F.scaled_dot_product_attention` call during the stock timed forwards (median per call shape x calls per step),
and each call shape replayed alone on the inputs captured in the warm-up. The replay also times each fast SDPA
backend alone on that call, which is how the backend of the fast-SDPA variant is known.

Methods (`--methods`, a comma list): a `SparseConfig` preset name (`spatial`, `temporal`), optionally with
fields replaced, `NAME:FIELD=VALUE,FIELD=VALUE` (`spatial:frames=2,q_block=64`). `density=D` is a bench-only
field: it picks the window (spatial frames, temporal radius) whose mask density on the model's token layout is
closest to D. A benchmark of one step times a sparse step, so the presets' `warmup_steps` are set to 0 (and a
method that asks for warm-up steps is refused).

Between variants `handle.remove()` must restore the stock processors and hooks exactly; after the last removal
the stock forward runs again and is compared with the first (`--recheck each`: after every removal). With
`--budget-s`, the timed forwards are cut (to one per variant at least) so the run ends in time; models run in
the order given, so put the expensive ones last.

`--dry-run` builds a tiny version of every model family (2 heads, 1-2 layers) in float32 on the CPU, with the
Triton kernels in the interpreter, and runs the whole flow: it tests the benchmark, it measures nothing.

The package: `catalogue` (the models, from the YAML configs), `inputs` (one step's random inputs per family),
`methods` (the `--methods` entries), `timing` (stopwatches, SDPA recording and replay), `runner` (one run: variants,
checks), `report` (markdown and JSON) and `cli` (the arguments, parsed and handed to the runner).

Example::

    vidsparse bench --models cogvideox-5b,hunyuanvideo --methods spatial,spatial:density=0.1,temporal
    vidsparse bench --dry-run --out /tmp/bench
"""

from __future__ import annotations

from .catalogue import MODELS, PIXEL_MULTIPLE, ModelSpec, Video, build_transformer
from .cli import add_arguments, add_parser, run
from .methods import BenchError, MethodSpec, bench_method_config, mask_density, parse_methods
from .timing import FAST_SDPA

__all__ = [
    "FAST_SDPA", "MODELS", "PIXEL_MULTIPLE", "BenchError", "MethodSpec", "ModelSpec", "Video", "add_arguments",
    "add_parser", "bench_method_config", "build_transformer", "mask_density", "parse_methods", "run",
]


def __getattr__(name: str):
    # 0.1 called `bench_method_config` `method_config`, the name `vidsparse.app.configs` gives a model config's preset.
    if name == "method_config":
        import warnings

        warnings.warn("vidsparse.app.bench.method_config is now bench_method_config; the old name goes in "
                      "vidsparse 0.3", DeprecationWarning, stacklevel=2)
        return bench_method_config
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
