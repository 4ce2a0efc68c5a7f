"""kernels/bench_refresh.py --dry-run: the refresh benchmark's whole flow on the CPU (Triton's interpreter), both
refreshes and every part, and the checks it computes: the two refreshes agree, and the rest left out matches a
float32 rest on its query blocks."""

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "kernels" / "bench_refresh.py"


def test_bench_refresh_dry_run(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("bench_refresh", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "refresh.json"
    module.main(["--dry-run", "--out", str(out)])
    result = json.loads(out.read_text())
    assert result["command"] == f"python kernels/bench_refresh.py --dry-run --out {out}"
    assert result["shape"] == [1, 2, 600, 128] and result["text"] == [560, 600]
    checks = result["checks"]
    assert checks["out_rel_diff"] < 2e-2  # bf16 outputs, two ways, in the interpreter's truncating casts
    errors = checks["rest_rel_err_weighted"]
    assert errors["leaving_out"] < 2e-2
    assert errors["subtracting"] is None or errors["subtracting"] < 2e-2
    assert checks["select_same_masses_and_counts"] is True
    assert set(result["parts_ms"]) >= {"new_rest_pass", "new_sampled_lse", "old_full_float32", "cudnn_sdpa",
                                      "topk_select_2_heads_kernel", "topk_select_2_heads_torch"}
