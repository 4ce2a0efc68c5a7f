"""The product surface as a new user meets it (issue 14): what the commands accept and refuse, where they write,
what their reports say on a CPU, the real-weights path (`--model FOLDER --config NAME`), the yardstick under stock
`DiffusionPipeline.from_pretrained`, the search's checkpoint, and the module boundaries."""

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vidsparse.app.cli import main

ROOT = Path(__file__).resolve().parents[1]
# The random-weight tiny CogVideoX, the fastest built-in: 2 steps at 80x112 x 9 frames.
SMALL = ["--model", "tiny-cogvideox", "--steps", "2", "--height", "80", "--width", "112", "--frames", "9"]


def _fails_cleanly(argv, capsys, *needles):
    """Exit status 2, one line on stderr that contains every needle, no traceback."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("vidsparse ")]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


# ---------------------------------------------------------------------------------------- 3, 4: bad inputs
@pytest.mark.parametrize(("flags", "needle"), [
    (["--frames", "0"], "--frames 0: the number of frames must be at least 1"),
    (["--steps", "-1"], "--steps -1: the number of denoising steps must be at least 1"),
    (["--steps", "0"], "--steps 0: the number of denoising steps must be at least 1"),
    (["--height", "0"], "--height 0"),
])
def test_sizes_and_steps_below_one_are_refused(flags, needle, tmp_path, capsys):
    _fails_cleanly(["generate", "--model", "tiny-cogvideox", *flags, "--out", str(tmp_path)], capsys, needle)


def test_an_override_typo_is_refused_with_the_valid_keys(tmp_path, capsys):
    _fails_cleanly(["generate", *SMALL, "--out", str(tmp_path), "methods.spatail.frames=2"], capsys,
                   "has no method 'spatail'", "methods.spatial.frames")


def test_a_folder_that_is_not_a_diffusers_model(tmp_path, capsys):
    empty = tmp_path / "an-empty-folder"
    empty.mkdir()
    _fails_cleanly(["generate", "--model", str(empty), "--config", "cogvideox-5b", "--out", str(tmp_path / "o")],
                   capsys, "not a diffusers pipeline folder", "model_index.json")


def test_a_missing_pattern_file(tmp_path, capsys):
    _fails_cleanly(["generate", "--model", "yardstick", "--method", "static", "--steps", "1", "--out", str(tmp_path),
                    "methods.static.patterns=/no/such/patterns.safetensors"], capsys,
                   "pattern file /no/such/patterns.safetensors does not exist", "vidsparse search --out")


def test_bad_seeds(tmp_path, capsys):
    _fails_cleanly(["compare", *SMALL, "--seeds", "0,x", "--out", str(tmp_path)], capsys, "--seeds '0,x'")


# ---------------------------------------------------------------------------------------- 5: --out as a file
def test_out_ending_in_mp4_is_that_file_and_the_gif_is_listed(tmp_path, capsys):
    target = tmp_path / "a.mp4"
    assert main(["generate", *SMALL, "--method", "dense", "--prompt", "a red ball", "--out", str(target),
                 "--gif"]) == 0
    assert target.is_file() and target.with_suffix(".gif").is_file()
    out = capsys.readouterr().out
    assert f"wrote {target}" in out and f"wrote {target.with_suffix('.gif')}" in out


def test_out_ending_in_mp4_with_several_prompts_is_refused(tmp_path, capsys):
    _fails_cleanly(["generate", *SMALL, "--prompt", "a", "--prompt", "b", "--out", str(tmp_path / "a.mp4")], capsys,
                   "names one video file, but 2 videos are made")
    assert not (tmp_path / "a.mp4").exists()


# ---------------------------------------------------------------------------------------- 2: warm-up and --steps
def test_warmup_scales_with_steps_and_a_dense_throughout_run_says_so(caplog):
    from vidsparse.app.configs import load_model_config
    from vidsparse.app.configs import plan_method

    cfg = load_model_config("yardstick")  # 5 warm-up steps of 20
    scaled = plan_method(cfg, "spatial", 8)
    assert scaled.config.warmup_steps == 2 and not scaled.dense_throughout
    assert "5 dense steps of 20 become 2 of 8" in scaled.notes[0]
    with caplog.at_level(logging.WARNING, logger="vidsparse.app.configs"):
        stated = ["methods.spatial.warmup_steps=4"]  # stated by the user: kept as it is
        kept = plan_method(load_model_config("yardstick", stated), "spatial", 4, stated)
    assert kept.config.warmup_steps == 4 and kept.dense_throughout
    assert "ran dense throughout" in kept.notes[-1] and "ran dense throughout" in caplog.text
    assert plan_method(cfg, "dense", 1).notes == []


@pytest.mark.parametrize(("steps", "refreshes"), [(30, [0, 2, 6, 24]), (100, [0, 5, 20, 80])])
def test_refreshes_land_where_the_scaled_schedule_says(steps, refreshes, tmp_path, monkeypatch, capsys):
    """tiny-cogvideox's delta refreshes at 0, 1, 4 and 16 of its 20 steps; --steps scales them (issue 23, 1)."""
    from vidsparse.app import generate
    from vidsparse.runtime.runtime import SparseRuntime

    ran, reports, record, run_method = set(), [], SparseRuntime.record, generate.run_method

    def recording(self, layer, plan, heads, device):
        if plan is not None and any(g.mode == "refresh" for g in plan.groups):
            ran.add(self.step)
        return record(self, layer, plan, heads, device)

    def running(*args, **kwargs):
        result = run_method(*args, **kwargs)
        reports.append(result.report)
        return result

    monkeypatch.setattr(SparseRuntime, "record", recording)
    monkeypatch.setattr(generate, "run_method", running)
    small = [*SMALL[:2], "--steps", str(steps), *SMALL[4:]]
    # the PyTorch reference, not the Triton interpreter: a hundred steps in seconds
    assert main(["generate", *small, "--method", "delta", "--out", str(tmp_path), "methods.delta.backend=reference"]) == 0
    assert sorted(ran) == refreshes
    schedule = reports[0]["transformers"][0]["schedule"]  # the report states the schedule that ran
    assert schedule["refreshed_at"] == refreshes
    assert schedule["ran"] == [{"num_steps": steps, "stated_for": steps, "warmup_steps": 0, "refresh_steps": refreshes,
                                "refresh_every": 0}]
    assert f"refresh_steps scaled with the steps: 0, 1, 4, 16 of 20 become {', '.join(map(str, refreshes))} of " \
           f"{steps}" in capsys.readouterr().out


def test_compare_on_cpu_reports_fallback_speed_and_dense_throughout(tmp_path, capsys):
    assert main(["compare", *SMALL, "--method", "spatial", "--out", str(tmp_path),
                 "methods.spatial.warmup_steps=2"]) == 0
    out = capsys.readouterr().out
    results = json.loads((tmp_path / "results.json").read_text())
    spatial = results["methods"][1]
    if not torch.cuda.is_available():
        assert spatial["speed"] == "fallback (no GPU kernel)" and spatial["speedup_vs_dense"] is None
        assert "fallback (no GPU kernel)" in out
    assert spatial["density"] == 1.0 and any("ran dense throughout" in n for n in spatial["notes"])
    assert "ran dense throughout" in (tmp_path / "report.html").read_text()
    # the terminal table's columns line up whatever the method names
    table = [line for line in out.splitlines() if line.startswith(("method ", "dense ", "spatial "))]
    assert len({line.index("SSIM") if "SSIM" in line else None for line in table[:1]}) == 1
    assert len({len(line.rstrip()) for line in table}) <= len(table)
    assert str(Path.cwd()) not in (tmp_path / "results.json").read_text()  # no absolute path of the checkout


# ---------------------------------------------------------------------------------------- 10: noise
def test_generate_prints_no_ffmpeg_noise(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "vidsparse.app.cli", "generate", *SMALL, "--method", "dense", "--out", str(tmp_path)],
        capture_output=True, text=True, cwd=ROOT, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert "pix_fmt" not in result.stderr and "Multiple" not in result.stderr
    assert "set TRITON_INTERPRET" not in result.stderr


def test_generate_help_lists_method_presets(capsys):
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    out = capsys.readouterr().out
    assert "yardstick" in out and "static-strict" in out and "cogvideox-5b       dense, spatial, temporal" in out


# ---------------------------------------------------------------------------------------- 8: files of the demo
def test_demo_outputs_go_to_ignored_folders_of_their_own():
    from vidsparse.app.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["compare"]).out == "vidsparse-report"
    assert parser.parse_args(["generate"]).out == "vidsparse-videos"
    assert parser.parse_args(["selfcheck"]).out == "vidsparse-selfcheck"
    ignored = (ROOT / ".gitignore").read_text().split()
    for folder in ("/vidsparse-report/", "/vidsparse-videos/", "/vidsparse-selfcheck/", ".venv/"):
        assert folder in ignored, folder


# ---------------------------------------------------------------------------------------- 13: real-weights path
@pytest.mark.parametrize(("builtin", "config"), [
    ("tiny-cogvideox", "tiny-cogvideox"),
    ("tiny-hunyuanvideo", "tiny-hunyuanvideo"),
    ("tiny-wan", "tiny-wan"),
])
def test_generate_from_a_saved_pipeline_folder(builtin, config, tmp_path, capsys):
    """The path users take with real weights: a local diffusers folder and `--config NAME`."""
    from vidsparse.app.models import load_builtin

    pipe, _ = load_builtin(builtin)
    folder = tmp_path / "model"
    pipe.save_pretrained(folder)
    out = tmp_path / "out.mp4"
    assert main(["generate", "--model", str(folder), "--config", config, "--method", "spatial", "--steps", "1",
                 "--height", "80", "--width", "112", "--frames", "9", "--prompt", "a red ball", "--out", str(out),
                 "generate.dtype=float32"]) == 0
    assert out.is_file() and "realised attention density" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------- 6: the yardstick
def test_yardstick_loads_with_stock_from_pretrained_once_vidsparse_yardstick_is_imported():
    code = ("import vidsparse.yardstick as y; from diffusers import DiffusionPipeline; "
            "p = DiffusionPipeline.from_pretrained(y.WEIGHTS_DIR); print(type(p.vae).__name__)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "PixelUnshuffleVAE"
    readme = (ROOT / "README.md").read_text()
    assert "import vidsparse.yardstick" in readme  # the README says what the stock loader needs


# ---------------------------------------------------------------------------------------- 12: search checkpoint
def test_search_checkpoint_is_safetensors_and_removed_when_done(tmp_path, monkeypatch):
    from safetensors import safe_open

    from vidsparse.app.models import load_builtin
    from vidsparse.search import run as search_run

    pipe, spec = load_builtin("tiny-cogvideox")
    out = tmp_path / "p.safetensors"
    ckpt = Path(str(out) + ".ckpt.safetensors")
    config = search_run.SearchConfig(q_block=32, k_block=32, observe=1)
    generate = {**spec.defaults, "num_inference_steps": 1, "num_frames": 9}
    saved = []
    real_save = search_run.save_checkpoint

    def spy(path, *args):
        real_save(path, *args)
        with safe_open(str(path), framework="pt") as f:  # a safetensors file with JSON metadata, not a pickle
            saved.append(json.loads(f.metadata()["vidsparse_search_checkpoint"]))

    monkeypatch.setattr(search_run, "save_checkpoint", spy)
    search_run.search(pipe, ["a red ball", "a blue cube"], config, generate=generate, out=out, progress=False)
    assert [s["done"] for s in saved] == [1, 2] and not ckpt.exists() and out.is_file()

    # A checkpoint left by an interrupted run is resumed from: only the missing case runs again.
    meta_calls = []
    monkeypatch.setattr(search_run, "save_checkpoint", lambda path, cases, done, *a: meta_calls.append(done))
    real_save(ckpt, [("a red ball", 0), ("a blue cube", 0)], 1, config, _one_case_calibrator(pipe, config, generate))
    search_run.search(pipe, ["a red ball", "a blue cube"], config, generate=generate, out=out, progress=False)
    assert meta_calls == [2] and not ckpt.exists()


def _one_case_calibrator(pipe, config, generate):
    """A calibrator that has seen the first case, as an interrupted search leaves it."""
    import vidsparse
    from vidsparse.search.calibrate import Calibrator

    calibrator = Calibrator(config.patterns(), config.observed_steps(generate["num_inference_steps"]),
                            config.rows_per_frame, config.q_block, config.k_block, config.head_chunk)
    handle = vidsparse.apply(pipe, "dense", planner=calibrator)
    pipe(prompt="a red ball", generator=torch.Generator().manual_seed(0), output_type="latent", **generate)
    handle.remove()
    return calibrator


# ---------------------------------------------------------------------------------------- the boundary
def test_no_import_cycles_between_the_modules_named_in_the_review():
    """bench does not import the CLI, and the yardstick does not import the built-ins (the layers, tests/test_layers.py,
    allow the built-ins to import the yardstick)."""
    for module, forbidden in (("vidsparse.app.bench", "vidsparse.app.cli"), ("vidsparse.yardstick", "vidsparse.app.models")):
        code = f"import sys, {module}; print({forbidden!r} in sys.modules)"
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
        assert result.stdout.strip() == "False", (module, forbidden, result.stderr)


def test_make_card_imports_no_private_helpers():
    import ast

    tree = ast.parse((ROOT / "yardstick" / "make_card.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("vidsparse"):
            assert not any(alias.name.startswith("_") for alias in node.names), ast.dump(node)


def test_one_json_safe_one_video_writer_one_stamp():
    sources = {p: p.read_text() for p in (ROOT / "vidsparse").rglob("*.py")}
    assert [p.name for p, s in sources.items() if "def _json_safe" in s or "def json_safe" in s] == ["runinfo.py"]
    assert [p.name for p, s in sources.items() if "imageio_ffmpeg.write_frames" in s] == ["media.py"]
    assert [p.name for p, s in sources.items() if "def environment(" in s] == ["runinfo.py"]
    assert "class Case" not in sources[ROOT / "vidsparse" / "app" / "cli.py"]  # the self-check suite is its own module


def test_selfcheck_runs_from_its_library_module(tmp_path, monkeypatch, capsys):
    from vidsparse.app import selfcheck

    full = selfcheck.build_suite
    monkeypatch.setattr(selfcheck, "build_suite", lambda gpu: full(gpu)[:1])  # one case keeps it quick
    assert main(["selfcheck", "--out", str(tmp_path)]) == 0
    device = "cuda" if torch.cuda.is_available() else "cpu"
    payload = json.loads((tmp_path / f"selfcheck-{device}.json").read_text())
    assert payload["passed"] == 1 and payload["versions"]["torch"] == torch.__version__
    assert "1 of 1 cases passed" in capsys.readouterr().out
