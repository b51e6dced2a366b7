"""Batches for the Trainer: batch samplers, the Loader, and numpy -> Tensor conversion.

A *batch sampler* says which dataset indices form each batch of an epoch, for this rank:
``sampler.batches(epoch) -> list of index arrays``. The default, :class:`ShuffledBatches`, cuts a seeded
per-epoch permutation (sharded across ranks) into ``Global.batch_size`` chunks; a family returns its own
from ``Task.batch_sampler`` (the Transformer groups sentences by length up to ``Data.max_tokens``).

The :class:`Loader` turns index batches into collated batches, in this process or in worker processes. A
map-style dataset may define ``gather(indices)`` to fetch a whole batch at once (the rec family slices
its encoded arrays); otherwise items are fetched one by one and handed to the collate function as a list.
An iterable dataset (a stream read in chunks) is batched in arrival order.
"""
from __future__ import annotations

import math
import multiprocessing as mp
from collections.abc import Iterator, Sequence

import numpy as np
import paddle


def epoch_indices(n: int, seed: int, epoch: int, shuffle: bool, rank: int = 0, world_size: int = 1) -> np.ndarray:
    """This rank's sample order for an epoch: a seeded permutation, then every world_size-th index."""
    order = np.random.RandomState((seed * 1000003 + epoch) % (2 ** 32)).permutation(n) if shuffle else np.arange(n)
    if world_size > 1:
        per = int(math.ceil(n / world_size))
        order = np.concatenate([order, order[: per * world_size - n]])  # pad so every rank has as many batches
        order = order[rank::world_size]
    return order


class ShuffledBatches:
    """``batch_size`` consecutive indices of :func:`epoch_indices` per batch (the last batch may be smaller)."""

    def __init__(self, n: int, batch_size: int, seed: int = 0, shuffle: bool = True, rank: int = 0,
                 world_size: int = 1):
        if int(batch_size) < 1:
            raise ValueError(f"batch size must be >= 1, got {batch_size}")
        self.n, self.batch_size, self.seed, self.shuffle = int(n), int(batch_size), int(seed), bool(shuffle)
        self.rank, self.world_size = int(rank), int(world_size)

    def batches(self, epoch: int) -> list[np.ndarray]:
        order = epoch_indices(self.n, self.seed, epoch, self.shuffle, self.rank, self.world_size)
        return [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]

    def __len__(self) -> int:
        per_rank = int(math.ceil(self.n / self.world_size)) if self.world_size > 1 else self.n
        return int(math.ceil(per_rank / self.batch_size))


class FixedBatches:
    """Precomputed batches (lists of indices) in a seeded per-epoch order, every world_size-th batch per rank
    (padded by repeating the first ones so every rank runs as many steps)."""

    def __init__(self, batches: Sequence[Sequence[int]], seed: int = 0, shuffle: bool = True, rank: int = 0,
                 world_size: int = 1):
        self.fixed = [np.asarray(b, dtype=np.int64) for b in batches]
        self.seed, self.shuffle, self.rank, self.world_size = int(seed), bool(shuffle), int(rank), int(world_size)

    def batches(self, epoch: int) -> list[np.ndarray]:
        order = epoch_indices(len(self.fixed), self.seed, epoch, self.shuffle, self.rank, self.world_size)
        return [self.fixed[int(i)] for i in order]

    def __len__(self) -> int:
        n = len(self.fixed)
        return int(math.ceil(n / self.world_size)) if self.world_size > 1 else n


def default_collate(items):
    if isinstance(items[0], dict):
        return {k: np.stack([np.asarray(it[k]) for it in items]) for k in items[0]}
    return np.stack([np.asarray(it) for it in items])


def fetch(dataset, indices):
    """The samples of one batch: ``dataset.gather(indices)`` when defined, else a list of items."""
    gather = getattr(dataset, "gather", None)
    if gather is not None:
        return gather(np.asarray(indices, dtype=np.int64))
    return [dataset[int(i)] for i in indices]


_W_DATASET = None
_W_COLLATE = None


def _worker_init(dataset, collate):
    global _W_DATASET, _W_COLLATE
    _W_DATASET, _W_COLLATE = dataset, collate
    if hasattr(paddle.base.core, "set_num_threads"):
        paddle.base.core.set_num_threads(1)


def _worker_batch(idx):
    return _W_COLLATE(fetch(_W_DATASET, idx))


def is_iterable(dataset) -> bool:
    return isinstance(dataset, paddle.io.IterableDataset) or not hasattr(dataset, "__getitem__")


class Loader:
    """Collated batches of a dataset: of a map-style dataset in the order of a list of index batches
    (optionally in ``num_workers`` forked worker processes), or of an iterable dataset ``batch_size`` items
    at a time. Collate functions return dicts of numpy arrays (strings stay numpy)."""

    def __init__(self, dataset, collate, batch_size: int, num_workers: int = 0):
        if int(batch_size) < 1:
            raise ValueError(f"batch size must be >= 1, got {batch_size}")
        self.dataset, self.collate = dataset, collate or default_collate
        self.batch_size, self.num_workers = int(batch_size), int(num_workers)
        self.iterable = is_iterable(dataset)

    def num_batches(self, n_indices: int) -> int:
        return int(math.ceil(n_indices / self.batch_size))

    def batches(self, indices: np.ndarray | None = None, skip: int = 0, index_batches=None) -> Iterator:
        """Collated batches: of ``index_batches`` (a list of index arrays, e.g. from a batch sampler), else of
        ``indices`` cut into ``batch_size`` chunks, else (iterable datasets) of the stream; the first
        ``skip`` batches are left out (resume inside an epoch)."""
        if self.iterable:
            yield from self._iter_batches(skip)
            return
        if index_batches is None:
            if indices is None:
                indices = np.arange(len(self.dataset))
            index_batches = [indices[i:i + self.batch_size] for i in range(0, len(indices), self.batch_size)]
        chunks = list(index_batches)[skip:]
        if self.num_workers <= 0:
            for c in chunks:
                yield self.collate(fetch(self.dataset, c))
            return
        ctx = mp.get_context("fork")
        with ctx.Pool(self.num_workers, initializer=_worker_init, initargs=(self.dataset, self.collate)) as pool:
            yield from pool.imap(_worker_batch, chunks, chunksize=1)

    def _iter_batches(self, skip: int):
        buf, seen = [], 0
        for item in self.dataset:
            buf.append(item)
            if len(buf) == self.batch_size:
                if seen >= skip:
                    yield self.collate(buf)
                seen += 1
                buf = []
        if buf and seen >= skip:
            yield self.collate(buf)


def to_tensors(batch):
    """numpy arrays -> paddle Tensors (numeric dtypes only); everything else is passed through."""
    if isinstance(batch, dict):
        return {k: to_tensors(v) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_tensors(v) for v in batch)
    if isinstance(batch, np.ndarray) and batch.dtype.kind in "biuf":
        return paddle.to_tensor(batch)
    return batch
