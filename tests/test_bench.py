"""`vidsparse bench --dry-run` end to end on tiny CPU versions of every model family, its method parsing and
errors, and pipelines/bench_step.py (the wrapper that reproduces BENCH_STEP.md)."""

import argparse
import json
import math
import re
import runpy
from pathlib import Path

import pytest

from vidsparse import SparseConfig, bench
from vidsparse.core.layout import TokenLayout

ROOT = Path(__file__).resolve().parents[1]
WRAPPER = ROOT / "pipelines" / "bench_step.py"


def run_bench(argv: list[str]) -> int:
    """`vidsparse bench ARGV` as the command line runs it."""
    parser = argparse.ArgumentParser(prog="vidsparse")
    bench.add_parser(parser.add_subparsers(dest="command", required=True))
    argv = ["bench", *argv]
    args = parser.parse_args(argv)
    return args.func(args, argv)


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    """Every model family, one sparse method; (exit status, JSON results, markdown)."""
    out = tmp_path_factory.mktemp("bench")
    status = run_bench(["--dry-run", "--models", ",".join(bench.MODELS), "--methods", "spatial:frames=0",
                        "--out", str(out)])
    return status, json.loads((out / "bench-dry-run.json").read_text()), (out / "bench-dry-run.md").read_text()


def test_dry_run_runs_every_model_and_variant(dry_run):
    status, results, markdown = dry_run
    assert status == 0
    assert [m["model"] for m in results["models"]] == list(bench.MODELS)
    for model in results["models"]:
        names = [v["name"] for v in model["variants"]]
        assert names == ["stock", "stock, fast SDPA", "vidsparse dense", "spatial:frames=0"], model["model"]
        assert all(v["finite"] and v["ms"] > 0 for v in model["variants"])
    assert results["dry_run"] and "bench --dry-run" in results["command"]
    assert "Dry run" in markdown and "## hunyuanvideo: HunyuanVideoTransformer3DModel" in markdown


def test_dry_run_shapes_follow_the_pipelines(dry_run):
    models = {m["model"]: m for m in dry_run[1]["models"]}
    # 17 frames -> 5 latent frames; CogVideoX1.5's pipeline pads them to 6, patched in pairs -> 3
    assert models["cogvideox1.5-5b"]["latent"][1] == 6 and models["cogvideox1.5-5b"]["grid"] == [3, 4, 8]
    assert models["cogvideox-5b"]["grid"] == [5, 4, 8]
    assert models["wan2.1-14b"]["text_tokens"] == 0  # text reaches Wan's cross-attention only
    assert models["hunyuanvideo"]["text_tokens"] == 16
    # the families of issue 22: LTX's 32x VAE on 17 x 128 x 256 (tokens flattened, the grid read off num_frames,
    # height and width), Cosmos' and Mochi's 8x and 6x temporal compression, Wan-Animate's reference frame
    for name in ("ltx-video", "ltx-2", "cosmos-1.0-7b", "mochi-1"):
        assert models[name]["grid"] == [3, 4, 8], name
    for name in ("hunyuanvideo-1.5", "wan2.1-i2v-14b", "wan2.1-vace-14b", "skyreels-v2-df-14b"):
        assert models[name]["grid"] == [5, 4, 8], name
    assert models["wan2.2-animate-14b"]["grid"] == [6, 4, 8]
    assert models["ltx-video"]["latent"] == [1, 96, 8]
    # the context the joint attentions see: HunyuanVideo-1.5's 4 image + 5 glyph + 7 text tokens, Mochi's 8 text
    assert models["hunyuanvideo-1.5"]["text_tokens"] == 16 and models["mochi-1"]["text_tokens"] == 8
    assert all(models[name]["text_tokens"] == 0 for name in ("ltx-video", "ltx-2", "cosmos-1.0-7b", "wan2.1-vace-14b"))


def test_dry_run_times_a_reusing_hybrid_step_after_its_untimed_steps(tmp_path):
    """`untimed=2`: the refresh (step 0) and the choice (step 1) run before the timed reusing step; with
    --skip-fast-sdpa, stock, vidsparse dense and the hybrid alone run, and removal restores the module-wise
    processors of Mochi (no `attn_processors`) and LTX's flattened-token model."""
    status = run_bench(["--dry-run", "--models", "mochi-1,ltx-video", "--skip-fast-sdpa",
                        "--methods", "hybrid:refresh_steps=0,untimed=2", "--out", str(tmp_path)])
    assert status == 0
    for model in json.loads((tmp_path / "bench-dry-run.json").read_text())["models"]:
        stock, dense, hybrid = model["variants"]
        assert [v["name"] for v in model["variants"]] == ["stock", "vidsparse dense", "hybrid:refresh_steps=0,untimed=2"]
        assert len(hybrid["untimed_s"]) == 2 and len(hybrid["times_ms"]) == 1 and len(stock["untimed_s"]) == 1
        assert hybrid["config"]["options"]["refresh_steps"] == [0] and hybrid["window"] == "refresh_steps=(0,), blocks 16x16"
        assert hybrid["report"]["calls"] == 3 * model_layers(model) and hybrid["report"]["fallbacks"] == []
        assert dense["error_vs_stock"]["bitwise_equal"] and hybrid["finite"]
        assert all(c["state_restored"] for c in model["restore_checks"])


def model_layers(model: dict) -> int:
    """Replaced layers of a tiny model: the dense variant's calls over its one untimed and one timed forward."""
    return model["variants"][1]["report"]["calls"] // 2


def test_dry_run_errors_densities_and_removal(dry_run):
    for model in dry_run[1]["models"]:
        _, fast, dense, sparse = model["variants"]
        assert dense["error_vs_stock"]["bitwise_equal"], model["model"]  # vidsparse dense is stock to the bit
        assert dense["report"]["density"] == 1.0 and dense["report"]["sparse_calls"] == 0
        assert fast["error_vs_stock"]["rel_l2"] < 1e-5
        assert 0.0 < sparse["report"]["density"] < 1.0
        assert sparse["report"]["sparse_calls"] == sparse["report"]["calls"] > 0  # no warm-up step: all sparse
        assert sparse["report"]["choices"] == {"spatial": 1.0}  # the per-head method map, summed
        assert 0.0 < sparse["error_vs_stock"]["rel_l2"] < 0.2
        for check in model["restore_checks"]:
            assert check["state_restored"] and check["stock_rerun"]["bitwise_equal"], (model["model"], check)


def test_dry_run_attention_share_and_fast_backends(dry_run):
    for model in dry_run[1]["models"]:
        stock, fast = model["variants"][:2]
        attention = stock["attention"]
        assert attention["calls"] > 0 and 0.0 < stock["attention_share_in_situ"] < 1.0
        for shape in attention["shapes"]:
            assert shape["in_situ_calls"] == shape["expected_in_situ_calls"]
            assert set(shape["backends"]) == set(bench.FAST_SDPA)
            assert shape["fast"] in (*bench.FAST_SDPA, "MATH")
        assert sum(fast["backends"].values()) == attention["calls"]


def test_parse_methods():
    spatial, temporal = bench.parse_methods("spatial:frames=2,q_block=64, temporal")
    assert (spatial.preset, dict(spatial.fields), spatial.text) == ("spatial", {"frames": 2, "q_block": 64},
                                                                     "spatial:frames=2,q_block=64")
    assert (temporal.preset, temporal.fields, temporal.density) == ("temporal", (), None)
    assert bench.parse_methods("spatial:density=0.2")[0].density == 0.2
    hybrid = bench.parse_methods("hybrid:density=0.3,every=2")[0]  # hybrid's own density option
    assert (hybrid.density, dict(hybrid.fields)) == (None, {"density": 0.3, "every": 2})
    hybrid = bench.parse_methods("hybrid:refresh_steps=0,untimed=2")[0]  # a one-entry list; bench-only untimed
    assert (dict(hybrid.fields), hybrid.untimed) == ({"refresh_steps": (0,)}, 2)
    assert bench.parse_methods("spatial")[0].untimed == 1


@pytest.mark.parametrize(("text", "message"), [
    ("diagonal", "unknown method 'diagonal'"),
    ("dense", "unknown method 'dense'"),
    ("q_block=64", "comes before any method name"),
    ("spatial:bogus=1", "has no option 'bogus'"),
    ("spatial:frames=x", "frames must be an int"),
    ("spatial:q_block=48", "power of two"),
    ("spatial:warmup_steps=3", "drop warmup_steps"),
    ("spatial:frames=1,density=0.2", "not both"),
    ("temporal:density=1.5", "density must be in (0, 1]"),
    ("hybrid:untimed=0", "untimed must be an int of at least 1"),
])
def test_parse_methods_refuses(text, message):
    with pytest.raises(bench.BenchError, match=re.escape(message)):
        bench.parse_methods(text)


def test_density_target_picks_the_closest_window():
    layout = TokenLayout(13, 30, 45, 226)  # CogVideoX-5b at 480x720
    for target in (0.15, 0.3, 0.6):
        spec = bench.parse_methods(f"spatial:density={target}")[0]
        chosen = bench.bench_method_config(spec, layout, None, "cpu")
        assert chosen.warmup_steps == 0
        gaps = {f: abs(bench.mask_density(SparseConfig.make(method="spatial", frames=f), layout, "cpu") - target)
                for f in range(layout.frames)}
        assert math.isclose(gaps[chosen.frames], min(gaps.values())), (target, chosen.frames, gaps)


@pytest.mark.parametrize(("argv", "message"), [
    (["--dry-run", "--models", "sora"], "unknown ['sora']"),
    (["--dry-run", "--height", "100"], "--height 100 must be a positive multiple of 16"),
    (["--dry-run", "--models", "ltx-video", "--width", "48"], "--width 48: ltx-video needs a multiple of 32"),
    (["--dry-run", "--methods", "spatial:warmup_steps=2"], "drop warmup_steps"),
])
def test_bad_arguments(argv, message, tmp_path):
    with pytest.raises(bench.BenchError, match=re.escape(message)):
        run_bench([*argv, "--out", str(tmp_path)])


def test_bench_step_wrapper_keeps_its_flags(tmp_path):
    main = runpy.run_path(str(WRAPPER))["main"]
    status = main(["--dry-run", "--models", "cogvideox-5b", "--spatial-frames", "0", "--budget-s", "400",
                   "--out", str(tmp_path)])
    assert status == 0
    results = json.loads((tmp_path / "bench_step.json").read_text())
    assert results["command"].startswith("python pipelines/bench_step.py --dry-run")
    names = [v["name"] for v in results["models"][0]["variants"]]
    assert names[3:] == ["spatial:frames=0", "spatial:density=1"]
    assert results["models"][0]["variants"][4]["report"]["density"] == 1.0  # the window over every frame
    assert (tmp_path / "BENCH_STEP.md").read_text().startswith("# vidsparse bench")


def test_bench_families_script_dry_run_merges_and_skips_what_does_not_fit(tmp_path):
    """pipelines/bench_families.sh --dry-run: one family measured and merged; with too little time left, a family
    is skipped, and the merged report says so."""
    import os
    import subprocess

    def script(limit_s: int, *families: str):
        env = {**os.environ, "OUT": str(tmp_path), "LIMIT_S": str(limit_s)}
        return subprocess.run(["bash", "pipelines/bench_families.sh", "--dry-run", *families], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=300)

    done = script(200, "ltx-video")
    assert done.returncode == 0, done.stderr
    merged = json.loads((tmp_path / "BENCH_FAMILIES.json").read_text())
    assert [m["model"] for m in merged["models"]] == ["ltx-video"] and merged["not_measured"] == []
    assert [v["name"] for v in merged["models"][0]["variants"]] == ["stock", "vidsparse dense",
                                                                     "hybrid:refresh_steps=0,untimed=2"]
    section = (tmp_path / "bench_md_section.md").read_text()
    assert section.startswith("## The families of issue 22") and "| ltx-video | 96 | hybrid:" in section

    skipped = script(20, "mochi-1")  # 20 s minus the 15 s reserve is under the 25 s a family needs
    assert skipped.returncode == 0, skipped.stderr
    assert "mochi-1\tskipped" in (tmp_path / "status.tsv").read_text()
    assert "## Not measured" in (tmp_path / "BENCH_FAMILIES.md").read_text()
    assert (tmp_path / "results.tar.gz").is_file()


def _cli_has_bench() -> bool:
    from vidsparse.app import cli

    return "bench" in cli.build_parser().format_help()


@pytest.mark.skipif(not _cli_has_bench(), reason="vidsparse.app.cli does not register `bench` yet")
def test_vidsparse_cli_runs_bench(tmp_path, capsys):
    from vidsparse.app.cli import main

    assert main(["bench", "--dry-run", "--models", "cogvideox-5b", "--methods", "spatial:frames=0",
                 "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "bench-dry-run.json").read_text())
    assert results["command"].endswith("bench --dry-run --models cogvideox-5b --methods spatial:frames=0 --out "
                                       + str(tmp_path))
    assert "wrote" in capsys.readouterr().out
    assert main(["bench", "--dry-run", "--height", "100", "--out", str(tmp_path)]) == 2
    assert "--height 100 must be a positive multiple of 16" in capsys.readouterr().err
