"""`vidsparse generate --model <folder>` on a saved tiny pipeline of each family of issue 22 that `generate` can run
(tests/tiny_pipelines.py builds them offline and says why the others have none), and its refusal, by name, of the
pipelines that need inputs it does not pass."""

import re

import pytest

from tiny_pipelines import FAMILY_PIPELINES, REFUSED_PIPELINES, wan_i2v_pipeline
from vidsparse.app.cli import main

pytestmark = pytest.mark.filterwarnings("ignore:In CPU autocast:UserWarning")  # Mochi's RoPE asks for fp32 autocast

# a sparse step on the tiny grids: own frame only, in blocks of 16, from the first step
SPARSE = ["methods.spatial.frames=0", "methods.spatial.q_block=16", "methods.spatial.k_block=16"]
# HunyuanVideo-1.5's 1,985 context tokens make a sparse step take minutes under the Triton interpreter: dense here
# (its sparse step runs in tests/test_families_b.py)
DENSE = {"hunyuanvideo-1.5-480p"}


@pytest.mark.parametrize("family", FAMILY_PIPELINES)
def test_generate_from_a_saved_tiny_pipeline_folder(family, tmp_path, capsys):
    build, config, flags = FAMILY_PIPELINES[family]
    folder = tmp_path / "model"
    build().save_pretrained(folder)
    out = tmp_path / "out.mp4"
    # flags: options, then a family's own overrides, which the others follow
    method = "dense" if family in DENSE else "spatial"
    assert main(["generate", "--model", str(folder), "--config", config, "--method", method, "--prompt", "a red ball",
                 "--out", str(out), *flags, "generate.dtype=float32", *SPARSE]) == 0
    printed = capsys.readouterr().out
    density = float(re.search(r"realised attention density ([0-9.]+)", printed).group(1))
    assert out.is_file() and (density == 1.0 if method == "dense" else 0.0 < density < 1.0), printed


def test_generate_refuses_an_image_to_video_pipeline_by_the_inputs_it_lacks(tmp_path, capsys):
    folder = tmp_path / "model"
    wan_i2v_pipeline().save_pretrained(folder)
    assert main(["generate", "--model", str(folder), "--config", "wan2.1-i2v-14b-480p", "--steps", "1",
                 "--height", "64", "--width", "96", "--frames", "9", "--out", str(tmp_path / "out.mp4"),
                 "generate.dtype=float32"]) == 2
    assert "WanImageToVideoPipeline needs image, which `vidsparse generate` does not pass" in capsys.readouterr().err


def test_generate_names_ftfy_where_a_pipeline_cleans_prompts_with_it_and_it_is_missing(monkeypatch):
    import sys

    from diffusers import WanPipeline, WanVACEPipeline

    from vidsparse.app.args import CLIError
    from vidsparse.app.loading import _check_prompt_cleaner

    monkeypatch.delitem(vars(sys.modules[WanVACEPipeline.__module__]), "ftfy", raising=False)
    monkeypatch.delitem(vars(sys.modules[WanPipeline.__module__]), "ftfy", raising=False)
    with pytest.raises(CLIError, match="WanVACEPipeline cleans its prompts with ftfy, which is not installed: pip install ftfy"):
        _check_prompt_cleaner(WanVACEPipeline)
    _check_prompt_cleaner(WanPipeline)  # its cleaning calls ftfy only where it is available


@pytest.mark.parametrize("pipeline_class", REFUSED_PIPELINES, ids=lambda c: c.__name__)
def test_required_call_arguments_are_named(pipeline_class):
    from vidsparse.app.args import CLIError
    from vidsparse.app.loading import _check_required

    with pytest.raises(CLIError, match=f"needs {REFUSED_PIPELINES[pipeline_class]}, which"):
        _check_required(pipeline_class, {"num_inference_steps": 1})
