"""The product on top of the library, imported by nothing in it: the `vidsparse` command line and what it needs.

- `cli`: `vidsparse generate | compare | search | bench | selfcheck`; it parses arguments and calls the commands;
- `args`: the flags that generate, compare and search share, their checks, and `CLIError` (one-line usage errors);
- `loading`: the pipeline a command runs (a built-in model or a local diffusers folder), its model config with the
  command line's overrides, and the pipeline call's keyword arguments;
- `runs`: one method's timed generations over the (prompt, seed) cases (`run_method`);
- `generate`, `compare`, `search_cli`: the commands;
- `report`: what `compare` writes (scores, figures, side-by-side videos, report.md and a self-contained report.html);
- `configs`: the model configs (YAML) and their method presets; `plan_method` fits a preset to a run's steps;
- `models`: the built-in models (the trained yardstick, and tiny random-weight pipelines of each architecture);
- `bench`: one full-size denoising step on the GPU, stock diffusers against vidsparse;
- `metrics` (PSNR, SSIM, LPIPS), `media` (video files), `runinfo` (environment stamps), `selfcheck` (the kernel
  against a float64 reference).

Within the package the commands import the modules below them (`args`, `loading`, `runs`, `configs`, `report`) and
never each other, except `generate.add_parsers`, 0.1's entry point, which adds `compare`'s parser too.
"""
