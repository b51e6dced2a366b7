"""The server's dynamic batcher: queued requests grouped into predictor calls by worker threads.

    batcher = Batcher(max_batch=32, max_wait_s=0.005, workers=1, on_batch=..., on_depth=...)
    entry = QueuedRequest(model, items)     # model: the server's LoadedModel (its task and runners)
    batcher.submit(entry)
    rows = entry.future.result()

A group is the head request and the following ones of the same model, up to ``max_batch`` records (a
request is never split; one larger than ``max_batch`` runs alone); a worker takes it once ``max_batch``
records are queued or the head has waited ``max_wait_s`` (at once after :meth:`Batcher.flush`). The group's
items are collated by ``model.task.collate_items``, padded to :func:`bucket_size` rows, run by one of the
model's runners and cut into each request's rows. When a group fails, each of its requests runs alone, so a
failure reaches only the request that caused it.
"""
from __future__ import annotations

import collections
import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger("paddle_models")


class QueuedRequest:
    """One admitted request's items, the model they were prepared for, and the future its rows go to."""

    __slots__ = ("model", "items", "n", "future", "t")

    def __init__(self, model, items: list):
        self.model, self.items, self.n = model, items, len(items)
        self.future: concurrent.futures.Future = concurrent.futures.Future()
        self.t = time.monotonic()


class Batcher:
    """Queued requests grouped into predictor calls by ``workers`` threads (see the module doc)."""

    def __init__(self, max_batch: int, max_wait_s: float, workers: int, on_batch: Callable[[int], None],
                 on_depth: Callable[[int], None], bucket: bool = True):
        self.max_batch, self.max_wait_s = max(1, int(max_batch)), max(0.0, float(max_wait_s))
        self.bucket = bool(bucket)
        self._q: collections.deque[QueuedRequest] = collections.deque()
        self._queued = 0
        self._cond = threading.Condition()
        self._stop = False
        self._flush = False  # draining: run what is queued without waiting for more
        self._on_batch, self._on_depth = on_batch, on_depth
        self._threads = [threading.Thread(target=self._loop, args=(i,), name=f"batcher-{i}", daemon=True)
                         for i in range(max(1, int(workers)))]
        for t in self._threads:
            t.start()

    def submit(self, entry: QueuedRequest) -> None:
        with self._cond:
            self._q.append(entry)
            self._queued += entry.n
            self._on_depth(self._queued)
            self._cond.notify()

    def flush(self) -> None:
        """From now on run queued requests at once (no waiting for others to batch with)."""
        with self._cond:
            self._flush = True
            self._cond.notify_all()

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        for t in self._threads:
            t.join(timeout=5)

    def _take(self) -> list[QueuedRequest] | None:
        """The next group: the head entry and the following ones of the same model, up to max_batch records;
        waits until max_batch records are queued or the head has waited max_wait_s."""
        with self._cond:
            while True:
                while self._q and self._q[0].future.cancelled():  # timed out while queued
                    self._queued -= self._q.popleft().n
                if self._stop and not self._q:
                    return None
                if not self._q:
                    self._cond.wait()
                    continue
                head = self._q[0]
                ready, n = 0, 0
                for e in self._q:
                    if e.model is not head.model or n + e.n > self.max_batch and n:
                        break
                    n += e.n
                    ready += 1
                full = n >= self.max_batch or ready < len(self._q)
                left = head.t + self.max_wait_s - time.monotonic()
                if full or left <= 0 or self._stop or self._flush:
                    group = [self._q.popleft() for _ in range(ready)]
                    self._queued -= n
                    self._on_depth(self._queued)
                    if self._q:
                        self._cond.notify()  # another worker can start on the rest
                    return group
                self._cond.wait(left)

    def _loop(self, worker: int) -> None:
        while True:
            group = self._take()
            if group is None:
                return
            group = [e for e in group if e.future.set_running_or_notify_cancel()]
            if group:
                self._answer(group, worker)

    def _answer(self, group: list[QueuedRequest], worker: int) -> None:
        """Run ``group`` as one predictor call and give each request its rows. When that fails, each request
        runs alone, so a failure (a record the task could not collate, say) is answered as a 500 to its own
        request only and the others batched with it still get their rows."""
        try:
            rows = self._run(group, worker)
        except Exception as e:
            if len(group) > 1:
                log.warning("batch of %d requests failed (%s: %s); running each alone", len(group),
                            type(e).__name__, e)
                for entry in group:
                    self._answer([entry], worker)
                return
            log.exception("prediction request of %d records failed", group[0].n)
            group[0].future.set_exception(e)
            return
        k = 0
        for entry in group:
            entry.future.set_result(rows[k:k + entry.n])
            k += entry.n

    def _run(self, group: list[QueuedRequest], worker: int) -> list:
        """The prediction rows of ``group``'s items: collated, padded to the bucket size, run, cut back."""
        model = group[0].model
        items = [it for e in group for it in e.items]
        batch = model.task.collate_items(items)
        n = len(items)
        size = bucket_size(n, self.max_batch) if self.bucket else n
        outputs = model.runners[worker % len(model.runners)](pad_rows(batch, n, size))
        if size != n:
            outputs = {k: (v[:n] if getattr(v, "ndim", 0) and v.shape[0] == size else v) for k, v in outputs.items()}
        rows = model.task.prediction_rows(outputs, batch)
        self._on_batch(n)
        return rows


def bucket_size(n: int, max_batch: int) -> int:
    """The batch size a group of ``n`` records runs at: the next power of two, at most ``max_batch`` (a single
    request larger than ``max_batch`` runs at its own size). Few distinct sizes let the predictor reuse the
    kernels it built for each shape."""
    if n >= max_batch:
        return n
    size = 1
    while size < n:
        size *= 2
    return min(size, max_batch)


def pad_rows(batch: dict, n: int, size: int) -> dict:
    """``batch`` with its numeric arrays of ``n`` rows grown to ``size`` rows by repeating the first row (the
    extra rows' outputs are dropped; rows do not interact in a forward pass)."""
    if size == n:
        return batch
    import numpy as np

    out = {}
    for k, v in batch.items():
        if isinstance(v, np.ndarray) and v.ndim and v.shape[0] == n and v.dtype.kind in "biuf":
            v = np.concatenate([v, np.repeat(v[:1], size - n, axis=0)])
        out[k] = v
    return out
