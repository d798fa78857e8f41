"""Rows held in several parts: the shards of an index, memory-mapped, seen as one [V, ...] tensor-like.

A grown index keeps its shards apart (each a memory-mapped tensor, the rows added since the last
save one more, in-memory, part) instead of concatenating them: :class:`ShardedRows` is a
:class:`~lsdo.retrieval.index.format.FrameStore` over the parts, with the shape and dtype of their
concatenation; indexing it with an int, a slice or a LongTensor reads only the rows asked for
(a slice inside one part is a view of it, no copy). :func:`append_rows` grows a store by a part
and :func:`parts_of` lists the parts of a store (a tensor is one part).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Sequence

import torch

from lsdo.retrieval.index.format import FrameStore


class ShardedRows:
    """The concatenation along dim 0 of ``parts`` (tensors or FrameStores with equal trailing shape and dtype)."""

    def __init__(self, parts: Sequence[FrameStore]) -> None:
        if not parts:
            raise ValueError("ShardedRows needs at least one part")
        rest, dtype = tuple(parts[0].shape[1:]), parts[0].dtype
        for p in parts:
            if tuple(p.shape[1:]) != rest or p.dtype != dtype:
                got = f"{tuple(p.shape)} {p.dtype}"
                raise ValueError(f"parts must share shape [*, {rest}] and dtype {dtype}, got {got}")
        self.parts = list(parts)
        self.starts = [0]
        for p in self.parts:
            self.starts.append(self.starts[-1] + int(p.shape[0]))
        self.shape = torch.Size((self.starts[-1], *rest))
        self.dtype = dtype

    def __len__(self) -> int:
        return int(self.shape[0])

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __repr__(self) -> str:
        return f"ShardedRows({list(self.shape)}, {self.dtype}, {len(self.parts)} parts)"

    def _part(self, row: int) -> int:
        return bisect.bisect_right(self.starts, row) - 1

    def __getitem__(self, index: int | slice | torch.Tensor) -> torch.Tensor:
        if isinstance(index, int):
            row = index + len(self) if index < 0 else index
            if not 0 <= row < len(self):
                raise IndexError(f"row {index} out of range for {len(self)} rows")
            p = self._part(row)
            return self.parts[p][row - self.starts[p] : row - self.starts[p] + 1][0]
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step != 1:
                return self[torch.arange(start, stop, step)]
            pieces = list(self.slices(start, stop))
            if len(pieces) == 1:
                return pieces[0]
            if not pieces:
                return self.parts[0][0:0]
            return torch.cat(pieces)
        if isinstance(index, torch.Tensor) and index.dtype in (torch.int64, torch.int32):
            flat = index.reshape(-1).long()
            flat = torch.where(flat < 0, flat + len(self), flat)
            out = torch.empty((flat.numel(), *self.shape[1:]), dtype=self.dtype)
            part_of = torch.bucketize(flat, torch.tensor(self.starts[1:]), right=True)  # [k]: the part of each row
            for p in part_of.unique().tolist():
                sel = part_of == p
                out[sel] = self.parts[p][flat[sel] - self.starts[p]].to("cpu")
            return out.reshape(*index.shape, *self.shape[1:])
        raise TypeError(f"ShardedRows takes an int, a slice or a LongTensor, got {type(index).__name__}")

    def slices(self, start: int, stop: int) -> Iterator[torch.Tensor]:
        """Rows ``start:stop`` as one piece per part they span (views of the parts where they are tensors)."""
        p = self._part(start) if start < len(self) else len(self.parts)
        while start < stop and p < len(self.parts):
            lo = self.starts[p]
            hi = min(stop, self.starts[p + 1])
            if hi > start:
                yield self.parts[p][start - lo : hi - lo]
            start, p = hi, p + 1

    def to_tensor(self) -> torch.Tensor:
        """The rows in one tensor (a copy in memory)."""
        return self[0 : len(self)]


def parts_of(store: FrameStore) -> list[FrameStore]:
    """The parts of a store: a :class:`ShardedRows`' parts, else the store itself."""
    return list(store.parts) if isinstance(store, ShardedRows) else [store]


def join(parts: Sequence[FrameStore]) -> FrameStore:
    """One part as itself, several as a :class:`ShardedRows`."""
    return parts[0] if len(parts) == 1 else ShardedRows(parts)


def append_rows(store: FrameStore, new: torch.Tensor, fixed_rows: int) -> FrameStore:
    """``store`` followed by the rows ``new``; the rows before ``fixed_rows`` are never copied.

    A last part that starts at or after ``fixed_rows`` (in memory, not memory-mapped) is
    concatenated with ``new``; otherwise ``new`` becomes a part of its own.
    """
    parts = parts_of(store)
    start_of_last = int(store.shape[0]) - int(parts[-1].shape[0])
    if start_of_last >= fixed_rows and isinstance(parts[-1], torch.Tensor):
        parts[-1] = torch.cat([parts[-1], new])
    else:
        parts.append(new)
    return join(parts)


def row_slices(store: FrameStore, start: int, stop: int, chunk: int) -> Iterator[torch.Tensor]:
    """Rows ``start:stop`` of any store, at most ``chunk`` rows a piece (views where possible)."""
    if isinstance(store, ShardedRows):
        for piece in store.slices(start, stop):
            for s in range(0, int(piece.shape[0]), chunk):
                yield piece[s : s + chunk]
        return
    for s in range(start, stop, chunk):
        yield store[s : min(s + chunk, stop)]
