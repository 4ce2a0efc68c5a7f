"""Dynamic block attention: the Hilbert token order, the block scores (Triton against the PyTorch reference under
TRITON_INTERPRET=1), the top-p selection against a brute-force reference, and the "dynamic" method's plans, its
mask reuse schedule and its equality with dense attention at top_p = 1."""

import itertools

import pytest
import torch

from vidsparse.core.layout import HILBERT, TokenLayout, TokenOrder, hilbert_index
from vidsparse.kernels import permute_tokens


# ---------------------------------------------------------------------------- the Hilbert order
@pytest.mark.parametrize("dims,bits", [(2, 3), (3, 1), (3, 2), (3, 3)])
def test_hilbert_index_is_a_curve_of_unit_steps(dims, bits):
    side = 1 << bits
    grid = torch.stack(torch.meshgrid(*[torch.arange(side)] * dims, indexing="ij")).reshape(dims, -1)
    index = hilbert_index(grid, bits)
    assert sorted(index.tolist()) == list(range(side**dims))  # a bijection onto 0..side^n-1
    path = grid[:, torch.argsort(index)]
    steps = (path[:, 1:] - path[:, :-1]).abs().sum(0)
    assert (steps == 1).all()  # every next point is a grid neighbour


@pytest.mark.parametrize("grid,text_len,position", [((5, 7, 9), 13, "end"), ((3, 6, 11), 40, "start"),
                                                    ((1, 1, 1), 0, "start"), ((33, 45, 80), 256, "end")])
def test_hilbert_order_round_trips_and_leaves_text_in_place(grid, text_len, position):
    layout = TokenLayout(*grid, text_len=text_len, text_position=position)
    perm, inv = HILBERT.permutation(layout), HILBERT.inverse(layout)
    s = layout.seq_len
    assert sorted(perm.tolist()) == list(range(s))
    assert torch.equal(perm[inv], torch.arange(s)) and torch.equal(inv[perm], torch.arange(s))
    if layout.text_range is not None:
        a, b = layout.text_range
        assert torch.equal(perm[a:b], torch.arange(a, b))
    assert str(HILBERT) == "hilbert" and TokenOrder.hilbert() == HILBERT and not HILBERT.is_identity


def test_hilbert_order_keeps_blocks_compact_on_a_ragged_grid():
    # 33 x 45 x 80 (HunyuanVideo 720p): 128-token runs stay close to their centroid, far closer than frame-major
    layout = TokenLayout(33, 45, 80)
    coords = torch.stack(layout.video_coords(), 1).float()

    def spread(order):
        pts = coords[order.video_order(layout)][: layout.video_len // 128 * 128].view(-1, 128, 3)
        return (pts - pts.mean(1, keepdim=True)).norm(dim=-1).mean().item()

    assert spread(HILBERT) < 0.6 * spread(TokenOrder.voxel(4, 4, 8)) < 0.2 * spread(TokenOrder("frame"))


def test_hilbert_order_runs_on_the_gather_kernel():
    layout = TokenLayout(3, 5, 7, text_len=9, text_position="end")
    x = torch.randn(2, 3, layout.seq_len, 64)
    perms = HILBERT.permutation(layout).view(1, -1)
    y = permute_tokens(x, perms)
    assert torch.equal(y, x[:, :, perms[0]])
    assert torch.equal(permute_tokens(y, perms, inverse=True), x)


# ---------------------------------------------------------------------------- block scores
from vidsparse.kernels.block_scores import (  # noqa: E402
    block_scores, block_scores_reference, estimate_block_mass, estimate_block_mass_reference, key_block_bias,
    pool_blocks, pool_blocks_reference,
)


def _qk(layout, batch=2, heads=3, dim=64, dtype=torch.bfloat16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    # [B, S, H, D] transposed: the strides of a diffusers processor's q and k
    return [torch.randn(batch, layout.seq_len, heads, dim, generator=gen).to(dtype).transpose(1, 2) for _ in range(2)]


@pytest.mark.parametrize("block", [16, 32])
def test_pool_blocks_kernel_equals_reference(block):
    layout = TokenLayout(3, 5, 7, text_len=20, text_position="end")  # S = 125: a ragged last block
    q, k = _qk(layout)
    perm = HILBERT.permutation(layout)
    pad = torch.zeros(2, layout.seq_len, dtype=torch.bool)
    pad[1, -9:] = True  # batch element 1 pads its last 9 text tokens
    pad[0, -block:] = True  # batch element 0 pads a whole block: it pools to zeros
    for kwargs in ({}, {"perm": perm}, {"perm": perm, "key_padding": pad}, {"key_padding": pad}):
        got = pool_blocks(k, block, **kwargs)
        want = pool_blocks_reference(k, block, **kwargs)
        assert got.shape == (2, 3, -(-layout.seq_len // block), 64) and got.dtype == torch.float32
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    # the mean is over live keys only: a block of one live key pools to that key
    one = pool_blocks(k[:1], block, key_padding=torch.arange(layout.seq_len).view(1, -1) != 0)
    torch.testing.assert_close(one[0, :, 0], k[0, :, 0].float())


def test_block_scores_kernel_equals_reference_and_float64():
    layout = TokenLayout(4, 6, 9, text_len=40, text_position="start")  # S = 256, text over two blocks of 32
    q, k = _qk(layout, dtype=torch.float32)
    perm = HILBERT.permutation(layout)
    pad = torch.zeros(2, layout.seq_len, dtype=torch.bool)
    pad[0, 30:40] = True
    probs, pooled_k = estimate_block_mass(q, k, 32, 32, perm=perm, key_padding=pad, text=layout.text_range)
    ref, ref_k = estimate_block_mass_reference(q, k, 32, 32, perm=perm, key_padding=pad, text=layout.text_range)
    torch.testing.assert_close(pooled_k, ref_k)
    torch.testing.assert_close(probs, ref, rtol=1e-5, atol=1e-6)
    # against float64 from first principles: block means along the Hilbert order, log of the live-key counts
    xq, xk = q.double()[:, :, perm], k.double()[:, :, perm]
    live = (~pad[:, perm]).double()
    mq = xq.view(2, 3, 8, 32, 64).mean(3)
    nk = live.view(2, 8, 32).sum(-1)
    mk = (xk * live[:, None, :, None]).view(2, 3, 8, 32, 64).sum(3) / nk[:, None, :, None]
    logits = mq @ mk.transpose(-1, -2) / 8.0 + nk.log()[:, None, None, :]
    logits[..., :2] = float("-inf")  # text blocks 0 and 1 are not scored
    torch.testing.assert_close(probs.double(), torch.softmax(logits, -1), rtol=1e-4, atol=1e-6)
    assert (probs[..., :2] == 0).all()
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, 3, 8))


def test_block_scores_rows_without_live_keys_are_zero_and_inputs_are_checked():
    pq = torch.randn(1, 2, 5, 16)
    pk = torch.randn(1, 2, 70, 16)  # more key blocks than one tile of the kernel's loop
    bias = torch.zeros(1, 70)
    torch.testing.assert_close(block_scores(pq, pk, bias, 0.25), block_scores_reference(pq, pk, bias, 0.25))
    dead = torch.full((1, 70), float("-inf"))
    assert (block_scores(pq, pk, dead, 0.25) == 0).all()
    with pytest.raises(ValueError, match="float32"):
        block_scores(pq.half(), pk, bias, 0.25)
    with pytest.raises(ValueError, match="key_bias"):
        block_scores(pq, pk, bias[:, :5], 0.25)
    with pytest.raises(ValueError, match="power of two"):
        pool_blocks(torch.randn(1, 1, 40, 16), 24)
    bias = key_block_bias(40, 16, text=(32, 40))
    assert bias[0, 2] == float("-inf") and torch.allclose(bias[0, :2], torch.tensor(16.0).log())


# ---------------------------------------------------------------------------- top-p selection
from vidsparse.methods.dynamic import DynamicPlanner, forced_blocks, pooled_drift, top_p_blocks  # noqa: E402
import math  # noqa: E402


def _brute_force_count(p, forced, top_p):
    """The fewest blocks of a set that holds every forced block and at least top_p of the row's mass."""
    n = len(p)
    total = sum(p)
    must = [j for j in range(n) if forced[j]]
    rest = [j for j in range(n) if not forced[j]]
    for size in range(len(must), n + 1):
        for extra in itertools.combinations(rest, size - len(must)):
            if sum(p[j] for j in must + list(extra)) >= top_p * total * (1 - 1e-9):
                return size
    return n


@pytest.mark.parametrize("top_p", [0.3, 0.7, 0.9, 0.99])
def test_top_p_blocks_are_the_fewest_that_reach_the_mass(top_p):
    gen = torch.Generator().manual_seed(int(top_p * 100))
    probs = torch.softmax(3 * torch.randn(2, 3, 6, 7, generator=gen, dtype=torch.float64), -1)
    forced = torch.rand(6, 7, generator=gen) < 0.15
    kept = top_p_blocks(probs, top_p, forced)
    assert (kept | ~forced).all()  # forced blocks always kept
    mass = (probs * kept).sum(-1)
    assert (mass >= top_p * (1 - 1e-9)).all()
    for b, h, i in itertools.product(range(2), range(3), range(6)):
        want = _brute_force_count(probs[b, h, i].tolist(), forced[i].tolist(), top_p)
        assert int(kept[b, h, i].sum()) == want, (b, h, i)


def test_top_p_blocks_per_head_budget_and_bounds():
    gen = torch.Generator().manual_seed(1)
    probs = torch.softmax(torch.randn(1, 2, 4, 10, generator=gen), -1)
    none = torch.zeros(4, 10, dtype=torch.bool)
    per_head = top_p_blocks(probs, torch.tensor([0.5, 1.0]), none)
    assert torch.equal(per_head[:, 0], top_p_blocks(probs, 0.5, none)[:, 0])
    assert per_head[:, 1].all()  # top_p 1: every block
    assert (top_p_blocks(probs, 0.999, none, max_blocks=3).sum(-1) == 3).all()
    assert (top_p_blocks(probs, 0.01, none, min_blocks=4).sum(-1) == 4).all()
    forced = torch.zeros(4, 10, dtype=torch.bool)
    forced[:, :5] = True  # five forced blocks pass max_blocks = 2 and are kept
    assert (top_p_blocks(probs, 0.999, forced, max_blocks=2).sum(-1) == 5).all()


def test_forced_blocks_are_the_diagonal_the_sink_and_the_text():
    layout = TokenLayout(2, 4, 5, text_len=20, text_position="start")  # S = 60, video from 20
    f = forced_blocks(layout, 16, 16, sink=True)
    assert f.shape == (4, 4)
    assert f[:, 0].all() and f[:, 1].all()  # text in blocks 0 and 1 (tokens 0-19)
    assert f[:, 2].all()  # the sink: the first block wholly past the text
    assert f[3, 3] and not f[0, 3]  # own block
    g = forced_blocks(TokenLayout(2, 4, 5), 32, 16, sink=False)  # S = 40: query block 1 is ragged (32-39)
    assert g.tolist() == [[True, True, False], [False, False, True]]


# ---------------------------------------------------------------------------- the method
from vidsparse.core.state import LayerState  # noqa: E402
from vidsparse.runtime.runtime import SparseRuntime  # noqa: E402

import torch.nn.functional as F  # noqa: E402

from vidsparse.core.plan import PlanContext, Probe  # noqa: E402
from vidsparse.methods.config import PRESETS, SparseConfig  # noqa: E402
from vidsparse.methods.base import planner_for  # noqa: E402
from vidsparse.runtime.runtime import SparseRuntime  # noqa: E402


def _layer_state():
    return LayerState()


def _local_qkv(layout, batch=2, heads=2, dim=64, seed=0, sharp=4.0):
    """q, k, v whose attention is local in the grid: a smooth function of (t, h, w) shared by q and k."""
    gen = torch.Generator().manual_seed(seed)
    t, h, w = (c.float() for c in layout.video_coords())
    freq = torch.randn(3, dim // 2, generator=gen) * 0.7
    angle = torch.stack([t, h, w], 1) @ freq  # [V, dim/2]
    pos = torch.cat([angle.sin(), angle.cos()], 1) * sharp / math.sqrt(dim) ** 0.5
    x = [torch.randn(batch, heads, layout.seq_len, dim, generator=gen) for _ in range(3)]
    a = layout.video_start
    for y in x[:2]:
        y[:, :, a : a + layout.video_len] += pos
    return x


def _plan(planner, layout, q, k, v, state=None, layer=0, step=0, key_padding=None):
    ctx = PlanContext(layer, step, "cond", layout, q.shape[1], q.device, 20, state)
    return planner.plan(ctx, Probe(q, k, v, layout, key_padding))


def test_dynamic_plan_is_one_hilbert_group_with_ascending_indices_and_device_densities():
    layout = TokenLayout(3, 6, 8, text_len=24, text_position="end")  # S = 168
    q, k, v = _local_qkv(layout)
    planner = planner_for(SparseConfig.make("dynamic", top_p=0.6, q_block=16, k_block=16))
    plan = _plan(planner, layout, q, k, v)
    (g,) = plan.groups
    assert g.mode == "sparse" and g.orders == (HILBERT,) and g.labels == ("dynamic",)
    assert isinstance(g.density, torch.Tensor) and g.density.shape == (2, 2)
    m = g.mask
    assert m.batch == 2 and m.text == layout.text_range
    blocks = m.to_blocks()
    text_rows = slice(layout.video_len // 16, None)
    assert blocks[:, :, text_rows].all()  # text queries dense
    assert blocks[..., layout.video_len // 16 :].all()  # text keys kept
    assert blocks[..., 0].all()  # the sink
    assert blocks.diagonal(dim1=-2, dim2=-1).all()
    live = torch.arange(m.kv_indices.shape[-1]) < m.kv_num_blocks.unsqueeze(-1)
    steps = m.kv_indices.diff(dim=-1)
    assert (steps[live[..., 1:]] > 0).all()  # ascending where live
    torch.testing.assert_close(g.density, m.density_per_head())
    assert 0.2 < float(g.density.mean()) < 0.9  # local attention: a real selection, neither nothing nor all


def test_top_p_one_equals_dense_attention():
    layout = TokenLayout(3, 5, 7, text_len=20, text_position="end")  # S = 125, ragged blocks
    q, k, v = _local_qkv(layout, seed=3)
    pad = torch.zeros(2, layout.seq_len, dtype=torch.bool)
    pad[1, -6:] = True  # padded text keys, as HunyuanVideo's
    cfg = SparseConfig.make("dynamic", top_p=1.0, q_block=16, k_block=16)
    planner = planner_for(cfg)
    plan = _plan(planner, layout, q, k, v, key_padding=pad)
    assert plan.groups[0].mask.to_blocks().all()
    runtime = SparseRuntime(cfg, planner, "test", "end")
    out = runtime.execute(plan, q, k, v, layout, pad)
    want = F.scaled_dot_product_attention(q.double(), k.double(), v.double(), attn_mask=~pad[:, None, None, :])
    eager = F.scaled_dot_product_attention(q, k, v, attn_mask=~pad[:, None, None, :])
    err = (out.double() - want).abs().max()
    assert err <= 4 * (eager.double() - want).abs().max() + 1e-6


def test_dynamic_attention_beats_a_random_mask_of_the_same_density():
    layout = TokenLayout(4, 6, 8, text_len=0)  # S = 192, no text
    q, k, v = _local_qkv(layout, batch=1, sharp=6.0, seed=5)
    planner = planner_for(SparseConfig.make("dynamic", top_p=0.7, q_block=16, k_block=16, sink=False))
    plan = _plan(planner, layout, q, k, v)
    mask = plan.groups[0].mask
    density = mask.density()
    perm = HILBERT.permutation(layout)
    dense = F.scaled_dot_product_attention(q, k, v)

    def error(m):
        qp, kp, vp = (x[:, :, perm] for x in (q, k, v))
        out = F.scaled_dot_product_attention(qp, kp, vp, attn_mask=m.to_dense())
        return ((out[:, :, torch.argsort(perm)] - dense).norm() / dense.norm()).item()

    from vidsparse import SparseMask
    gen = torch.Generator().manual_seed(0)
    random = SparseMask.random(density, 2, layout.seq_len, 16, 16, generator=gen)
    assert error(mask) < 0.5 * error(random)


def test_mask_reuse_follows_every_and_resets_between_generations():
    layout = TokenLayout(2, 4, 8, text_len=16, text_position="start")
    q, k, v = _local_qkv(layout)
    planner = planner_for(SparseConfig.make("dynamic", every=3, q_block=16, k_block=16))
    state = _layer_state()
    plans = [_plan(planner, layout, q, k, v, state, step=s) for s in range(7)]
    # recomputed at calls 0, 3 and 6; the calls between return the same plan object
    assert plans[0] is plans[1] is plans[2] and plans[3] is plans[4] is plans[5] and plans[6] is not plans[5]
    assert plans[3] is not plans[2]
    assert planner.report()["dynamic"]["recomputes"] == {"0": 3} and planner.report()["dynamic"]["calls"] == {"0": 7}
    # another layout (or batch) is a new mask at once: the runtime clears a layer's state made for another stamp
    runtime = SparseRuntime(planner.config, planner, "test", "start")
    runtime.state.layers[0] = state
    small = TokenLayout(2, 4, 4, text_len=16, text_position="start")
    qs, ks, vs = _local_qkv(small)
    runtime.grid, runtime.step = (small.frames, small.height, small.width), 7
    plan, _, _ = runtime.plan(0, qs, ks, vs, small.text_len)
    assert plan.groups[0].mask.seq_len == small.seq_len
    assert planner.report()["dynamic"]["recomputes"] == {"0": 4}
    # a new generation: the runtime hands out fresh state, so the first call computes a new mask at once (the
    # counts add up over generations, like the runtime's own stats, for the report read after the pipeline's reset)
    planner.reset()
    fresh = _layer_state()
    again = _plan(planner, layout, q, k, v, fresh, step=0)
    assert fresh.plan is again and again is not state.plan
    assert planner.report()["dynamic"]["recomputes"] == {"0": 5}
    assert _plan(planner, layout, q, k, v, fresh, step=1) is again


def test_drift_recomputes_early_only_when_the_keys_move():
    layout = TokenLayout(2, 4, 8)
    q, k, v = _local_qkv(layout)
    planner = planner_for(SparseConfig.make("dynamic", every=100, drift=0.2, q_block=16, k_block=16))
    state = _layer_state()
    first = _plan(planner, layout, q, k, v, state)
    assert state.reference is not None and state.reference.dtype == torch.bfloat16
    assert _plan(planner, layout, q, k * 1.01, v, state) is first  # 1% moves less than 20%
    moved = _plan(planner, layout, q, -k, v, state)
    assert moved is not first
    assert planner.report()["dynamic"]["recomputes"] == {"0": 2}
    assert planner.report()["dynamic"]["drift_recomputes"] == {"0": 1}
    assert float(pooled_drift(state.reference.float(), state.reference)) == 0.0


def test_dynamic_options_are_validated_and_the_preset_builds():
    for bad in ({"top_p": 0}, {"top_p": 1.5}, {"every": 0}, {"drift": -1}, {"max_density": 0}, {"q_block": 24}):
        with pytest.raises(ValueError):
            SparseConfig.make("dynamic", **bad)
    preset = PRESETS["dynamic"]
    assert preset.method == "dynamic" and 0 < preset.top_p < 1 and preset.warmup_steps > 0


def test_the_hybrid_forced_to_dynamic_equals_dynamic():
    layout = TokenLayout(2, 4, 8, text_len=16, text_position="start")
    q, k, v = _local_qkv(layout)
    options = dict(q_block=16, k_block=16)
    alone = planner_for(SparseConfig.make("dynamic", top_p=0.8, **options))
    forced = planner_for(SparseConfig.make("hybrid", force="dynamic", top_p=0.8, **options))
    a, b = _plan(alone, layout, q, k, v), _plan(forced, layout, q, k, v)
    assert torch.equal(a.groups[0].mask.to_blocks(), b.groups[0].mask.to_blocks())
    assert a.groups[0].orders == b.groups[0].orders


def test_the_hybrids_dynamic_candidate_is_scored_and_runs_as_dynamic_does():
    """A head whose attention is local is cheapest as the dynamic candidate when that is the only sparse one; its
    group runs the mask dynamic itself would, and the measured error is the error that mask makes on the rows."""
    layout = TokenLayout(2, 4, 8, text_len=16, text_position="start")
    q, k, v = _local_qkv(layout)
    options = dict(q_block=16, k_block=16, rows_per_frame=8, every=1)
    hybrid = planner_for(SparseConfig.make("hybrid", candidates=["dynamic"], eps=0.5, top_p=0.8, **options))
    plan = _plan(hybrid, layout, q, k, v, LayerState())
    groups = {g.labels[0]: g for g in plan.groups}
    assert "dynamic" in groups
    alone = _plan(planner_for(SparseConfig.make("dynamic", top_p=0.8, q_block=16, k_block=16)), layout, q, k, v)
    heads = list(groups["dynamic"].heads)
    assert torch.equal(groups["dynamic"].mask.to_blocks()[0], alone.groups[0].mask.to_blocks()[0][heads])
    runtime = SparseRuntime(hybrid.config, hybrid, "test", "start")
    out = runtime.execute(plan, q, k, v, layout)
    config = SparseConfig.make("dynamic", q_block=16, k_block=16)
    expected = SparseRuntime(config, planner_for(config), "test", "start").execute(alone, q, k, v, layout)
    torch.testing.assert_close(out[:, heads], expected[:, heads], atol=1e-5, rtol=1e-4)
    # the measured error of the candidate is the error its mask makes on the sampled rows
    from vidsparse.methods.hybrid import CANDIDATES

    probe = Probe(q, k, v, layout)
    ctx = PlanContext(0, 0, "cond", layout, q.shape[1], q.device, 20, LayerState())
    errors, _, _ = hybrid.measure(ctx, probe, hybrid.table(layout, q.device))
    rows = probe.sample_rows(8)
    scores = (q.double() @ k.double().transpose(-1, -2)) / math.sqrt(q.shape[-1])
    exact = (scores.softmax(-1) @ v.double())[:, :, rows]
    actual = (expected.double()[:, :, rows] - exact).flatten(-2).norm(dim=-1) / exact.flatten(-2).norm(dim=-1)
    torch.testing.assert_close(errors[..., CANDIDATES.index("dynamic")].double(), actual, atol=1e-4, rtol=1e-3)


# ---------------------------------------------------------------------------- per-head top_p from the search
def _calibrated(layout, q, k, v, grid=(0.5, 0.8, 0.95)):
    from vidsparse.search import Calibrator, Pattern

    cal = Calibrator((Pattern.parse("window:frames=0,radius=2"),), None, rows_per_frame=8, q_block=16, k_block=16,
                     top_p_grid=grid)
    cal.observe(0, 0, layout, q, k, v)
    return cal


def test_the_searchs_dynamic_errors_and_densities_are_the_methods_own_on_the_sampled_rows():
    from vidsparse.search import sample_rows

    layout = TokenLayout(3, 6, 8, text_len=16, text_position="end")  # S = 160
    q, k, v = _local_qkv(layout, seed=5)
    grid = (0.5, 0.8, 0.95)
    record = _calibrated(layout, q, k, v, grid).records[0]
    assert record.dynamic_errors.shape == record.dynamic_density.shape == (2, 2, 3)
    rows = sample_rows(layout, 8)
    dense = F.scaled_dot_product_attention(q.double(), k.double(), v.double())[:, :, rows]
    for i, top_p in enumerate(grid):
        cfg = SparseConfig.make("dynamic", top_p=top_p, q_block=16, k_block=16)
        planner = planner_for(cfg)
        plan = _plan(planner, layout, q, k, v)
        out = SparseRuntime(cfg, planner, "test", "end").execute(plan, q, k, v, layout, None)[:, :, rows].double()
        expect = (out - dense).flatten(-2).norm(dim=-1) / dense.flatten(-2).norm(dim=-1)
        torch.testing.assert_close(record.dynamic_errors[..., i].double(), expect, atol=2e-4, rtol=2e-3)
        torch.testing.assert_close(record.dynamic_density[..., i], plan.groups[0].density.float(), atol=1e-6,
                                   rtol=0)
    assert (record.dynamic_density.diff(dim=-1) >= 0).all() and (record.dynamic_errors.diff(dim=-1) < 0).all()


def test_per_head_top_p_goes_where_it_buys_the_most_error_within_the_budget():
    from vidsparse.core.pattern_file import DynamicCurves

    grid = torch.tensor([0.5, 0.8, 0.95])
    # head 0: its error falls steeply with density; head 1: flat (sparse attention costs it little)
    errors = torch.tensor([[[0.6, 0.2, 0.02], [0.05, 0.04, 0.03]]])
    density = torch.tensor([[[0.1, 0.3, 0.5], [0.1, 0.3, 0.5]]])
    curves = DynamicCurves(grid, errors, density)
    top_p = curves.choose(0.3)
    assert top_p[0, 0] > top_p[0, 1]  # the budget goes to the head that needs it
    assert float(curves.realised(top_p).mean()) <= 0.3 + 1e-6
    assert torch.equal(curves.choose(1.0), torch.ones(1, 2))  # no budget to save: dense everywhere
    assert float(curves.realised(curves.choose(0.05)).mean()) <= 0.1 + 1e-6  # below reach: the sparsest there is


def test_the_dynamic_method_runs_the_pattern_files_per_head_top_p(tmp_path):
    from vidsparse.app.models import cogvideox_transformer
    from vidsparse.methods.dynamic import forced_blocks, top_p_blocks
    from vidsparse.kernels.block_scores import estimate_block_mass
    from vidsparse.search import PatternFile, SearchConfig, build_pattern_file

    layout = TokenLayout(3, 6, 8, text_len=16, text_position="end")
    q, k, v = _local_qkv(layout, seed=6)
    v = v * torch.tensor([1.0, 0.0]).view(1, 2, 1, 1)  # head 1's output is 0 whatever it keeps: free to be sparse
    cal = _calibrated(layout, q, k, v)
    config = SearchConfig(q_block=16, k_block=16, top_p_grid=(0.5, 0.8, 0.95), dynamic_density=0.5)
    pf = build_pattern_file(cal, cogvideox_transformer("5b"), config, {})
    table = pf.dynamic.top_p
    assert table.shape == (1, 2) and pf.summary()["dynamic"]["density_budget"] == 0.5
    back = PatternFile.load(pf.save(tmp_path / "p.safetensors"))
    assert torch.equal(back.dynamic.top_p, table) and torch.equal(back.dynamic.errors, pf.dynamic.errors)

    cfg = SparseConfig.make("dynamic", patterns=str(tmp_path / "p.safetensors"), q_block=16, k_block=16)
    planner = planner_for(cfg)
    mask = _plan(planner, layout, q, k, v).groups[0].mask.to_blocks()
    probs, _ = estimate_block_mass(q, k, 16, 16, perm=HILBERT.permutation(layout, "cpu"), text=layout.text_range)
    want = top_p_blocks(probs, table[0], forced_blocks(layout, 16, 16, True))
    assert torch.equal(mask[:, :, : want.shape[2] - 1], want[:, :, : want.shape[2] - 1])  # text rows: dense
    assert planner.report()["dynamic"]["top_p"] == "calibrated per head"
    tighter = planner_for(cfg.replace(density=0.1)).top_p_table
    assert (tighter <= table).all() and (tighter < table).any()

    bare = PatternFile.load(tmp_path / "p.safetensors")
    bare.dynamic = None
    bare.save(tmp_path / "old.safetensors")
    with pytest.raises(ValueError, match="holds no dynamic calibration"):
        planner_for(SparseConfig.make("dynamic", patterns=str(tmp_path / "old.safetensors"), q_block=16, k_block=16))
    with pytest.raises(ValueError, match="calibrated at blocks 16 x 16"):
        planner_for(SparseConfig.make("dynamic", patterns=str(tmp_path / "p.safetensors")))
