"""CPU fallback speed on the yardstick (issue 14, defect 11): median step time of dense and of each method on the
CPU, warm-up off, 6 steps: `python pipelines/cpu_fallback_speed.py` (without TRITON_INTERPRET, as a user runs it)."""
import statistics, time, torch, vidsparse
from vidsparse.app.models import load_builtin
from vidsparse.app.configs import load_model_config, method_config, call_kwargs
pipe, _ = load_builtin("yardstick")
cfg = load_model_config("yardstick")
kw = call_kwargs(cfg); kw["num_inference_steps"] = 6
def run(config):
    marks = []
    cb = lambda p, i, t, k: (marks.append(time.perf_counter()), k)[1]
    h = vidsparse.apply(pipe, config) if config else None
    with torch.no_grad():
        pipe(prompt="a red square moving right over a gray plain background", generator=torch.Generator().manual_seed(0),
             output_type="latent", callback_on_step_end=cb, **kw)
    d = h.report()["density"] if h else 1.0
    if h: h.remove()
    return statistics.median(b - a for a, b in zip(marks, marks[1:])), d
for name in ["dense", "spatial", "temporal", "static", "profile", "delta"]:
    c = method_config(cfg, name).replace(warmup_steps=0) if name != "dense" else None
    if c is not None and c.method == "profile": c = c.replace(warmup_layers=0)
    t, d = run(c)
    print(f"{name}: {t*1000:.0f} ms per step (median of 5), density {d:.3f}", flush=True)
