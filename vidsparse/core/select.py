"""One selection rule for every per-head choice: the offline search, `static` re-selection and the run-time planners.

`select(errors, costs, eps, lam)`: per head, among candidates whose measured error is at most `eps`, the one that
minimises `error + lam * cost`; dense (index -1, error 0, cost 1) where none qualifies or none is cheaper. Errors are
relative L2 errors of a head's output on sampled rows; costs are in units of dense attention's time (a candidate's
realised density, scaled by the kernel's time per unit of work where that is measured).

`select_within(errors, costs, densities, density)` states the budget as a target density instead: per row of heads,
the choice of `select` (no error cap) at the smallest cost weight whose mean realised density is at most `density`.

Example::

    >>> errors = torch.tensor([[[0.02, 0.3], [0.5, 0.4]]])    # [L=1, H=2, C=2]
    >>> select(errors, torch.tensor([0.2, 0.1]), eps=0.1, lam=1.0)
    tensor([[ 0, -1]])
"""

from __future__ import annotations

import torch

__all__ = ["select", "select_within"]

_LAMS = torch.logspace(-4, 4, 65)  # the cost weights `select_within` tries, cheapest last


def select(errors: torch.Tensor, costs: torch.Tensor, eps: float, lam: float = 1.0) -> torch.Tensor:
    """Per head, argmin(error + lam * cost) over candidates with error <= eps; -1 (dense) where none qualifies.

    errors `[..., C]`; costs broadcastable to it (`[C]` for one cost per candidate, or per head) -> int64 `[...]`.
    Dense always qualifies at `lam * 1`, so a candidate is chosen only when it is cheaper by that measure too
    (so `lam == 0` keeps every head dense). Runs on the tensors' device without a host sync.
    """
    if eps < 0 or lam < 0:
        raise ValueError(f"eps and lam must be >= 0; got eps={eps}, lam={lam}")
    total = errors + lam * costs
    total = total.masked_fill(errors > eps, float("inf"))
    best, index = total.min(-1)
    return torch.where(best < lam * 1.0, index, torch.full_like(index, -1))


def select_within(errors: torch.Tensor, costs: torch.Tensor, densities: torch.Tensor, density: float) -> torch.Tensor:
    """Per head, the least-error choice that keeps the mean realised density over the last dimension of heads at
    most `density`: `select(errors, costs, inf, lam)` at the smallest `lam` of a log grid (1e-4 .. 1e4) that fits,
    or at the largest where none does. -1: dense (density 1).

    errors `[..., H, C]`; costs and densities broadcastable to it -> int64 `[..., H]`. No host sync.
    """
    if not 0 < density <= 1:
        raise ValueError(f"density must be in (0, 1]; got {density}")
    lams = _LAMS.to(errors.device, errors.dtype).view(-1, *([1] * errors.dim()))
    total = errors.unsqueeze(0) + lams * costs  # [L, ..., H, C]
    best, index = total.min(-1)
    choice = torch.where(best < lams.squeeze(-1), index, torch.full_like(index, -1))  # [L, ..., H]
    dens = torch.broadcast_to(densities, errors.shape).unsqueeze(0).expand(total.shape)
    realised = torch.where(choice < 0, torch.ones_like(best),
                           dens.gather(-1, choice.clamp_min(0).unsqueeze(-1)).squeeze(-1)).mean(-1)  # [L, ...]
    fits = realised <= density + 1e-6
    first = torch.where(fits.any(0), fits.float().argmax(0), torch.full_like(fits[0], len(_LAMS) - 1, dtype=torch.long))
    return choice.gather(0, first.unsqueeze(0).unsqueeze(-1).expand(1, *choice.shape[1:])).squeeze(0)
