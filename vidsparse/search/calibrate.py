"""Calibration: how well each candidate pattern reproduces full attention, per layer and head, on sampled query rows.

`Calibrator` is a planner that plans every call dense and watches it through the planner's `Probe`
(`vidsparse.apply(pipe, "dense", planner=calibrator)`). At the chosen
denoising steps it takes, for every replaced layer:
- sampled video query rows, the same number in every frame, spread over each frame (a fixed random draw);
- their exact attention probabilities over all keys, computed a few heads at a time (never the S x S matrix: rows x S);
- from those, per key block, the attention mass and the partial output `sum_k p_k v_k`. Any block pattern's output for
  a row is then `sum over kept blocks of partial outputs / sum of kept mass`, so every candidate is scored from one pass;
- per candidate and head, the relative L2 error of that output against full attention over the sampled rows:
  `||O_pattern - O|| / ||O||`, per CFG branch (each batch element is one sample);
- per head, where its mass goes: own frame, own position in other frames (+-1 row and column), text, and how many keys
  hold 90% of it (the attention analysis);
- with `top_p_grid`, the `dynamic` method at each of those `top_p` values: its mask made as the method makes it (this
  call's pooled q and k, in the Hilbert order), its realised density per head, and its error on the same rows, from
  block partials cut in the Hilbert order. The search turns these curves into a per-head `top_p` under one density
  budget (`PatternFile.select_top_p`).

Memory per head chunk is B x heads x rows x (S + nK x D) floats; `head_chunk` bounds it (about 1.5 GB at 119k tokens,
416 rows, 4 heads).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..core.layout import HILBERT, TokenLayout
from ..core.plan import AttentionPlan, sample_rows
from ..kernels.block_scores import estimate_block_mass
from ..methods.dynamic import forced_blocks, top_p_blocks
from .candidates import Pattern

__all__ = ["Calibrator", "CallRecord", "sample_rows"]

STAT_NAMES = ("own_frame", "own_position", "text", "keys_for_90")


@dataclass
class CallRecord:
    """What one observed call measured: errors `[B, H, C]`, stats `[B, H, 4]` (STAT_NAMES), block mass `[H, nK]`,
    and with a `top_p` grid of T values the dynamic method's errors and realised densities, each `[B, H, T]`."""

    layer: int
    step: int
    errors: torch.Tensor
    stats: torch.Tensor
    mass: torch.Tensor
    dynamic_errors: torch.Tensor | None = None
    dynamic_density: torch.Tensor | None = None


@dataclass
class Calibrator:
    """Scores `candidates` on every layer's attention at the denoising `steps` (see the module docstring).

    Attributes:
        candidates: the patterns to score ("full" is implied: error 0).
        steps: the denoising steps (0-based, per generation) to observe; None observes every step.
        rows_per_frame: sampled query rows per latent frame.
        q_block, k_block: the block sizes the patterns compile at (the kernel's).
        head_chunk: heads per exact-attention chunk (bounds memory).
        top_p_grid: the `dynamic` method's `top_p` values to measure (empty: none); its masks are made with the
            method's defaults (`min_blocks` 1, the sink kept) at `q_block` x `k_block`.
        records: one `CallRecord` per observed (layer, step) call, in order.
    """

    candidates: tuple[Pattern, ...]
    steps: set[int] | None = None
    rows_per_frame: int = 32
    q_block: int = 128
    k_block: int = 128
    head_chunk: int = 4
    seed: int = 0
    top_p_grid: tuple[float, ...] = ()
    records: list[CallRecord] = field(default_factory=list)
    last_layout: TokenLayout | None = None
    _compiled: dict = field(default_factory=dict, repr=False)

    def wants(self, step: int) -> bool:
        return self.steps is None or step in self.steps

    # the planner interface (vidsparse.core.plan): every call runs dense; the probe's q, k and v are scored
    def plan(self, ctx, probe):
        self.observe(ctx.layer, ctx.step, ctx.layout, probe.q, probe.k, probe.v, probe.key_padding)
        return AttentionPlan.dense(ctx.heads)

    def reset(self) -> None:
        """Records are kept across generations: the search calibrates over several."""

    def bind(self, transformer, num_layers: int, num_heads) -> None:
        pass

    def _setup(self, layout: TokenLayout, device) -> dict:
        """Per layout: sampled rows, each candidate's kept blocks for those rows `[C, R, nK]`, key features."""
        key = (layout, str(device))
        if key not in self._compiled:
            rows = sample_rows(layout, self.rows_per_frame, self.seed).to(device)
            n_q, n_k = -(-layout.seq_len // self.q_block), -(-layout.seq_len // self.k_block)
            blocks = torch.stack([c.blocks(layout, self.q_block, self.k_block, device) for c in self.candidates]
                                 or [torch.zeros(n_q, n_k, dtype=torch.bool, device=device)])[: len(self.candidates)]
            keep = blocks[:, rows // self.q_block].float()  # [C, R, nK]
            frame, row, col = layout.video_coords(device)
            s = layout.seq_len
            k_frame = torch.full((s,), -1, device=device)
            k_row, k_col = k_frame.clone(), k_frame.clone()
            vs = slice(layout.video_start, layout.video_start + layout.video_len)
            k_frame[vs], k_row[vs], k_col[vs] = frame, row, col
            q = rows - layout.video_start
            own_frame = k_frame.view(1, -1) == frame[q].view(-1, 1)  # [R, S]
            own_pos = ((k_row.view(1, -1) - row[q].view(-1, 1)).abs() <= 1) & (
                (k_col.view(1, -1) - col[q].view(-1, 1)).abs() <= 1) & (k_frame.view(1, -1) >= 0) & ~own_frame
            is_text = (k_frame < 0).view(1, -1).expand_as(own_frame)
            # Key blocks holding text: always kept, so a "columns" pattern picks among the others.
            text_blocks = torch.zeros(n_k, dtype=torch.bool, device=device)
            if layout.text_range is not None:
                text_blocks[layout.text_range[0] // self.k_block : -(-layout.text_range[1] // self.k_block)] = True
            columns = [(i, c.columns) for i, c in enumerate(self.candidates) if c.columns]
            self._compiled[key] = dict(rows=rows, keep=keep, own_frame=own_frame.float(),
                                       own_pos=own_pos.float(), text=is_text.float(), text_blocks=text_blocks,
                                       columns=columns)
            if self.top_p_grid:
                perm = HILBERT.permutation(layout, device)  # ordered[i] = model[perm[i]]
                where = torch.empty_like(perm)
                where[perm] = torch.arange(perm.numel(), device=device)
                text_q = torch.zeros(n_q, dtype=torch.bool, device=device)  # text query blocks stay dense
                if layout.text_range is not None:
                    text_q[layout.text_range[0] // self.q_block : -(-layout.text_range[1] // self.q_block)] = True
                self._compiled[key].update(
                    perm=perm, row_block=where[rows] // self.q_block, text_q=text_q,
                    forced=forced_blocks(layout, self.q_block, self.k_block, True, device))
        return self._compiled[key]

    @torch.no_grad()
    def observe(self, layer: int, step: int, layout: TokenLayout, q, k, v, key_padding=None) -> None:
        """Score one attention call. q, k, v: `[B, H, S, D]`; key_padding: bool `[B, S]` (True = padded key, ignored) or None."""
        if not self.wants(step):
            return
        c = self._setup(layout, q.device)
        self.last_layout = layout
        b, h, s, d = q.shape
        n_k = -(-s // self.k_block)
        pad = n_k * self.k_block - s
        errors, stats, mass_out, dyn_errors = [], [], [], []
        dyn_keep = dyn_density = None
        if self.top_p_grid:
            # the dynamic method's masks at every top_p `[T, B, H, nQ, nK]`, as the method makes them
            probs, _ = estimate_block_mass(q, k, self.q_block, self.k_block, perm=c["perm"], key_padding=key_padding,
                                           text=layout.text_range)
            dyn_keep = torch.stack([top_p_blocks(probs, t, c["forced"]) for t in self.top_p_grid]) | c["text_q"][:, None]
            q_sizes, k_sizes = ((s - torch.arange(n, device=q.device) * blk).clamp(max=blk).float()
                                for n, blk in ((-(-s // self.q_block), self.q_block), (n_k, self.k_block)))
            visited = ((dyn_keep.float() * k_sizes).sum(-1) * q_sizes).sum(-1) / float(s * s)  # ragged blocks exact
            dyn_density = visited.permute(1, 2, 0)  # [B, H, T]
            del probs
        for h0 in range(0, h, self.head_chunk):
            hs = slice(h0, min(h, h0 + self.head_chunk))
            qs = q[:, hs, c["rows"]].float()  # [B, Hc, R, D]
            scores = qs @ k[:, hs].float().transpose(-1, -2) / math.sqrt(d)  # [B, Hc, R, S]
            if key_padding is not None:
                scores = scores.masked_fill(key_padding[:, None, None, :], float("-inf"))
            p = scores.softmax(-1)
            del scores
            vf = v[:, hs].float()
            out = p @ vf  # [B, Hc, R, D] exact
            p_blk = torch.nn.functional.pad(p, (0, pad)).unflatten(-1, (n_k, self.k_block))  # [B, Hc, R, nK, kb]
            v_blk = torch.nn.functional.pad(vf, (0, 0, 0, pad)).unflatten(-2, (n_k, self.k_block))  # [B, Hc, nK, kb, D]
            mass = p_blk.sum(-1)  # [B, Hc, R, nK]
            part = torch.einsum("bhrnk,bhnkd->bhrnd", p_blk, v_blk)  # [B, Hc, R, nK, D]
            del p_blk, v_blk
            keep = c["keep"].unsqueeze(0).expand(mass.shape[1], -1, -1, -1)  # [Hc, C, R, nK]
            if c["columns"]:
                # "columns" candidates keep each head's own top blocks by mass over the sampled rows of this call
                # (the pattern file stores the top blocks of the mass summed over every call).
                keep = keep.clone()
                head_mass = mass.mean((0, 2)).masked_fill(c["text_blocks"], -1.0)  # [Hc, nK]
                for i, count in c["columns"]:
                    top = head_mass.topk(min(count, n_k), dim=-1).indices
                    cols = torch.zeros_like(head_mass).scatter_(1, top, 1.0)
                    keep[:, i] = torch.maximum(keep[:, i], cols.unsqueeze(1))
            num = torch.einsum("hcrn,bhrnd->bhcrd", keep, part)
            den = torch.einsum("hcrn,bhrn->bhcr", keep, mass).clamp_min(1e-30).unsqueeze(-1)
            approx = num / den  # [B, Hc, C, R, D]
            # a head whose output is 0 has error 0 where the pattern's is 0 too (not 0 / 0)
            err = ((approx - out.unsqueeze(2)).flatten(-2).norm(dim=-1)
                   / out.flatten(-2).norm(dim=-1).clamp_min(1e-30).unsqueeze(-1))
            errors.append(err)
            if dyn_keep is not None:
                dyn_errors.append(self._dynamic_errors(c, dyn_keep[:, :, hs], p, vf, out, n_k, pad))
            # Where the mass goes, and how concentrated it is.
            own_frame = (p * c["own_frame"]).sum(-1).mean(-1)
            own_pos = (p * c["own_pos"]).sum(-1).mean(-1)
            text = (p * c["text"]).sum(-1).mean(-1)
            top = p.sort(-1, descending=True).values.cumsum(-1)
            keys_90 = ((top < 0.9).sum(-1) + 1).float().mean(-1) / s
            stats.append(torch.stack([own_frame, own_pos, text, keys_90], -1))
            mass_out.append(mass.mean((0, 2)))
            del p, top, part
        self.records.append(CallRecord(
            layer, step, torch.cat(errors, 1).cpu(), torch.cat(stats, 1).cpu(), torch.cat(mass_out, 0).cpu(),
            None if dyn_keep is None else torch.cat(dyn_errors, 1).cpu(),
            None if dyn_density is None else dyn_density.cpu()))

    def _dynamic_errors(self, c: dict, keep, p, vf, out, n_k: int, pad: int) -> torch.Tensor:
        """float32 `[B, Hc, T]`: the dynamic masks' (`keep`, `[T, B, Hc, nQ, nK]` over Hilbert-order blocks) relative
        errors on the sampled rows, from the rows' exact probabilities `p` `[B, Hc, R, S]` and values `vf`."""
        perm = c["perm"]
        p_blk = torch.nn.functional.pad(p[..., perm], (0, pad)).unflatten(-1, (n_k, self.k_block))
        v_blk = torch.nn.functional.pad(vf[:, :, perm], (0, 0, 0, pad)).unflatten(-2, (n_k, self.k_block))
        mass = p_blk.sum(-1)  # [B, Hc, R, nK], key blocks cut in the Hilbert order
        part = torch.einsum("bhrnk,bhnkd->bhrnd", p_blk, v_blk)
        del p_blk, v_blk
        rows_keep = keep[:, :, :, c["row_block"]].float()  # [T, B, Hc, R, nK]: each sampled row's query block
        num = torch.einsum("tbhrn,bhrnd->tbhrd", rows_keep, part)
        den = torch.einsum("tbhrn,bhrn->tbhr", rows_keep, mass).clamp_min(1e-30).unsqueeze(-1)
        err = (num / den - out).flatten(-2).norm(dim=-1) / out.flatten(-2).norm(dim=-1).clamp_min(1e-30)  # [T, B, Hc]
        return err.permute(1, 2, 0)

    def densities(self, layout: TokenLayout) -> torch.Tensor:
        """Each candidate's density at `layout` ("columns" counted with its blocks placed, as any head's would be)."""
        return torch.tensor([_placed(c, layout, self.k_block).density(layout, self.q_block, self.k_block)
                             for c in self.candidates])

    def column_points(self, layout: TokenLayout, count: int) -> torch.Tensor:
        """Per layer and head, the `count` video key blocks of most mass over every observed call, as grid positions:
        float32 `[L, H, count, 2]` of (frame, position in frame) in [0, 1] (each block's middle token)."""
        layers = sorted({r.layer for r in self.records})
        n_k = -(-layout.seq_len // self.k_block)
        text_blocks = torch.zeros(n_k, dtype=torch.bool)
        if layout.text_range is not None:
            text_blocks[layout.text_range[0] // self.k_block : -(-layout.text_range[1] // self.k_block)] = True
        out = torch.zeros(len(layers), self.records[0].mass.shape[0], count, 2)
        for li, layer in enumerate(layers):
            mass = torch.stack([r.mass for r in self.records if r.layer == layer and r.mass.shape[-1] == n_k]).sum(0)
            top = mass.masked_fill(text_blocks, -1.0).topk(min(count, n_k), dim=-1).indices  # [H, count]
            token = (top * self.k_block + self.k_block // 2).clamp(layout.video_start,
                                                                   layout.video_start + layout.video_len - 1)
            video = token - layout.video_start
            frame, pos = video // layout.frame_size, video % layout.frame_size
            out[li, :, : top.shape[1], 0] = frame.float() / max(layout.frames - 1, 1)
            out[li, :, : top.shape[1], 1] = pos.float() / max(layout.frame_size - 1, 1)
        return out


def _placed(pattern: Pattern, layout: TokenLayout, k_block: int) -> Pattern:
    """A "columns" candidate given `count` distinct video key blocks (evenly spread), for its density."""
    n = pattern.columns
    if not n:
        return pattern
    start, stop = layout.video_start, layout.video_start + layout.video_len
    blocks = torch.arange(start // k_block, -(-stop // k_block))
    if layout.text_range is not None:  # blocks that hold text are kept anyway
        lo, hi = layout.text_range[0] // k_block, -(-layout.text_range[1] // k_block)
        blocks = blocks[(blocks < lo) | (blocks >= hi)]
    chosen = blocks[torch.linspace(0, len(blocks) - 1, min(n, len(blocks))).round().long().unique()]
    video = (chosen * k_block + k_block // 2).clamp(start, stop - 1) - start
    points = [(int(v) // layout.frame_size / max(layout.frames - 1, 1),
               int(v) % layout.frame_size / max(layout.frame_size - 1, 1)) for v in video]
    return pattern.with_points(points)
