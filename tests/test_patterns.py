"""Grid-unit patterns compile to exactly the blocks that a brute-force token-level predicate touches."""

import pytest
import torch

from vidsparse.core.layout import TokenLayout
from vidsparse.core.patterns import frame_band, temporal


def _token_blocks(layout: TokenLayout, allowed: torch.Tensor, q_block: int, k_block: int) -> torch.Tensor:
    """Block-level OR of a token-level [S, S] predicate, with the layout's text rows and columns added."""
    s = layout.seq_len
    allowed = allowed.clone()
    if layout.text_range is not None:
        start, stop = layout.text_range
        allowed[start:stop, :] = True
        allowed[:, start:stop] = True
    n_q, n_k = -(-s // q_block), -(-s // k_block)
    padded = torch.zeros(n_q * q_block, n_k * k_block, dtype=torch.bool)
    padded[:s, :s] = allowed
    return padded.view(n_q, q_block, n_k, k_block).any(3).any(1)


def _video_coords(layout: TokenLayout):
    """(frame, row, col) for every token of the sequence; text tokens get -1000 so no predicate holds."""
    s = layout.seq_len
    coords = torch.full((3, s), -1000, dtype=torch.long)
    start = layout.video_start
    f, r, c = layout.video_coords()
    coords[:, start : start + layout.video_len] = torch.stack([f, r, c])
    return coords


LAYOUTS = [
    TokenLayout(3, 5, 7, text_len=10, text_position="end"),
    TokenLayout(4, 3, 6, text_len=13, text_position="start"),
    TokenLayout(5, 4, 4),
]


@pytest.mark.parametrize("layout", LAYOUTS, ids=str)
@pytest.mark.parametrize("frames", [0, 1, 2])
@pytest.mark.parametrize(("q_block", "k_block"), [(16, 16), (32, 16)])
def test_frame_band_matches_token_predicate(layout, frames, q_block, k_block):
    f, _, _ = _video_coords(layout)
    video = f >= 0
    allowed = ((f[:, None] - f[None, :]).abs() <= frames) & video[:, None] & video[None, :]
    mask = frame_band(layout, num_heads=2, frames=frames, q_block=q_block, k_block=k_block)
    expected = _token_blocks(layout, allowed, q_block, k_block)
    assert torch.equal(mask.to_blocks()[0, 0], expected)
    assert torch.equal(mask.to_blocks()[0, 1], expected)
    assert mask.text == layout.text_range


@pytest.mark.parametrize("layout", LAYOUTS, ids=str)
@pytest.mark.parametrize("radius", [0, 1])
def test_temporal_matches_token_predicate(layout, radius):
    _, r, c = _video_coords(layout)
    video = r >= 0
    near = ((r[:, None] - r[None, :]).abs() <= radius) & ((c[:, None] - c[None, :]).abs() <= radius)
    allowed = near & video[:, None] & video[None, :]
    mask = temporal(layout, num_heads=1, radius=radius, q_block=16, k_block=16)
    assert torch.equal(mask.to_blocks()[0, 0], _token_blocks(layout, allowed, 16, 16))


def test_layout_lengths_and_text_ranges():
    cog = TokenLayout(13, 30, 45, text_len=226, text_position="start")
    assert (cog.seq_len, cog.text_range, cog.video_start) == (17_776, (0, 226), 226)
    hunyuan = TokenLayout(33, 45, 80, text_len=256, text_position="end")
    assert (hunyuan.seq_len, hunyuan.text_range, hunyuan.video_start) == (119_056, (118_800, 119_056), 0)
    assert TokenLayout(2, 3, 4).text_range is None


def test_layout_video_coords_are_frame_major():
    layout = TokenLayout(2, 3, 4)
    f, r, c = layout.video_coords()
    assert torch.equal(f * 12 + r * 4 + c, torch.arange(24))
    assert (f.max(), r.max(), c.max()) == (1, 2, 3)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"frames": 0, "height": 2, "width": 2}, "frames must be >= 1; got 0"),
        ({"frames": 1, "height": 2, "width": 2, "text_len": -1}, "text_len must be >= 0; got -1"),
        ({"frames": 1, "height": 2, "width": 2, "text_position": "middle"}, "text_position must be 'start' or 'end'"),
    ],
)
def test_layout_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TokenLayout(**kwargs)
