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
