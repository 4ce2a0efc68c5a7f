"""Context-parallel plans vidsparse supplies where diffusers has none.

diffusers 0.42.1 ships a `_cp_plan` for Wan but not for HunyuanVideo. `cp_plan_for(transformer)`
returns the model's own plan, or vidsparse's:

    >>> transformer.enable_parallelism(config=ContextParallelConfig(ulysses_degree=2),
    ...                                cp_plan=vidsparse.pipelines.cp_plan_for(transformer))

HunyuanVideo's plan splits the video and the text tokens across ranks at the first dual-stream
block (so each rank holds [video_r, text_r]), splits the RoPE table with the video, keeps the
attention mask whole, and gathers the video at the output projection. Under it, the stock
processors would apply the whole mask to keys in rank order, which is wrong with padded text;
vidsparse's processors permute keys into model order first, dense or sparse, so HunyuanVideo's
context parallelism needs vidsparse installed (any config, "dense" included). The video and text
token counts must both divide by the degree.
"""

from __future__ import annotations

import torch

__all__ = ["HUNYUANVIDEO_CP_PLAN", "cp_plan_for"]


def _hunyuan_plan() -> dict:
    from diffusers.models._modeling_parallel import ContextParallelInput, ContextParallelOutput

    return {
        "rope": {
            0: ContextParallelInput(split_dim=0, expected_dims=2, split_output=True),
            1: ContextParallelInput(split_dim=0, expected_dims=2, split_output=True),
        },
        "transformer_blocks.0": {
            "hidden_states": ContextParallelInput(split_dim=1, expected_dims=3, split_output=False),
            "encoder_hidden_states": ContextParallelInput(split_dim=1, expected_dims=3, split_output=False),
        },
        "proj_out": ContextParallelOutput(gather_dim=1, expected_dims=3),
    }


def cp_plan_for(transformer: torch.nn.Module) -> dict:
    """The context-parallel plan to pass to `enable_parallelism`: the model's own, or vidsparse's."""
    plan = getattr(transformer, "_cp_plan", None)
    if plan is not None:
        return plan
    if type(transformer).__name__ == "HunyuanVideoTransformer3DModel":
        return HUNYUANVIDEO_CP_PLAN()
    raise ValueError(f"no context-parallel plan for {type(transformer).__name__}, from diffusers or vidsparse")


HUNYUANVIDEO_CP_PLAN = _hunyuan_plan  # a function: diffusers is imported when it is called
