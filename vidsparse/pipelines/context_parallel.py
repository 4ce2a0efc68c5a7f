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

`enable_context_parallel(transformer, degree)` does it in one call, on GPUs (NCCL) or CPUs (gloo), in a process
group that `torchrun` or `accelerate launch` started (`vidsparse generate --cp N` calls it):

    >>> vidsparse.apply(pipe, "hybrid")
    >>> enable_context_parallel(pipe.transformer, 2)   # every rank: the same prompts and seeds, H/2 heads each
"""

from __future__ import annotations

import torch

__all__ = ["HUNYUANVIDEO_CP_PLAN", "cp_plan_for", "enable_context_parallel", "rank_order_to_model_order", "ulysses_attention"]


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


def enable_context_parallel(transformer: torch.nn.Module, degree: int) -> None:
    """Put `transformer` under Ulysses context parallelism of `degree` ranks (the whole process group), with its
    plan from `cp_plan_for`: each rank computes every token of heads/degree heads, and vidsparse plans each rank's
    heads itself.

    Done by hand rather than through `transformer.enable_parallelism`, whose device choice
    (`rank % torch.accelerator.device_count()`) divides by zero on a CPU-only machine: the config is resolved on a
    device mesh of this process's device, handed to every processor, and the plan's hooks applied.
    """
    import torch.distributed as dist
    from diffusers import ContextParallelConfig
    from diffusers.hooks.context_parallel import apply_context_parallel
    from diffusers.models._modeling_parallel import ParallelConfig
    from torch.distributed.device_mesh import init_device_mesh

    if not dist.is_available() or not dist.is_initialized():
        raise ValueError("context parallelism needs a process group: launch with `torchrun --nproc-per-node N` or "
                         "`accelerate launch --num-processes N`")
    world, rank = dist.get_world_size(), dist.get_rank()
    if degree != world:
        raise ValueError(f"--cp {degree} needs {degree} processes; this run has {world}: launch with "
                         f"`torchrun --nproc-per-node {degree}`")
    heads = getattr(transformer.config, "num_attention_heads", None)
    if heads is not None and heads % degree:
        raise ValueError(f"the model has {heads} heads, which {degree} ranks cannot split evenly: choose a --cp "
                         "that divides it")
    plan = cp_plan_for(transformer)
    device = next(transformer.parameters()).device
    cp = ContextParallelConfig(ulysses_degree=degree)
    config = ParallelConfig(context_parallel_config=cp)
    mesh = init_device_mesh(device.type, mesh_shape=cp.mesh_shape, mesh_dim_names=cp.mesh_dim_names)
    config.setup(rank, world, device, mesh=mesh)
    transformer._parallel_config = config
    for module in transformer.modules():
        processor = getattr(module, "processor", None)
        if processor is not None and hasattr(processor, "_parallel_config"):
            processor._parallel_config = config
    apply_context_parallel(transformer, cp, plan)


def ulysses_attention(runtime, layer: int, query, key, value, parallel_config, text_len: int = 0, key_padding=None):
    """Attention under diffusers' Ulysses context parallelism, as planned; None where it is not supported
    (the caller runs its stock, parallel dense path).

    Each rank holds S/N tokens of every head, laid out [video_r, text_r] (`text_len` text tokens per rank).
    diffusers' templated Ulysses op swaps that for all S tokens of H/N heads, in rank order [video_0, text_0,
    video_1, text_1, ...], calls the op given here, and swaps back. The op permutes those tokens into the
    model's own order (all video, then all text), where the plan and `key_padding` (`[B, S]`, full length, model
    order) apply, and runs the runtime's own `attention` on its rank's heads (`head_offset`).
    """
    from diffusers.models.attention_dispatch import _templated_context_parallel_attention

    from ..runtime.executor import dense_attention

    cp = parallel_config.context_parallel_config
    heads = query.shape[2]  # query: [B, S/N, H, D]
    if cp.ring_degree > 1 or cp.ulysses_anything or heads % cp.ulysses_degree:
        runtime.fall_back(
            "sparse attention supports plain Ulysses context parallelism only (no ring, no ulysses_anything, "
            "heads divisible by the degree): dense attention"
        )
        runtime.count_dense(layer, heads)
        return None
    world, rank = cp.ulysses_degree, cp._ulysses_local_rank
    order = rank_order_to_model_order(world, query.shape[1], text_len, query.device)
    inverse = torch.argsort(order) if order is not None else None

    def forward_op(ctx, q, k, v, *args, **kwargs):  # q, k, v: [B, S, H/N, D], rank order
        if order is not None:
            q, k, v = q[:, order], k[:, order], v[:, order]
        qh, kh, vh = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        out = runtime.attention(layer, qh, kh, vh, text_len=text_len * world, key_padding=key_padding,
                                head_offset=rank * qh.shape[1])
        if out is None:
            out = dense_attention(qh, kh, vh, key_padding)
        out = out.transpose(1, 2)
        return out if inverse is None else out[:, inverse]

    return _templated_context_parallel_attention(
        query, key, value, forward_op=forward_op, backward_op=None, _parallel_config=parallel_config
    )


def rank_order_to_model_order(world: int, local: int, text_len: int, device) -> torch.Tensor | None:
    """Index that gathers the Ulysses rank order [video_0, text_0, video_1, text_1, ...] into the
    model order [video_0, video_1, ..., text_0, text_1, ...]; None when there is no text."""
    if text_len == 0:
        return None
    video = local - text_len
    starts = torch.arange(world, device=device)[:, None] * local
    video_idx = (starts + torch.arange(video, device=device)).flatten()
    text_idx = (starts + video + torch.arange(text_len, device=device)).flatten()
    return torch.cat([video_idx, text_idx])
