"""diffusers Ulysses context parallelism with vidsparse, on 2 CPU processes over gloo: outputs equal
the single-process run (Wan with diffusers' own plan, HunyuanVideo with the plan vidsparse supplies).

diffusers 0.42.1's `enable_parallelism` computes `rank % torch.accelerator.device_count()`, which
divides by zero on a CPU-only machine, so `_enable_cp` below does its steps by hand: resolve the
config on a CPU mesh, hand it to every processor, and apply the plan's hooks.
"""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

WORLD = 2
CASES = [  # (family, method): dense too, since under the HunyuanVideo plan vidsparse handles dense calls itself
    ("wan", "spatial"),
    ("wan", "dense"),
    ("wan", "temporal"),
    ("wan", "profile"),
    ("wan", "delta"),
    ("hunyuanvideo", "spatial"),
    ("hunyuanvideo", "dense"),
    ("hunyuanvideo", "profile"),
    ("hunyuanvideo", "delta"),
    ("wan", "hybrid"),
    ("hunyuanvideo", "hybrid"),
]
FIELDS = {  # small blocks, so that the tiny grids span several; profile always sparse; delta refreshes at step 0 only
    "dense": {},
    "spatial": dict(frames=0, q_block=16, k_block=16),
    "temporal": dict(radius=0, q_block=16, k_block=16),
    "profile": dict(eps=10.0, rows_per_frame=4, q_block=16, k_block=16),
    "delta": dict(top_keys=0.3, refresh_steps=[0], q_block=16, voxel=[1, 2, 4]),
    # a refresh, then a choosing step: every candidate scored on each rank's own heads (eps mode is per head)
    "hybrid": dict(eps=0.5, refresh_steps=[0], q_block=16, k_block=16, voxel=[1, 2, 4], rows_per_block=4),
}
FORWARDS = {"delta": 2, "hybrid": 2}  # the second forward is a delta step: each rank's cache of its own heads is compared


def _enable_cp(model, rank: int, plan) -> None:
    from vidsparse.pipelines.context_parallel import enable_context_parallel

    assert plan is not None
    enable_context_parallel(model, WORLD)


def _worker(rank: int, store: str, results) -> None:
    os.environ.setdefault("TRITON_INTERPRET", "1")
    from tiny_models import hunyuan_inputs, hunyuan_transformer, wan_inputs, wan_transformer

    import vidsparse
    from vidsparse.pipelines import cp_plan_for

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)
    try:
        for family, method in CASES:
            if family == "wan":
                model = wan_transformer()
                inputs = wan_inputs(model, height=10, width=16)  # grid 3x5x8: 120 tokens
            else:
                model = hunyuan_transformer()
                # 8 text tokens, 4 per rank; 6 padded, so padding spans both ranks' text
                inputs = hunyuan_inputs(model, height=10, width=16, text_len=8, pad=6)
            config = vidsparse.SparseConfig.make(method=method, **FIELDS[method])
            handle = vidsparse.apply(model, config)
            with torch.no_grad():
                for _ in range(FORWARDS.get(method, 1)):
                    single = model(**inputs, return_dict=False)[0]
            handle.reset()
            _enable_cp(model, rank, cp_plan_for(model))
            with torch.no_grad():
                for _ in range(FORWARDS.get(method, 1)):
                    parallel = model(**inputs, return_dict=False)[0]
            report = handle.report()
            results.put((family, method, rank, (parallel - single).abs().max().item(), single.abs().max().item(),
                         report["fallbacks"], report["sparse_calls"]))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def cp_results(tmp_path_factory):
    context = mp.get_context("spawn")
    results = context.Queue()
    store = str(tmp_path_factory.mktemp("gloo") / "store")
    mp.start_processes(_worker, args=(store, results), nprocs=WORLD, start_method="spawn")
    found = {}
    for _ in range(WORLD * len(CASES)):
        family, method, rank, err, scale, fallbacks, sparse_calls = results.get(timeout=60)
        found[(family, method, rank)] = (err, scale, fallbacks, sparse_calls)
    return found


@pytest.mark.parametrize(("family", "method"), CASES)
def test_ulysses_equals_single_process(cp_results, family, method):
    for rank in range(WORLD):
        err, scale, fallbacks, sparse_calls = cp_results[(family, method, rank)]
        assert fallbacks == []
        assert err <= 1e-5 * scale, f"rank {rank}: max error {err:.3g} against outputs of size {scale:.3g}"
        # single-process and parallel forwards both ran sparse on every replaced layer, or neither did
        assert sparse_calls == (0 if method == "dense" else 2 * 2 * FORWARDS.get(method, 1)), sparse_calls


def test_rank_order_round_trip():
    from vidsparse.pipelines.context_parallel import rank_order_to_model_order

    order = rank_order_to_model_order(world=3, local=5, text_len=2, device="cpu")
    # rank order: [v0 v0 v0 t0 t0 | v1 v1 v1 t1 t1 | v2 v2 v2 t2 t2]
    assert order.tolist() == [0, 1, 2, 5, 6, 7, 10, 11, 12, 3, 4, 8, 9, 13, 14]
    tokens = torch.randn(1, 15, 2)
    assert torch.equal(tokens[:, order][:, torch.argsort(order)], tokens)
    assert rank_order_to_model_order(world=2, local=4, text_len=0, device="cpu") is None


# ------------------------------------------------------------------------------------------ the CLI: --cp N
def _generate_cli(tmp_path, name, nproc, cp, device):
    import subprocess
    import sys

    out = tmp_path / name / "v.mp4"
    cmd = ["generate", "--model", "tiny-wan", "--method", "spatial", "--steps", "2", "--height", "32", "--width", "48",
           "--frames", "9", "--prompt", "a red ball rolling", "--device", device, "--out", str(out)]
    if cp:
        cmd += ["--cp", str(cp)]
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), "-m", "vidsparse"]
                if nproc > 1 else [sys.executable, "-m", "vidsparse"])
    env = {**os.environ, "TRITON_INTERPRET": "1" if device == "cpu" else "0"}
    done = subprocess.run(launcher + cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    import imageio.v3 as iio

    return iio.imread(out)


def _cp_cli_equals_single(tmp_path, device):
    single = _generate_cli(tmp_path, "single", 1, None, device)
    parallel = _generate_cli(tmp_path, "cp", 2, 2, device)
    assert parallel.shape == single.shape
    assert abs(parallel.astype(float) - single.astype(float)).mean() < 1.0  # 8-bit frames, after mp4 encoding


def test_generate_cp_2_under_torchrun_equals_one_process(tmp_path):
    _cp_cli_equals_single(tmp_path, "cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.device_count() < 2, reason="needs 2 GPUs")
def test_generate_cp_2_on_two_gpus_equals_one_gpu(tmp_path):
    _cp_cli_equals_single(tmp_path, "cuda")


def test_generate_cp_without_its_processes_is_one_clean_line(capsys):
    from vidsparse.app.cli import main

    assert main(["generate", "--model", "tiny-wan", "--cp", "2", "--steps", "1"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "torchrun --nproc-per-node 2" in err[0]
