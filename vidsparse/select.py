"""One selection rule for every per-head choice: the offline search, `static` re-selection and the run-time planners.

`select(errors, costs, eps, lam)`: per head, among candidates whose measured error is at most `eps`, the one that
minimises `error + lam * cost`; dense (index -1, error 0, cost 1) where none qualifies or none is cheaper. Errors are
relative L2 errors of a head's output on sampled rows; costs are in units of dense attention's time (a candidate's
realised density, scaled by the kernel's time per unit of work where that is measured).

Example::

    >>> errors = torch.tensor([[[0.02, 0.3], [0.5, 0.4]]])    # [L=1, H=2, C=2]
    >>> select(errors, torch.tensor([0.2, 0.1]), eps=0.1, lam=1.0)
    tensor([[ 0, -1]])
"""

from __future__ import annotations

import torch

__all__ = ["select"]


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
