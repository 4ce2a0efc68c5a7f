"""pipelines/bench_loop.py --dry-run: the whole denoising loop of the tiny HunyuanVideo on the CPU, stock then a
method, and the files it writes (per-step kinds, totals, ratios, stamps), a run that stops at its time limit, and
the hybrid with its mix forced under true CFG."""

import importlib.util
import json
import os
import re
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "pipelines" / "bench_loop.py"


def load_script():
    spec = importlib.util.spec_from_file_location("bench_loop", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Into one folder: delta after 2 stock steps, then the forced hybrid under true CFG with the stock figures
    of the first run. (folder, delta JSON, hybrid JSON, PYTORCH_CUDA_ALLOC_CONF as the script left it)."""
    out = tmp_path_factory.mktemp("loop")
    script = load_script()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTORCH_CUDA_ALLOC_CONF", "unset-below")
        mp.delenv("PYTORCH_CUDA_ALLOC_CONF")  # restored to the caller's state afterwards
        assert script.main(["--dry-run", "--steps", "6", "--stock-steps", "2", "--out", str(out)]) == 0
        alloc = os.environ.get("PYTORCH_CUDA_ALLOC_CONF")
        delta = json.loads((out / "LOOP_hunyuanvideo_delta.json").read_text())
        assert script.main(["--dry-run", "--steps", "6", "--method", "hybrid", "--force-mix", "--true-cfg-scale", "3",
                            "--stock-steps", "0", "--stock-from", str(out / "LOOP_hunyuanvideo_delta.json"),
                            "--out", str(out), "methods.hybrid.every=2"]) == 0
    hybrid = json.loads((out / "LOOP_hunyuanvideo_hybrid-forced-mix-cfg3.json").read_text())
    return out, delta, hybrid, alloc


def test_delta_loop_steps_and_kinds(runs):
    _, delta, _, _ = runs
    assert delta["setup"]["steps"] == 6 and delta["setup"]["tokens"] == 5 * 4 * 8 + 16
    method, stock = delta["method"], delta["stock"]
    assert method["steps_ran"] == 6 and method["stopped"] is None and method["finite"]
    # the tiny config's refreshes 0, 1, 4, 16 of 20 steps are 0, 1, 2, 5 of 6: the runtime's kinds say so
    assert [r["kind"] for r in method["rows"]] == ["refresh"] * 3 + ["delta"] * 2 + ["refresh"]
    assert method["report"]["schedule"]["refreshed_at"] == [0, 1, 2, 5]
    assert all(r["density"] == 1.0 for r in method["rows"] if r["kind"] == "refresh")
    assert all(0 < r["density"] < 1 for r in method["rows"] if r["kind"] == "delta")
    assert method["kinds"]["delta"]["steps"] == 2 and method["kinds"]["refresh"]["steps"] == 4
    assert method["total_s"] == pytest.approx(sum(r["seconds"] for r in method["rows"]))
    # the pipeline's timesteps, in order, the same for stock and the method
    steps = [r["timestep"] for r in method["rows"]]
    assert steps[0] == 1000.0 and steps == sorted(steps, reverse=True) and len(set(steps)) == 6
    assert [r["kind"] for r in stock["rows"]] == ["stock", "stock"]
    assert [r["timestep"] for r in stock["rows"]] == steps[:2]
    # refresh steps compute full attention: after the 2 stock steps the latents agree to rounding
    assert method["rel_err_vs_stock"]["after_steps"] == 2 and method["rel_err_vs_stock"]["value"] < 1e-4


def test_delta_loop_ratio_memory_and_stamps(runs):
    out, delta, _, alloc = runs
    ratio, stock, method = delta["ratio"], delta["stock"], delta["method"]
    assert ratio["speedup_vs_stock_median"] == pytest.approx(stock["median_s"] * 6 / method["total_s"])
    assert "median" in ratio["speedup_vs_stock_median_means"] and "estimated_total_s" not in ratio
    for phase in (stock, method):
        assert phase["peak_allocated_gib"] is None and phase["peak_reserved_gib"] is None  # no GPU
        assert phase["host_peak_rss_gib"] > 0
    meta = delta["meta"]
    import diffusers
    import torch
    import triton

    assert meta["versions"]["torch"] == torch.__version__ and meta["versions"]["triton"] == triton.__version__
    assert meta["versions"]["diffusers"] == diffusers.__version__
    assert meta["device"].startswith("CPU") and meta["date"][:2] == "20"
    assert meta["command"] == f"python pipelines/bench_loop.py --dry-run --steps 6 --stock-steps 2 --out {out}"
    assert alloc == "expandable_segments:True" and meta["alloc_conf"].startswith("expandable_segments:True")
    text = (out / "LOOP_hunyuanvideo_delta.md").read_text()
    assert meta["command"] in text and "using stock's per-step median" in text
    kinds = [line.split(" | ")[2] for line in text.splitlines() if re.match(r"\| (stock )?\d+ \| ", line)]
    assert kinds == ["stock"] * 2 + ["refresh"] * 3 + ["delta"] * 2 + ["refresh"]


def test_forced_hybrid_under_true_cfg(runs):
    out, delta, hybrid, _ = runs
    method = hybrid["method"]
    assert hybrid["setup"]["true_cfg_scale"] == 3.0
    # every=2 set for the run's own 6 steps: step 3 chooses, step 4 reuses its plan
    assert [r["kind"] for r in method["rows"]] == ["refresh"] * 3 + ["choosing", "reusing", "refresh"]
    assert method["forced_mix"]["source"] == "yardstick/sweep.json"
    assert set(method["report"]["choices"]) - {"refresh"} <= {"static", "spatial", "temporal", "delta", "dense"}
    # both CFG branches ran sparse calls at every step (2 layers each)
    assert all(r["sparse_calls"] == 4 for r in method["rows"])
    assert hybrid["stock"]["from"].endswith("LOOP_hunyuanvideo_delta.json")
    assert hybrid["ratio"]["stock_median_s"] == delta["stock"]["median_s"]
    summary = (out / "LOOP_hunyuanvideo.md").read_text()
    assert "[delta](LOOP_hunyuanvideo_delta.md)" in summary
    assert "[hybrid-forced-mix-cfg3](LOOP_hunyuanvideo_hybrid-forced-mix-cfg3.md)" in summary


def test_stops_cleanly_at_the_time_limit(tmp_path, monkeypatch):
    script = load_script()
    # every method step after the third is expected to take longer than the limit leaves
    monkeypatch.setattr(script, "_estimate", lambda rows, kind, fallback: 1e9 if kind != "stock" and len(rows) >= 3
                        else 0.0)
    assert script.main(["--dry-run", "--steps", "6", "--stock-steps", "1", "--time-limit-s", "3600",
                        "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "LOOP_hunyuanvideo_delta.json").read_text())
    method = result["method"]
    assert method["steps_ran"] == 3 and method["stopped"]["before_step"] == 3
    assert "time limit" in method["stopped"]["reason"]
    ratio = result["ratio"]
    assert ratio["method_steps_ran"] == 3 and ratio["of_steps"] == 6
    assert ratio["estimated_total_s"] > method["total_s"]
    assert "stopped early" in (tmp_path / "LOOP_hunyuanvideo_delta.md").read_text()
