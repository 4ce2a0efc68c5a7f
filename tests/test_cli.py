"""`vidsparse generate` and `vidsparse compare` end to end on the built-in tiny model, and their errors; and
`vidsparse generate` with the default model, the trained yardstick, at its own size."""

import json

import imageio.v3 as iio
import numpy as np
import pytest

from vidsparse.app.models import DEFAULT_BUILTIN
from vidsparse.app.cli import build_parser, main

# The plumbing tests run the random-weight tiny CogVideoX, the fastest built-in: 2 steps at 80x112 x 9 frames, a
# latent grid of 3 x 5 x 7 after patchify.
SMALL = ["--model", "tiny-cogvideox", "--steps", "2", "--height", "80", "--width", "112", "--frames", "9"]


def test_generate_writes_a_playable_mp4(tmp_path, capsys):
    status = main(["generate", "--prompt", "a red circle bouncing", "--method", "spatial", "--out", str(tmp_path),
                   "--gif", *SMALL])
    assert status == 0
    mp4 = tmp_path / "spatial_00_seed0.mp4"
    frames = iio.imread(mp4, plugin="pyav") if _has_pyav() else iio.imread(mp4)
    assert frames.shape == (9, 80, 112, 3)
    assert (tmp_path / "spatial_00_seed0.gif").is_file()
    out = capsys.readouterr().out
    assert str(mp4) in out and "realised attention density" in out


def _has_pyav():
    try:
        import av  # noqa: F401
    except ImportError:
        return False
    return True


def test_compare_writes_the_report(tmp_path, capsys):
    status = main(["compare", "--method", "spatial", "--out", str(tmp_path), *SMALL, "methods.spatial.warmup_steps=0", "methods.spatial.frames=0"])
    assert status == 0
    for name in ("report.md", "report.html", "results.json", "psnr_per_frame.png"):
        assert (tmp_path / name).is_file(), name
    results = json.loads((tmp_path / "results.json").read_text())
    methods = {m["name"]: m for m in results["methods"]}
    assert list(methods) == ["dense", "spatial"]
    assert methods["dense"]["ssim_mean"] == 1.0  # dense against dense is identical
    assert methods["dense"]["psnr_mean"] in ("inf", None)
    assert 0.0 < methods["spatial"]["density"] < 1.0
    assert np.isfinite(methods["spatial"]["psnr_mean"])
    html = (tmp_path / "report.html").read_text()
    assert "spatial" in html and "http://" not in html and "https://" not in html
    assert "report:" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["generate", "--model", "no-such-model"], "unknown model 'no-such-model': give a local diffusers folder"),
        (["generate", "--method", "diagonal", *SMALL], "diagonal"),
        (["generate", "--model", "tiny-cogvideox", "--height", "84", "--steps", "1"],
         "--height 84 must be divisible by 16"),
        (["generate", "--height", "66", "--steps", "1"], "--height 66 must be divisible by 4"),  # the yardstick
        (["compare", "--method", "nope", *SMALL], "nope"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(argv, message, tmp_path, capsys):
    assert main([*argv, "--out", str(tmp_path / "out")]) == 2
    assert message in capsys.readouterr().err


def test_unwritable_output_folder(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert main(["generate", "--out", str(blocker / "videos"), *SMALL]) == 2
    assert "cannot write to the output folder" in capsys.readouterr().err


def test_generate_defaults_to_the_yardstick_at_its_own_size(tmp_path, capsys):
    # No --model, --prompt or size: the yardstick's config (9 frames of 64 x 64) and the default prompt. A warm-up
    # of 2 steps (stated, so not scaled with --steps) keeps the default method (hybrid) dense: about 1 s a step.
    assert main(["generate", "--out", str(tmp_path), "--steps", "2", "methods.hybrid.warmup_steps=2"]) == 0
    mp4 = tmp_path / "hybrid_00_seed0.mp4"
    frames = iio.imread(mp4, plugin="pyav") if _has_pyav() else iio.imread(mp4)
    assert frames.shape == (9, 64, 64, 3)
    assert "(9 frames, 64x64)" in capsys.readouterr().out


def test_model_help_names_the_default_builtin(capsys):
    assert DEFAULT_BUILTIN == "yardstick"
    for command in ("generate", "compare"):
        assert build_parser().parse_args([command]).model is None  # resolved to DEFAULT_BUILTIN when loading
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert f"(default: {DEFAULT_BUILTIN}," in " ".join(capsys.readouterr().out.split())


def test_generate_spreads_its_prompts_over_processes(tmp_path):
    """Launched by torchrun, each process generates its share of the prompts (accelerate's PartialState) and
    writes them under their global index."""
    import os
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m",
           "vidsparse.app.cli", "generate", "--model", "tiny-wan", "--prompt", "a red ball", "--prompt", "a blue cube",
           "--steps", "1", "--method", "dense", "--out", str(tmp_path)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    wrote = [line for line in result.stdout.splitlines() if line.startswith("wrote")]
    assert len(wrote) == 2, result.stdout
    assert sorted(p.name for p in tmp_path.glob("*.mp4")) == ["dense_00_seed0.mp4", "dense_01_seed0.mp4"]
