"""The Transformer family's Task for the shared Trainer: data, label-smoothed loss, decoding, BLEU.

``Data.kind: multi30k`` translates parallel text files with a joint SentencePiece vocabulary, selects
checkpoints on BLEU (sacrebleu, on detokenized text) and also reports ``bleu_tokenized``, the Multi30k
literature's BLEU on Moses-tokenized lowercased text (``bleu.py``); ``Data.kind: toy`` learns to copy or
reverse random symbol sequences and selects on ``exact_match``. The learning-rate schedule is the shared one
(``Optimizer.schedule: noam`` is the paper's warmup then inverse square root; its ``lr`` is the peak
value, reached at ``warmup_steps``; the paper's d_model^-0.5 * warmup^-0.5 is 7.0e-4 for the base model).
"""
from __future__ import annotations

import logging
import os
import shutil
from functools import partial

import numpy as np
import paddle
import paddle.nn.functional as F

from ..engine.loader import FixedBatches
from ..engine.task import Task
from ..fileio import atomic_write
from ..registry import register_task
from . import serving
from .bleu import sacre_bleu, tokenized_bleu, tokenized_bleu_protocol
from .data import (
    Example,
    ExampleCounts,
    ExampleDataset,
    SpmTokenizer,
    ToyTokenizer,
    collate,
    make_examples,
    make_toy_examples,
    read_parallel,
    token_batches,
    train_sentencepiece,
)
from .decoding import (
    DecoderStepGraph,
    EncoderGraph,
    check_decode_settings,
    decode_batch,
    max_output_len,
    strip_special,
)
from .model import BOS_ID, EOS_ID, PAD_ID

SPM_NAME = "spm.model"
log = logging.getLogger("paddle_models")


def label_smoothed_nll(logits, target, epsilon: float, pad_id: int = PAD_ID):
    """Label-smoothed cross entropy averaged over the non-padding target tokens.

    The smoothed target puts ``1 - epsilon`` on the true token and spreads ``epsilon`` uniformly over the
    vocabulary, so per token: ``(1 - eps) * -log p(y) + eps * mean_v(-log p(v))``.
    Since ``-log p(v) = logsumexp(x) - x_v``, ``mean_v(-log p(v)) = -log p(y) + x_y - mean_v(x_v)``: the
    fused softmax-cross-entropy kernel gives ``-log p(y)`` and no [tokens, vocab] log-softmax is
    materialized (Paddle's CPU log_softmax is ~30x slower than the fused kernel on a large vocabulary).
    Returns (loss, plain nll per token, number of tokens), the last two detached for logging.
    """
    label = target.unsqueeze(-1)
    nll = F.cross_entropy(logits, label, ignore_index=pad_id, reduction="none").squeeze(-1)  # 0 at padding
    mask = (target != pad_id).astype(logits.dtype)
    ntok = mask.sum().clip(min=1.0)
    if epsilon > 0:
        x_y = paddle.take_along_axis(logits, label, axis=-1).squeeze(-1)
        smooth = nll + x_y - logits.mean(axis=-1)
        per_tok = (1.0 - epsilon) * nll + epsilon * smooth
    else:
        per_tok = nll
    loss = (per_tok * mask).sum() / ntok
    return loss, ((nll * mask).sum() / ntok).detach(), ntok.detach()


def _resolve(path: str, data_dir: str) -> str:
    """A relative file name is looked up in the current directory first, then under ``data_dir``."""
    if not path or os.path.isabs(path) or os.path.exists(path):
        return path
    return os.path.join(data_dir, path)


def default_data_dir() -> str:
    """``$PADDLE_MODELS_DATA/multi30k``, else ``../shared/data/multi30k`` from the current directory, else
    from the repository root (beside which ``shared/`` sits in a checkout)."""
    env = os.environ.get("PADDLE_MODELS_DATA")
    if env:
        return os.path.join(env, "multi30k")
    here = os.path.join("..", "shared", "data", "multi30k")
    if os.path.isdir(here):
        return here
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return os.path.join(os.path.dirname(repo), "shared", "data", "multi30k")


@register_task("transformer")
class TransformerTask(Task):
    family = "transformer"
    best_mode = "max"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.kind = cfg["Data"]["kind"]
        if self.kind not in ("multi30k", "toy"):
            raise ValueError(f"Data.kind: unknown {self.kind!r} (multi30k, toy)")
        self.best_metric = "exact_match" if self.kind == "toy" else "bleu"
        check_decode_settings(cfg["Decode"])
        self.tokenizer = None
        self._toy_cache: dict[str, list] = {}
        self._lines: dict[str, tuple[list[str], list[str]]] = {}  # split -> parallel lines read by check_data
        self.counts: dict[str, ExampleCounts] = {}  # split -> pairs skipped (empty, too long to train) / truncated

    # ---- setup -------------------------------------------------------------------------------
    def _data_path(self, key: str) -> str:
        data_cfg = self.cfg["Data"]
        return _resolve(data_cfg[key], data_cfg["data_dir"] or default_data_dir())

    def _find_spm(self, output_dir: str):
        data_cfg = self.cfg["Data"]
        if data_cfg["spm_model"]:
            path = _resolve(data_cfg["spm_model"], data_cfg["data_dir"] or default_data_dir())
            if not os.path.isfile(path):
                raise FileNotFoundError(f"Data.spm_model: {path}: SentencePiece model not found")
            return path
        candidates = []
        checkpoint = self.cfg["Global"]["checkpoint"]
        if checkpoint:  # <run>/checkpoints/best(/model.safetensors): the vocabulary of the run that trained it first
            p = os.path.abspath(str(checkpoint))
            p = p if os.path.isdir(p) else os.path.dirname(p)
            for _ in range(3):
                candidates.append(os.path.join(p, SPM_NAME))
                p = os.path.dirname(p)
        candidates.append(os.path.join(output_dir, SPM_NAME))
        for c in candidates:
            if os.path.isfile(c):
                return c
        return None

    def prepare(self, output_dir: str, is_main: bool = True) -> None:
        arch = self.cfg["Arch"]
        if self.kind == "toy":
            self.tokenizer = ToyTokenizer(int(arch["vocab_size"]))
            return
        os.makedirs(output_dir, exist_ok=True)
        found = self._find_spm(output_dir)
        dest = os.path.join(output_dir, SPM_NAME)
        if found is None:
            if not is_main:
                raise FileNotFoundError(f"{dest}: SentencePiece model not written by rank 0")
            global_cfg = self.cfg["Global"]
            if global_cfg["checkpoint"] or global_cfg["resume"]:
                why = (f"Global.checkpoint={global_cfg['checkpoint']}" if global_cfg["checkpoint"]
                       else "Global.resume=true")
                raise FileNotFoundError(
                    f"{why}: no {SPM_NAME} found beside the checkpoint's run or in {output_dir}; a model must be "
                    f"used with the vocabulary it was trained with: set Data.spm_model to it (a new one is "
                    f"trained only when training from scratch)")
            data_cfg = self.cfg["Data"]
            found = train_sentencepiece(
                [self._data_path("train_src"), self._data_path("train_tgt")], dest[: -len(".model")],
                vocab_size=int(arch["vocab_size"]), model_type=data_cfg["spm_model_type"],
                character_coverage=data_cfg["spm_character_coverage"], seed=int(self.cfg["Global"]["seed"]))
        elif is_main and os.path.abspath(found) != os.path.abspath(dest):
            shutil.copyfile(found, dest)  # keep the vocabulary with the run's checkpoints
        tokenizer = SpmTokenizer(found)
        if tokenizer.vocab_size != int(arch["vocab_size"]):
            raise ValueError(f"{found}: vocabulary has {tokenizer.vocab_size} pieces but Arch.vocab_size is "
                             f"{arch['vocab_size']}; set Arch.vocab_size to match (or retrain the vocabulary)")
        self.tokenizer = tokenizer

    def preprocessing_fingerprint(self):
        """The SentencePiece model's fingerprint (sha256 of the file); None for the toy task."""
        if self.kind == "toy":
            return None
        path = getattr(self.tokenizer, "path", None) or self._find_spm(self.output_dir)
        if not path or not os.path.isfile(path):
            return None
        from ..engine.checkpoint import file_sha256

        return {"kind": "SentencePiece model", "path": os.path.abspath(path), "sha256": file_sha256(path)}

    def _tok(self):
        if self.tokenizer is None:
            self.prepare(self.output_dir)
        return self.tokenizer

    # ---- data --------------------------------------------------------------------------------
    def _toy_examples(self, split: str):
        if split not in self._toy_cache:
            data_cfg, seed = self.cfg["Data"], int(self.cfg["Global"]["seed"])
            args = dict(task=data_cfg["toy_task"], vocab_size=int(self.cfg["Arch"]["vocab_size"]),
                        min_len=int(data_cfg["toy_min_len"]), max_len=int(data_cfg["toy_max_len"]))
            held = make_toy_examples(2 * int(data_cfg["toy_val_size"]), seed=seed + 1, **args)
            held_keys = {tuple(s.tolist()) for s, _, _ in held}
            n = int(data_cfg["toy_val_size"])
            self._toy_cache["val"], self._toy_cache["test"] = held[:n], held[n:]
            self._toy_cache["train"] = make_toy_examples(int(data_cfg["toy_train_size"]), seed=seed,
                                                           exclude=held_keys, **args)
        return self._toy_cache[split]

    def _split_files(self, split: str) -> tuple[str, str]:
        src_key, tgt_key = f"{split}_src", f"{split}_tgt"
        src_path, tgt_path = self._data_path(src_key), self._data_path(tgt_key)
        if not src_path or not tgt_path:
            raise ValueError(f"Data.{src_key} / Data.{tgt_key}: set both files for the {split!r} split")
        return src_path, tgt_path

    def check_data(self, splits) -> None:
        """Every split's files read before the run writes anything (its vocabulary, config copy): one sentence a
        line in both files, UTF-8, gzip data intact; the lines are kept for :meth:`examples`. The toy task's
        splits are generated (and their lengths checked) here."""
        for split in splits:
            if split not in ("train", "val", "test"):
                raise ValueError(f"unknown split {split!r} (train, val, test)")
            if self.kind == "toy":
                self.examples(split)
            elif split not in self._lines:
                self._lines[split] = read_parallel(*self._split_files(split))

    def examples(self, split: str) -> list[Example]:
        if split not in ("train", "val", "test"):
            raise ValueError(f"unknown split {split!r} (train, val, test)")
        if self.kind == "toy":
            if int(self.cfg["Data"]["toy_max_len"]) + 1 > int(self.cfg["Arch"]["max_len"]):
                raise ValueError("Data.toy_max_len: sequences (+EOS) must fit in Arch.max_len positions")
            return self._toy_examples(split)
        src_path, tgt_path = self._split_files(split)
        src, tgt = self._lines.pop(split, None) or read_parallel(src_path, tgt_path)
        max_len = int(self.cfg["Arch"]["max_len"])
        ex, counts = make_examples(self._tok(), src, tgt, max_len, drop_long=(split == "train"),
                                   where=f"{src_path} / {tgt_path}")
        if counts.truncated:
            log.warning("%s / %s: %d of %d sentence pairs have a side longer than the model's %d positions "
                        "(Arch.max_len - 1): cut to fit (the references stay whole)", src_path, tgt_path,
                        counts.truncated, len(src), max_len - 1)
        self.counts[split] = counts
        return ex

    def dataset(self, split: str):
        ex = self.examples(split)
        if split != "train":  # sorted by length: little padding in each eval batch (refs travel with the batch)
            ex = sorted(ex, key=lambda e: (len(e[0]), len(e[1])))
        return ExampleDataset(ex)

    def batch_sampler(self, split: str, dataset, batch_size: int, *, seed: int, shuffle: bool = True,
                      rank: int = 0, world_size: int = 1):
        """With ``Data.max_tokens`` > 0: batches of similar-length pairs holding at most ``max_tokens`` padded
        tokens (and ``Data.max_sentences`` pairs), in a seeded order each epoch; ``Global.batch_size`` is
        not used then. With ``max_tokens: 0``: ``Global.batch_size`` pairs per batch."""
        data_cfg = self.cfg["Data"]
        if int(data_cfg["max_tokens"]) <= 0:
            return super().batch_sampler(split, dataset, batch_size, seed=seed, shuffle=shuffle, rank=rank,
                                         world_size=world_size)
        lengths = [(len(s), len(t)) for s, t, _ in dataset.examples]
        fixed = token_batches(lengths, int(data_cfg["max_tokens"]), seed=seed,
                              max_sentences=int(data_cfg["max_sentences"]))
        return FixedBatches(fixed, seed=seed, shuffle=shuffle, rank=rank, world_size=world_size)

    def default_eval_split(self) -> str:
        """``test`` when ``Data.test_src`` is set (the eval contract passes the files only), else ``val``."""
        return "test" if self.cfg["Data"]["test_src"] else "val"

    def run_summary(self) -> dict:
        """``<split>_pairs_skipped`` and ``<split>_pairs_truncated`` of the splits read (those not 0)."""
        out = {}
        for split, counts in self.counts.items():
            out.update({f"{split}_pairs_{what}": n for what, n in vars(counts).items() if n})
        return out

    def collate_fn(self, split: str):
        return partial(collate, pad_id=PAD_ID)

    def batch_size_of(self, batch) -> int:
        return int(batch["src_ids"].shape[0])

    # ---- steps -------------------------------------------------------------------------------
    def forward_loss(self, model, batch) -> tuple[paddle.Tensor, dict[str, float]]:
        logits = model(batch["src_ids"], batch["tgt_in"])
        loss, nll, ntok = label_smoothed_nll(logits, batch["tgt_out"], float(self.cfg["Loss"]["label_smoothing"]))
        return loss, {"nll": float(nll), "tokens": float(ntok)}

    def predict_step(self, model, batch) -> dict[str, np.ndarray]:
        decode_cfg = self.cfg["Decode"]
        src = batch["src_ids"]
        src = src if isinstance(src, paddle.Tensor) else paddle.to_tensor(src)
        tgt_in = batch["tgt_in"] if isinstance(batch["tgt_in"], paddle.Tensor) else paddle.to_tensor(batch["tgt_in"])
        tgt_out = (batch["tgt_out"] if isinstance(batch["tgt_out"], paddle.Tensor)
                   else paddle.to_tensor(batch["tgt_out"]))
        with paddle.no_grad():
            logits = model(src, tgt_in)
            nll = F.cross_entropy(logits, tgt_out.unsqueeze(-1), ignore_index=PAD_ID, reduction="none").squeeze(-1)
            nll_sum = nll.sum(axis=1).numpy()
            ntok = (tgt_out != PAD_ID).astype("float32").sum(axis=1).numpy()
        max_len = max_output_len(model, src.shape[1], float(decode_cfg["max_len_a"]), int(decode_cfg["max_len_b"]))
        hyp_ids = decode_batch(model, src, beam_size=int(decode_cfg["beam_size"]), max_len=max_len,
                               alpha=float(decode_cfg["length_penalty"]), use_cache=bool(decode_cfg["use_cache"]))
        tokenizer = self._tok()
        hyps = [tokenizer.decode(strip_special(row)) for row in hyp_ids]
        return {"hyp": np.array(hyps, dtype=object), "ref": np.asarray(batch["ref"], dtype=object),
                "nll_sum": nll_sum.astype("float64"), "ntok": ntok.astype("float64")}

    def compute_metrics(self, outputs: dict[str, np.ndarray]) -> dict[str, float]:
        hyps = [str(h) for h in outputs["hyp"]]
        refs = [str(r) for r in outputs["ref"]]
        ntok = float(np.sum(outputs["ntok"]))
        nll = float(np.sum(outputs["nll_sum"]) / max(ntok, 1.0))
        metrics = {"nll": nll, "ppl": float(np.exp(min(nll, 50.0))),
                   "exact_match": float(np.mean([h == r for h, r in zip(hyps, refs, strict=True)])) if refs else 0.0}
        if self.kind != "toy":
            lang = str(self.cfg["Data"]["tgt_lang"])
            metrics["bleu"] = sacre_bleu(hyps, refs)
            metrics["bleu_tokenized"] = tokenized_bleu(hyps, refs, lang)
            metrics["bleu_tokenized_protocol"] = tokenized_bleu_protocol(lang)
        return metrics

    def write_eval_artifacts(self, outputs, metrics, out_dir: str, split: str) -> dict:
        os.makedirs(out_dir, exist_ok=True)
        path = os.path.join(out_dir, f"{split}_hypotheses.tsv")
        with atomic_write(path) as f:
            f.write("hypothesis\treference\n")
            for h, r in zip(outputs["hyp"], outputs["ref"], strict=True):
                f.write(f"{str(h).replace(chr(9), ' ')}\t{str(r).replace(chr(9), ' ')}\n")
        return {"hypotheses": path}

    # ---- export ------------------------------------------------------------------------------
    def export_input_spec(self, model) -> list:
        """The whole model under teacher forcing: ``forward(src_ids, tgt_ids) -> logits [B, T, V]``."""
        from paddle.static import InputSpec

        return [InputSpec([None, None], "int64", "src_ids"), InputSpec([None, None], "int64", "tgt_ids")]

    def export_variants(self, model) -> dict:
        """``model`` (teacher-forced logits), ``encoder`` (source -> cross-attention keys/values) and
        ``decoder_step`` (one cached decoding step); greedy decoding with the last two is
        ``decoding.export_greedy``."""
        from paddle.static import InputSpec

        L, H = len(model.decoder_layers), model.decoder_layers[0].self_attn.num_heads
        dh = model.d_model // H
        ex = self.example_batch(model, 2)
        enc = EncoderGraph(model)
        enc.eval()
        with paddle.no_grad():
            mk, mv, mmask = enc(paddle.to_tensor(ex["src_ids"]))
            # the example step: position 3, after a cache of three earlier target positions
            cache = model.init_cache(paddle.zeros([2, ex["src_ids"].shape[1], model.d_model]))
            for c, k, v in zip(cache, paddle.unbind(mk, 1), paddle.unbind(mv, 1), strict=True):
                c["mk"], c["mv"] = k, v
            model.decode(paddle.to_tensor(ex["tgt_ids"][:, :3]), None, mmask, cache, start=0)
        step_example = {"token": ex["tgt_ids"][:, 3:4], "memory_k": mk.numpy(), "memory_v": mv.numpy(),
                        "memory_mask": mmask.numpy(),
                        "cache_k": paddle.stack([c["k"] for c in cache], 1).numpy(),
                        "cache_v": paddle.stack([c["v"] for c in cache], 1).numpy()}
        kv = [None, L, H, None, dh]
        step_spec = [InputSpec([None, 1], "int64", "token"), InputSpec(kv, "float32", "memory_k"),
                     InputSpec(kv, "float32", "memory_v"), InputSpec([None, 1, 1, None], "float32", "memory_mask"),
                     InputSpec(kv, "float32", "cache_k"), InputSpec(kv, "float32", "cache_v")]
        return {
            "model": (model, self.export_input_spec(model), ex),
            "encoder": (enc, [InputSpec([None, None], "int64", "src_ids")], {"src_ids": ex["src_ids"]}),
            "decoder_step": (DecoderStepGraph(model), step_spec, step_example),
        }

    def export_metadata(self, out_dir: str) -> dict:
        """Tokenizer (copied beside the graphs), special ids and decoding settings for a predictor."""
        arch, decode_cfg = self.cfg["Arch"], self.cfg["Decode"]
        preprocess = {"output": "logits", "kind": self.kind, "pad_id": PAD_ID, "bos_id": BOS_ID, "eos_id": EOS_ID,
               "vocab_size": int(arch["vocab_size"]), "max_len": int(arch["max_len"]),
               "num_layers": int(arch["num_decoder_layers"]), "num_heads": int(arch["num_heads"]),
               "head_dim": int(arch["d_model"]) // int(arch["num_heads"]),
               "decode": {"max_len_a": float(decode_cfg["max_len_a"]), "max_len_b": int(decode_cfg["max_len_b"])}}
        if self.kind != "toy":
            tokenizer = self._tok()
            shutil.copyfile(tokenizer.path, os.path.join(out_dir, SPM_NAME))
            preprocess["tokenizer"] = SPM_NAME
        return {"preprocess": preprocess}

    def example_batch(self, model, batch_size: int = 2) -> dict:
        rng = np.random.RandomState(0)
        V = int(model.vocab_size)
        src_len, tgt_len = 7, 5
        src = rng.randint(EOS_ID + 1, V, size=[batch_size, src_len]).astype("int64")
        src[:, -1] = EOS_ID
        if batch_size > 1:  # a shorter sentence, padded
            src[1, 4] = EOS_ID
            src[1, 5:] = PAD_ID
        tgt = rng.randint(EOS_ID + 1, V, size=[batch_size, tgt_len]).astype("int64")
        tgt[:, 0] = BOS_ID
        return {"src_ids": src, "tgt_ids": tgt}

    # ---- serving (a task made by ``for_export``): {"src": ...} -> greedy translation ------------------------
    def _serving_pre(self) -> dict:
        return (self.export_meta or {}).get("preprocess") or {}

    def _serving_tokenizer(self):
        if getattr(self, "_serve_tok", None) is None:
            self._serve_tok = serving.export_tokenizer(self.export_dir, self._serving_pre())
        return self._serve_tok

    def load_serving(self) -> None:
        self._serving_tokenizer()

    def prepare_items(self, records: list, limits: dict | None = None):
        """Records ``{"id", "src"}``: the source text tokenized with the export's vocabulary (+ EOS)."""
        server_limits = {"max_text_chars": 10_000, "truncate": True, **(limits or {})}
        return serving.records_to_items(records, self._serving_tokenizer(), self._serving_pre(), server_limits)

    def collate_items(self, items: list):
        return serving.collate_items(items, self._serving_pre())

    def serving_runner(self, make_predictor):
        """Greedy decoding through the exported ``encoder`` and ``decoder_step`` graphs."""
        return self.export_translator(make_predictor)

    def export_translator(self, make_predictor, beam_size: int = 1):
        """batch -> tokens through the export's graphs: greedy (``beam_size`` 1) or beam search with the export
        config's ``Decode.length_penalty``."""
        return serving.decoding_runner(make_predictor, self._serving_pre(), beam_size,
                                       float(self.cfg["Decode"]["length_penalty"]))

    def prediction_rows(self, outputs, batch):
        """``{"id", "translation"}`` per source."""
        return serving.translation_rows(outputs, batch, self._serving_tokenizer(), self._serving_pre())

