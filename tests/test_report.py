"""Quality metrics (`vidsparse.app.metrics`) and the compare report (`vidsparse.app.report`) on synthetic videos."""

import json
import math
import re
from pathlib import Path
from types import SimpleNamespace

import cv2
import imageio.v3 as iio
import numpy as np
import pytest

from vidsparse.app import metrics
from vidsparse.app.metrics import lpips_available, psnr_per_frame, ssim_per_frame
from vidsparse.app.report import MethodRun, write_compare_report

# odd sizes on purpose: the mp4 pads them to even numbers
FRAMES, HEIGHT, WIDTH = 9, 45, 61


def moving_squares(seed: int, frames: int = FRAMES, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """uint8 [F, H, W, 3]: a gradient background with two coloured squares moving across it."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    video = np.empty((frames, height, width, 3), np.uint8)
    colours = rng.integers(60, 256, (2, 3))
    for f in range(frames):
        frame = np.stack([xx * 200 // width, yy * 200 // height, np.full_like(xx, 90)], axis=-1)
        for k, colour in enumerate(colours):
            x, y = (5 + 4 * f + 17 * k) % (width - 12), (8 + 2 * f * (k + 1)) % (height - 12)
            frame[y:y + 12, x:x + 12] = colour
        video[f] = frame
    return video


def add_noise(video: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(np.round(video + rng.normal(0.0, sigma, video.shape)), 0, 255).astype(np.uint8)


def ssim_reference(ref: np.ndarray, test: np.ndarray) -> np.ndarray:
    """SSIM written out frame by frame in float64, as skimage computes it with gaussian_weights=True."""
    luma = np.array([0.299, 0.587, 0.114])
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    out = []
    for a, b in zip(ref, test):
        x, y = a.astype(np.float64) @ luma, b.astype(np.float64) @ luma

        def blur(z):
            return cv2.GaussianBlur(z, (11, 11), 1.5)[5:-5, 5:-5]

        mx, my = blur(x), blur(y)
        vx, vy, cov = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
        out.append(np.mean((2 * mx * my + c1) * (2 * cov + c2) / ((mx * mx + my * my + c1) * (vx + vy + c2))))
    return np.array(out)


# ---------------------------------------------------------------------------------------- metrics
def test_identical_videos_give_inf_psnr_and_ssim_one():
    video = moving_squares(0)
    assert np.all(np.isposinf(psnr_per_frame(video, video.copy())))
    assert np.array_equal(ssim_per_frame(video, video.copy()), np.ones(FRAMES))


def test_psnr_of_a_known_noise_level():
    flat = np.full((4, 128, 192, 3), 128, np.uint8)
    sigma = 5.0
    psnr = psnr_per_frame(flat, add_noise(flat, sigma))
    assert psnr.shape == (4,)
    # 73,728 samples a frame: the MSE's sampling error is ~0.5 % (0.02 dB); rounding adds 1/12 to it (0.014 dB)
    np.testing.assert_allclose(psnr, 20 * np.log10(255 / sigma), atol=0.1)


def test_psnr_is_exact_for_a_known_mse():
    ref = np.full((2, 16, 18, 3), 100, np.uint8)
    test = ref.copy()
    test[0, ::2] += 8   # half the values off by 8: MSE 32
    test[1] += 1        # every value off by 1: MSE 1
    np.testing.assert_allclose(psnr_per_frame(ref, test), [10 * np.log10(255**2 / 32), 10 * np.log10(255**2)])


def test_ssim_matches_a_float64_reference_and_falls_with_noise():
    video = moving_squares(1)
    noisy = [add_noise(video, sigma, seed=3) for sigma in (2, 8, 32)]
    scores = [ssim_per_frame(video, n) for n in noisy]
    for n, s in zip(noisy, scores):
        np.testing.assert_allclose(s, ssim_reference(video, n), atol=1e-5)
    assert np.all(scores[0] < 1.0)
    assert np.all(scores[0] > scores[1]) and np.all(scores[1] > scores[2])


@pytest.mark.parametrize(
    ("ref", "test", "message"),
    [
        (np.zeros((2, 16, 16, 3), np.uint8), np.zeros((3, 16, 16, 3), np.uint8), "same shape"),
        (np.zeros((2, 16, 16, 3), np.float32), np.zeros((2, 16, 16, 3), np.float32), "uint8"),
        (np.zeros((16, 16, 3), np.uint8), np.zeros((16, 16, 3), np.uint8), r"\[F, H, W, 3\]"),
        (np.zeros((2, 16, 16, 4), np.uint8), np.zeros((2, 16, 16, 4), np.uint8), r"\[F, H, W, 3\]"),
        (np.zeros((0, 16, 16, 3), np.uint8), np.zeros((0, 16, 16, 3), np.uint8), "no frames"),
    ],
)
def test_metrics_reject_bad_videos(ref, test, message):
    for metric in (psnr_per_frame, ssim_per_frame):
        with pytest.raises(ValueError, match=message):
            metric(ref, test)


def test_metrics_reject_non_arrays():
    for metric in (psnr_per_frame, ssim_per_frame):
        with pytest.raises(TypeError, match="ref must be a numpy array; got list"):
            metric([[0]], np.zeros((2, 16, 16, 3), np.uint8))


def test_ssim_needs_the_window_to_fit():
    small = np.zeros((1, 10, 40, 3), np.uint8)
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim_per_frame(small, small)


def test_lpips_is_left_out_with_a_reason(monkeypatch, tmp_path):
    monkeypatch.setattr(metrics.importlib.util, "find_spec", lambda name: None)
    used, reason = lpips_available()
    assert used is False and "not installed" in reason

    installed = SimpleNamespace(submodule_search_locations=[str(tmp_path / "lpips")])  # lpips without its weights
    monkeypatch.setattr(metrics.importlib.util, "find_spec", lambda name: installed)
    used, reason = lpips_available()
    assert used is False and "alex.pth" in reason


# ---------------------------------------------------------------------------------------- report
CASES = [{"prompt": "two squares | moving", "seed": 0}, {"prompt": "two squares again", "seed": 1}]
HEADS = {"density": [[0.2, 0.5, 1.0], [0.1, 0.3, 0.9]],
         "pattern": [["spatial", "temporal", "dense"], ["spatial", "spatial", "temporal"]]}


def make_runs() -> list[MethodRun]:
    dense = [moving_squares(s) for s in (0, 1)]
    spatial = [add_noise(v, 6.0, seed=i) for i, v in enumerate(dense)]
    return [
        MethodRun("dense", {"method": "dense"}, dense, seconds_total=4.0, seconds_per_step=0.5, density=1.0,
                  heads={"density": [[1.0] * 3] * 2, "pattern": [["dense"] * 3] * 2}, fallbacks=[]),
        MethodRun("spatial", {"method": "spatial", "frames": 1}, spatial, seconds_total=2.0, seconds_per_step=0.25,
                  density=0.5, heads=HEADS, fallbacks=["head dim 72 has no Triton kernel: PyTorch reference"]),
    ]


META = {"model": "synthetic squares", "command": "pytest tests/test_report.py", "date": "2025-01-01T00:00:00+00:00",
        "device": "CPU", "versions": {"vidsparse": "0.1.0", "torch": "2.x"}, "steps": 4}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    runs = make_runs()
    return out, runs, write_compare_report(out, CASES, runs, META, fps=8)


def test_report_writes_every_file(report):
    out, _, _ = report
    names = {"report.md", "report.html", "results.json", "psnr_per_frame.png", "ssim_per_frame.png",
             "density_dense.png", "density_spatial.png"}
    for c in range(len(CASES)):
        names |= {f"side_by_side_spatial_{c:02d}.mp4", f"side_by_side_spatial_{c:02d}.gif"}
    assert names <= {p.name for p in out.iterdir()}
    assert not list(out.glob("side_by_side_dense_*"))  # dense is the reference, not compared with itself
    for name in names:
        assert (out / name).stat().st_size > 0, name


def test_side_by_side_mp4_is_readable(report):
    out, _, _ = report
    frames = iio.imread(out / "side_by_side_spatial_01.mp4")
    # dense | spatial | diff with 4 px gaps, padded to even sizes
    assert frames.shape == (FRAMES, HEIGHT + 1, 3 * WIDTH + 8 + 1, 3)
    gif = iio.imread(out / "side_by_side_spatial_01.gif")
    assert gif.shape[0] == FRAMES and gif.shape[2] <= 640


def test_results_json(report):
    out, runs, results = report
    saved = json.loads((out / "results.json").read_text())
    assert saved == results
    assert set(saved) == {"meta", "cases", "methods", "lpips"}
    assert saved["meta"] == META and saved["cases"] == CASES
    assert saved["lpips"]["used"] is False and saved["lpips"]["reason"]
    dense, spatial = saved["methods"]
    keys = {"name", "config", "psnr_mean", "psnr_worst_frame", "ssim_mean", "ssim_worst_frame", "psnr_per_frame",
            "ssim_per_frame", "seconds_total", "seconds_per_step", "speedup_vs_dense", "density", "heads",
            "fallbacks", "lpips", "speed", "notes", "step_samples"}
    assert set(dense) == keys and set(spatial) == keys
    assert dense["psnr_mean"] == "inf" and dense["psnr_worst_frame"] == "inf"
    assert dense["psnr_per_frame"] == [["inf"] * FRAMES] * 2
    assert dense["ssim_mean"] == 1.0 and dense["ssim_worst_frame"] == 1.0 and dense["speedup_vs_dense"] == 1.0
    expected = [psnr_per_frame(a, b) for a, b in zip(runs[0].videos, runs[1].videos)]
    np.testing.assert_allclose(spatial["psnr_per_frame"], expected)
    np.testing.assert_allclose(spatial["psnr_mean"], np.mean(expected))
    np.testing.assert_allclose(spatial["psnr_worst_frame"], np.min(expected))
    expected_ssim = [ssim_per_frame(a, b) for a, b in zip(runs[0].videos, runs[1].videos)]
    np.testing.assert_allclose(spatial["ssim_per_frame"], expected_ssim)
    assert 0.0 < spatial["ssim_worst_frame"] <= spatial["ssim_mean"] < 1.0
    assert 20 < spatial["psnr_mean"] < 40  # sigma 6 noise: about 32.6 dB before clipping
    assert spatial["speedup_vs_dense"] == pytest.approx(2.0)
    assert spatial["density"] == 0.5 and spatial["heads"] == HEADS
    assert spatial["lpips"] is None and spatial["fallbacks"] == runs[1].fallbacks


def test_html_is_self_contained(report):
    out, _, _ = report
    page = (out / "report.html").read_text()
    assert "http://" not in page and "https://" not in page
    assert not re.search(r"""(?:src|href)\s*=\s*(?!["']?data:)""", page)  # every src / href is a data: URI
    assert "<link" not in page and "<script" not in page
    # 3 plots (PSNR, SSIM, density against PSNR), 2 heat maps, 2 side-by-side animations
    assert page.count('src="data:image/png;base64,') == 5
    assert page.count('src="data:image/gif;base64,') == 2
    assert "synthetic squares" in page and "spatial" in page and ">inf<" in page
    assert "head dim 72 has no Triton kernel" in page and "LPIPS left out" in page


def test_markdown_references_the_files(report):
    out, _, _ = report
    md = (out / "report.md").read_text()
    for name in ("psnr_per_frame.png", "density_vs_psnr.png", "density_spatial.png", "side_by_side_spatial_00.mp4",
                 "side_by_side_spatial_01.gif"):
        assert f"({name})" in md, name
    assert "pytest tests/test_report.py" in md and "| inf |" in md and "2.00x" in md
    assert "two squares \\| moving" in md  # a "|" in a prompt does not break the table


def test_pngs_decode_with_sensible_sizes(report):
    out, _, _ = report
    for name in ("psnr_per_frame.png", "ssim_per_frame.png", "density_dense.png", "density_spatial.png"):
        image = cv2.imread(str(out / name))
        assert image is not None, name
        height, width, _ = image.shape
        assert 200 <= height <= 2000 and 400 <= width <= 2000, (name, image.shape)
        assert image.std() > 10, name  # not blank
    plot = cv2.imread(str(out / "psnr_per_frame.png"))
    orange = np.array([14, 127, 255])  # the spatial run's line colour (BGR)
    assert (np.abs(plot.astype(int) - orange).sum(-1) < 30).sum() > 100


def test_lpips_values_when_available(tmp_path, monkeypatch):
    """With LPIPS available the mean per method is recorded (the scorer here is a stand-in)."""
    import vidsparse.app.report as report_module
    from vidsparse.app.report import scores

    monkeypatch.setattr(report_module, "lpips_available", lambda: (True, "LPIPS (stand-in)"))
    monkeypatch.setattr(scores, "lpips_per_frame",
                        lambda a, b: np.abs(a.astype(float) - b).mean(axis=(1, 2, 3)) / 255)
    runs = make_runs()
    runs = [MethodRun(r.name, r.config, [v[:3] for v in r.videos], r.seconds_total, r.seconds_per_step, r.density,
                      r.heads, r.fallbacks) for r in runs]
    results = write_compare_report(tmp_path, CASES, runs, META)
    assert results["lpips"] == {"used": True, "reason": "LPIPS (stand-in)"}
    assert results["methods"][0]["lpips"] == 0.0 and 0.0 < results["methods"][1]["lpips"] < 0.1
    assert "LPIPS mean" in (tmp_path / "report.html").read_text()


def test_only_dense_and_no_head_data(tmp_path):
    """A report of dense alone (nothing to compare) and a run without per-head data still renders."""
    dense = make_runs()[0]
    dense.heads = {}
    dense.videos = [v[:2] for v in dense.videos]
    results = write_compare_report(tmp_path, CASES, [dense], META)
    assert [m["name"] for m in results["methods"]] == ["dense"]
    assert cv2.imread(str(tmp_path / "psnr_per_frame.png")) is not None
    assert cv2.imread(str(tmp_path / "density_dense.png")) is not None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda runs: runs[1].videos.pop(), "has 1 videos for 2 cases"),
        (lambda runs: runs[1].videos.__setitem__(0, runs[1].videos[0][:, :20]), "differs from 'dense'"),
        (lambda runs: runs[1].videos.__setitem__(0, runs[1].videos[0].astype(np.float32)), "uint8"),
        (lambda runs: setattr(runs[1], "name", "dense"), "unique"),
        (lambda runs: runs.clear(), "runs is empty"),
    ],
)
def test_report_rejects_bad_runs(tmp_path, change, message):
    runs = make_runs()
    change(runs)
    with pytest.raises(ValueError, match=message):
        write_compare_report(tmp_path, CASES, runs, META)
    assert not Path(tmp_path, "report.html").exists()


def test_infinite_frames_of_a_sparse_method_are_inf_in_json(tmp_path):
    runs = make_runs()
    runs[1].videos[0][0] = runs[0].videos[0][0]  # one identical frame
    results = write_compare_report(tmp_path, CASES, runs, META)
    spatial = results["methods"][1]
    assert spatial["psnr_per_frame"][0][0] == "inf" and spatial["psnr_mean"] == "inf"
    assert math.isfinite(spatial["psnr_worst_frame"])


def test_a_fallback_run_gets_no_speed_ratio(tmp_path):
    """A sparse method that ran the PyTorch fallback says so where the ratio would be, in every output."""
    runs = make_runs()
    runs[1].gpu_kernel = False
    results = write_compare_report(tmp_path, CASES, runs, META)
    spatial = results["methods"][1]
    assert spatial["speedup_vs_dense"] is None and spatial["speed"] == "fallback (no GPU kernel)"
    assert results["methods"][0]["speed"] == "reference"
    for name in ("report.md", "report.html"):
        text = (tmp_path / name).read_text()
        assert "fallback (no GPU kernel)" in text and "2.00x" not in text, name


def test_report_explains_its_terms_and_has_every_heading(report):
    out, _, _ = report
    page, md = (out / "report.html").read_text(), (out / "report.md").read_text()
    for text in (page, md):
        assert "Density against quality" in text
        assert "D = dense: the stock attention call ran" in text and "F = full:" in text
        assert "attention ran on" in text
    summary = md.split("## Summary")[1].split("\n\n")[1]
    assert "| PyTorch fallback (reasons in its section) |" in summary  # what ran, not a count of reasons


def test_pattern_letters_and_colours_are_the_same_in_every_figure():
    from vidsparse.app.report import pattern_style

    assert pattern_style("temporal")[0] == "T" and pattern_style("stripe+temporal")[0] == "V+T"
    assert pattern_style("spatial+temporal")[0] == "S+T"
    assert pattern_style("temporal") == pattern_style("temporal")  # not reassigned per figure
    assert pattern_style("spatial")[1] != pattern_style("temporal")[1]


def test_choices_table_shows_how_often_each_head_ran_each_choice():
    from vidsparse.app.report.text import choices_table

    method = {"heads": {"choices": [[{"spatial": 3.0, "dense": 1.0}, {"temporal": 4.0}], [{"dense": 4.0}, {}]]}}
    header, rows = choices_table(method)
    assert header == ["layer", "head 0", "head 1"]
    assert rows[0] == ["0", "D 1 S 3", "T 4"] and rows[1] == ["1", "D 4", ""]
    assert choices_table({"heads": {"choices": [[{"spatial": 2.0}]]}}) is None  # one choice per head: no table


def test_pareto_front_keeps_the_points_nothing_beats_on_cost_and_quality():
    from vidsparse.app.report import pareto_front

    points = [(0.5, 30.0), (0.3, 25.0), (0.4, 24.0), (0.7, 29.0), (0.3, 26.0), (0.9, 40.0)]
    assert pareto_front(points) == [(0.3, 26.0), (0.5, 30.0), (0.9, 40.0)]
    assert pareto_front([]) == []
