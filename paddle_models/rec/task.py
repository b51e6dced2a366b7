"""The recommender family's Task for the shared Trainer.

CTR models (``kind = "ctr"``): batches ``{"ids", ["values"], "label"[, "group"]}``; loss = binary cross
entropy of the predicted click probability; metrics ``auc``, ``logloss`` (and ``gauc`` with
``Metric.user_field``); the best checkpoint has the highest validation AUC. Optimizers (built by
``engine.optim.build_optimizer`` over parameter groups): the ``Optimizer`` section over all weights, with
``Arch.embedding_regularizer`` / ``Arch.net_regularizer`` as the weight decay of the embedding tables / other
weights; Wide&Deep gets two optimizers, FTRL-Proximal (``Optimizer.wide``) on the wide part and the
``Optimizer`` section (AdaGrad in its configs) on the deep part, both stepped on every training step.

Retrieval (DSSM, ``kind = "retrieval"``): training batches are (user, item) pairs, the loss is the
in-batch softmax cross entropy; evaluation ranks every catalogue item for each user (training items
excluded) and reports ``recall@K`` and ``ndcg@K`` for ``Metric.topk``.
"""
from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import paddle
import paddle.nn.functional as F
from paddle.static import InputSpec

from .. import metrics as metric_fns
from ..engine.optim import ParamGroup, PlateauScale, assign_groups, build_optimizer, build_scheduler, schedulers_of
from ..engine.task import ServingNotSupported, Task
from ..predictions import probability_cell, write_csv
from ..registry import build_model, model_entry, register_task
from . import serving
from .data import RecData


def model_kind(name: str) -> str:
    """``ctr`` or ``retrieval``: the ``kind`` of the model class registered as ``name``."""
    return model_entry(name)["builder"].model_class.kind


def _inner(model):
    """The model itself when wrapped in paddle.DataParallel."""
    return getattr(model, "_layers", model)


@register_task("rec")
class RecTask(Task):
    family = "rec"
    best_mode = "max"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.kind = model_kind(cfg["Arch"]["name"])
        self.topk = [int(k) for k in cfg["Metric"]["topk"]] or [10]
        self.best_metric = "auc" if self.kind == "ctr" else f"recall@{self.topk[0]}"
        self.data = RecData(cfg, retrieval=self.kind == "retrieval")
        self._catalog_tensor = None
        self._plateau: list[PlateauScale] = []

    def default_eval_split(self) -> str:
        """The split ``tools/eval.py`` should score when none is named: ``test`` when ``Data.test_path`` is set
        (``-o Data.test_path=FILE`` evaluates FILE), else ``val``."""
        return "test" if self.cfg["Data"]["test_path"] else "val"

    # ---- setup -----------------------------------------------------------------------------------
    def check_data(self, splits) -> None:
        """Every row of ``splits`` read and encoded with the feature map (fitted in memory when none is saved)
        before the run writes its files; see ``RecData.check_splits``."""
        self.data.check_splits(splits, self.output_dir, self.cfg["Global"]["checkpoint"])

    def prepare(self, output_dir: str, is_main: bool = True) -> None:
        self.data.prepare(output_dir, is_main, checkpoint=self.cfg["Global"]["checkpoint"])

    def preprocessing_fingerprint(self):
        """The feature map's fingerprint: sha256 of its canonical JSON (vocabularies, statistics, layout)."""
        fmap = self.data.prepare(checkpoint=self.cfg["Global"]["checkpoint"])
        text = json.dumps(fmap.to_dict(), sort_keys=True, default=str).encode("utf-8")
        return {"kind": "feature map", "path": os.path.join(os.path.abspath(self.output_dir), "feature_map.json"),
                "sha256": hashlib.sha256(text).hexdigest()}

    def build_model(self) -> paddle.nn.Layer:
        """The model over the fitted feature layout (loaded beside ``Global.checkpoint``, or fitted)."""
        fmap = self.data.prepare(checkpoint=self.cfg["Global"]["checkpoint"])
        if self.kind == "retrieval":
            return build_model(self.cfg, user_layout=fmap.layout("user"), item_layout=fmap.layout("item"))
        return build_model(self.cfg, layout=fmap.layout())

    # ---- data ------------------------------------------------------------------------------------
    def dataset(self, split: str):
        return self.data.dataset(split)

    def collate_fn(self, split: str):
        return self.data.dataset(split).collate

    def batch_size_of(self, batch) -> int:
        key = "label" if "label" in batch else ("user_ids" if "user_ids" in batch else next(iter(batch)))
        return int(batch[key].shape[0])

    # ---- steps -----------------------------------------------------------------------------------
    @staticmethod
    def _ctr_inputs(batch):
        return [batch["ids"], batch["values"]] if "values" in batch else [batch["ids"]]

    def forward_loss(self, model, batch):
        if self.kind == "ctr":
            prob = model(*self._ctr_inputs(batch))
            return F.binary_cross_entropy(prob, batch["label"]), {}
        items, index = batch["item_ids"], batch["item_index"]
        if "neg_ids" in batch:
            items = paddle.concat([items, batch["neg_ids"]], axis=0)
            index = paddle.concat([index, batch["neg_index"]], axis=0)
        logits = model(batch["user_ids"], items, all_pairs=True)          # [B, B + K]
        b = batch["user_ids"].shape[0]
        pos = batch["item_index"].unsqueeze(1)
        # the user's own positive item elsewhere in the candidates is not a negative
        dup = (pos == index.unsqueeze(0)) & (paddle.eye(b, logits.shape[1], dtype="int32") == 0)
        logits = paddle.where(dup, paddle.full_like(logits, -1e9), logits)
        loss = F.cross_entropy(logits, paddle.arange(b, dtype="int64").unsqueeze(1))
        return loss, {}

    @paddle.no_grad()
    def predict_step(self, model, batch) -> dict[str, np.ndarray]:
        if self.kind == "ctr":
            prob = model(*self._ctr_inputs(batch))
            out = {"prob": prob.numpy().astype(np.float64), "label": batch["label"].numpy()}
            if "group" in batch:
                group = batch["group"]
                out["group"] = group.numpy() if isinstance(group, paddle.Tensor) else np.asarray(group)
            return out
        net = _inner(model)
        if self._catalog_tensor is None:
            self._catalog_tensor = paddle.to_tensor(self.data.catalog_ids)
        users = net.user_tower(batch["user_ids"])
        items = net.item_tower(self._catalog_tensor)
        scores = paddle.matmul(users, items, transpose_y=True).numpy().astype(np.float64)
        target = batch["target"].numpy()
        if self.cfg["Metric"]["exclude_seen"]:
            exclude = batch["exclude"].numpy()
            rows, cols = np.nonzero(exclude >= 0)
            scores[rows, exclude[rows, cols]] = -np.inf
        top = metric_fns.top_k_items(scores, max(self.topk))
        return {"topk": top, "target": target}

    def compute_metrics(self, outputs: dict[str, np.ndarray]) -> dict[str, float]:
        result = self._metrics(outputs)
        for scale in self._plateau:  # only set while training: every evaluation then is a validation one
            if scale.observe(result.get(self.best_metric)):
                result["lr_reduced_to"] = scale.last_lr
        return result

    def _metrics(self, outputs: dict[str, np.ndarray]) -> dict[str, float]:
        if self.kind == "ctr":
            y, p = outputs["label"], outputs["prob"]
            res = {"logloss": metric_fns.logloss(y, p), "samples": int(len(y)), "pos_rate": float(np.mean(y))}
            try:
                res["auc"] = metric_fns.auc(y, p)
            except ValueError:  # one class only (a tiny split)
                res["auc"] = float("nan")
            if "group" in outputs:
                try:
                    res["gauc"] = metric_fns.gauc(outputs["group"], y, p)
                except ValueError:
                    res["gauc"] = float("nan")
            return {"auc": res.pop("auc"), **res}
        res = {}
        for k in self.topk:
            res[f"recall@{k}"] = metric_fns.recall_at_k(outputs["topk"], outputs["target"], k, ranked=True)
            res[f"ndcg@{k}"] = metric_fns.ndcg_at_k(outputs["topk"], outputs["target"], k, ranked=True)
        res["users"] = int(len(outputs["target"]))
        return res

    def write_eval_artifacts(self, outputs, metrics, out_dir: str, split: str) -> dict:
        path = os.path.join(out_dir, "predictions.csv")
        if self.kind == "ctr":
            header = ["row", "label", "prob"]
            rows = ([i, int(y), probability_cell(p)]
                    for i, (y, p) in enumerate(zip(outputs["label"], outputs["prob"], strict=True)))
        else:
            header = ["user_row", "target_item", "top_items"]
            rows = ([i, int(t), " ".join(str(int(x)) for x in top)]
                    for i, (t, top) in enumerate(zip(outputs["target"], outputs["topk"], strict=True)))
        return {"predictions": write_csv(path, header, rows)}

    # ---- optimization ----------------------------------------------------------------------------
    def build_optimizers(self, model, total_steps: int) -> tuple[list[paddle.optimizer.Optimizer], list]:
        """The ``Optimizer`` section over the embedding and network groups (:meth:`_regularized_groups`);
        Wide&Deep: that over the deep part, and FTRL-Proximal (``Optimizer.wide``) over the wide part."""
        net = _inner(model)
        optimizer_cfg = self.cfg["Optimizer"]
        self._plateau = []
        schedule = self._on_plateau(build_scheduler(optimizer_cfg, total_steps))
        if not hasattr(net, "wide_parameters"):
            optimizer = build_optimizer(optimizer_cfg, self._regularized_groups(net, net.parameters()), schedule)
            return [optimizer], schedulers_of(schedule)
        wide_rate = self._on_plateau(float(optimizer_cfg["wide"]["lr"]))
        wide = build_optimizer(optimizer_cfg["wide"], [ParamGroup("wide", tuple(net.wide_parameters()), 0.0)],
                               wide_rate, name="FTRL")
        deep = build_optimizer(optimizer_cfg, self._regularized_groups(net, net.deep_parameters()), schedule)
        return [deep, wide], schedulers_of(schedule, wide_rate)

    def _regularized_groups(self, net, parameters) -> list[ParamGroup]:
        """``parameters`` as the embedding tables at ``Arch.embedding_regularizer`` and the other weights at
        ``Arch.net_regularizer`` (the optimizer's L2, or AdamW's decoupled decay)."""
        arch = self.cfg["Arch"]
        embedding_ids = {id(p) for p in net.embedding_parameters()}
        rules = [("embedding", float(arch["embedding_regularizer"]), lambda p: id(p) in embedding_ids)]
        return assign_groups(parameters, rules, ("network", float(arch["net_regularizer"])))

    def _on_plateau(self, learning_rate):
        """``learning_rate`` scaled down after validations without a better best metric
        (``Optimizer.reduce_on_plateau`` > 0), else unchanged."""
        optimizer_cfg = self.cfg["Optimizer"]
        factor = float(optimizer_cfg["reduce_on_plateau"])
        if factor <= 0:
            return learning_rate
        scaled = PlateauScale(learning_rate, factor, float(optimizer_cfg["min_lr"]), self.best_mode)
        self._plateau.append(scaled)
        return scaled

    # ---- export ------------------------------------------------------------------------------------
    def export_input_spec(self, model) -> list:
        net = _inner(model)
        if self.kind == "retrieval":
            return [InputSpec([None, net.user_tower.embedding.layout.num_id_cols], "int64", "user_ids"),
                    InputSpec([None, net.item_tower.embedding.layout.num_id_cols], "int64", "item_ids")]
        spec = [InputSpec([None, net.layout.num_id_cols], "int64", "ids")]
        if net.layout.num_dense:
            spec.append(InputSpec([None, net.layout.num_dense], "float32", "values"))
        return spec

    def example_batch(self, model, batch_size: int = 2) -> dict:
        split = "val"
        ds = self.dataset(split)
        n = min(batch_size, len(ds)) if hasattr(ds, "__len__") else batch_size
        if hasattr(ds, "arrays"):
            b = ds.batch(np.arange(n))
        else:
            it = iter(ds)
            b = ds.collate([next(it) for _ in range(n)])
        if self.kind == "retrieval":
            cat = self.data.catalog_ids
            return {"user_ids": b["user_ids"], "item_ids": cat[np.arange(n) % len(cat)]}
        out = {"ids": b["ids"]}
        if "values" in b:
            out["values"] = b["values"]
        return out

    def export_towers(self, model) -> dict:
        """DSSM: the towers as separate layers to export for retrieval serving:
        ``{"user_tower": (layer, [InputSpec]), "item_tower": (layer, [InputSpec])}`` (items are embedded
        offline, users at request time); example inputs are ``example_batch``'s ``user_ids`` / ``item_ids``."""
        if self.kind != "retrieval":
            return {}
        net = _inner(model)
        spec = self.export_input_spec(model)
        return {"user_tower": (net.user_tower, [spec[0]]), "item_tower": (net.item_tower, [spec[1]])}

    def export_variants(self, model) -> dict:
        """CTR models export whole; DSSM exports its two towers separately for retrieval serving."""
        if self.kind != "retrieval":
            return super().export_variants(model)
        ex = self.example_batch(model)
        out = {}
        for name, key in (("user_tower", "user_ids"), ("item_tower", "item_ids")):
            layer, (spec,) = self.export_towers(model)[name]
            # a tower's forward takes ``ids``: the exported input carries that name too
            out[name] = (layer, [InputSpec(spec.shape, spec.dtype, "ids")], {"ids": ex[key]})
        return out

    def export_metadata(self, out_dir: str) -> dict:
        """The fitted feature map copied into ``out_dir`` and named under ``preprocess``; CTR labels."""
        return serving.export_metadata(self.data, self.kind, self.cfg["Global"]["checkpoint"], out_dir)

    # ---- serving (a task made by ``for_export``) ----------------------------------------------------
    def load_serving(self) -> None:
        """The export's feature map (CTR models; DSSM serves no records)."""
        if self.kind == "ctr":
            self._serving_feature_map()

    def _serving_feature_map(self):
        if getattr(self, "_serve_fmap", None) is None:
            self._serve_fmap = serving.load_feature_map(self.export_dir, self.export_meta)
        return self._serve_fmap

    def prepare_items(self, records: list, limits=None):
        """Records of raw column values (as in the training files) -> encoded rows; DSSM is not served."""
        if self.kind != "ctr":
            raise ServingNotSupported(f"{self.cfg['Arch']['name']} exports its user and item towers for retrieval; "
                                      f"POST /v1/predict serves the CTR models")
        return serving.records_to_items(records, self._serving_feature_map())

    def collate_items(self, items: list):
        return serving.collate(items)

    def serving_runner(self, make_predictor):
        """CTR: the whole model. DSSM: no runner (its towers serve retrieval, not request records)."""
        if self.kind != "ctr":
            def refuse(batch):
                raise ServingNotSupported(f"{self.cfg['Arch']['name']} is not served from request records")
            return refuse
        return super().serving_runner(make_predictor)

    def prediction_rows(self, outputs, batch):
        return serving.ctr_rows(outputs, batch)
