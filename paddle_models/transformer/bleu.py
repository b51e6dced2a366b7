"""BLEU two ways: sacreBLEU on detokenized text, and tokenized BLEU as the multimodal-MT literature reports it.

``bleu`` is sacreBLEU's default corpus BLEU (13a tokenizer, cased) on the detokenized hypotheses and references.

``bleu_tokenized`` is what Multi30k papers report: the text is preprocessed the way the Multi30k repository
made its ``data/task1/tok/*.lc.norm.tok.*`` files (``scripts/task1-tokenize.sh`` with the Moses scripts of
commit 3a0631a, December 2017)::

    lowercase.perl | normalize-punctuation.perl -l LANG | tokenizer.perl -l LANG

(tokenizer.perl's defaults: HTML-escaped output such as ``&quot;`` and ``&apos;``, no ``-a`` hyphen
splitting), and BLEU is ``multi-bleu.perl`` on that text: corpus BLEU-4 over whitespace tokens, one
reference, no smoothing. Here the Moses steps run through ``sacremoses`` (Python ports of the same
scripts) and the score through sacreBLEU with ``tokenize="none"`` and ``smooth_method="none"``, which
computes what multi-bleu.perl computes. Hypotheses and references go through the same preprocessing.

Two details keep the ports identical to the 2017 scripts: the 2017 normalize-punctuation.perl turns a
single ``‘`` and ``‚`` (not between two letters) into ``"`` where sacremoses writes ``'`` (set below), and
perl reads each line with its newline, so its rule moving a period after a closing quote
(``(\\.+)"(\\s*[^<])``) also fires at the end of a line: the line is normalized with a newline appended.
"""
from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

SACREMOSES_VERSION = "0.2.0"


def tokenized_bleu_protocol(lang: str) -> str:
    """One line naming exactly how ``bleu_tokenized`` is computed for target language ``lang``."""
    return (f"multi-bleu.perl on Moses-preprocessed text, as Multi30k's scripts/task1-tokenize.sh makes "
            f"data/task1/tok: lowercase, normalize-punctuation.perl -l {lang}, tokenizer.perl -l {lang} "
            f"(escaped, no -a; Moses 3a0631a, via sacremoses {SACREMOSES_VERSION}) on hypotheses and references; "
            f"corpus BLEU-4 by sacrebleu tokenize=none, smooth=none, one reference")


class MosesPreprocessor:
    """``text -> lowercase | normalize-punctuation.perl -l lang | tokenizer.perl -l lang`` (Moses, 2017)."""

    def __init__(self, lang: str):
        from sacremoses import MosesPunctNormalizer, MosesTokenizer

        self.lang = lang
        self.normalizer = MosesPunctNormalizer(lang=lang, perl_parity=True)
        # the 2017 script: s/‘/"/g; s/‚/"/g (after the rule keeping ‘ between two letters as ')
        self.normalizer.substitutions = [(pattern, '"') if pattern in ("‘", "‚") else (pattern, repl)
                                         for pattern, repl in self.normalizer.substitutions]
        self.tokenizer = MosesTokenizer(lang=lang)

    def __call__(self, text: str) -> str:
        normalized = self.normalizer.normalize(text.lower() + "\n")  # perl sees the newline; strip() drops it
        return self.tokenizer.tokenize(normalized, escape=True, aggressive_dash_splits=False, return_str=True)


@lru_cache(maxsize=8)
def moses_preprocessor(lang: str) -> MosesPreprocessor:
    return MosesPreprocessor(lang)


def sacre_bleu(hyps: Sequence[str], refs: Sequence[str]) -> float:
    """sacreBLEU's default corpus BLEU (13a tokenization, cased) of detokenized text."""
    import sacrebleu

    return float(sacrebleu.corpus_bleu(list(hyps), [list(refs)]).score)


def multi_bleu(hyps: Sequence[str], refs: Sequence[str]) -> float:
    """multi-bleu.perl: corpus BLEU-4 of already tokenized text (whitespace tokens, no smoothing)."""
    import sacrebleu

    return float(sacrebleu.corpus_bleu(list(hyps), [list(refs)], tokenize="none", smooth_method="none",
                                       force=True).score)


def tokenized_bleu(hyps: Sequence[str], refs: Sequence[str], lang: str) -> float:
    """BLEU the Multi30k way (see the module docstring) of detokenized hypotheses against references."""
    if len(hyps) != len(refs):
        raise ValueError(f"tokenized BLEU: {len(hyps)} hypotheses but {len(refs)} references")
    prep = moses_preprocessor(lang)
    return multi_bleu([prep(h) for h in hyps], [prep(r) for r in refs])
