"""The multimodal classification task: data, tokenizer, loss, metrics and export inputs for the engine."""
from __future__ import annotations

import logging
import os

import numpy as np
import paddle
import paddle.nn.functional as F

from ..engine.task import Task
from ..metrics import classification_report, format_confusion_matrix
from ..predictions import write_class_probabilities, write_csv
from ..registry import register_task
from . import serving
from .dataset import MultimodalDataset, build_collate, build_dataset, data_value, label_names_of
from .network import INPUT_NAMES
from .serving import TOKENIZER_DIR
from .tokenizer import load_tokenizer, tokenizer_fingerprint, train_tokenizer, vocab_size

log = logging.getLogger("paddle_models")


def tokenizer_candidates(cfg) -> list:
    """Where a tokenizer is looked for, in order: beside ``Global.checkpoint``'s run (the tokenizer the
    weights were trained with), then ``<output_dir>/tokenizer``."""
    candidates = []
    checkpoint = cfg["Global"]["checkpoint"]
    if checkpoint:
        folder = os.path.abspath(checkpoint)
        for _ in range(4):  # <run>/checkpoints/best/model.safetensors -> <run>/tokenizer
            folder = os.path.dirname(folder)
            candidates.append(os.path.join(folder, TOKENIZER_DIR))
    candidates.append(os.path.join(cfg["Global"]["output_dir"], TOKENIZER_DIR))
    return list(dict.fromkeys(candidates))  # once each (near the file-system root the parents repeat)


def find_tokenizer_dir(cfg) -> str | None:
    """Data.tokenizer, else the tokenizer saved beside a checkpoint's run, else <output_dir>/tokenizer."""
    if cfg["Data"]["tokenizer"]:
        return cfg["Data"]["tokenizer"]
    for candidate in tokenizer_candidates(cfg):
        if os.path.isfile(os.path.join(candidate, "vocab.txt")):
            return candidate
    return None


@register_task("multimodal")
class MultimodalTask(Task):
    family = "multimodal"
    best_metric = "macro_f1"
    best_mode = "max"
    eval_on_export = True

    def __init__(self, cfg):
        super().__init__(cfg)
        modalities = list(cfg["Arch"]["modalities"])
        self.use_text, self.use_image = "text" in modalities, "image" in modalities
        self.label_names = label_names_of(cfg["Data"])
        if len(self.label_names) != cfg["Arch"]["num_classes"]:
            raise ValueError(f"Data.label_names has {len(self.label_names)} names but Arch.num_classes is "
                             f"{cfg['Arch']['num_classes']}")
        self.tokenizer = None
        self._datasets: dict[str, MultimodalDataset] = {}

    # ---- setup -------------------------------------------------------------------------------
    def split_name(self, split: str) -> str:
        data_cfg = self.cfg["Data"]
        names = {"train": data_cfg["train_split"], "val": data_cfg["val_split"], "test": data_cfg["test_split"]}
        return names.get(split, split)

    def prepare(self, output_dir: str, is_main: bool = True) -> None:
        tok_dir = find_tokenizer_dir(self.cfg)
        if tok_dir is None:
            self._refuse_new_tokenizer()
            tok_dir = os.path.join(output_dir, TOKENIZER_DIR)
            if is_main:
                ds = self.dataset("train")
                n = self.cfg["Data"]["tokenizer_vocab_size"]
                log.info("training a %d-piece SentencePiece tokenizer on %s -> %s", n, ds.source, tok_dir)
                train_tokenizer(ds.iter_texts(include_evidence=True), tok_dir, vocab_size=n)
        self.tokenizer = load_tokenizer(tok_dir)
        self.tokenizer_dir = tok_dir
        need = vocab_size(self.tokenizer)
        if need > self.cfg["Arch"]["ernie"]["vocab_size"]:
            raise ValueError(f"tokenizer {tok_dir} has {need} ids but Arch.ernie.vocab_size is "
                             f"{self.cfg['Arch']['ernie']['vocab_size']}: raise it or use a smaller vocabulary")

    def _refuse_new_tokenizer(self):
        """A tokenizer is trained only for a run from scratch: weights from ``Global.checkpoint`` or a resumed
        run were trained with their own vocabulary, and a new one would silently give wrong ids."""
        global_cfg = self.cfg["Global"]
        why = (f"Global.checkpoint={global_cfg['checkpoint']}" if global_cfg["checkpoint"]
               else "Global.resume=true" if global_cfg["resume"] else None)
        if why:
            looked = ", ".join(tokenizer_candidates(self.cfg))
            raise FileNotFoundError(
                f"{why}: no tokenizer found for these weights (looked in {looked}); a model must be used with "
                f"the tokenizer it was trained with: set Data.tokenizer to that run's tokenizer folder "
                f"(a new one is trained only when training from scratch)")

    def preprocessing_fingerprint(self) -> dict | None:
        """The tokenizer's fingerprint (sha256 of its SentencePiece model and vocab.txt)."""
        tok_dir = getattr(self, "tokenizer_dir", None) or find_tokenizer_dir(self.cfg)
        if tok_dir is None or not os.path.isfile(os.path.join(tok_dir, "vocab.txt")):
            return None
        return tokenizer_fingerprint(tok_dir)

    def _ensure_tokenizer(self):
        if self.tokenizer is None:
            tok_dir = find_tokenizer_dir(self.cfg)
            if tok_dir is None:
                raise FileNotFoundError("no tokenizer: set Data.tokenizer, or point Global.checkpoint / "
                                        "Global.output_dir at a training run (it keeps <run>/tokenizer)")
            self.tokenizer = load_tokenizer(tok_dir)
            self.tokenizer_dir = tok_dir

    # ---- data --------------------------------------------------------------------------------
    def dataset(self, split: str):
        if split not in self._datasets:
            self._datasets[split] = build_dataset(self.cfg["Data"], self.split_name(split), self.use_text,
                                                    self.use_image)
            self._warn_about_splits(split)
        return self._datasets[split]

    def _warn_about_splits(self, built: str) -> None:
        """Warnings (not errors) about data that trains badly: a training split of one class, a class
        absent from the validation split, ids shared by the training and validation splits."""
        train, val = self._datasets.get("train"), self._datasets.get("val")
        if built == "train" and len(set(train.labels.tolist())) == 1:
            log.warning("%s: every training item has the label %r: the model can only learn to predict it",
                        train.source, self.label_names[int(train.labels[0])])
        if built not in ("train", "val") or train is None or val is None:
            return
        absent = sorted(set(range(len(self.label_names))) - set(val.labels.tolist()))
        if absent:
            log.warning("%s: no validation item has the label(s) %s: their recall and F1 are 0 by definition "
                        "and macro-F1 is lowered", val.source, ", ".join(repr(self.label_names[i]) for i in absent))
        shared = sorted(set(train.ids) & set(val.ids)) if train.fmt != "mr2" else []  # MR2 ids are per-file keys
        if shared:
            log.warning("%s and %s share %d ids (first: %r): the validation score may include training items",
                        train.source, val.source, len(shared), shared[0])

    def collate_fn(self, split: str):
        self._ensure_tokenizer()
        return build_collate(self.cfg["Data"], self.tokenizer, self.use_text, self.use_image)

    def run_summary(self) -> dict:
        return {split: ds.summary() for split, ds in self._datasets.items()}

    # ---- steps -------------------------------------------------------------------------------
    @staticmethod
    def inputs(batch):
        return {k: batch[k] for k in INPUT_NAMES}

    def forward_loss(self, model, batch):
        logits = model(**self.inputs(batch))
        return F.cross_entropy(logits, batch["label"]), {}

    def predict_step(self, model, batch):
        prob = F.softmax(model(**self.inputs(batch)), axis=-1)
        return {"prob": prob.numpy(), "label": batch["label"].numpy(), "id": np.asarray(batch["id"])}

    def compute_metrics(self, outputs):
        if not outputs:
            return {"samples": 0}
        labels, prob = outputs["label"], outputs["prob"]
        pred = prob.argmax(axis=1)
        known = labels >= 0
        if not known.any():
            return {"labelled": 0}
        rep = classification_report(labels[known], pred[known], len(self.label_names), self.label_names)
        out = {"accuracy": rep["accuracy"], "macro_f1": rep["macro_f1"], "macro_precision": rep["macro_precision"],
               "macro_recall": rep["macro_recall"], "weighted_f1": rep["weighted_f1"],
               "loss": float(-np.mean(np.log(np.clip(prob[known, labels[known]], 1e-12, None)))),
               "labelled": int(known.sum())}
        for c in rep["per_class"]:
            for k in ("precision", "recall", "f1"):
                out[f"{k}/{c['label']}"] = c[k]
        out["confusion_matrix"] = rep["confusion_matrix"]
        return out

    def write_eval_artifacts(self, outputs, metrics, out_dir, split):
        from ..plots import plot_confusion_matrix

        paths = {}
        pred = outputs["prob"].argmax(axis=1)
        paths["predictions_csv"] = write_csv(  # the competition's format
            os.path.join(out_dir, "predictions.csv"), ["id", "label"],
            ([i, int(y)] for i, y in zip(outputs["id"], pred, strict=True)))
        paths["probabilities_csv"] = write_class_probabilities(
            os.path.join(out_dir, "predictions_proba.csv"), outputs["id"], pred, outputs["prob"], self.label_names,
            label_name_column=True)
        if "confusion_matrix" in metrics:
            cm = np.asarray(metrics["confusion_matrix"])
            txt = os.path.join(out_dir, "confusion_matrix.txt")
            with open(txt, "w") as f:
                f.write(format_confusion_matrix(cm, self.label_names) + "\n")
            paths["confusion_matrix_txt"] = txt
            paths["confusion_matrix_png"] = plot_confusion_matrix(
                cm, os.path.join(out_dir, "confusion_matrix.png"), self.label_names, title=f"{split} confusion matrix")
        return paths

    # ---- export ------------------------------------------------------------------------------
    def image_size(self) -> int:
        return int(self.cfg["Data"]["image_crop"])

    def export_input_spec(self, model):
        s = self.image_size()
        spec = paddle.static.InputSpec
        return [spec([None, None], "int64", "input_ids"), spec([None, None], "int64", "attention_mask"),
                spec([None, None, None], "int64", "caption_ids"), spec([None, None, None], "int64", "caption_mask"),
                spec([None, 3, s, s], "float32", "image"), spec([None, None, 3, s, s], "float32", "evidence_images"),
                spec([None, None], "float32", "evidence_mask")]

    def example_batch(self, model, batch_size: int = 2, seed: int = 0):
        rng = np.random.RandomState(seed)
        s, L, nc, ni = self.image_size(), 16, 2, 2
        vocab = model.ernie.config.vocab_size
        mask = (np.arange(L)[None, :] < rng.randint(4, L + 1, size=(batch_size, 1))).astype("int64")
        ids = rng.randint(5, vocab, size=(batch_size, L)).astype("int64") * mask
        cmask = (np.arange(L)[None, None, :] < rng.randint(4, L + 1, size=(batch_size, nc, 1))).astype("int64")
        cmask[0, 1] = 0  # an empty caption slot
        cids = rng.randint(5, vocab, size=(batch_size, nc, L)).astype("int64") * cmask
        ev_mask = np.ones((batch_size, ni), "float32")
        ev_mask[0, 1] = 0
        return {"input_ids": ids, "attention_mask": mask, "caption_ids": cids, "caption_mask": cmask,
                "image": rng.randn(batch_size, 3, s, s).astype("float32"),
                "evidence_images": (rng.randn(batch_size, ni, 3, s, s).astype("float32")
                                    * ev_mask[:, :, None, None, None]),
                "evidence_mask": ev_mask}

    def export_metadata(self, out_dir: str) -> dict:
        """Labels, and the tokenizer (copied into ``out_dir``), text limits and image settings as ``Data`` keys."""
        return serving.export_metadata(self.cfg, self.label_names, find_tokenizer_dir(self.cfg), out_dir)

    # ---- serving (a task made by ``for_export``) ----------------------------------------------
    def _export_tokenizer(self):
        if self.tokenizer is None:
            self.tokenizer = serving.export_tokenizer(self.export_dir, self.export_meta)
        return self.tokenizer

    def read_inputs(self, input_file: str, on_bad_image: str | None = None,
                    data_overrides: dict | None = None):
        """JSONL, MR2 ``dataset_items_<split>.json`` or MVSA files, read with the export's settings."""
        return serving.read_input_file(self.export_dir, self.export_meta, input_file, self._export_tokenizer(),
                                       on_bad_image=on_bad_image, data_overrides=data_overrides)

    def prepare_items(self, records: list, limits: dict | None = None):
        """Each record validated, its images decoded and transformed: dataset items (tokenized at collate)."""
        data = serving.data_settings(self.export_dir, self.export_meta)
        use_text, use_image = serving.modalities(self.export_dir, self.export_meta)
        server_limits = {"max_image_bytes": 10 << 20, "max_image_pixels": 40_000_000, **(limits or {})}
        return serving.records_to_items(records, data, self.label_names, self._export_tokenizer(), use_text,
                                        use_image, server_limits)

    def collate_items(self, items: list):
        """The training collate with the export's settings (one instance, so its token cache is kept). With
        ``fusion: masked`` (padding is masked out, so it does not change an item's outputs) every batch is
        padded to the same shape: texts to ``max_len``, evidence to ``max_captions`` / ``max_evidence_images``;
        the predictor then meets a few shapes only (its oneDNN kernels are built once per shape)."""
        return self._serving_collate()(items)

    def _serving_collate(self):
        if getattr(self, "_serve_collate", None) is None:
            data = serving.data_settings(self.export_dir, self.export_meta)
            use_text, use_image = serving.modalities(self.export_dir, self.export_meta)
            if self.cfg["Arch"]["fusion"] == "masked":
                data = {**data, "pad_to_max_len": True}
                fixed = {"min_captions": max(0, int(data_value(data, "max_captions"))),
                         "min_evidence_images": max(0, int(data_value(data, "max_evidence_images")))}
            else:  # the baseline numerics see padding: pad exactly as tools/infer.py does
                fixed = {}
            self._serve_collate = build_collate(data, self._export_tokenizer(), use_text, use_image, **fixed)
        return self._serve_collate

    def load_serving(self) -> None:
        """The export's tokenizer (its import of paddlenlp included) and the serving collate, now."""
        self._serving_collate()

    def record_schema(self) -> dict:
        return serving.record_schema(serving.modalities(self.export_dir, self.export_meta)[1])
