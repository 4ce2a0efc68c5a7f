"""The offline pattern search: candidates, calibration, choosing under a budget, pattern files, the static method."""

import math

import pytest
import torch

import vidsparse
from vidsparse.kernels import block_sparse_attention_reference
from vidsparse.core.layout import TokenLayout
from vidsparse.search import (
    DEFAULT_CANDIDATES, Calibrator, Pattern, PatternFile, SearchConfig, build_pattern_file, compile_heads, fingerprint,
    sample_rows, select,
)
from vidsparse.search.run import aggregate

LAYOUT = TokenLayout(frames=4, height=4, width=8, text_len=16)  # frames of 32 tokens: two 16-token blocks each
BLOCK = 16


def _keeps(pattern: Pattern, qf, qh, qw, kf, kh, kw, layout=LAYOUT) -> bool:
    """Token-level definition of each kind, written independently of the compiler."""
    p = dict(pattern.params)
    if pattern.kind == "columns":
        spots = {(round(t * (layout.frames - 1)), round(pos * (layout.frame_size - 1))) for t, pos in pattern.points}
        return (kf, kh * layout.width + kw) in spots
    if pattern.kind == "full":
        return True
    if pattern.kind == "skip":
        return False
    if pattern.kind == "union":
        return any(_keeps(part, qf, qh, qw, kf, kh, kw, layout) for part in pattern.parts)
    if pattern.kind == "sink":
        return kf < p["frames"]
    if pattern.kind == "window":
        near = p["radius"] < 0 or (abs(qh - kh) <= p["radius"] and abs(qw - kw) <= p["radius"])
        return abs(qf - kf) <= p["frames"] and near
    if pattern.kind == "temporal":
        return (kf - qf) % p["every"] == 0 and abs(qh - kh) <= p["radius"] and abs(qw - kw) <= p["radius"]
    raise AssertionError(pattern.kind)


@pytest.mark.parametrize("layout", [LAYOUT, TokenLayout(3, 5, 7, text_len=9), TokenLayout(5, 3, 4, 6, "end")])
@pytest.mark.parametrize("pattern", DEFAULT_CANDIDATES, ids=str)
def test_pattern_blocks_match_token_definition(layout, pattern):
    pattern = pattern.with_points([(0.0, 0.0), (0.4, 0.77), (1.0, 0.5)])  # where a "columns" head's blocks were
    blocks = pattern.blocks(layout, BLOCK, BLOCK)
    frame, row, col = (x.tolist() for x in layout.video_coords())
    n = -(-layout.seq_len // BLOCK)
    expect = torch.zeros(n, n, dtype=torch.bool)
    for i in range(layout.video_len):
        for j in range(layout.video_len):
            if _keeps(pattern, frame[i], row[i], col[i], frame[j], row[j], col[j], layout):
                expect[(i + layout.video_start) // BLOCK, (j + layout.video_start) // BLOCK] = True
    start, stop = layout.text_range
    expect[start // BLOCK : -(-stop // BLOCK)] = True
    expect[:, start // BLOCK : -(-stop // BLOCK)] = True
    assert torch.equal(blocks, expect)


def test_pattern_parse_round_trip_and_errors():
    for pattern in DEFAULT_CANDIDATES:
        assert Pattern.parse(str(pattern)) == pattern
    with pytest.raises(ValueError, match="unknown pattern kind"):
        Pattern.parse("diagonal:radius=2")
    with pytest.raises(ValueError, match="takes parameters"):
        Pattern.parse("window:radius=2")


def test_compile_heads_gives_each_head_its_pattern():
    patterns = [Pattern.parse("full"), Pattern.parse("sink:frames=1"), Pattern.parse("temporal:every=1,radius=0")]
    mask = compile_heads(patterns, LAYOUT, BLOCK, BLOCK)
    for h, p in enumerate(patterns):
        assert torch.equal(mask.to_blocks()[0, h], p.blocks(LAYOUT, BLOCK, BLOCK))


def test_sample_rows_cover_every_frame():
    rows = sample_rows(LAYOUT, 5)
    frames = (rows - LAYOUT.video_start) // LAYOUT.frame_size
    assert torch.equal(frames.bincount(), torch.full((LAYOUT.frames,), 5))
    assert rows.unique().numel() == rows.numel()


def _planted(seed: int = 0, strength: float = 100.0):
    """q, k, v [1, 4, S, 64] whose heads attend: own frame, own position in every frame, frame 0, uniformly."""
    gen = torch.Generator().manual_seed(seed)
    s, d = LAYOUT.seq_len, 64
    frame, row, col = LAYOUT.video_coords()
    video = slice(LAYOUT.video_start, LAYOUT.video_start + LAYOUT.video_len)
    q, k = torch.zeros(1, 4, s, d), torch.zeros(1, 4, s, d)
    eye = torch.eye(d)
    q[0, 0, video], k[0, 0, video] = strength * eye[frame], eye[frame]  # spatial: own frame
    pos = row * LAYOUT.width + col
    q[0, 1, video], k[0, 1, video] = strength * eye[pos], eye[pos]  # temporal: own position
    q[0, 2, video] = strength * eye[0]  # stripe: every query looks at frame 0
    k[0, 2, video] = eye[0] * (frame == 0).float().unsqueeze(-1)
    v = torch.randn(1, 4, s, d, generator=gen)
    return q, k, v


def _calibrate(q, k, v, candidates=DEFAULT_CANDIDATES) -> Calibrator:
    cal = Calibrator(tuple(candidates), None, rows_per_frame=8, q_block=BLOCK, k_block=BLOCK)
    cal.observe(0, 0, LAYOUT, q, k, v)
    return cal


def test_search_recovers_planted_patterns():
    cal = _calibrate(*_planted())
    errors, stats = aggregate(cal.records, "max")
    choice = select(errors, cal.densities(LAYOUT), eps=0.05, lam=1.0)[0]
    families = [DEFAULT_CANDIDATES[c].family if c >= 0 else "full" for c in choice.tolist()]
    assert families == ["spatial", "temporal", "stripe", "full"]
    # The analysis statistics tell the same story: own frame, own position, and a uniform head's spread.
    own_frame, own_pos, text, keys_90 = stats[0].unbind(-1)
    assert own_frame[0] > 0.95 and own_pos[1] > 0.7 and own_frame[1] < 0.3 and keys_90[3] > 0.85


def test_calibrated_error_equals_block_sparse_attention_error():
    q, k, v = _planted(strength=20.0)  # softer heads: every candidate has some error
    cal = _calibrate(q, k, v)
    rows = sample_rows(LAYOUT, 8)
    dense = block_sparse_attention_reference(q, k, v, Pattern("full").mask(LAYOUT, 4, BLOCK, BLOCK))[:, :, rows]
    for c, pattern in enumerate(DEFAULT_CANDIDATES):
        if pattern.columns:
            continue  # per-head blocks: test_measured_columns_are_found_and_stored
        out = block_sparse_attention_reference(q, k, v, pattern.mask(LAYOUT, 4, BLOCK, BLOCK))[:, :, rows]
        expect = (out - dense).flatten(-2).norm(dim=-1) / dense.flatten(-2).norm(dim=-1)
        torch.testing.assert_close(cal.records[0].errors[..., c], expect, atol=1e-4, rtol=1e-3)


def test_measured_columns_are_found_and_stored(tmp_path):
    """A head whose queries all look at two scattered key tokens: "columns" finds their blocks, scores them exactly as
    the kernel's reference would, and the pattern file's stored positions compile back to the same blocks."""
    from vidsparse.app.models import cogvideox_transformer

    q, k, v = _planted(strength=100.0)
    frame, row, col = LAYOUT.video_coords()
    video = slice(LAYOUT.video_start, LAYOUT.video_start + LAYOUT.video_len)
    hot = ((frame == 2) & (row == 1) & (col == 5)) | ((frame == 3) & (row == 3) & (col == 0))
    q[0, 3, video] = 100.0 * torch.eye(64)[7]
    k[0, 3, video] = torch.eye(64)[7] * hot.float().unsqueeze(-1)
    candidates = (Pattern.parse("columns:count=2"), Pattern.parse("sink:frames=1"), Pattern.parse("skip"))
    cal = _calibrate(q, k, v, candidates)
    errors, _ = aggregate(cal.records, "max")
    assert errors[0, 3, 0] < 0.01 and errors[0, 3, 1] > 0.5  # head 3: its two columns, not frame 0
    config = SearchConfig(q_block=BLOCK, k_block=BLOCK, eps=0.05, candidates=tuple(str(c) for c in candidates))
    pf = build_pattern_file(cal, cogvideox_transformer("5b"), config, {})
    pf.save(tmp_path / "p.safetensors")
    pattern = PatternFile.load(tmp_path / "p.safetensors").patterns(0)[3]
    assert pattern.kind == "columns" and len(pattern.points) == 2
    kept = pattern.blocks(LAYOUT, BLOCK, BLOCK)[LAYOUT.video_start // BLOCK + 4]  # a query block of frame 2
    hot_blocks = ((torch.nonzero(hot).flatten() + LAYOUT.video_start) // BLOCK).tolist()
    assert set(torch.nonzero(kept).flatten().tolist()) == {0, *hot_blocks}  # the text block and the two columns
    rows = sample_rows(LAYOUT, 8)
    dense = block_sparse_attention_reference(q, k, v, Pattern("full").mask(LAYOUT, 4, BLOCK, BLOCK))[:, 3:, rows]
    out = block_sparse_attention_reference(q, k, v, pattern.mask(LAYOUT, 4, BLOCK, BLOCK))[:, 3:, rows]
    expect = (out - dense).flatten(-2).norm(dim=-1) / dense.flatten(-2).norm(dim=-1)
    torch.testing.assert_close(cal.records[0].errors[:, 3, 0], expect[:, 0], atol=1e-4, rtol=1e-3)


def test_key_padding_is_excluded_in_calibration():
    q, k, v = _planted(strength=20.0)
    padding = torch.zeros(1, LAYOUT.seq_len, dtype=torch.bool)
    padding[:, :4] = True  # four padded text keys
    cal = Calibrator((Pattern.parse("sink:frames=1"),), None, 8, BLOCK, BLOCK)
    cal.observe(0, 0, LAYOUT, q, k, v, padding)
    rows = sample_rows(LAYOUT, 8)
    mask = Pattern.parse("sink:frames=1").mask(LAYOUT, 4, BLOCK, BLOCK)
    full = Pattern("full").mask(LAYOUT, 4, BLOCK, BLOCK)
    out = block_sparse_attention_reference(q, k, v, mask, key_padding_mask=padding)[:, :, rows]
    dense = block_sparse_attention_reference(q, k, v, full, key_padding_mask=padding)[:, :, rows]
    expect = (out - dense).flatten(-2).norm(dim=-1) / dense.flatten(-2).norm(dim=-1)
    torch.testing.assert_close(cal.records[0].errors[..., 0], expect, atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize("eps", [0.0, 0.02, 0.1, 0.3, 1.0])
@pytest.mark.parametrize("lam", [0.1, 1.0])
def test_budget_is_respected(eps, lam):
    gen = torch.Generator().manual_seed(1)
    errors = torch.rand(3, 5, 7, generator=gen)
    density = torch.rand(7, generator=gen)
    choice = select(errors, density, eps, lam)
    chosen = errors.gather(-1, choice.clamp_min(0).unsqueeze(-1)).squeeze(-1)
    assert bool(((choice < 0) | (chosen <= eps)).all())
    # Where a candidate is within budget and cheaper than full by the objective, one is chosen, and the best one.
    cost = (errors + lam * density).masked_fill(errors > eps, math.inf)
    best = cost.min(-1).values
    assert torch.equal(choice >= 0, best < lam)
    picked = cost.gather(-1, choice.clamp_min(0).unsqueeze(-1)).squeeze(-1)
    assert torch.equal(torch.where(choice >= 0, picked, best), best)


def _tiny_file(transformer, tmp_path) -> PatternFile:
    cal = _calibrate(*_planted())
    return build_pattern_file(cal, transformer, SearchConfig(q_block=BLOCK, k_block=BLOCK, eps=0.05), {"note": "test"})


def test_pattern_file_round_trip(tmp_path):
    from vidsparse.app.models import cogvideox_transformer

    pf = _tiny_file(cogvideox_transformer("5b"), tmp_path)
    path = pf.save(tmp_path / "p.safetensors")
    back = PatternFile.load(path)
    for name in ("errors", "stats", "density", "choice"):
        assert torch.equal(getattr(back, name), getattr(pf, name))
    assert back.candidates == pf.candidates and back.params == pf.params and back.model == pf.model
    assert back.calibration["note"] == "test" and back.patterns(0) == pf.patterns(0)
    assert back.reselect(eps=0.0).summary()["families"] == {"full": 4}


def test_mismatched_pattern_file_is_refused(tmp_path):
    from vidsparse.app.models import cogvideox_transformer, wan_transformer

    pf = _tiny_file(cogvideox_transformer("5b"), tmp_path)  # one layer x 4 heads
    with pytest.raises(ValueError, match="searched on CogVideoXTransformer3DModel, not WanTransformer3DModel"):
        pf.check(wan_transformer(), 1, 4)
    with pytest.raises(ValueError, match="another config"):
        pf.check(cogvideox_transformer("2b"), 1, 4)
    with pytest.raises(ValueError, match="1 layers x 4 heads"):
        pf.check(cogvideox_transformer("5b"), 2, 2)
    path = tmp_path / "p.safetensors"
    pf.save(path)
    with pytest.raises(ValueError, match="1 layers x 4 heads, the model 2 x 2"):
        vidsparse.apply(cogvideox_transformer("5b"), {"method": "static", "patterns": str(path)})
    with pytest.raises(FileNotFoundError, match="vidsparse search"):
        vidsparse.apply(cogvideox_transformer("5b"), {"method": "static", "patterns": str(tmp_path / "none.st")})
    with pytest.raises(ValueError, match="needs a pattern file"):
        vidsparse.SparseConfig.make(method="static")


def test_fingerprint_ignores_resolution():
    from vidsparse.app.models import cogvideox_transformer

    a = fingerprint(cogvideox_transformer("5b"))
    b = fingerprint(cogvideox_transformer("5b", max_text_seq_length=32))
    assert a == b and a["class"] == "CogVideoXTransformer3DModel"


def test_cpu_fallback_equals_the_reference():
    """The runtime's small-sequence CPU path (SDPA with a token mask) computes what the reference computes."""
    from vidsparse.core.mask import SparseMask
    from vidsparse.runtime.backends import BACKENDS

    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 77, 64, generator=gen) for _ in range(3))
    mask = SparseMask.random(0.3, num_heads=3, seq_len=77, q_block=16, k_block=16, text=(0, 9), generator=gen)
    padding = torch.zeros(2, 77, dtype=torch.bool)
    padding[1, 3:9] = True  # padded text keys in the second batch element
    for key_padding in (None, padding):
        got = BACKENDS["sdpa"].run(q, k, v, mask, key_padding, False)
        expect = block_sparse_attention_reference(q, k, v, mask, key_padding_mask=key_padding)
        torch.testing.assert_close(got, expect, atol=2e-5, rtol=1e-4)


def test_search_command_then_static_method(tmp_path):
    """`vidsparse search` writes a file that `static` runs; chosen again at eps=0 every head is full and the output
    equals dense to the bit (the stock path)."""
    from vidsparse.app.models import load_builtin
    from vidsparse.app.cli import main

    out = tmp_path / "tiny.safetensors"
    args = ["search", "--model", "tiny-cogvideox", "--prompt", "a red circle", "--steps", "3", "--frames", "9",
            "--out", str(out), "search.q_block=32", "search.k_block=32", "search.observe=2", "search.eps=0.5"]
    assert main(args) == 0
    pf = PatternFile.load(out)
    assert pf.calibration["observed_steps"] == [0, 2] and pf.calibration["prompts"] == ["a red circle"]
    assert (pf.choice >= 0).any()  # a loose budget makes some head sparse

    pipe, spec = load_builtin("tiny-cogvideox")
    kwargs = {**spec.defaults, "num_inference_steps": 2, "num_frames": 9}

    def run(config=None):
        handle = vidsparse.apply(pipe, config) if config else None
        video = pipe(prompt="a red circle", generator=torch.Generator().manual_seed(0), output_type="pt", **kwargs)
        report = handle.report() if handle else None
        if handle:
            handle.remove()
        return video.frames, report

    dense, _ = run()
    sparse, report = run({"method": "static", "patterns": str(out)})
    assert report["density"] < 1 and not torch.equal(sparse, dense)
    full, report = run({"method": "static", "patterns": str(out), "eps": 0.0})
    assert report["density"] == 1.0 and torch.equal(full, dense)
