"""The cached-delta method (Chipmunk): refresh and delta modes against full attention, per-branch state, resets,
and the memory budgets."""

import math

import pytest
import torch

from vidsparse.core.state import LayerState
from tiny_models import hunyuan_pipeline, wan_inputs, wan_transformer

import vidsparse
from vidsparse import SparseConfig
from vidsparse.core.layout import TokenLayout
from vidsparse.runtime.runtime import SparseRuntime
from vidsparse.core.plan import PlanContext, Probe
from vidsparse.methods.base import planner_for

SMALL = dict(q_block=16, voxel=(2, 2, 4), rows_per_block=8)


def _full(q, k, v, key_padding=None):
    scores = (q.double() @ k.double().transpose(-1, -2)) / math.sqrt(q.shape[-1])
    if key_padding is not None:
        scores = scores.masked_fill(key_padding[:, None, None, :], float("-inf"))
    return scores.softmax(-1) @ v.double()


def _step(runtime, planner, state, layout, step, q, k, v, key_padding=None):
    ctx = PlanContext(0, step, None, layout, q.shape[1], q.device, state=state)
    plan = planner.plan(ctx, Probe(q, k, v, layout, key_padding))
    return plan.groups[0].mode, runtime.execute(plan, q, k, v, layout, key_padding, state=state, layer=0)


def _setup(layout, **options):
    config = SparseConfig.make("delta", refresh_steps=[0], **{**SMALL, **options})
    planner = planner_for(config)
    return SparseRuntime(config, planner, "test", layout.text_position), planner


LAYOUTS = [TokenLayout(3, 5, 7, text_len=9, text_position="end"), TokenLayout(4, 4, 6, text_len=12)]


@pytest.mark.parametrize("layout", LAYOUTS, ids=str)
def test_delta_with_every_key_a_column_equals_full_attention(layout):
    gen = torch.Generator().manual_seed(0)
    runtime, planner = _setup(layout, top_keys=1.0)
    padding = None
    if layout.text_position == "end":
        padding = torch.zeros(2, layout.seq_len, dtype=torch.bool)
        padding[1, -3:] = True
    state = LayerState()
    q, k, v = (torch.randn(2, 3, layout.seq_len, 64, generator=gen) for _ in range(3))
    mode, out = _step(runtime, planner, state, layout, 0, q, k, v, padding)
    assert mode == "refresh"
    torch.testing.assert_close(out.double(), _full(q, k, v, padding), atol=2e-5, rtol=1e-4)
    q2, k2, v2 = (torch.randn(2, 3, layout.seq_len, 64, generator=gen) for _ in range(3))  # a later step's inputs
    mode, out = _step(runtime, planner, state, layout, 1, q2, k2, v2, padding)
    assert mode == "delta"
    torch.testing.assert_close(out.double(), _full(q2, k2, v2, padding), atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("layout", LAYOUTS, ids=str)
def test_delta_at_unchanged_inputs_returns_the_refresh_output(layout):
    gen = torch.Generator().manual_seed(1)
    runtime, planner = _setup(layout, top_keys=0.1)
    state = LayerState()
    q, k, v = (torch.randn(1, 2, layout.seq_len, 64, generator=gen) for _ in range(3))
    _, refreshed = _step(runtime, planner, state, layout, 0, q, k, v)
    mode, delta = _step(runtime, planner, state, layout, 1, q, k, v)
    assert mode == "delta"
    torch.testing.assert_close(delta, refreshed, atol=2e-5, rtol=1e-4)
    # and it is not full attention of other inputs: the cached rest is really used
    q2 = q + 0.5 * torch.randn(q.shape, generator=gen)
    _, moved = _step(runtime, planner, state, layout, 2, q2, k, v)
    exact = _full(q2, k, v)
    err = ((moved.double() - exact).norm() / exact.norm()).item()
    assert 1e-4 < err < 0.5


def test_budgets_offload_or_refresh_and_offloaded_equals_resident():
    layout = LAYOUTS[1]
    gen = torch.Generator().manual_seed(2)
    steps = [tuple(torch.randn(1, 2, layout.seq_len, 64, generator=gen) for _ in range(3)) for _ in range(3)]
    outs = {}
    for name, budgets in {"resident": {}, "offloaded": dict(cache_budget=0),
                          "refused": dict(cache_budget=0, host_budget=0)}.items():
        runtime, planner = _setup(layout, top_keys=0.2, **budgets)
        state = LayerState()
        outs[name] = [_step(runtime, planner, state, layout, i, *qkv) for i, qkv in enumerate(steps)]
        outs[name + ":report"] = runtime.report()["planner"]["delta_cache"]
    assert [m for m, _ in outs["resident"]] == ["refresh", "delta", "delta"]
    for (_, a), (_, b) in zip(outs["resident"], outs["offloaded"]):
        assert torch.equal(a, b)
    assert outs["offloaded:report"]["offloaded"] == ["0"] and outs["resident:report"]["offloaded"] == []
    # no cache: the refresh's output, then dense (cheaper than refreshing at every step), and the report says so
    assert [m for m, _ in outs["refused"]] == ["refresh", "dense", "dense"]
    assert outs["refused:report"]["uncached"] == ["0"]
    for (_, out), (q, k, v) in zip(outs["refused"], steps):
        torch.testing.assert_close(out.double(), _full(q, k, v), atol=2e-5, rtol=1e-4)


def test_delta_caches_per_cfg_branch_and_resets_between_generations():
    pipe = hunyuan_pipeline()
    config = SparseConfig.make("delta", refresh_steps=[0], top_keys=0.3, **SMALL)
    handle = vidsparse.apply(pipe, config)
    kwargs = dict(num_inference_steps=3, height=80, width=112, num_frames=9, output_type="latent",
                  prompt="a red circle", negative_prompt="blue", true_cfg_scale=5.0, max_sequence_length=16)
    from tiny_models import HUNYUAN_PROMPT_TEMPLATE

    kwargs["prompt_template"] = HUNYUAN_PROMPT_TEMPLATE
    seen = {}
    runtime = handle.runtimes[0]
    record = runtime.record

    def recording(layer, plan, heads, device):
        if plan is not None and layer == 0:
            entry = runtime.state.layer(0).delta
            seen.setdefault(runtime.branch, []).append((plan.groups[0].mode, None if entry is None else entry))
        return record(layer, plan, heads, device)

    runtime.record = recording
    with torch.no_grad():
        first = pipe(generator=torch.Generator().manual_seed(0), **kwargs).frames
    assert set(seen) == {"cond", "uncond"}
    for branch in seen:
        assert [mode for mode, _ in seen[branch]] == ["refresh", "delta", "delta"]
    cond_cache, uncond_cache = seen["cond"][1][1], seen["uncond"][1][1]
    assert cond_cache is not uncond_cache and not torch.equal(cond_cache.tensors[0], uncond_cache.tensors[0])
    hook_states = [m for m in vars(_step_hook(pipe.transformer)).values() if hasattr(m, "_state_cache")]
    assert hook_states and all(not m._state_cache for m in hook_states)  # the pipeline reset them after the call
    seen.clear()
    with torch.no_grad():
        second = pipe(generator=torch.Generator().manual_seed(0), **kwargs).frames
    assert [mode for mode, _ in seen["cond"]] == ["refresh", "delta", "delta"]  # a fresh cache: refreshed again
    assert torch.equal(first, second)
    report = handle.report()
    assert 0.0 < report["density"] < 1.0
    handle.remove()


def _step_hook(transformer):
    from diffusers.hooks import HookRegistry

    from vidsparse.pipelines.hooks import HOOK_NAME

    return HookRegistry.check_if_exists_or_initialize(transformer).get_hook(HOOK_NAME)


def test_delta_at_full_columns_in_a_model_equals_stock():
    model = wan_transformer()
    inputs = wan_inputs(model)
    with torch.no_grad():
        stock = model(**inputs, return_dict=False)[0]
    with vidsparse.apply(model, SparseConfig.make("delta", top_keys=1.0, refresh_steps=[0], **SMALL)) as handle:
        with torch.no_grad():
            refresh = model(**inputs, return_dict=False)[0]
            delta = model(**inputs, return_dict=False)[0]  # step 1: a delta step over every key
        modes = handle.report()["heads"]["choices"]
    rel = lambda a, b: ((a - b).double().norm() / b.double().norm()).item()  # noqa: E731
    assert rel(refresh, stock) < 1e-5 and rel(delta, stock) < 1e-5
    assert all(set(head) == {"refresh", "delta"} for layer in modes for head in layer)


@pytest.mark.parametrize("layout", LAYOUTS, ids=str)
def test_the_fused_and_triton_refreshes_equal_the_reference_refresh(layout):
    """The sdpa backend on the CPU refreshes in one pass (full attention, the columns and the cached rest from one
    score matrix, `attention_topk_and_rest`), and the Triton backend without any full attention (the columns from
    the sampled rows' own log-sum-exp, then the rest as one pass that leaves them out, merged with theirs): the
    output, the columns and the cached rest of the reference backend's four calls. (The rest at r = 0.99: the next
    test.)"""
    gen = torch.Generator().manual_seed(4)
    padding = None
    if layout.text_position == "end":
        padding = torch.zeros(2, layout.seq_len, dtype=torch.bool)
        padding[1, -3:] = True
    q, k, v = (torch.randn(2, 3, layout.seq_len, 64, generator=gen) for _ in range(3))
    results = []
    for backend in ("sdpa", "triton", "reference"):
        runtime, planner = _setup(layout, top_keys=0.2, backend=backend)
        state = LayerState()
        mode, out = _step(runtime, planner, state, layout, 0, q, k, v, padding)
        assert mode == "refresh"
        results.append((out, state.delta))
    *fused, (expect, expect_entry) = results
    for out, entry in fused:
        torch.testing.assert_close(out, expect, atol=1e-5, rtol=1e-5)
        assert torch.equal(entry.column_lists(), expect_entry.column_lists())
        assert torch.equal(entry.counts, expect_entry.counts) and entry.columns.dtype == torch.int16
        torch.testing.assert_close(entry.o_rest, expect_entry.o_rest, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(entry.lse_rest, expect_entry.lse_rest, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", ["reference", "sdpa", "auto", "triton"])
def test_the_cached_rest_at_r_099_is_float32_accurate_in_the_merged_output(backend):
    """bf16 q, k, v whose columns hold 99% of each row's mass (issue 23, defect 5). The reference backend computes the
    rest as `(o - r o_k) / (1 - r)`, which amplifies the rounding of o and o_k a hundredfold, so it subtracts float32
    outputs; the sdpa backend (on the CPU) takes it from one float32 score matrix; the Triton kernels ("auto" here:
    the interpreter) compute it directly, as one pass that leaves the columns out. Each way, the cached rest's error
    in the merged output is its own rounding (bf16, weighted by its 1% share) plus float32 rounding."""
    layout = TokenLayout(2, 4, 8, text_len=0)
    runtime, planner = _setup(layout, top_keys=0.0625, voxel=(1, 1, 1), backend=backend)  # model order
    gen = torch.Generator().manual_seed(0)
    b, h, s, d = 2, 2, layout.seq_len, 64
    u = torch.randn(d, generator=gen)
    u = u / u.norm()
    q = (16 * u + 0.3 * torch.randn(b, h, s, d, generator=gen)).bfloat16()
    k = torch.randn(b, h, s, d, generator=gen) * 0.3
    hot = torch.randperm(s, generator=gen)[:4]
    k[:, :, hot] += 3.73 * u  # four keys every query attends to: about 99% of the mass
    k, v = k.bfloat16(), torch.randn(b, h, s, d, generator=gen).bfloat16()
    state = LayerState()
    mode, _ = _step(runtime, planner, state, layout, 0, q, k, v)
    assert mode == "refresh"
    entry = state.delta
    # the exact rest over the keys outside each query block's columns, from the same bf16 inputs, in float64
    scores = (q.double() @ k.double().transpose(-1, -2)) / math.sqrt(d)
    blocks = torch.arange(s) // 16
    listed = torch.zeros(b, h, s, s, dtype=torch.bool)
    for i in range(s // 16):
        cols = entry.column_lists()[:, :, i].long()
        live = torch.arange(cols.shape[-1]) < entry.counts[:, :, i, None]
        rows = listed[:, :, blocks == i]
        rows.scatter_(-1, cols.unsqueeze(2).expand(-1, -1, rows.shape[2], -1), live.unsqueeze(2).expand(-1, -1, rows.shape[2], -1))
        listed[:, :, blocks == i] = rows
    share = (scores.masked_fill(~listed, float("-inf")).logsumexp(-1) - scores.logsumexp(-1)).exp()  # r per row
    assert 0.97 < share.min() and share.max() < 0.997 and 0.985 < share.mean() < 0.995
    exact = scores.masked_fill(listed, float("-inf")).softmax(-1) @ v.double()
    full = scores.softmax(-1) @ v.double()
    error = ((1 - share).unsqueeze(-1) * (entry.o_rest.double() - exact)).norm(dim=-1)  # in the merged output
    # the Triton kernels round p to bf16 for the PV product: the rest's own rounding, as large as its storage's and
    # not amplified (subtracting bf16 outputs made it 300x this bound)
    rounding = 2.0**-8 * (2 if backend in ("auto", "triton") else 1)
    bound = (1 - share) * exact.norm(dim=-1) * rounding + 16 * torch.finfo(torch.float32).eps * full.norm(dim=-1)
    assert entry.o_rest.dtype == torch.bfloat16
    assert (error <= bound).all(), (error / bound).max()
    lse_rest = scores.masked_fill(listed, float("-inf")).logsumexp(-1)
    # lse_rest = lse + log(1 - r): float32's rounding of the two lse, amplified by 1 / (1 - r)
    eps = torch.finfo(torch.float32).eps
    assert ((entry.lse_rest.double() - lse_rest).abs() <= 8 * eps * (1 + lse_rest.abs()) / (1 - share)).all()


def _voxel_permutation(layout: TokenLayout, voxel) -> torch.Tensor:
    """int64 `[S]`: the model-order token at each position of the voxel order, built from the definition alone:
    chunk after chunk (frame-major over the chunks), frame-major inside a chunk, text in place."""
    vt, vh, vw = voxel
    coords = [(t, h, w) for t in range(layout.frames) for h in range(layout.height) for w in range(layout.width)]
    video = sorted(range(len(coords)), key=lambda i: (
        coords[i][0] // vt, coords[i][1] // vh, coords[i][2] // vw, coords[i][0] % vt, coords[i][1] % vh,
        coords[i][2] % vw))
    perm = torch.arange(layout.seq_len)
    perm[layout.video_start : layout.video_start + layout.video_len] = torch.tensor(video) + layout.video_start
    return perm


@pytest.mark.parametrize("layout", [TokenLayout(3, 5, 6, text_len=6), TokenLayout(3, 5, 6, text_len=6,
                                                                                   text_position="end")], ids=str)
def test_a_delta_step_is_the_column_delta_of_voxel_blocks(layout):
    """Refresh and delta steps work on query blocks of the voxel order: against the delta step's math done in
    PyTorch on tokens permuted into voxel order, with new inputs at the delta step and a quarter of the keys."""
    voxel, q_block, top_keys = (2, 2, 4), 16, 0.25
    perm = _voxel_permutation(layout, voxel)
    assert not torch.equal(perm, torch.arange(layout.seq_len))  # voxel blocks are not runs of the model order
    assert layout.seq_len % q_block == 0  # every row of every block sampled: the columns are the exact top-K
    runtime, planner = _setup(layout, top_keys=top_keys, voxel=voxel, q_block=q_block, rows_per_block=q_block)
    gen = torch.Generator().manual_seed(4)
    b, h, s, d = 2, 2, layout.seq_len, 64
    refresh, now = [tuple(torch.randn(b, h, s, d, generator=gen) for _ in range(3)) for _ in range(2)]
    state = LayerState()
    assert _step(runtime, planner, state, layout, 0, *refresh)[0] == "refresh"
    mode, out = _step(runtime, planner, state, layout, 1, *now)
    assert mode == "delta"

    # the reference, in voxel order, in float64
    text = torch.zeros(s, dtype=torch.bool)
    text[slice(*layout.text_range)] = True
    text = text[perm]
    q, k, v = (x.double()[:, :, perm] for x in refresh)
    scores = q @ k.transpose(-1, -2) / math.sqrt(d)
    blocks = torch.arange(s) // q_block
    probs = scores.softmax(-1)
    mass = torch.stack([probs[:, :, blocks == i].sum(2) for i in range(s // q_block)], 2)  # [B, H, nQ, S]
    count = round(top_keys * layout.video_len)
    top = mass.masked_fill(text, -1.0).topk(count, -1).indices  # [B, H, nQ, K] voxel positions
    listed = torch.zeros(b, h, s // q_block, s, dtype=torch.bool).scatter_(-1, top, True)[:, :, blocks] | text
    rest = scores.masked_fill(listed, float("-inf"))
    o_rest, lse_rest = rest.softmax(-1) @ v, rest.logsumexp(-1)
    q2, k2, v2 = (x.double()[:, :, perm] for x in now)
    part = (q2 @ k2.transpose(-1, -2) / math.sqrt(d)).masked_fill(~listed, float("-inf"))
    o_k, lse_k = part.softmax(-1) @ v2, part.logsumexp(-1)
    total = torch.logaddexp(lse_rest, lse_k)
    expect = (lse_rest - total).exp().unsqueeze(-1) * o_rest + (lse_k - total).exp().unsqueeze(-1) * o_k
    expect = expect[:, :, torch.argsort(perm)]  # back to model order

    cached = state.delta.column_lists().long().sort(-1).values
    assert (state.delta.counts == count).all() and torch.equal(cached, top.sort(-1).values)
    torch.testing.assert_close(out.double(), expect, atol=2e-5, rtol=1e-4)
    assert ((out.double() - _full(*now)).norm() / _full(*now).norm()).item() > 1e-2  # the cached rest counts


def test_a_refreshed_entry_keeps_its_lists_packed():
    """A refresh stores its column lists packed (int16 and their wraps): 2 bytes a column in `nbytes`, the wraps in
    `tensors` (so that offloading and narrowing move them too), and `column_lists()` gives the ascending int32
    lists back; the delta step after it reads them packed."""
    layout = LAYOUTS[1]
    runtime, planner = _setup(layout, top_keys=0.3)
    q, k, v = (torch.randn(1, 2, layout.seq_len, 64, generator=torch.Generator().manual_seed(i)) for i in range(3))
    state = LayerState()
    assert _step(runtime, planner, state, layout, 0, q, k, v)[0] == "refresh"
    entry = state.delta
    assert entry.columns.dtype == torch.int16 and len(entry.tensors) == 5
    assert entry.wraps.shape == (*entry.counts.shape, 0)  # S < 2^16: no wrap position
    lists = entry.column_lists()
    assert lists.dtype == torch.int32 and (lists.diff(dim=-1)[..., : int(entry.counts.min()) - 1] > 0).all()
    plain = sum(t.numel() * t.element_size() for t in (entry.o_rest, entry.lse_rest, entry.counts, entry.wraps))
    assert entry.nbytes == plain + 2 * entry.columns.numel()
    assert _step(runtime, planner, state, layout, 1, q, k, v)[0] == "delta"
