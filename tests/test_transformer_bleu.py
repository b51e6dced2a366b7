"""Tokenized BLEU the way Multi30k papers compute it: the Moses preprocessing of Multi30k's
scripts/task1-tokenize.sh (lowercase, normalize-punctuation.perl, tokenizer.perl, 2017) on known sentences,
multi-bleu.perl's corpus BLEU against a hand count, agreement with sacreBLEU where the two protocols
coincide, and the eval tool's JSON carrying both scores (from an averaged checkpoint)."""
import json
import math
import os
import subprocess
import sys

import paddle
import pytest
import sacrebleu
from conftest import ROOT
from tiny_transformer import tiny_run

from paddle_models.transformer.bleu import (
    moses_preprocessor,
    multi_bleu,
    sacre_bleu,
    tokenized_bleu,
    tokenized_bleu_protocol,
)

ENV = {**os.environ, "GLOG_minloglevel": "2", "PYTHONPATH": str(ROOT)}


@pytest.mark.parametrize("raw, tokenized", [
    ("Ein Mann schläft auf dem Sofa.", "ein mann schläft auf dem sofa ."),
    # „ “ -> " ; the 2017 normalizer moves a period out of the closing quote, also at the end of the line
    ("Ein Mann sagt: „Hallo.“", "ein mann sagt : &quot; hallo &quot; ."),
    ('Er sagt: "Hallo." und geht', "er sagt : &quot; hallo &quot; . und geht"),
    # ‘ between two letters is an apostrophe; a lone ‘, ’ or ‚ becomes a double quote (2017 script)
    ("Eine künstlerische Levi‘s Anzeige", "eine künstlerische levi &apos; s anzeige"),
    ("Das ‚Haus‘ am See", "das &quot; haus &quot; am see"),
    ("Sie machen das „Hook ’em Horns“-Zeichen.", "sie machen das &quot; hook &quot; em horns &quot; -zeichen ."),
    # tokenizer.perl escapes & < > ' " and splits brackets; no -a: hyphenated words stay whole
    ("Tom & Jerry (2 Katzen) im T-Shirt", "tom &amp; jerry ( 2 katzen ) im t-shirt"),
])
def test_moses_preprocessing_as_multi30k_made_its_tok_files(raw, tokenized):
    assert moses_preprocessor("de")(raw) == tokenized


def test_english_apostrophes_follow_the_english_rules():
    assert moses_preprocessor("en")("A dog doesn't run.") == "a dog doesn &apos;t run ."


# Two sentences whose n-gram matches are counted by hand below.
HYPS = ["Ein Mann schläft auf dem Sofa.", "Zwei Hunde spielen im Schnee"]
REFS = ["Ein Mann schläft auf einem Sofa.", "Zwei Hunde spielen im tiefen Schnee."]


def hand_bleu():
    """Tokens: hyp 7 + 5 = 12, ref 7 + 7 = 14. Clipped matches / hypothesis n-grams, sentence 1 + 2:
    1-grams (6 + 5) / (7 + 5), 2-grams (4 + 3) / (6 + 4), 3-grams (2 + 2) / (5 + 3), 4-grams (1 + 1) / (4 + 2)."""
    precisions = [11 / 12, 7 / 10, 4 / 8, 2 / 6]
    brevity = math.exp(1 - 14 / 12)
    return 100 * brevity * math.exp(sum(math.log(p) for p in precisions) / 4)


def test_tokenized_bleu_equals_a_hand_count():
    assert tokenized_bleu(HYPS, REFS, "de") == pytest.approx(hand_bleu(), abs=1e-9)
    tokenized = [moses_preprocessor("de")(s) for s in HYPS], [moses_preprocessor("de")(s) for s in REFS]
    assert multi_bleu(*tokenized) == pytest.approx(hand_bleu(), abs=1e-9)


def test_multi_bleu_is_zero_without_a_four_gram_match_and_100_on_identity():
    """multi-bleu.perl does not smooth: no matching 4-gram anywhere gives 0."""
    assert multi_bleu(["ein mann schläft ."], ["ein mann schläft auf dem sofa ."]) == 0.0
    assert multi_bleu(REFS, REFS) == pytest.approx(100.0)


def test_agrees_with_sacrebleu_where_the_protocols_coincide():
    """On plain sentences (letters, spaces, a final period) sacreBLEU's 13a tokenizer splits as Moses does, so
    lowercased sacreBLEU equals tokenized BLEU; cased sacreBLEU (``bleu``) is lower when only case differs."""
    lower = float(sacrebleu.corpus_bleu(HYPS, [REFS], lowercase=True).score)
    assert tokenized_bleu(HYPS, REFS, "de") == pytest.approx(lower, abs=1e-9)
    recased = ["ein mann Schläft auf dem sofa.", "Zwei Hunde spielen im Schnee"]
    assert tokenized_bleu(recased, REFS, "de") == pytest.approx(lower, abs=1e-9)
    assert sacre_bleu(recased, REFS) < sacre_bleu(HYPS, REFS) == pytest.approx(
        sacrebleu.corpus_bleu(HYPS, [REFS]).score)


def test_where_the_protocols_differ_quotes_count_as_tokens():
    hyps, refs = ['Er sagt: „Hallo.“'], ['Er sagt: „Hallo“.']
    assert tokenized_bleu(hyps, refs, "de") == pytest.approx(100.0)  # the normalizer moves the period
    assert sacre_bleu(hyps, refs) < 100.0
    with pytest.raises(ValueError, match="2 hypotheses but 1 references"):
        tokenized_bleu(HYPS, REFS[:1], "de")


def _tool(*args):
    p = subprocess.run([sys.executable, *args], cwd=str(ROOT), env=ENV, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, f"{args[0]} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_eval_tool_reports_both_bleus_for_an_averaged_checkpoint(tmp_path):
    """tools/average_checkpoints.py averages two checkpoints into a folder; tools/eval.py evaluates it and its
    JSON carries ``bleu`` (sacreBLEU) and ``bleu_tokenized`` with its protocol, equal to recomputing both on
    the hypotheses file."""
    from paddle_models.engine.checkpoint import save_checkpoint
    from paddle_models.registry import get_task

    run, lines, overrides, cfg = tiny_run(tmp_path)
    for seed in (0, 1):
        paddle.seed(seed)
        model = get_task("transformer")(cfg).build_model()
        save_checkpoint(str(run / "checkpoints" / f"step_{seed + 1}"), model, trainer_state={"step": seed + 1})
    (tmp_path / "test.en").write_text("\n".join(lines[:20]) + "\n", encoding="utf-8")
    (tmp_path / "test.de").write_text("\n".join(lines[20:40]) + "\n", encoding="utf-8")
    avg = _tool("tools/average_checkpoints.py", "--last", "2", "--run", str(run), "--json")
    assert avg["count"] == 2 and avg["steps"] == [1, 2] and avg["output"] == str(run / "checkpoints" / "avg_last2")
    res = _tool("tools/eval.py", "-c", "configs/transformer/multi30k_small.yaml", *sum(
        (["-o", o] for o in overrides + [f"Global.checkpoint={avg['output']}", f"Data.test_src={tmp_path / 'test.en'}",
                                         f"Data.test_tgt={tmp_path / 'test.de'}"]), []), "--split", "test", "--json")
    rows = [row.split("\t") for row in open(res["hypotheses"], encoding="utf-8").read().splitlines()[1:]]
    hyps, refs = [h for h, _ in rows], [ref for _, ref in rows]
    assert res["samples"] == 20 and res["bleu"] == pytest.approx(sacre_bleu(hyps, refs))
    assert res["bleu_tokenized"] == pytest.approx(tokenized_bleu(hyps, refs, "de"))
    assert res["bleu_tokenized_protocol"] == tokenized_bleu_protocol("de")
    assert "tokenizer.perl -l de" in res["bleu_tokenized_protocol"]
