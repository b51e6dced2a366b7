"""The interface between a model family and the one engine: the ``Task``.

A family is one package that registers a ``Task`` subclass with ``@register_task("<family>")`` and its
models with ``@register_model(name, family=...)``. The engine (Trainer, Loader, export, Predictor, server)
calls only the methods below and never imports a family. Everything a task hands the engine is a paddle
Tensor (a loss), numpy arrays (batches, predictions) or plain Python data (metrics, rows, metadata).

Training and evaluation (the config's ``Global`` / ``Data`` / ``Arch`` sections are in ``self.cfg``):

==========================  ==================================================================================
``prepare(output_dir)``     build what data needs before datasets exist (vocabulary, tokenizer, feature map)
                            and save it in ``output_dir``; other ranks load what rank 0 wrote
``preprocessing_fingerprint``  optional: ``{"kind", "path", "sha256"}`` of that tokenizer / vocabulary /
                            feature map; the Trainer stores it in each checkpoint's ``trainer.json`` and
                            refuses a checkpoint whose fingerprint differs (default: None, nothing checked)
``build_model()``           the model, built from arguments (sizes, the fitted feature layout); reads no file
``dataset(split)``          a map-style ``paddle.io.Dataset`` (optionally with ``gather(indices)`` returning a
                            whole batch's samples) or an iterable one with ``set_epoch`` / ``set_shard``
``collate_fn(split)``       samples -> one batch, a dict of numpy arrays (tokenize, decode, pad, mask here)
``batch_sampler(...)``      which indices form each batch of an epoch (default: ``Global.batch_size`` of a
                            seeded permutation; the Transformer batches by tokens)
``forward_loss``            (scalar loss Tensor, extra scalars to log) of one training batch
``predict_step``            per-sample numpy outputs of one eval batch
``compute_metrics``         metrics from all eval outputs; ``best_metric`` / ``best_mode`` pick checkpoints
``write_eval_artifacts``    prediction files, confusion matrices; returns {name: path}
``build_optimizers``        optimizers and LR schedulers (default: the ``Optimizer`` section; ``engine.optim``)
==========================  ==================================================================================

Export (``paddle_models.engine.export``):

==========================  ==================================================================================
``export_input_spec``       ``InputSpec`` list of the whole model (named, dynamic batch and lengths)
``example_batch``           numpy inputs matching it, for the parity check
``export_variants``         ``{name: (layer, input_spec, example_inputs)}``; default: the whole model
``export_metadata(dir)``    what a predictor needs besides the graph: ``{"labels": [...], "preprocess": {...}}``
                            (copy vocabularies into ``dir``); written into ``export.yaml``
==========================  ==================================================================================

Serving (``tools/infer.py``, ``tools/serve.py``): a task made by :meth:`Task.for_export` from an export
folder, with no training config or data needed:

==========================  ==================================================================================
``read_inputs(path)``       a raw input file (the family's training layout) -> (dataset, collate) whose
                            batches hold the graph's input arrays plus ``id`` (and ``label`` when known)
``prepare_inputs(records)`` request records (JSON objects in the family's raw layout) -> (batch of input
                            arrays with ``id``, per-record errors); a bad record never fails its neighbours
``prediction_rows``         graph outputs of a batch -> one JSON-able row per item (``id``, ``label``, ...)
``prepare_items(records)``  the per-record half of ``prepare_inputs``: (one item per good record, errors);
                            the server runs it per request, before queueing
``collate_items(items)``    items of several requests -> one batch (the other half; the server's batcher)
``serving_runner(make)``    batch -> graph outputs, over predictors made by ``make(variant)`` (default: the
                            export's default variant on the batch's input arrays)
``load_serving()``          load now what serving reads (tokenizer, vocabulary, feature map): the server
                            calls it at start-up, so no request loads (or imports) anything
``record_schema()``         JSON schema of one request record (the server's ``/openapi.json``); default:
                            any JSON object
==========================  ==================================================================================

A family that serves no request records raises :class:`ServingNotSupported` (the server answers 501).
"""
from __future__ import annotations

import os

import numpy as np
import paddle

from ..registry import build_model
from .loader import ShuffledBatches
from .optim import build_optimizer, build_scheduler, default_groups, schedulers_of


def _missing(task, method: str):
    raise TypeError(f"{type(task).__name__} does not implement {method}(); a family's task must override it")


class RecordError(ValueError):
    """One request record is unusable; the message names the record (index and id) and the field."""

    def __init__(self, index: int, record_id, field: str, message: str):
        self.index, self.record_id, self.field = index, record_id, field
        who = f"record {index}" + (f" (id {record_id!r})" if record_id is not None else "")
        super().__init__(f"{who}: {field}: {message}")


def record_id(index: int, rec, fields) -> str:
    """The id of request record ``index`` (its ``id``, else its index) after checking that it is a JSON object
    with only the known ``fields``; a :class:`RecordError` otherwise."""
    if not isinstance(rec, dict):
        raise RecordError(index, None, "record", f"expected a JSON object, got {type(rec).__name__}")
    rid = rec.get("id", index)
    if isinstance(rid, bool) or not isinstance(rid, (str, int)):
        raise RecordError(index, None, "id", f"expected a string or integer, got {rid!r}")
    rid = str(rid)
    unknown = [k for k in rec if k not in fields]
    if unknown:
        raise RecordError(index, rid, unknown[0], f"unknown field (fields: {', '.join(fields)})")
    return rid


def prepare_each(records: list, prepare) -> tuple[list, list[RecordError | None]]:
    """``(items, errors)``: ``prepare(index, record)`` of each record, or None and its RecordError."""
    items, errors = [], []
    for i, rec in enumerate(records):
        try:
            items.append(prepare(i, rec))
            errors.append(None)
        except RecordError as e:
            items.append(None)
            errors.append(e)
    return items, errors


class ServingNotSupported(ValueError):
    """This export cannot answer request records (e.g. a model exported as separate towers)."""


class Task:
    family: str = ""
    #: metric used to select the best checkpoint, and whether larger is better
    best_metric: str = "loss"
    best_mode: str = "min"
    #: predict_step only calls ``model(...)`` on its export inputs, so it can run on the exported graph
    #: (``Global.eval_engine: inference``)
    eval_on_export: bool = False

    def __init__(self, cfg):
        self.cfg = cfg
        self.output_dir = cfg["Global"]["output_dir"]
        self.export_dir: str | None = None
        self.export_meta: dict | None = None

    # ---- setup -------------------------------------------------------------------------------
    def check_data(self, splits: tuple[str, ...]) -> None:
        """Read and check every record of ``splits`` before the run writes anything: training calls it on rank 0
        with ``("train", "val")`` before :meth:`prepare`, so a bad record in either split is reported before
        the first step and before the run's files (config copy, vocabulary or feature map, metrics log).
        What it reads may be kept for the datasets. Default: nothing (records are checked when the datasets
        are built)."""

    def prepare(self, output_dir: str, is_main: bool = True) -> None:
        """Build what data needs before datasets exist (vocabularies, tokenizers) and save it under
        ``output_dir`` so eval/export/infer reuse it. Rank 0 runs it first; other ranks after a barrier
        (with ``is_main=False``: they must only load what rank 0 wrote)."""

    def preprocessing_fingerprint(self) -> dict | None:
        """What turns raw data into this model's inputs, identified: ``{"kind": "tokenizer", "path": ...,
        "sha256": ...}`` (a vocabulary, a feature map...). Called after ``prepare``; it must also work on a
        task that was not prepared (export), finding the files as ``prepare`` would. The Trainer writes it
        into every checkpoint (``trainer.json``), and eval, export, fine-tuning and resume refuse a
        checkpoint whose fingerprint differs. Default: None (nothing recorded or checked)."""
        return None

    def build_model(self) -> paddle.nn.Layer:
        return build_model(self.cfg)

    # ---- data --------------------------------------------------------------------------------
    def dataset(self, split: str):
        """A ``paddle.io.Dataset`` (map-style; the Trainer shuffles and shards it) or a
        ``paddle.io.IterableDataset`` with ``set_epoch(epoch)`` and ``set_shard(rank, world_size)``."""
        _missing(self, "dataset")

    def collate_fn(self, split: str):
        """Batch samples into a dict of numpy arrays (tokenizing, decoding, padding happen here)."""
        return None

    def batch_sampler(self, split: str, dataset, batch_size: int, *, seed: int, shuffle: bool = True,
                      rank: int = 0, world_size: int = 1):
        """The index batches of each epoch for this rank (an object with ``batches(epoch)`` and ``len``).
        Default: ``batch_size`` indices at a time of a seeded per-epoch permutation."""
        return ShuffledBatches(len(dataset), batch_size, seed, shuffle, rank, world_size)

    def batch_size_of(self, batch) -> int:
        first = next(iter(batch.values())) if isinstance(batch, dict) else batch[0]
        return int(first.shape[0])

    def default_eval_split(self) -> str:
        """The split ``tools/eval.py`` evaluates when no ``--split`` is given."""
        return "val"

    def run_summary(self) -> dict:
        """Data counters for the run summary (bad images skipped or blanked, truncated texts...)."""
        return {}

    # ---- steps -------------------------------------------------------------------------------
    def forward_loss(self, model, batch) -> tuple[paddle.Tensor, dict[str, float]]:
        """Mean loss of the batch (a scalar Tensor) and extra scalars to log."""
        _missing(self, "forward_loss")

    def predict_step(self, model, batch) -> dict[str, np.ndarray]:
        """Per-sample outputs of one eval batch, as numpy arrays with the batch on axis 0."""
        _missing(self, "predict_step")

    def compute_metrics(self, outputs: dict[str, np.ndarray]) -> dict[str, float]:
        """Metrics from all eval outputs (concatenated over batches and ranks)."""
        _missing(self, "compute_metrics")

    def write_eval_artifacts(self, outputs: dict[str, np.ndarray], metrics: dict, out_dir: str, split: str) -> dict:
        """Write confusion matrices, prediction files... Return {name: path} to report."""
        return {}

    # ---- optimization ------------------------------------------------------------------------
    def build_optimizers(self, model, total_steps: int) -> tuple[list[paddle.optimizer.Optimizer], list]:
        """Optimizers and LR schedulers (each scheduler is stepped once per optimizer step).
        The default builds one optimizer from the ``Optimizer`` section over all trainable parameters, the
        parameters named by ``Optimizer.no_decay`` and (``Optimizer.no_decay_bias_norm``) biases and
        normalization weights exempt from decay (:func:`paddle_models.engine.optim.default_groups`)."""
        optimizer_cfg = self.cfg["Optimizer"]
        schedule = build_scheduler(optimizer_cfg, total_steps)
        names = {param.name: name for name, param in model.named_parameters()}
        optimizer = build_optimizer(optimizer_cfg, default_groups(model.parameters(), optimizer_cfg, names), schedule)
        return [optimizer], schedulers_of(schedule)

    # ---- export ------------------------------------------------------------------------------
    def export_input_spec(self, model) -> list:
        """``paddle.static.InputSpec`` list for ``paddle.jit.save`` (dynamic batch and lengths)."""
        _missing(self, "export_input_spec")

    def export_variants(self, model) -> dict[str, tuple]:
        """Named graphs to export: ``{name: (layer, input_spec, example_inputs)}``. The default is the
        whole model; DSSM exports its user and item towers, the Transformer its encoder and a decoder step."""
        return {"model": (model, self.export_input_spec(model), self.example_batch(model))}

    def example_batch(self, model, batch_size: int = 2) -> dict:
        """A batch of inputs (numpy) matching ``export_input_spec``, for parity checks."""
        _missing(self, "example_batch")

    def export_metadata(self, out_dir: str) -> dict:
        """Family facts for ``export.yaml``: ``labels`` (class names, when the model classifies) and
        ``preprocess`` (what turns raw records into the graph's inputs: ``family``, settings, files copied
        into ``out_dir``). Default: the task's ``label_names`` if it has them."""
        labels = getattr(self, "label_names", None)
        return {"labels": list(labels)} if labels else {}

    # ---- serving -----------------------------------------------------------------------------
    @classmethod
    def for_export(cls, model_dir: str, meta: dict, cfg) -> Task:
        """A task that serves the export folder ``model_dir`` (``meta`` is its export.yaml, ``cfg`` the
        config saved beside it). Serving methods read their settings from ``self.export_meta``."""
        task = cls(cfg)
        task.export_dir, task.export_meta = os.path.abspath(model_dir), meta
        return task

    def load_serving(self) -> None:
        """Load what :meth:`prepare_items` and :meth:`collate_items` read (tokenizer, vocabulary, feature map),
        so that the first request loads nothing. Default: nothing to load."""

    def record_schema(self) -> dict:
        """The JSON schema of one request record (``/openapi.json``). Default: any JSON object."""
        return {"type": "object"}

    def read_inputs(self, input_file: str, **options):
        """(dataset, collate) over a raw input file: batches carry the graph's input arrays, ``id`` and,
        when the file has it, ``label`` (-1 where unknown)."""
        raise ValueError(f"the {self.family} family reads no raw input files; give a .npz of input arrays "
                         f"named as in export.yaml")

    def prepare_inputs(self, records: list, limits: dict | None = None
                       ) -> tuple[dict[str, np.ndarray] | None, list[RecordError | None]]:
        """Request records -> (one batch of the graph's input arrays plus ``id`` for the good records, in
        order; ``errors[i]`` is None for a good record, else the :class:`RecordError` naming its field).
        Default: :meth:`prepare_items` then :meth:`collate_items` on the good items."""
        if type(self).prepare_items is Task.prepare_items:
            raise ServingNotSupported(f"the {self.family} family takes no request records")
        items, errors = self.prepare_items(records, limits)
        good = [it for it, e in zip(items, errors, strict=True) if e is None]
        return (self.collate_items(good) if good else None), errors

    def prepare_items(self, records: list, limits: dict | None = None) -> tuple[list, list[RecordError | None]]:
        """Request records -> (``items[i]`` for each good record, None for a bad one; ``errors[i]``).
        ``limits`` are the server's (``max_image_bytes``, ``max_image_pixels``, ``max_text_chars``,
        ``truncate``). Default, for a family that overrides only :meth:`prepare_inputs`: its batch split
        into one-row batches (merged again by :meth:`collate_items`)."""
        if type(self).prepare_inputs is Task.prepare_inputs:
            raise ServingNotSupported(f"the {self.family} family takes no request records")
        batch, errors = self.prepare_inputs(records)
        items, k = [], 0
        for e in errors:
            if e is not None:
                items.append(None)
                continue
            items.append({n: (v[k:k + 1] if isinstance(v, np.ndarray) else [v[k]]) for n, v in batch.items()})
            k += 1
        return items, errors

    def collate_items(self, items: list) -> dict[str, np.ndarray]:
        """Items from :meth:`prepare_items` (possibly of several requests) -> one batch. Default: the
        one-row batches of the default ``prepare_items`` concatenated, arrays zero-padded on every axis but
        the first to the largest shape."""
        return concat_batches(items)

    def serving_runner(self, make_predictor):
        """A function batch -> ``{output name: array}``. ``make_predictor(variant)`` returns a loaded predictor
        of the export (``variant=None``: the default one). Default: the default variant on the batch's arrays
        named as its inputs."""
        pred = make_predictor(None)
        names = list(pred.input_names)
        return lambda batch: pred.run({k: batch[k] for k in names})

    def prediction_rows(self, outputs: dict[str, np.ndarray], batch: dict[str, np.ndarray]) -> list[dict]:
        """One row per item of ``batch`` from the graph's ``outputs`` (``{name: array}``, names from
        export.yaml). Default for classifiers (one logits output): id, label, label_name, probabilities."""
        names = list((self.export_meta or {}).get("labels") or getattr(self, "label_names", None) or [])
        logits = next(iter(outputs.values()))
        probs = softmax(np.asarray(logits))
        if not names:
            names = [f"class_{i}" for i in range(probs.shape[1])]
        ids = batch.get("id") if isinstance(batch, dict) else None
        rows = []
        for k, p in enumerate(probs):
            y = int(p.argmax())
            rows.append({"id": str(ids[k]) if ids is not None else str(k), "label": y, "label_name": names[y],
                         "probabilities": {n: round(float(v), 6) for n, v in zip(names, p, strict=True)}})
        return rows


def concat_batches(batches: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Batches (dicts of arrays with the batch on axis 0, or lists) -> one batch; numeric arrays are
    zero-padded on the other axes to the largest shape among them."""
    out = {}
    for k in batches[0]:
        vals = [b[k] for b in batches]
        if not isinstance(vals[0], np.ndarray):
            out[k] = [x for v in vals for x in v]
            continue
        if vals[0].dtype.kind in "iufb" and len({v.shape[1:] for v in vals}) > 1:
            tail = tuple(max(v.shape[d] for v in vals) for d in range(1, vals[0].ndim))
            vals = [np.pad(v, [(0, 0)] + [(0, t - s) for t, s in zip(tail, v.shape[1:], strict=True)]) for v in vals]
        out[k] = np.concatenate(vals, axis=0)
    return out


def softmax(x: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, computed in float64, returned as float32."""
    z = x.astype("float64") - x.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=-1, keepdims=True)).astype("float32")
