"""`SparseMask`: the one object that search, profiling, planner and kernels share.

A `SparseMask` says, for every head (and optionally every batch element) and every block of
`q_block` query tokens, which blocks of `k_block` key tokens to visit. It is modelled on
FlexAttention's `BlockMask`:

    kv_num_blocks  int32 [B', H, nQ]       how many key blocks each query block visits
    kv_indices     int32 [B', H, nQ, W]    their indices, ascending; entries past the count are padding

`B'` is 1 when the mask is shared by every batch element. `nQ = ceil(S / q_block)` and
`nK = ceil(S / k_block)`: the last block of each side may be ragged, and tokens past `seq_len`
never take part. The kernels take nothing else.

`W` is the index width: `nK` as built, or the largest count after `compact()`, which stores only what is
visited (a mask at 10% density then takes a tenth of the memory). Heads that share one pattern can share one
row: `expand_heads(H)` views a one-head mask as H heads without copying (stride 0), and the kernels read it
through its strides.

Text tokens are never dropped. `text=(start, stop)` declares a contiguous token range, at the
start or the end of the sequence, whose key blocks every query block visits and whose query
blocks visit every key block. Because the mask is blockwise, video tokens that share a block with
text are treated like text.

Building a mask from a boolean block tensor makes no host-device synchronisation: the count is a
sum and the indices come from a stable sort, both on the mask's device.

Example::

    >>> import torch
    >>> from vidsparse import SparseMask
    >>> blocks = torch.tensor([[[1, 0, 0], [1, 1, 0], [0, 1, 1]]], dtype=torch.bool)
    >>> mask = SparseMask.from_block_mask(blocks, q_block=16, k_block=16, seq_len=40)
    >>> round(mask.density(), 4)  # the ragged last block (tokens 32-39) counts 8 rows, not 16
    0.6
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["SparseMask"]

_MAX_DENSE_ELEMENTS = 1 << 28  # to_dense() refuses anything larger: S x S booleans get big fast


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _check_block_size(name: str, value: int) -> None:
    if not isinstance(value, int) or value < 16 or value & (value - 1):
        raise ValueError(f"{name} must be a power of two >= 16 (the kernel's tile sizes divide it); got {value!r}")


@dataclass(frozen=True)
class SparseMask:
    """Block-sparse attention mask. Build it with a constructor, not directly.

    Attributes:
        kv_num_blocks: int32 `[B', H, nQ]`, the number of key blocks each query block visits.
        kv_indices: int32 `[B', H, nQ, W]`, the visited key-block indices in ascending order
            (the kernel relies on the order: it keeps K and V reads moving forward through memory);
            W is nK, or less after `compact()`.
        q_block: query tokens per block (a power of two >= 16).
        k_block: key tokens per block (a power of two >= 16).
        seq_len: the token count S the mask was built for.
        text: the `(start, stop)` token range declared as text, or None.
    """

    kv_num_blocks: torch.Tensor
    kv_indices: torch.Tensor
    q_block: int
    k_block: int
    seq_len: int
    text: tuple[int, int] | None = None

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_block_mask(
        cls,
        blocks: torch.Tensor,
        q_block: int,
        k_block: int,
        seq_len: int,
        *,
        text: tuple[int, int] | None = None,
    ) -> "SparseMask":
        """Build from a boolean block tensor `[H, nQ, nK]` or `[B, H, nQ, nK]`.

        `blocks[..., i, j]` is True when query block `i` visits key block `j`. The text range,
        if given, is added on top: its key blocks for every row, every key block for its rows.
        """
        _check_block_size("q_block", q_block)
        _check_block_size("k_block", k_block)
        if not isinstance(seq_len, int) or seq_len < 1:
            raise ValueError(f"seq_len must be a positive int; got {seq_len!r}")
        if blocks.dtype != torch.bool:
            raise ValueError(f"blocks must be a bool tensor; got dtype {blocks.dtype}")
        if blocks.dim() not in (3, 4):
            raise ValueError(f"blocks must be [H, nQ, nK] or [B, H, nQ, nK]; got shape {tuple(blocks.shape)}")
        n_q, n_k = _ceil_div(seq_len, q_block), _ceil_div(seq_len, k_block)
        if tuple(blocks.shape[-2:]) != (n_q, n_k):
            raise ValueError(
                f"blocks for seq_len={seq_len}, q_block={q_block}, k_block={k_block} must end in "
                f"[nQ, nK] = [{n_q}, {n_k}]; got shape {tuple(blocks.shape)}"
            )
        if blocks.dim() == 3:
            blocks = blocks.unsqueeze(0)
        if text is not None:
            blocks = _with_text(blocks, text, q_block, k_block, seq_len)
        kv_num_blocks = blocks.sum(-1, dtype=torch.int32)
        # A stable descending sort of the booleans puts the selected blocks first, in ascending
        # order, without a host sync. Entries past the count are unselected blocks: never read.
        kv_indices = torch.sort(blocks.to(torch.uint8), dim=-1, descending=True, stable=True).indices
        return cls(kv_num_blocks, kv_indices.to(torch.int32), q_block, k_block, seq_len, _text_tuple(text))

    @classmethod
    def full(
        cls,
        num_heads: int,
        seq_len: int,
        q_block: int = 128,
        k_block: int = 128,
        *,
        device: torch.device | str | None = None,
    ) -> "SparseMask":
        """Every query block visits every key block (density 1)."""
        n_q, n_k = _ceil_div(seq_len, q_block), _ceil_div(seq_len, k_block)
        blocks = torch.ones(num_heads, n_q, n_k, dtype=torch.bool, device=device)
        return cls.from_block_mask(blocks, q_block, k_block, seq_len)

    @classmethod
    def random(
        cls,
        density: float,
        num_heads: int,
        seq_len: int,
        q_block: int = 128,
        k_block: int = 128,
        *,
        batch: int | None = None,
        text: tuple[int, int] | None = None,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> "SparseMask":
        """Each query block keeps `round(density * nK)` key blocks drawn uniformly (at least one),
        independently per head and row. Used by tests and benchmarks."""
        if not 0.0 < density <= 1.0:
            raise ValueError(f"density must be in (0, 1]; got {density}")
        n_q, n_k = _ceil_div(seq_len, q_block), _ceil_div(seq_len, k_block)
        lead = (num_heads,) if batch is None else (batch, num_heads)
        keep = max(1, round(density * n_k))
        scores = torch.rand(*lead, n_q, n_k, generator=generator, device=generator.device if generator else device)
        top = scores.topk(keep, dim=-1).indices
        blocks = torch.zeros_like(scores, dtype=torch.bool).scatter_(-1, top, True)
        return cls.from_block_mask(blocks.to(device), q_block, k_block, seq_len, text=text)

    # ------------------------------------------------------------------ shape
    @property
    def num_heads(self) -> int:
        return self.kv_num_blocks.shape[1]

    @property
    def batch(self) -> int:
        """1 for a mask shared by every batch element, otherwise B."""
        return self.kv_num_blocks.shape[0]

    @property
    def num_q_blocks(self) -> int:
        return self.kv_num_blocks.shape[2]

    @property
    def num_k_blocks(self) -> int:
        return _ceil_div(self.seq_len, self.k_block)

    @property
    def nbytes(self) -> int:
        """Bytes the index tensors really hold (a stride-0 expanded view counts once)."""
        return sum(t.untyped_storage().nbytes() for t in (self.kv_num_blocks, self.kv_indices))

    @property
    def device(self) -> torch.device:
        return self.kv_num_blocks.device

    def select_heads(self, start: int, stop: int) -> "SparseMask":
        """The mask of heads `start:stop` (a rank's heads under Ulysses context parallelism)."""
        if not 0 <= start < stop <= self.num_heads:
            raise ValueError(f"head range {start}:{stop} is outside the mask's {self.num_heads} heads")
        return SparseMask(
            self.kv_num_blocks[:, start:stop], self.kv_indices[:, start:stop],
            self.q_block, self.k_block, self.seq_len, self.text,
        )

    def expand_heads(self, num_heads: int) -> "SparseMask":
        """A one-head mask viewed as `num_heads` heads that share its row (no copy: stride 0 over heads)."""
        if self.num_heads != 1:
            raise ValueError(f"expand_heads needs a one-head mask; this one has {self.num_heads} heads")
        b, _, n_q = self.kv_num_blocks.shape
        return SparseMask(
            self.kv_num_blocks.expand(b, num_heads, n_q), self.kv_indices.expand(b, num_heads, n_q, -1),
            self.q_block, self.k_block, self.seq_len, self.text,
        )

    def compact(self) -> "SparseMask":
        """The same mask with its index width cut to the largest count (one host sync, to read that count)."""
        width = max(1, int(self.kv_num_blocks.max()))
        return SparseMask(
            self.kv_num_blocks, self.kv_indices[..., :width].contiguous(),
            self.q_block, self.k_block, self.seq_len, self.text,
        )

    @classmethod
    def stack_heads(cls, masks: list["SparseMask"]) -> "SparseMask":
        """One mask whose head h is the (one-head) `masks[h]`; widths are padded to the widest. The inputs may
        repeat one object: heads with one pattern share its compiled row until this call copies it."""
        first = masks[0]
        for m in masks:
            if (m.q_block, m.k_block, m.seq_len, m.text, m.num_heads) != (first.q_block, first.k_block, first.seq_len,
                                                                         first.text, 1):
                raise ValueError("stack_heads needs one-head masks of the same blocks, seq_len and text")
        width = max(m.kv_indices.shape[-1] for m in masks)
        batch = max(m.batch for m in masks)
        idx = torch.zeros(batch, len(masks), first.num_q_blocks, width, dtype=torch.int32, device=first.device)
        for h, m in enumerate(masks):
            idx[:, h, :, : m.kv_indices.shape[-1]] = m.kv_indices[:, 0]
        num = torch.cat([m.kv_num_blocks.expand(batch, 1, -1) for m in masks], 1)
        return cls(num, idx, first.q_block, first.k_block, first.seq_len, first.text)

    def gather_heads(self, index: torch.Tensor) -> "SparseMask":
        """A mask whose (b, h) row is row `index[b, h]` of this one-batch mask's heads (a table of candidates).
        `index`: int64 `[B, H]` or `[H]` on the mask's device; no host sync."""
        if self.batch != 1:
            raise ValueError("gather_heads reads a table mask of batch 1")
        index = index.view(1, -1) if index.dim() == 1 else index
        return SparseMask(
            self.kv_num_blocks[0][index], self.kv_indices[0][index], self.q_block, self.k_block, self.seq_len, self.text,
        )

    def to(self, device: torch.device | str) -> "SparseMask":
        return SparseMask(
            self.kv_num_blocks.to(device), self.kv_indices.to(device),
            self.q_block, self.k_block, self.seq_len, self.text,
        )

    # ------------------------------------------------------------------ inspection
    def to_blocks(self) -> torch.Tensor:
        """The boolean block tensor `[B', H, nQ, nK]` this mask visits."""
        width = self.kv_indices.shape[-1]
        slot = torch.arange(width, device=self.device)
        valid = slot < self.kv_num_blocks.unsqueeze(-1).long()
        blocks = torch.zeros(*self.kv_indices.shape[:-1], self.num_k_blocks + 1, dtype=torch.bool, device=self.device)
        # padding entries go to a spare column, so that they can never clear a visited block
        target = torch.where(valid, self.kv_indices.long(), self.num_k_blocks)
        return blocks.scatter_(-1, target, valid)[..., : self.num_k_blocks]

    def to_dense(self) -> torch.Tensor:
        """The token-level boolean mask `[B', H, S, S]` (True = attend). For small S only."""
        size = self.batch * self.num_heads * self.seq_len * self.seq_len
        if size > _MAX_DENSE_ELEMENTS:
            raise ValueError(
                f"to_dense() would build {size:,} booleans (B'={self.batch}, H={self.num_heads}, "
                f"S={self.seq_len}); use to_blocks() or the chunked reference for large masks"
            )
        s = self.seq_len
        blocks = self.to_blocks()
        dense = blocks.repeat_interleave(self.q_block, dim=2).repeat_interleave(self.k_block, dim=3)
        return dense[:, :, :s, :s]

    def density_per_head(self) -> torch.Tensor:
        """Fraction of the (query, key) token pairs visited, float32 `[B', H]`, counting ragged blocks exactly."""
        s = self.seq_len
        q_sizes = _block_sizes(s, self.q_block, self.device)  # [nQ]
        k_sizes = _block_sizes(s, self.k_block, self.device)  # [nK]
        keys_per_row = (self.to_blocks().float() * k_sizes).sum(-1)  # [B', H, nQ]
        return (keys_per_row * q_sizes).sum(-1) / float(s * s)

    def density(self) -> float:
        """Fraction of all (query, key) token pairs visited, over every head. Syncs with the device."""
        return float(self.density_per_head().mean())

    def __repr__(self) -> str:
        head = (
            f"SparseMask(batch={self.batch}, heads={self.num_heads}, seq_len={self.seq_len}, "
            f"blocks={self.q_block}x{self.k_block}, grid={self.num_q_blocks}x{self.num_k_blocks}, "
            f"text={self.text}, device={self.device}"
        )
        if self.kv_num_blocks.is_meta:
            return head + ")"
        head += f", density={self.density():.4f})"
        if self.num_q_blocks > 32 or self.num_k_blocks > 64:
            return head
        return head + "\n" + self.to_string(max_heads=2)

    def to_string(self, max_heads: int = 4) -> str:
        """An ASCII picture of the block grid: '#' visited, '.' skipped, one panel per (batch, head)."""
        blocks = self.to_blocks().cpu()
        panels = []
        for b in range(blocks.shape[0]):
            for h in range(min(blocks.shape[1], max_heads)):
                rows = ["".join("#" if x else "." for x in row.tolist()) for row in blocks[b, h]]
                panels.append(f"[batch {b}, head {h}]\n" + "\n".join(rows))
        if blocks.shape[1] > max_heads:
            panels.append(f"... {blocks.shape[1] - max_heads} more heads")
        return "\n".join(panels)

    # ------------------------------------------------------------------ interop
    def to_flex_block_mask(self, key_padding_mask: torch.Tensor | None = None):
        """The same mask as FlexAttention's `BlockMask` (used as an independent reference).

        Blocks are handed to FlexAttention as full blocks, so it applies no `mask_mod` to them and
        handles the ragged tail itself. With a `key_padding_mask` (bool `[B, S]`, True = ignore the
        key), every block becomes a partial block with a `mask_mod` that drops those keys.
        """
        from torch.nn.attention.flex_attention import BlockMask

        size = (self.q_block, self.k_block)
        seq = (self.seq_len, self.seq_len)
        if self.kv_indices.shape[-1] != self.num_k_blocks or self.kv_indices.stride(1) == 0:  # compact or shared rows
            self = SparseMask.from_block_mask(self.to_blocks(), self.q_block, self.k_block, self.seq_len)
        if key_padding_mask is None:
            empty = torch.zeros_like(self.kv_num_blocks)
            return BlockMask.from_kv_blocks(
                empty, self.kv_indices, self.kv_num_blocks, self.kv_indices, BLOCK_SIZE=size, seq_lengths=seq,
            )
        padding = key_padding_mask.to(self.device)

        def keep_unpadded(b, h, q_idx, kv_idx):
            return ~padding[b, kv_idx]

        return BlockMask.from_kv_blocks(
            self.kv_num_blocks, self.kv_indices, BLOCK_SIZE=size, mask_mod=keep_unpadded, seq_lengths=seq,
        )


def _block_sizes(seq_len: int, block: int, device) -> torch.Tensor:
    """Tokens in each block of a sequence cut into `block`-sized pieces; the last may be short."""
    starts = torch.arange(0, seq_len, block, device=device)
    return (seq_len - starts).clamp(max=block).float()


def _text_tuple(text) -> tuple[int, int] | None:
    return None if text is None else (int(text[0]), int(text[1]))


def _with_text(blocks: torch.Tensor, text, q_block: int, k_block: int, seq_len: int) -> torch.Tensor:
    start, stop = _text_tuple(text)
    if not (0 <= start < stop <= seq_len) or (start != 0 and stop != seq_len):
        raise ValueError(
            f"text must be a non-empty token range (start, stop) at the start (start=0) or the end "
            f"(stop=seq_len={seq_len}) of the sequence; got {text!r}"
        )
    blocks = blocks.clone()
    blocks[..., start // q_block : _ceil_div(stop, q_block), :] = True
    blocks[..., :, start // k_block : _ceil_div(stop, k_block)] = True
    return blocks
