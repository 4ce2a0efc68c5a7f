"""The attention-plan seam: token orders, patterns compiled in an order, plans with head groups in different orders,
the executor against independently built token-level masks, and the `profile` method's choices."""

import math

import pytest
import torch
import torch.nn.functional as F

from vidsparse.core.state import LayerState

from vidsparse import SparseConfig
from vidsparse.core.layout import FRAME_MAJOR, SPATIAL_MAJOR, TokenLayout, TokenOrder
from vidsparse.core.mask import SparseMask
from vidsparse.core.patterns import Pattern
from vidsparse.runtime.executor import permute_tokens
from vidsparse.runtime.runtime import SparseRuntime
from vidsparse.core.plan import AttentionPlan, HeadGroup, PlanContext, Probe
from vidsparse.methods.base import Planner, planner_for

LAYOUTS = [
    TokenLayout(3, 5, 7, text_len=10, text_position="end"),
    TokenLayout(4, 3, 6, text_len=13, text_position="start"),
    TokenLayout(5, 4, 4),
]
ORDERS = [FRAME_MAJOR, SPATIAL_MAJOR, TokenOrder.voxel(2, 2, 3), TokenOrder.voxel(4, 6, 8)]


def _coords(layout: TokenLayout):
    """(frame, row, col) of every token in model order; text gets -1000 so that no video predicate holds."""
    coords = torch.full((3, layout.seq_len), -1000, dtype=torch.long)
    coords[:, layout.video_start : layout.video_start + layout.video_len] = torch.stack(layout.video_coords())
    return coords


def _token_mask(layout: TokenLayout, pattern: Pattern, order: TokenOrder, q_block: int, k_block: int) -> torch.Tensor:
    """bool [S, S] in MODEL order: what a block mask of `pattern`, cut in `order`, lets each query see, built from the
    token-level predicate alone (no compiler code)."""
    f, r, c = _coords(layout)
    if pattern.kind == "window":
        p = dict(pattern.params)
        near = (f[:, None] - f[None, :]).abs() <= p["frames"]
        allowed = near if p["radius"] < 0 else near & ((r[:, None] - r[None, :]).abs() <= p["radius"]) & (
            (c[:, None] - c[None, :]).abs() <= p["radius"])
    else:  # temporal, every 1
        rad = dict(pattern.params)["radius"]
        allowed = ((r[:, None] - r[None, :]).abs() <= rad) & ((c[:, None] - c[None, :]).abs() <= rad) & (f[None, :] >= 0)
    allowed &= (f[:, None] >= 0) & (f[None, :] >= 0)
    if layout.text_range is not None:
        a, b = layout.text_range
        allowed[a:b] = True
        allowed[:, a:b] = True
    perm = order.permutation(layout)
    in_order = allowed[perm][:, perm]  # token pairs at positions of the order
    s = layout.seq_len
    n_q, n_k = -(-s // q_block), -(-s // k_block)
    padded = torch.zeros(n_q * q_block, n_k * k_block, dtype=torch.bool)
    padded[:s, :s] = in_order
    blocks = padded.view(n_q, q_block, n_k, k_block).any(3).any(1)
    in_order = blocks.repeat_interleave(q_block, 0).repeat_interleave(k_block, 1)[:s, :s]
    inv = order.inverse(layout)
    return in_order[inv][:, inv]  # back to model order


def _masked_attention(q, k, v, allowed, key_padding=None):
    """float64 softmax attention with a token mask `[H, S, S]` or `[B, H, S, S]` (True = attend)."""
    scores = (q.double() @ k.double().transpose(-1, -2)) / math.sqrt(q.shape[-1])
    allowed = allowed if allowed.dim() == 4 else allowed.unsqueeze(0)
    if key_padding is not None:
        allowed = allowed & ~key_padding[:, None, None, :]
    scores = scores.masked_fill(~allowed, float("-inf"))
    return torch.nan_to_num(scores.softmax(-1)) @ v.double()


# ---------------------------------------------------------------------------------------------- token orders
@pytest.mark.parametrize("layout", LAYOUTS + [TokenLayout(7, 9, 11, text_len=3, text_position="start")], ids=str)
@pytest.mark.parametrize("order", ORDERS, ids=str)
def test_orders_are_permutations_with_inverses_that_keep_text(layout, order):
    perm, inv = order.permutation(layout), order.inverse(layout)
    assert torch.equal(torch.sort(perm).values, torch.arange(layout.seq_len))
    assert torch.equal(perm[inv], torch.arange(layout.seq_len)) and torch.equal(inv[perm], torch.arange(layout.seq_len))
    if layout.text_range is not None:
        a, b = layout.text_range
        assert torch.equal(perm[a:b], torch.arange(a, b))


def test_spatial_major_puts_one_position_across_frames_together():
    layout = TokenLayout(3, 2, 2, text_len=2, text_position="start")
    video = SPATIAL_MAJOR.permutation(layout)[2:] - 2
    f, r, c = layout.video_coords()
    assert (r * 2 + c)[video].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert f[video].tolist() == [0, 1, 2] * 4


def test_voxel_order_makes_each_voxel_contiguous_with_ragged_edges():
    layout = TokenLayout(5, 7, 9)
    vt, vh, vw = 2, 3, 4
    video = TokenOrder.voxel(vt, vh, vw).video_order(layout)
    f, r, c = layout.video_coords()
    chunk = ((f // vt) * 3 + r // vh) * 3 + c // vw  # 3 x 3 x 3 chunks, the last of each axis ragged
    ordered = chunk[video]
    assert torch.equal(ordered, torch.sort(ordered).values)  # chunk after chunk
    sizes = torch.bincount(ordered).tolist()
    assert sizes[0] == vt * vh * vw and min(sizes) == 1 * 1 * 1 and sum(sizes) == layout.video_len


@pytest.mark.parametrize("layout", LAYOUTS, ids=str)
def test_permute_tokens_round_trip_batch2_strided_and_per_head_orders(layout):
    gen = torch.Generator().manual_seed(0)
    b, h, d = 2, 3, 8
    fused = torch.randn(b, layout.seq_len, 3, h, d, generator=gen)
    x = fused[:, :, 1].transpose(1, 2)  # [B, H, S, D], strided like a slice of a fused QKV projection
    perms = torch.stack([o.permutation(layout) for o in ORDERS])
    index = torch.tensor([[0, 1, 2], [3, 1, 0]])
    y = permute_tokens(x, perms, index)
    for bi in range(b):
        for hi in range(h):
            assert torch.equal(y[bi, hi], x[bi, hi, perms[index[bi, hi]]])
    assert torch.equal(permute_tokens(y, perms, index, inverse=True), x)
    assert torch.equal(permute_tokens(x, perms[1:2]), x[:, :, perms[1]])


# ---------------------------------------------------------------------------------------------- patterns in an order
@pytest.mark.parametrize("layout", LAYOUTS, ids=str)
@pytest.mark.parametrize("order", ORDERS[:3], ids=str)
@pytest.mark.parametrize("pattern", ["window:frames=1,radius=-1", "window:frames=0,radius=1",
                                     "temporal:every=1,radius=0", "temporal:every=1,radius=1"])
def test_patterns_compile_in_any_order_to_the_token_level_predicate(layout, order, pattern):
    pattern = Pattern.parse(pattern)
    blocks = pattern.blocks(layout, 16, 16, order=order)
    got = blocks.repeat_interleave(16, 0).repeat_interleave(16, 1)[: layout.seq_len, : layout.seq_len]
    inv = order.inverse(layout)
    assert torch.equal(got[inv][:, inv], _token_mask(layout, pattern, order, 16, 16))


def test_temporal_is_cheaper_in_spatial_major_order():
    layout = TokenLayout(13, 30, 45, text_len=226)
    temporal = Pattern.parse("temporal:every=1,radius=0")
    assert temporal.density(layout, order=SPATIAL_MAJOR) < 0.5 * temporal.density(layout)


# ---------------------------------------------------------------------------------------------- masks
def test_compact_and_shared_masks_visit_the_same_blocks_and_store_less():
    layout = TokenLayout(9, 16, 16)  # no text: text query blocks visit every key block, so they stay full width
    full = Pattern.parse("window:frames=0,radius=-1").mask(layout, 1, 32, 32)
    compact = full.compact()
    assert torch.equal(compact.to_blocks(), full.to_blocks())
    assert compact.nbytes < full.nbytes / 3
    shared = compact.expand_heads(24)
    assert shared.nbytes == compact.nbytes and shared.num_heads == 24
    assert torch.equal(shared.to_blocks()[0, 23], full.to_blocks()[0, 0])
    stacked = SparseMask.stack_heads([compact, full, compact])
    assert torch.equal(stacked.to_blocks()[0, 1], full.to_blocks()[0, 0])
    assert torch.equal(stacked.gather_heads(torch.tensor([[2, 1], [0, 0]])).to_blocks()[1, 1],
                       compact.to_blocks()[0, 0])


# ---------------------------------------------------------------------------------------------- the executor
def _runtime(backend="auto"):
    return SparseRuntime(SparseConfig(backend=backend), Planner(), "test", "start")


@pytest.mark.parametrize("layout", LAYOUTS, ids=str)
@pytest.mark.parametrize("backend", ["triton", "sdpa", "reference"])
def test_two_groups_in_different_orders_equal_masked_attention_in_model_order(layout, backend):
    gen = torch.Generator().manual_seed(1)
    b, h, d = 2, 4, 64
    q, k, v = (torch.randn(b, h, layout.seq_len, d, generator=gen) for _ in range(3))
    padding = None
    if layout.text_position == "end":  # HunyuanVideo: padded text keys at the end
        padding = torch.zeros(b, layout.seq_len, dtype=torch.bool)
        padding[1, -4:] = True
    spatial, temporal = Pattern.parse("window:frames=0,radius=-1"), Pattern.parse("temporal:every=1,radius=0")
    plan = AttentionPlan((
        HeadGroup(range(0, 1), "dense"),
        HeadGroup(range(1, 3), "sparse", spatial.mask(layout, 2, 16, 16), (FRAME_MAJOR,), labels=("spatial",)),
        HeadGroup(range(3, 4), "sparse", temporal.mask(layout, 1, 16, 16, order=SPATIAL_MAJOR), (SPATIAL_MAJOR,),
                  labels=("temporal",)),
    ))
    out = _runtime(backend).execute(plan, q, k, v, layout, padding)
    allowed = torch.stack([torch.ones(layout.seq_len, layout.seq_len, dtype=torch.bool),
                           *[_token_mask(layout, spatial, FRAME_MAJOR, 16, 16)] * 2,
                           _token_mask(layout, temporal, SPATIAL_MAJOR, 16, 16)])
    expect = _masked_attention(q, k, v, allowed, padding)
    torch.testing.assert_close(out.double(), expect, atol=2e-5, rtol=1e-4)


def test_groups_of_heads_that_are_not_neighbours_equal_masked_attention_and_are_recorded():
    layout = LAYOUTS[0]
    gen = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(2, 5, layout.seq_len, 64, generator=gen) for _ in range(3))
    spatial, temporal = Pattern.parse("window:frames=0,radius=-1"), Pattern.parse("temporal:every=1,radius=0")
    plan = AttentionPlan((
        HeadGroup((3, 0), "sparse", spatial.mask(layout, 2, 16, 16), (FRAME_MAJOR,), labels=("spatial",)),
        HeadGroup((4, 1), "sparse", temporal.mask(layout, 2, 16, 16, order=SPATIAL_MAJOR), (SPATIAL_MAJOR,),
                  labels=("temporal",)),
        HeadGroup((2,), "dense"),
    ))
    assert plan.num_heads == 5 and plan.groups[2].contiguous == slice(2, 3) and plan.groups[0].contiguous is None
    runtime = _runtime()
    out = runtime.execute(plan, q, k, v, layout)
    kinds = [_token_mask(layout, spatial, FRAME_MAJOR, 16, 16), _token_mask(layout, temporal, SPATIAL_MAJOR, 16, 16)]
    full = torch.ones(layout.seq_len, layout.seq_len, dtype=torch.bool)
    allowed = torch.stack([kinds[0], kinds[1], full, kinds[0], kinds[1]])
    torch.testing.assert_close(out.double(), _masked_attention(q, k, v, allowed), atol=2e-5, rtol=1e-4)
    runtime.record(0, plan, 5, q.device)
    _, patterns, _ = runtime.layers[0].heads()
    assert patterns == ["spatial", "temporal", "dense", "spatial", "temporal"]
    with pytest.raises(ValueError, match="distinct"):
        HeadGroup((1, 1))


def test_a_consecutive_group_out_of_order_runs_each_head_on_its_own_mask():
    """Group (1, 0): its head 0 is model head 1. Run as the slice 0:2 each head would get the other's mask."""
    layout = LAYOUTS[1]
    gen = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(2, 3, layout.seq_len, 64, generator=gen) for _ in range(3))
    local, frame = Pattern.parse("window:frames=0,radius=1"), Pattern.parse("window:frames=0,radius=-1")
    mask = SparseMask.stack_heads([local.mask(layout, 1, 16, 16), frame.mask(layout, 1, 16, 16)])
    swapped = HeadGroup((1, 0), "sparse", mask, labels=("local", "frame"), label_index=torch.tensor([[0, 1]]))
    assert swapped.contiguous is None
    full = torch.ones(layout.seq_len, layout.seq_len, dtype=torch.bool)
    allowed = torch.stack([_token_mask(layout, frame, FRAME_MAJOR, 16, 16),  # model head 0: the group's head 1
                           _token_mask(layout, local, FRAME_MAJOR, 16, 16), full])
    expect = F.scaled_dot_product_attention(q.double(), k.double(), v.double(), attn_mask=allowed)
    for plan in (AttentionPlan((swapped, HeadGroup((2,), "dense"))), AttentionPlan((swapped,))):
        heads = plan.num_heads
        out = _runtime().execute(plan, q[:, :heads], k[:, :heads], v[:, :heads], layout)
        torch.testing.assert_close(out.double(), expect[:, :heads], atol=2e-5, rtol=1e-4)


def test_per_head_orders_chosen_on_the_device_equal_masked_attention():
    layout = TokenLayout(4, 3, 6, text_len=13, text_position="start")
    gen = torch.Generator().manual_seed(2)
    b, h, d = 2, 3, 64
    q, k, v = (torch.randn(b, h, layout.seq_len, d, generator=gen) for _ in range(3))
    spatial, temporal = Pattern.parse("window:frames=0,radius=-1"), Pattern.parse("temporal:every=1,radius=0")
    table = SparseMask.stack_heads([spatial.mask(layout, 1, 16, 16), temporal.mask(layout, 1, 16, 16,
                                                                                    order=SPATIAL_MAJOR)])
    choice = torch.tensor([[0, 1, 1], [1, 0, 1]])
    group = HeadGroup(range(h), "sparse", table.gather_heads(choice), (FRAME_MAJOR, SPATIAL_MAJOR),
                      order_index=choice, labels=("spatial", "temporal"), label_index=choice)
    out = _runtime().execute(AttentionPlan((group,)), q, k, v, layout)
    masks = [_token_mask(layout, spatial, FRAME_MAJOR, 16, 16), _token_mask(layout, temporal, SPATIAL_MAJOR, 16, 16)]
    allowed = torch.stack([torch.stack([masks[c] for c in row]) for row in choice.tolist()])
    torch.testing.assert_close(out.double(), _masked_attention(q, k, v, allowed), atol=2e-5, rtol=1e-4)


def test_plan_groups_must_cover_every_head_once():
    with pytest.raises(ValueError, match="cover heads 0..H-1 once"):
        AttentionPlan((HeadGroup(range(0, 2)), HeadGroup(range(1, 3))))
    with pytest.raises(ValueError, match="a sparse group needs a mask"):
        HeadGroup(range(2), "sparse")


# ---------------------------------------------------------------------------------------------- profile
def _planted(layout: TokenLayout, kinds: list[str], b: int = 1, seed: int = 0):
    """q, k, v `[B, H, S, 64]` whose head h attends as kinds[h] says: "spatial" (its own frame), "temporal" (its own
    spatial position in every frame) or "diffuse" (every key alike)."""
    gen = torch.Generator().manual_seed(seed)
    s, d = layout.seq_len, 64
    f, r, c = _coords(layout)
    video = f >= 0
    frame_code = torch.randn(layout.frames, d, generator=gen)
    pos_code = torch.randn(layout.frame_size, d, generator=gen)
    q = torch.randn(b, len(kinds), s, d, generator=gen) * 0.1
    k = torch.randn(b, len(kinds), s, d, generator=gen) * 0.1
    v = torch.randn(b, len(kinds), s, d, generator=gen)
    for h, kind in enumerate(kinds):
        if kind == "diffuse":
            q[:, h] *= 0.0
            continue
        code = frame_code[f[video]] if kind == "spatial" else pos_code[(r * layout.width + c)[video]]
        q[:, h, video] += 3.0 * code
        k[:, h, video] += 3.0 * code
    return q, k, v


@pytest.mark.parametrize("layout", [TokenLayout(6, 6, 8, text_len=16, text_position="start"),
                                    TokenLayout(5, 7, 6, text_len=9, text_position="end")], ids=str)
def test_profile_classifies_planted_spatial_temporal_and_diffuse_heads(layout):
    kinds = ["spatial", "temporal", "diffuse", "temporal", "spatial"]
    q, k, v = _planted(layout, kinds, b=2)
    planner = planner_for(SparseConfig.make("profile", fraction=0.3, eps=0.2, q_block=16, k_block=16,
                                            rows_per_frame=4))
    ctx = PlanContext(0, 0, None, layout, len(kinds), "cpu", state=LayerState())
    plan = planner.plan(ctx, Probe(q, k, v, layout))
    (group,) = plan.groups
    names = [[group.labels[i] for i in row] for row in group.label_index.tolist()]
    expected = [{"spatial": "spatial", "temporal": "temporal", "diffuse": "dense"}[kind] for kind in kinds]
    assert names == [expected, expected]
    out = _runtime().execute(plan, q, k, v, layout)
    dense = _masked_attention(q, k, v, torch.ones(1, layout.seq_len, layout.seq_len, dtype=torch.bool))
    rel = ((out.double() - dense).norm() / dense.norm()).item()
    assert rel < 0.2  # the planted heads lose little to their patterns


def test_profile_errors_are_the_renormalised_softmax_errors_on_the_sampled_rows(monkeypatch):
    """Each candidate's output on a sampled row is the softmax over its kept keys alone (renormalised), and its
    error is `||O_c - O|| / ||O||` over the rows: computed here in float64 from the token-level predicates."""
    from vidsparse.methods import profile

    layout = TokenLayout(5, 4, 6, text_len=9, text_position="end")
    kinds = ["spatial", "temporal", "diffuse"]
    q, k, v = _planted(layout, kinds, b=2, seed=3)
    seen = []
    select = profile.select
    monkeypatch.setattr(profile, "select", lambda errors, *a, **kw: seen.append(errors) or select(errors, *a, **kw))
    planner = planner_for(SparseConfig.make("profile", frames=1, radius=1, q_block=16, k_block=16, rows_per_frame=4))
    probe = Probe(q, k, v, layout)
    planner.plan(PlanContext(0, 0, None, layout, len(kinds), "cpu", state=LayerState()), probe)
    (errors,) = seen  # [B, H, 2]: spatial, temporal
    rows = probe.sample_rows(4)
    spatial, temporal = Pattern.parse("window:frames=1,radius=-1"), Pattern.parse("temporal:every=1,radius=1")
    kept = torch.stack([_token_mask(layout, spatial, FRAME_MAJOR, 16, 16),
                        _token_mask(layout, temporal, SPATIAL_MAJOR, 16, 16)])[:, rows]  # bool [2, R, S]
    scores = (q.double()[:, :, rows] @ k.double().transpose(-1, -2)) / math.sqrt(q.shape[-1])  # [B, H, R, S]
    exact = scores.softmax(-1) @ v.double()
    expect = torch.stack([
        ((scores.masked_fill(~keep, float("-inf")).softmax(-1) @ v.double() - exact).flatten(-2).norm(dim=-1)
         / exact.flatten(-2).norm(dim=-1)) for keep in kept], -1)
    share = torch.stack([(scores.softmax(-1) * keep).sum(-1) for keep in kept], -1)  # the kept mass per row
    assert share.min() < 0.5  # full-mass normalisation would be far off here
    torch.testing.assert_close(errors.double(), expect, atol=1e-4, rtol=1e-4)


def test_profile_reuses_its_choice_between_profiling_steps():
    layout = TokenLayout(4, 4, 4)
    q, k, v = _planted(layout, ["spatial", "temporal"])
    planner = planner_for(SparseConfig.make("profile", every=3, q_block=16, k_block=16))
    state, calls = LayerState(), []
    original = planner.choose
    planner.choose = lambda ctx, probe: calls.append(ctx.step) or original(ctx, probe)
    for step in range(5):
        planner.plan(PlanContext(0, step, None, layout, 2, "cpu", state=state), Probe(q, k, v, layout))
    assert calls == [0, 3]


def test_profile_at_budget_zero_runs_every_head_dense():
    layout = TokenLayout(4, 4, 4, text_len=8)
    q, k, v = _planted(layout, ["spatial", "temporal", "diffuse"])
    planner = planner_for(SparseConfig.make("profile", eps=0.0, q_block=16, k_block=16))
    plan = planner.plan(PlanContext(0, 0, None, layout, 3, "cpu", state=LayerState()), Probe(q, k, v, layout))
    assert plan.groups[0].label_index.tolist() == [[2, 2, 2]]
    out = _runtime().execute(plan, q, k, v, layout)
    dense = _masked_attention(q, k, v, torch.ones(1, layout.seq_len, layout.seq_len, dtype=torch.bool))
    torch.testing.assert_close(out.double(), dense, atol=2e-5, rtol=1e-4)


def test_sdpa_backend_keeps_mask_rows_of_many_masks_and_drops_the_least_recently_used():
    """The CPU fallback's view of a mask is cached per mask object by use within a byte budget (not 8 masks cleared
    all at once), so that every layer of a per-layer pattern keeps it between steps. Heads whose rows visit every
    block are named (they run without a mask); the others run by mask rows, or gathered below a density."""
    from vidsparse.runtime.backends import _GATHER_BELOW, MaskRowsCache

    layout = TokenLayout(3, 5, 7, text_len=10)
    s, gen = layout.seq_len, torch.Generator().manual_seed(0)
    masks = [SparseMask.random(0.8, 2, s, 16, 16, generator=gen) for _ in range(12)]
    n_q = masks[0].num_q_blocks
    cache = MaskRowsCache(budget=10 * 4 * 2 * n_q * s)  # float32 rows: room for 10 of the 12
    rows = [cache.get(m, torch.float32) for m in masks[:10]]
    assert rows[0].bias.shape == (1, 2, n_q, s) and rows[0].full == () and rows[0].density > _GATHER_BELOW
    assert all(cache.get(m, torch.float32) is r for m, r in zip(masks[:10], rows))  # hits, no rebuild
    cache.get(masks[0], torch.float32)  # masks[0] is now the most recent
    cache.get(masks[10], torch.float32)  # evicts masks[1], the least recently used
    assert cache.get(masks[0], torch.float32) is rows[0] and len(cache.entries) == 10
    assert (id(masks[1]), torch.float32) not in cache.entries
    blocks = masks[11].to_blocks()[0]
    visited = blocks[0].repeat_interleave(16, 0).repeat_interleave(16, 1)[:s, :s]  # head 0's token mask
    got = cache.get(SparseMask.stack_heads([masks[11].select_heads(0, 1), SparseMask.full(1, s, 16, 16)]),
                    torch.float32)
    assert got.full == (1,) and got.part.num_heads == 1
    token = got.bias[0, 0].repeat_interleave(16, 0)[:s]  # [S, S]: each query row has its block's row
    assert torch.equal(token == 0, visited) and torch.isinf(token[~visited]).all()
    sparse = cache.get(SparseMask.random(0.2, 2, s, 16, 16, generator=gen), torch.float32)
    assert sparse.bias is None and sparse.density < _GATHER_BELOW and sparse.nbytes == 0  # gathered on the CPU


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_sdpa_backend_with_lse_equals_the_reference(dtype):
    """On the CPU the sdpa backend also returns the log-sum-exp, gathered (sparse heads), by mask rows (denser ones)
    and without a mask (full heads): the reference's, with -inf for rows that visit no block and for rows whose
    visited keys are all padded."""
    from vidsparse.kernels import block_sparse_attention_reference
    from vidsparse.runtime.backends import BACKENDS, MaskRowsCache

    gen = torch.Generator().manual_seed(3)
    s = 77
    q, k, v = (torch.randn(2, 3, s, 64, generator=gen).to(dtype) for _ in range(3))
    blocks = SparseMask.random(0.4, 3, s, 16, 16, generator=gen).to_blocks()[0]
    blocks[0, 3] = False  # a query block without a key
    blocks[1, 2] = False
    blocks[1, 2, 0] = True  # a query block that sees only the first key block, padded in batch element 1
    padding = torch.zeros(2, s, dtype=torch.bool)
    padding[1, :16] = True
    empty = []
    mixed = SparseMask.stack_heads([SparseMask.full(1, s, 16, 16), SparseMask.from_block_mask(blocks[1:2], 16, 16, s),
                                    SparseMask.full(1, s, 16, 16)])  # full heads around one with its rows
    dense = blocks | SparseMask.random(0.8, 3, s, 16, 16, generator=gen).to_blocks()[0]
    dense[0, 3], dense[1, 2] = False, blocks[1, 2]  # the same two blocks, run by mask rows rather than gathered
    for mask in (SparseMask.from_block_mask(blocks, 16, 16, s), SparseMask.full(1, s, 16, 16).expand_heads(3), mixed,
                 SparseMask.from_block_mask(dense, 16, 16, s)):
        for key_padding in (None, padding):
            out, lse = BACKENDS["sdpa"].run(q, k, v, mask, key_padding, True, MaskRowsCache(), out_dtype=torch.float32)
            expect, expect_lse = block_sparse_attention_reference(q, k, v, mask, key_padding_mask=key_padding,
                                                                  return_lse=True, out_dtype=torch.float32)
            assert out.dtype == torch.float32 and lse.dtype == torch.float32
            torch.testing.assert_close(out, expect, atol=2e-5, rtol=1e-4)
            assert torch.equal(torch.isneginf(lse), torch.isneginf(expect_lse))
            torch.testing.assert_close(lse.nan_to_num(neginf=0.0), expect_lse.nan_to_num(neginf=0.0), atol=2e-5,
                                       rtol=1e-5)
            empty.append(int(torch.isneginf(lse).sum()))
    # the empty block in both batch elements, the padded one in one; the mixed mask's head 1 is the padded one
    assert empty == [2 * 16, 2 * 16 + 16, 0, 0, 0, 16, 2 * 16, 2 * 16 + 16]
