"""yardstick/sweep.py end to end on the CPU at its smallest (`--quick --tiny`, 2 steps, one setting a method), over
both yardsticks in one report (the long one on the short one's weights while its own are absent, labelled), and
`--budget-s` recording what it did not launch."""

import json
import runpy
from pathlib import Path

import pytest
from attention_checks import cpu_paths

SWEEP = Path(__file__).resolve().parents[1] / "yardstick" / "sweep.py"


@pytest.fixture(scope="module")
def sweep():
    return runpy.run_path(str(SWEEP))


@pytest.fixture(scope="module")
def tiny_run(sweep, tmp_path_factory):
    """Both models, 2 prompts (so that the batched dense run has 2 cases), seed 0, 2 steps, 1 setting a method."""
    out = tmp_path_factory.mktemp("sweep")
    with cpu_paths():
        status = sweep["main"](["--quick", "--tiny", "--prompts", "2", "--steps", "2", "--settings", "1",
                                "--device", "cpu", "--out", str(out)])
    return status, json.loads((out / "sweep.json").read_text()), (out / "SWEEP.md").read_text(), out


def test_the_report_holds_both_models(sweep, tiny_run):
    status, results, md, out = tiny_run
    assert status == 0
    assert list(results["models"]) == ["yardstick", "yardstick-long"]
    assert (out / "sweep.png").stat().st_size > 10_000
    for name, entry in results["models"].items():
        assert entry["meta"]["grid"] == [4, 8, 8] and entry["meta"]["video_tokens"] == 256
        assert len(entry["cases"]) == 2
        methods = {r["method"] for r in entry["rows"]}
        not_swept = {n.split()[0] for n in entry["meta"]["notes"] if " not swept: " in n}  # dynamic, if absent
        assert not_swept <= {"dynamic"} and methods == set(sweep["DEFAULT_METHODS"]) - not_swept, name
        assert not [r["error"] for r in entry["rows"] if "error" in r]
        assert not entry["skipped"]
        assert f"`{name}`" in md
    long = results["models"]["yardstick-long"]["meta"]
    if long["standin"]:  # the long weights are absent: the stand-in is said in the json and the report
        assert "standing in" in long["weights"] and "standing in" in md
    assert "## Best PSNR within a density budget" in md and "## yardstick-long: the Pareto front" in md


def test_densities_and_quality_are_sane(tiny_run):
    _, results, _, _ = tiny_run
    for entry in results["models"].values():
        for kind in ("batched", "per_case"):
            assert entry["dense"][kind]["density"] == 1.0
        # dense batched (one call of 2 prompts) against dense one prompt per call: PSNR inf or float32 rounding
        floor = entry["dense"]["floor"]
        assert float(floor["psnr_worst"]) > 60 and floor["ssim_mean"] > 0.999
        for r in entry["rows"]:
            assert 0 < r["density"] <= 1, (r["method"], r["setting"], r["density"])
            assert 0 < float(r["psnr_mean"]) and -1 <= r["ssim_mean"] <= 1
            assert r["batched"] == (r["method"] != "hybrid")


def test_budget_skips_and_records(sweep, tmp_path):
    with cpu_paths():
        status = sweep["main"](["--quick", "--tiny", "--models", "yardstick", "--steps", "1", "--budget-s", "0.001",
                                "--method", "spatial", "--method", "hybrid", "--device", "cpu", "--out", str(tmp_path)])
    assert status == 0
    entry = json.loads((tmp_path / "sweep.json").read_text())["models"]["yardstick"]
    assert list(entry["dense"]) == ["per_case"]  # one case: nothing to batch
    assert entry["dense"]["per_case"]["density"] == 1.0  # dense always runs: every comparison needs it
    assert not entry["rows"]
    assert [(r["method"], r["setting"]) for r in entry["skipped"]] == [
        ("spatial", {"frames": 0}), ("hybrid", {"eps": 0.05}), ("spatial", {"frames": 4}), ("hybrid", {"eps": 0.5})]
    assert all(r["skipped"].startswith("not launched") for r in entry["skipped"])
    assert "skipped: budget" in (tmp_path / "SWEEP.md").read_text()


def test_spread_and_front(sweep):
    assert sweep["spread"](5) == [0, 4, 2, 1, 3]
    assert sweep["spread"](3) == [0, 2, 1] and sweep["spread"](2) == [0, 1] and sweep["spread"](1) == [0]
    assert sorted(sweep["spread"](9)) == list(range(9))
    rows = [{"method": "a", "density": d, "psnr_mean": p} for d, p in ((0.3, 20), (0.5, 18), (0.6, 25), (0.7, "inf"))]
    assert [r["density"] for r in sweep["pareto_front"]({"rows": rows})] == [0.3, 0.6, 0.7]
