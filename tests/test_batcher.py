"""engine/batcher.py without a model: requests grouped into one call, a failing group run again request by
request (a poisoned request fails alone, its neighbours get their rows), flush on drain."""
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

from paddle_models.engine.batcher import Batcher, QueuedRequest, bucket_size, pad_rows


class DoublingTask:
    """Items are numbers; a batch doubles them; an item "poison" makes the collate fail."""

    def __init__(self):
        self.calls = []

    def collate_items(self, items):
        if "poison" in items:
            raise ValueError("cannot collate a poisoned item")
        return {"x": np.asarray(items, dtype="float32")}

    def prediction_rows(self, outputs, batch):
        return [{"y": float(v)} for v in outputs["y"]]


def fake_model(task):
    def runner(batch):
        task.calls.append(len(batch["x"]))
        return {"y": batch["x"] * 2}

    return SimpleNamespace(task=task, runners=[runner])


def run_together(batcher, model, requests):
    entries = [QueuedRequest(model, items) for items in requests]
    for e in entries:
        batcher.submit(e)
    return entries


def test_requests_are_batched_and_each_gets_its_rows():
    task = DoublingTask()
    batcher = Batcher(max_batch=8, max_wait_s=0.5, workers=1, on_batch=lambda n: None, on_depth=lambda n: None,
                      bucket=False)
    try:
        entries = run_together(batcher, fake_model(task), [[1, 2], [3], [4, 5, 6]])
        assert [e.future.result(10) for e in entries] == [[{"y": 2.0}, {"y": 4.0}], [{"y": 6.0}],
                                                          [{"y": 8.0}, {"y": 10.0}, {"y": 12.0}]]
        assert task.calls == [6]  # one predictor call for the three requests
    finally:
        batcher.stop()


def test_a_poisoned_request_fails_alone_and_its_neighbours_get_their_rows():
    task = DoublingTask()
    batcher = Batcher(max_batch=8, max_wait_s=0.5, workers=1, on_batch=lambda n: None, on_depth=lambda n: None,
                      bucket=False)
    try:
        entries = run_together(batcher, fake_model(task), [[1], [2, "poison"], [3]])
        assert entries[0].future.result(10) == [{"y": 2.0}] and entries[2].future.result(10) == [{"y": 6.0}]
        with pytest.raises(ValueError, match="poisoned"):
            entries[1].future.result(10)
        assert sorted(task.calls) == [1, 1]  # the group failed at collate; the good requests ran alone
    finally:
        batcher.stop()


def test_flush_runs_queued_requests_without_waiting():
    batcher = Batcher(max_batch=64, max_wait_s=30, workers=1, on_batch=lambda n: None, on_depth=lambda n: None)
    try:
        entry = run_together(batcher, fake_model(DoublingTask()), [[1]])[0]
        time.sleep(0.2)
        assert not entry.future.done()  # waiting up to 30 s for others to batch with
        threading.Timer(0.1, batcher.flush).start()
        assert entry.future.result(10) == [{"y": 2.0}]
    finally:
        batcher.stop()


def test_bucket_sizes_and_padding():
    assert [bucket_size(n, 32) for n in (1, 2, 3, 5, 17, 32, 40)] == [1, 2, 4, 8, 32, 32, 40]
    batch = {"x": np.arange(6, dtype="float32").reshape(3, 2), "id": ["a", "b", "c"]}
    padded = pad_rows(batch, 3, 4)
    np.testing.assert_array_equal(padded["x"], [[0, 1], [2, 3], [4, 5], [0, 1]])
    assert padded["id"] == ["a", "b", "c"]
