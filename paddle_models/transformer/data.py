"""Data for the Transformer: Multi30k text files, a joint SentencePiece vocabulary, token-based batching,
and the copy/reverse toy task generated in code.

Every example is ``(src_ids, tgt_ids, ref)``: token ids without specials (numpy int64) and the reference
target text (detokenized; what BLEU / exact match compare against). ``collate`` adds the specials:
``src_ids = src + [EOS]``, ``tgt_in = [BOS] + tgt``, ``tgt_out = tgt + [EOS]``, padded with ``PAD_ID``.
"""
from __future__ import annotations

import os
import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import paddle

from .. import textfile
from .model import BOS_ID, EOS_ID, PAD_ID, UNK_ID

Example = tuple[np.ndarray, np.ndarray, str]


# ---- text files -----------------------------------------------------------------------------------
def read_lines(path: str) -> list[str]:
    """Lines of a UTF-8 text file, plain or gzipped (detected by its magic bytes), without newlines; bytes that
    are not UTF-8 and damaged gzip data are ValueErrors naming the file and the line."""
    return textfile.read_lines(path)


def read_parallel(src_path: str, tgt_path: str) -> tuple[list[str], list[str]]:
    """Two line-aligned files (line i of one translates line i of the other)."""
    src, tgt = read_lines(src_path), read_lines(tgt_path)
    if len(src) != len(tgt):
        raise ValueError(f"{src_path} has {len(src)} lines but {tgt_path} has {len(tgt)}; "
                         "parallel files must have one sentence per line, aligned")
    return src, tgt


# ---- tokenizers -----------------------------------------------------------------------------------
def train_sentencepiece(inputs: Sequence[str], model_prefix: str, vocab_size: int, model_type: str = "unigram",
                        character_coverage: float = 1.0, max_sentences: int = 0, seed: int = 0) -> str:
    """Train one joint SentencePiece model on all lines of ``inputs`` (source and target files).

    The special ids are fixed to the model's: pad 0, unk 1, bos 2, eos 3. Writes
    ``<model_prefix>.model`` and ``.vocab`` and returns the ``.model`` path.
    """
    import sentencepiece as spm

    sentences = []
    for path in inputs:
        sentences.extend(s for s in read_lines(path) if s.strip())
    if not sentences:
        raise ValueError(f"no text to train SentencePiece on in {', '.join(inputs)}")
    if max_sentences and len(sentences) > max_sentences:
        sentences = random.Random(seed).sample(sentences, max_sentences)
    os.makedirs(os.path.dirname(os.path.abspath(model_prefix)), exist_ok=True)
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences), model_prefix=model_prefix, vocab_size=int(vocab_size),
            model_type=model_type, character_coverage=float(character_coverage),
            pad_id=PAD_ID, unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID,
            pad_piece="<pad>", unk_piece="<unk>", bos_piece="<s>", eos_piece="</s>",
            num_threads=1, minloglevel=2,
        )
    except RuntimeError as e:
        raise ValueError(f"SentencePiece training on {', '.join(inputs)} failed: {e}") from None
    return model_prefix + ".model"


class SpmTokenizer:
    """Encode text to ids / decode ids to detokenized text with a SentencePiece model."""

    def __init__(self, model_path: str):
        import sentencepiece as spm

        if not os.path.isfile(model_path):
            raise FileNotFoundError(f"{model_path}: SentencePiece model not found")
        self.path = model_path
        self.sp = spm.SentencePieceProcessor(model_file=model_path)
        for name, want in (("pad", PAD_ID), ("unk", UNK_ID), ("bos", BOS_ID), ("eos", EOS_ID)):
            got = getattr(self.sp, f"{name}_id")()
            if got != want:
                raise ValueError(f"{model_path}: {name}_id is {got}, expected {want} "
                                 "(train the vocabulary with tools/train_spm.py)")

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    def encode(self, text: str) -> list[int]:
        return self.sp.encode(text, out_type=int)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return self.sp.encode(list(texts), out_type=int)

    def decode(self, ids: Sequence[int]) -> str:
        return self.sp.decode([int(i) for i in ids])


class ToyTokenizer:
    """The toy task's "text" is the ids themselves, space separated (``"5 9 4"``)."""

    def __init__(self, vocab_size: int):
        self.vocab_size = vocab_size

    def encode(self, text: str) -> list[int]:
        """The ids of ``text``; a token that is no integer, or no id of the vocabulary, is a ValueError."""
        ids = [int(t) for t in text.split()]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"token {bad[0]} is outside the vocabulary 0..{self.vocab_size - 1}")
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        return " ".join(str(int(i)) for i in ids)


# ---- examples -------------------------------------------------------------------------------------
@dataclass
class ExampleCounts:
    """Sentence pairs of a split left out or cut: ``skipped`` (an empty side, or too long for training) and
    ``truncated`` (a side longer than the model's positions, cut to fit: evaluation scores the cut pair)."""
    skipped: int = 0
    truncated: int = 0


def make_examples(tokenizer, src_lines: Sequence[str], tgt_lines: Sequence[str], max_positions: int,
                  drop_long: bool, where: str = "") -> tuple[list[Example], ExampleCounts]:
    """Tokenize parallel lines. Pairs with an empty side are skipped. A side longer than the model's
    positions (``max_positions - 1``, one slot is EOS/BOS) is dropped when ``drop_long`` (training),
    else truncated to them (the reference text stays whole). Returns the examples and the counts of
    skipped and truncated pairs."""
    enc = (tokenizer.encode_batch if hasattr(tokenizer, "encode_batch")
           else (lambda xs: [tokenizer.encode(x) for x in xs]))
    src_ids, tgt_ids = enc(src_lines), enc(tgt_lines)
    limit = max_positions - 1
    out, counts = [], ExampleCounts()
    for s, t, ref in zip(src_ids, tgt_ids, tgt_lines, strict=True):
        if not s or not t:
            counts.skipped += 1
            continue
        if len(s) > limit or len(t) > limit:
            if drop_long:
                counts.skipped += 1
                continue
            s, t = s[:limit], t[:limit]
            counts.truncated += 1
        out.append((np.asarray(s, "int64"), np.asarray(t, "int64"), ref))
    if not out:
        raise ValueError(f"{where}: no usable sentence pairs")
    return out, counts


def make_toy_examples(n: int, task: str, vocab_size: int, min_len: int, max_len: int, seed: int,
                      exclude: set | None = None) -> list[Example]:
    """``n`` random sequences of symbols 4..vocab_size-1, each ``min_len..max_len`` long; the target is
    the same sequence (``copy``) or reversed (``reverse``). Sequences in ``exclude`` are not generated."""
    if task not in ("copy", "reverse"):
        raise ValueError(f"Data.toy_task: unknown {task!r} (copy, reverse)")
    first = EOS_ID + 1
    if vocab_size <= first + 1:
        raise ValueError(f"Arch.vocab_size: {vocab_size} leaves no symbols for the toy task (needs > {first + 1})")
    if not 1 <= min_len <= max_len:
        raise ValueError(f"Data.toy_min_len/toy_max_len: need 1 <= {min_len} <= {max_len}")
    rng = np.random.RandomState(seed)
    exclude = exclude or set()
    out: list[Example] = []
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > 50 * n + 1000:
            raise ValueError(f"cannot draw {n} distinct toy sequences of length {min_len}..{max_len} "
                             f"over {vocab_size - first} symbols")
        length = rng.randint(min_len, max_len + 1)
        src = rng.randint(first, vocab_size, size=length).astype("int64")
        key = tuple(src.tolist())
        if key in exclude:
            continue
        tgt = src.copy() if task == "copy" else src[::-1].copy()
        out.append((src, tgt, " ".join(str(int(i)) for i in tgt)))
    return out


# ---- datasets and batching ------------------------------------------------------------------------
class ExampleDataset(paddle.io.Dataset):
    """One example per item; the task's batch sampler groups them (by tokens, or ``Global.batch_size``)."""

    def __init__(self, examples: list[Example]):
        self.examples = examples

    def __len__(self):
        return len(self.examples)

    def __getitem__(self, i):
        return self.examples[i]


def token_batches(lengths: Sequence[tuple[int, int]], max_tokens: int, seed: int = 0,
                  max_sentences: int = 0) -> list[list[int]]:
    """Group example indices into batches of similar length with at most ``max_tokens`` padded tokens.

    Examples are sorted by (target, source) length with random tie-breaking; a batch grows while
    ``count * longest`` (counted on source and target, +1 each for EOS/BOS) stays within ``max_tokens``
    (and ``count <= max_sentences`` when > 0). An example longer than ``max_tokens`` gets a batch alone.
    """
    rng = np.random.RandomState(seed)
    tie = rng.permutation(len(lengths))
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i][1], lengths[i][0], tie[i]))
    batches, cur, longest = [], [], 0
    for i in order:
        size = max(lengths[i]) + 1
        new_longest = max(longest, size)
        if cur and (new_longest * (len(cur) + 1) > max_tokens or (max_sentences and len(cur) >= max_sentences)):
            batches.append(cur)
            cur, new_longest = [], size
        cur.append(i)
        longest = new_longest
    if cur:
        batches.append(cur)
    return batches


def pad_batch(seqs: Sequence[np.ndarray], pad_id: int = PAD_ID) -> np.ndarray:
    width = max(len(s) for s in seqs)
    out = np.full([len(seqs), width], pad_id, dtype="int64")
    for r, s in enumerate(seqs):
        out[r, : len(s)] = s
    return out


def collate(samples: Sequence[Example], pad_id: int = PAD_ID) -> dict:
    """Examples -> ``src_ids [B, S]``, ``tgt_in [B, T]``, ``tgt_out [B, T]`` (int64, padded) and ``ref``
    (numpy array of the reference strings)."""
    flat = list(samples)
    eos, bos = np.array([EOS_ID], "int64"), np.array([BOS_ID], "int64")
    return {
        "src_ids": pad_batch([np.concatenate([s, eos]) for s, _, _ in flat], pad_id),
        "tgt_in": pad_batch([np.concatenate([bos, t]) for _, t, _ in flat], pad_id),
        "tgt_out": pad_batch([np.concatenate([t, eos]) for _, t, _ in flat], pad_id),
        "ref": np.array([r for _, _, r in flat]),
    }
