"""Encoded rec datasets: in-memory arrays gathered a whole batch at a time, (user, item) training pairs with
shared negatives, and a chunked stream with a shuffling buffer for files larger than memory."""
from __future__ import annotations

import numpy as np
import paddle

from .features import FeatureError, FeatureMap, Table, _canon, _hash_values


class ArrayDataset(paddle.io.Dataset):
    """Encoded rows of one split. ``__getitem__`` gives one row; ``gather(indices)`` a whole batch as column
    slices (what the Loader uses), which ``collate`` passes through; ``batch(indices)`` does both."""

    def __init__(self, arrays: dict[str, np.ndarray]):
        self.arrays = arrays
        self.n = len(next(iter(arrays.values())))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i) -> dict[str, np.ndarray]:
        return {k: v[int(i)] for k, v in self.arrays.items()}

    def gather(self, indices) -> dict[str, np.ndarray]:
        idx = np.asarray(indices, dtype=np.int64)
        return {k: v[idx] for k, v in self.arrays.items()}

    def collate(self, gathered: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return gathered

    def batch(self, indices) -> dict[str, np.ndarray]:
        return self.collate(self.gather(indices))


class RetrievalTrainDataset(ArrayDataset):
    """(user, item) training pairs; with ``num_negatives`` > 0 every batch also carries that many items
    drawn uniformly from the catalogue (shared negatives of the whole batch)."""

    def __init__(self, arrays, catalog_ids: np.ndarray, num_negatives: int):
        super().__init__(arrays)
        self.catalog_ids, self.num_negatives = catalog_ids, int(num_negatives)

    def collate(self, gathered):
        out = dict(gathered)
        if self.num_negatives > 0:
            neg = np.random.randint(0, len(self.catalog_ids), self.num_negatives)
            out["neg_index"] = neg.astype(np.int64)
            out["neg_ids"] = self.catalog_ids[neg]
        return out


class StreamingCTRDataset(paddle.io.IterableDataset):
    """Rows of a file read in chunks (constant memory), encoded chunk by chunk, shuffled through a
    buffer of ``shuffle_buffer`` rows; ``set_epoch`` reseeds the shuffle, ``set_shard`` keeps every
    ``world_size``-th row. ``keep(lines)`` selects the rows of this split (by line number)."""

    def __init__(self, chunks_fn, fmap: FeatureMap, keep=None, shuffle_buffer: int = 0, seed: int = 0,
                 group_field: str | None = None):
        self.chunks_fn, self.fmap, self.keep = chunks_fn, fmap, keep
        self.shuffle_buffer, self.seed, self.group_field = int(shuffle_buffer), int(seed), group_field
        self.epoch, self.rank, self.world_size = 0, 0, 1

    def set_epoch(self, epoch: int):
        self.epoch = int(epoch)

    def set_shard(self, rank: int, world_size: int):
        self.rank, self.world_size = int(rank), int(world_size)

    def _encoded_chunks(self):
        for t in self.chunks_fn():
            if self.keep is not None:
                t = t.take(np.flatnonzero(self.keep(t.lines)))
            if self.world_size > 1:
                t = t.take(np.flatnonzero(t.lines % self.world_size == self.rank))
            if len(t) == 0:
                continue
            arrays = self.fmap.transform(t)
            arrays["label"] = t.label.astype(np.float32)
            if self.group_field:
                arrays["group"] = group_codes(t, self.fmap, self.group_field)
            yield arrays

    def __iter__(self):
        rng = np.random.RandomState((self.seed * 1000003 + self.epoch) % (2 ** 32))
        buf: list[dict[str, np.ndarray]] = []
        size = 0
        for arrays in self._encoded_chunks():
            if self.shuffle_buffer <= 0:
                yield from _rows(arrays)
                continue
            buf.append(arrays)
            size += len(arrays["label"])
            if size >= self.shuffle_buffer:
                merged = {k: np.concatenate([b[k] for b in buf]) for k in buf[0]}
                perm = rng.permutation(size)
                keep = perm[: size - self.shuffle_buffer // 2]  # emit most, keep half a buffer to mix with the next
                rest = perm[size - self.shuffle_buffer // 2:]
                yield from _rows({k: v[keep] for k, v in merged.items()})
                buf = [{k: v[rest] for k, v in merged.items()}]
                size = len(rest)
        if buf:
            merged = {k: np.concatenate([b[k] for b in buf]) for k in buf[0]}
            perm = rng.permutation(size)
            yield from _rows({k: v[perm] for k, v in merged.items()})

    @staticmethod
    def collate(items) -> dict[str, np.ndarray]:
        return {k: np.stack([it[k] for it in items]) for k in items[0]}


def _rows(arrays: dict[str, np.ndarray]):
    keys = list(arrays)
    cols = [arrays[k] for k in keys]
    for i in range(len(cols[0])):
        yield {k: c[i] for k, c in zip(keys, cols, strict=True)}


def group_codes(t: Table, fmap: FeatureMap, name: str) -> np.ndarray:
    """Stable integer codes of a feature's raw values (the user of GAUC), equal across files and chunks."""
    f = fmap.by_name.get(name)
    if f is None:
        raise FeatureError(f"Metric.user_field: '{name}' is not a feature (features: {', '.join(fmap.by_name)})")
    raw = _canon(t.column(f.source, name))
    return raw if raw.dtype.kind in "iu" else _hash_values(raw, 1 << 62)
