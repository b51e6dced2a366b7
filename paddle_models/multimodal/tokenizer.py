"""A small SentencePiece tokenizer in ERNIE-M's format, and loading PaddleNLP's ErnieMTokenizer.

The official ERNIE-M files (``sentencepiece.bpe.model`` + ``vocab.txt``) cannot be downloaded here,
so :func:`train_tokenizer` trains a SentencePiece model on a text corpus and writes both files the
way PaddleNLP's ``ErnieMTokenizer`` reads them:

* ``ErnieMTokenizer._tokenize`` cuts text into SentencePiece pieces, then splits each piece further
  (each CJK character and each of ``,;:.?!~，；：。？！《》【】`` becomes its own token, digit runs are cut
  from letters, a lone ``▁`` is dropped);
* token ids come from ``vocab.txt`` (line number = id), NOT from the SentencePiece model's ids.

So ``vocab.txt`` is written as: ``[PAD]`` (id 0: ``ErnieMModel`` without an explicit attention
mask treats id 0 as padding), ``[CLS]``, ``[SEP]``, ``[UNK]``, ``[MASK]``, then every
SentencePiece piece in the model's order, then every token that ErnieM's extra splitting can cut
out of some piece and that is not a piece itself. Every token the tokenizer can produce from a
known piece therefore has an id; characters unknown to the model map to ``[UNK]``.

The model's vocabulary size is ``len(tokenizer.vocab)`` (see :func:`vocab_size`), not
``tokenizer.vocab_size`` (PaddleNLP returns the SentencePiece model's size there).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
from collections.abc import Iterable, Sequence

from ..fileio import write_bytes_atomic
from .nlp import transformers

SPECIAL_TOKENS = ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"]
SP_MODEL_FILE = "sentencepiece.bpe.model"
VOCAB_FILE = "vocab.txt"
INFO_FILE = "tokenizer_info.json"


def _ernie_m_splitter():
    """An object whose ``split(piece)`` applies ErnieMTokenizer's per-piece splitting to one piece.

    It reuses the installed PaddleNLP's own ``_tokenize`` code (with a SentencePiece stand-in that
    returns the piece unchanged), so the vocabulary follows whatever that version does.
    """
    ErnieMTokenizer = transformers().ErnieMTokenizer

    class _OnePiece:
        is_ch_char = ErnieMTokenizer.is_ch_char
        is_punct = ErnieMTokenizer.is_punct
        _tokenize = ErnieMTokenizer._tokenize

        def __init__(self):
            self.sp_model = self

        def EncodeAsPieces(self, text):  # noqa: N802 (SentencePiece's name)
            return [text]

        def split(self, piece: str) -> list[str]:
            return self._tokenize(piece)

    return _OnePiece()


def _clean_texts(texts: Iterable[str]) -> list[str]:
    out = []
    for t in texts:
        if not isinstance(t, str):
            continue
        t = " ".join(t.replace("\r", " ").replace("\n", " ").split())
        if t:
            out.append(t)
    return out


def train_tokenizer(texts: Iterable[str], out_dir: str, vocab_size: int = 8000,
                    model_type: str = "unigram", character_coverage: float = 0.9995,
                    lowercase: bool = False, max_sentence_length: int = 8192,
                    seed_sentencepiece_size: int = 200000) -> dict:
    """Train a SentencePiece model on ``texts`` and write ERNIE-M tokenizer files to ``out_dir``.

    ``vocab_size`` is the SentencePiece vocabulary target; on a small corpus it is lowered
    automatically (``hard_vocab_limit=False``). ``lowercase`` folds case inside the model
    (``nmt_nfkc_cf`` normalisation). Training is single-threaded and deterministic.

    Writes ``sentencepiece.bpe.model``, ``vocab.txt``, ``tokenizer_config.json`` (so
    ``ErnieMTokenizer.from_pretrained(out_dir)`` works) and ``tokenizer_info.json``; returns the
    info dict (``vocab_size`` = lines of vocab.txt, ``sp_vocab_size``, ``num_texts``, files).
    """
    lines = _clean_texts(texts)
    _check_training_request(lines, vocab_size, model_type)
    os.makedirs(out_dir, exist_ok=True)
    model_bytes = _trained_model(lines, vocab_size, model_type, character_coverage, lowercase, max_sentence_length,
                                 seed_sentencepiece_size)
    vocab, sp_vocab_size, extra = _ernie_m_vocab(model_bytes)
    sp_path, vocab_path = os.path.join(out_dir, SP_MODEL_FILE), os.path.join(out_dir, VOCAB_FILE)
    write_bytes_atomic(sp_path, model_bytes)
    write_bytes_atomic(vocab_path, ("\n".join(vocab) + "\n").encode("utf-8"))
    write_bytes_atomic(os.path.join(out_dir, "tokenizer_config.json"),
                       json.dumps(TOKENIZER_CONFIG, indent=2).encode("utf-8"))
    info = {
        "vocab_size": len(vocab),
        "sp_vocab_size": sp_vocab_size,
        "extra_split_tokens": extra,
        "num_texts": len(lines),
        "model_type": model_type,
        "lowercase": bool(lowercase),
        "files": {"sentencepiece_model_file": sp_path, "vocab_file": vocab_path},
    }
    write_bytes_atomic(os.path.join(out_dir, INFO_FILE), json.dumps(info, indent=2).encode("utf-8"))
    return info


#: ``tokenizer_config.json``: what ``ErnieMTokenizer.from_pretrained(folder)`` reads besides the two files.
TOKENIZER_CONFIG = {
    "tokenizer_class": "ErnieMTokenizer",
    "do_lower_case": False,
    "unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]",
    "cls_token": "[CLS]", "mask_token": "[MASK]",
}


def _check_training_request(lines: list[str], vocab_size: int, model_type: str) -> None:
    if not lines:
        raise ValueError("train_tokenizer: no non-empty text to train on")
    if vocab_size < 8:
        raise ValueError(f"train_tokenizer: vocab_size={vocab_size} is too small (minimum 8)")
    if model_type not in ("unigram", "bpe", "char", "word"):
        raise ValueError(f"train_tokenizer: model_type must be unigram|bpe|char|word, got {model_type!r}")


def _trained_model(lines, vocab_size, model_type, character_coverage, lowercase, max_sentence_length,
                   seed_sentencepiece_size) -> bytes:
    """The serialized SentencePiece model trained on ``lines``; a vocabulary too small for the text's
    characters is a ValueError saying which setting to raise."""
    import sentencepiece as spm

    buf = io.BytesIO()
    try:
        _train_spm(spm, lines, buf, vocab_size, model_type, character_coverage, lowercase, max_sentence_length,
                   seed_sentencepiece_size)
    except RuntimeError as e:
        m = re.search(r"Vocabulary size is smaller than required_chars\. (\d+) vs (\d+)", str(e))
        if not m:
            raise
        need = int(m.group(2))
        raise ValueError(
            f"train_tokenizer: a vocabulary of {vocab_size} pieces cannot hold the {need} distinct characters "
            f"of this text (character_coverage={character_coverage}; CJK text has many): raise "
            f"Data.tokenizer_vocab_size to at least {need + 5} (and Arch.ernie.vocab_size to at least the "
            f"resulting vocab.txt size, about twice that), or pass a ready tokenizer with Data.tokenizer") from None
    return buf.getvalue()


def _ernie_m_vocab(model_bytes: bytes):
    """(vocab.txt lines, the SentencePiece model's size, how many tokens ErnieM's extra splitting added): the
    special tokens, the model's pieces in order, then the split-off tokens that are not pieces themselves."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor()
    sp.LoadFromSerializedProto(model_bytes)
    pieces = [sp.IdToPiece(i) for i in range(sp.GetPieceSize()) if not (sp.IsUnknown(i) or sp.IsControl(i))]
    vocab = list(SPECIAL_TOKENS)
    seen = set(vocab)

    def add(token: str) -> bool:
        if token in seen or "\n" in token:
            return False
        vocab.append(token)
        seen.add(token)
        return True

    for piece in pieces:
        add(piece)
    splitter = _ernie_m_splitter()
    extra = sum(add(token) for piece in pieces for token in splitter.split(piece))
    return vocab, int(sp.GetPieceSize()), extra


def _train_spm(spm, lines, buf, vocab_size, model_type, character_coverage, lowercase, max_sentence_length,
               seed_sentencepiece_size) -> None:
    """Run SentencePiece training over ``lines``, writing the model into ``buf``."""
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=buf,
        vocab_size=int(vocab_size),
        model_type=model_type,
        character_coverage=float(character_coverage),
        normalization_rule_name="nmt_nfkc_cf" if lowercase else "nmt_nfkc",
        unk_id=0, bos_id=-1, eos_id=-1, pad_id=-1,
        hard_vocab_limit=False,
        input_sentence_size=0,
        shuffle_input_sentence=False,
        num_threads=1,
        max_sentence_length=int(max_sentence_length),
        seed_sentencepiece_size=int(seed_sentencepiece_size),
        minloglevel=2,
    )


def tokenizer_fingerprint(path: str) -> dict:
    """``{"kind": "tokenizer", "path", "sha256"}``: sha256 over the folder's SentencePiece model and
    vocab.txt (the two files that decide the token ids)."""
    h = hashlib.sha256()
    for name in (SP_MODEL_FILE, VOCAB_FILE):
        h.update(name.encode() + b"\0")
        with open(os.path.join(path, name), "rb") as f:
            h.update(f.read())
    return {"kind": "tokenizer", "path": os.path.abspath(path), "sha256": h.hexdigest()}


#: keys only transformers writes: into config.json, and into tokenizer_config.json (its ErnieMTokenizer's arguments)
_TRANSFORMERS_KEYS = {"config.json": ("transformers_version",),
                      "tokenizer_config.json": ("added_tokens_decoder", "sp_model_kwargs", "sentencepiece_model_ckpt")}


def _written_by_transformers(path: str) -> bool:
    """A Hugging Face folder: a config.json naming ``transformers_version`` (or a ``model_type`` without PaddleNLP's
    ``paddlenlp_version``), or a tokenizer_config.json with one of transformers' keys. PaddleNLP's
    ``from_pretrained`` is not given those files (they may name files of another machine)."""
    for name, keys in _TRANSFORMERS_KEYS.items():
        try:
            with open(os.path.join(path, name), encoding="utf-8") as f:
                found = json.load(f)
        except (OSError, ValueError):
            continue
        if any(k in found for k in keys) or (name == "config.json" and "model_type" in found
                                             and "paddlenlp_version" not in found):
            return True
    return False


def _lower_case(path: str) -> bool:
    try:
        with open(os.path.join(path, "tokenizer_config.json"), encoding="utf-8") as f:
            return bool(json.load(f).get("do_lower_case", False))
    except (OSError, ValueError):
        return False


def load_tokenizer(path: str):
    """PaddleNLP ``ErnieMTokenizer`` from a folder holding ``sentencepiece.bpe.model`` and ``vocab.txt``.

    A folder with a PaddleNLP ``tokenizer_config.json`` is loaded by ``ErnieMTokenizer.from_pretrained`` (which
    also restores options saved there); otherwise, a Hugging Face ERNIE-M folder among them (the same two
    files: transformers' ``ErnieMTokenizer`` reads them under the same names), the two files are passed
    directly (``do_lower_case`` from a tokenizer_config.json). ``[PAD]`` may have any id: ``vocab.txt`` of
    ernie-m-base has ``[CLS]`` at 0 and ``[PAD]`` at 1, the tokenizers trained here ``[PAD]`` at 0.
    """
    ErnieMTokenizer = transformers().ErnieMTokenizer

    if not os.path.isdir(path):
        raise FileNotFoundError(f"tokenizer folder {path!r} does not exist")
    sp_path = os.path.join(path, SP_MODEL_FILE)
    vocab_path = os.path.join(path, VOCAB_FILE)
    for f in (sp_path, vocab_path):
        if not os.path.isfile(f):
            raise FileNotFoundError(
                f"tokenizer folder {path!r}: missing {os.path.basename(f)} "
                f"(expected {SP_MODEL_FILE} and {VOCAB_FILE}; make one with tools/train_tokenizer.py)")
    if os.path.isfile(os.path.join(path, "tokenizer_config.json")) and not _written_by_transformers(path):
        tok = ErnieMTokenizer.from_pretrained(path)
    else:
        tok = ErnieMTokenizer(vocab_file=vocab_path, sentencepiece_model_file=sp_path, do_lower_case=_lower_case(path))
    absent = [t for t in SPECIAL_TOKENS if t not in tok.vocab]
    if absent:
        raise ValueError(f"{vocab_path}: no line holds {', '.join(absent)} (ErnieMTokenizer's special tokens)")
    return tok


#: files of a tokenizer folder that ``copy_tokenizer`` keeps (beside the two that decide the ids)
TOKENIZER_EXTRA_FILES = ("tokenizer_config.json", INFO_FILE, "special_tokens_map.json", "added_tokens.json")


def copy_tokenizer(src: str, dst: str) -> None:
    """The tokenizer of folder ``src`` into folder ``dst``: its SentencePiece model and vocab.txt, and the
    tokenizer files among ``TOKENIZER_EXTRA_FILES``. A Hugging Face folder's own files (weights, config.json,
    transformers' tokenizer_config.json) stay behind; its ``do_lower_case`` goes into a PaddleNLP
    tokenizer_config.json, so ``load_tokenizer(dst)`` builds the same tokenizer."""
    import shutil

    os.makedirs(dst, exist_ok=True)
    for name in (SP_MODEL_FILE, VOCAB_FILE):
        shutil.copyfile(os.path.join(src, name), os.path.join(dst, name))
    if _written_by_transformers(src):
        config = {**TOKENIZER_CONFIG, "do_lower_case": _lower_case(src)}
        write_bytes_atomic(os.path.join(dst, "tokenizer_config.json"), json.dumps(config, indent=2).encode("utf-8"))
        return
    for name in TOKENIZER_EXTRA_FILES:
        if os.path.isfile(os.path.join(src, name)):
            shutil.copyfile(os.path.join(src, name), os.path.join(dst, name))


def vocab_size(tokenizer) -> int:
    """Number of ids the tokenizer can emit (the embedding table size the model needs)."""
    return len(tokenizer.vocab)


def read_texts(paths: Sequence[str], field: str | None = None) -> list[str]:
    """Texts for tokenizer training from files: JSONL (``text`` field, or ``field``), JSON (an MR2
    ``dataset_items_*.json`` dict of items with ``caption``, or a list of objects with ``text``, as
    MVSA), or plain text (one text per line). The format is chosen by content, not by extension.
    """
    out: list[str] = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            content = f.read()
        stripped = content.lstrip()
        parsed = None
        if stripped[:1] in ("{", "["):
            try:
                parsed = json.loads(content)
            except json.JSONDecodeError:
                parsed = None
        if parsed is not None:
            out.extend(_texts_from_json(parsed, path, field))
            continue
        lines = content.splitlines()
        jsonl = stripped[:1] == "{"
        for lineno, line in enumerate(lines, 1):
            line = line.strip()
            if not line:
                continue
            if jsonl:
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}: line {lineno}: invalid JSON ({e.msg})") from None
                key = field or "text"
                if not isinstance(rec, dict) or not isinstance(rec.get(key), str):
                    raise ValueError(f"{path}: line {lineno}: field {key!r} missing or not a string")
                out.append(rec[key])
                for ev in rec.get("evidence_texts") or []:
                    if isinstance(ev, str):
                        out.append(ev)
            else:
                out.append(line)
    return out


def _texts_from_json(obj, path: str, field: str | None) -> list[str]:
    keys = [field] if field else ["text", "caption"]
    items = obj.values() if isinstance(obj, dict) else obj
    if not isinstance(items, (list, type({}.values()))):
        raise ValueError(f"{path}: expected a JSON list or object of records")
    out = []
    for i, rec in enumerate(items):
        if not isinstance(rec, dict):
            raise ValueError(f"{path}: record {i}: expected an object")
        for k in keys:
            if isinstance(rec.get(k), str):
                out.append(rec[k])
                break
        else:
            raise ValueError(f"{path}: record {i}: no text field ({' or '.join(keys)})")
    return out
