"""Multi30k-style parallel files that are not what the task expects: files of one split with different
line counts are an error naming both files and both counts; a pair with an empty side (an empty line)
is skipped and counted in the run's summary (``<split>_pairs_skipped``), never dropped silently. The
files are generated (German/English-like sentences); the vocabulary is a SentencePiece model the task
trains on them."""
import copy

import pytest

from paddle_models import get_task, load_config
from paddle_models.engine.trainer import Trainer
from paddle_models.registry import model_entry

WORDS_EN = ["a", "dog", "man", "woman", "runs", "sits", "on", "the", "grass", "street", "with", "ball", "red"]
WORDS_DE = ["ein", "hund", "mann", "frau", "läuft", "sitzt", "auf", "dem", "gras", "straße", "mit", "ball", "rot"]


def sentences(words: list[str], n: int, shift: int) -> list[str]:
    return [" ".join(words[(i * 7 + j * 3 + shift) % len(words)] for j in range(3 + i % 4)) for i in range(n)]


def write_lines(path, lines: list[str]) -> str:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def multi30k_cfg(tmp_path, val_en: list[str], val_de: list[str]):
    """A tiny transformer on 60 generated training pairs and the given validation lines."""
    files = {"train_src": write_lines(tmp_path / "train.en", sentences(WORDS_EN, 60, 0)),
             "train_tgt": write_lines(tmp_path / "train.de", sentences(WORDS_DE, 60, 0)),
             "val_src": write_lines(tmp_path / "val.en", val_en),
             "val_tgt": write_lines(tmp_path / "val.de", val_de)}
    data = copy.deepcopy(model_entry("transformer")["small_config"])
    data["Arch"].update({"name": "transformer", "vocab_size": 40})
    data["Data"] = {"kind": "multi30k", "max_tokens": 0, **files}
    data["Global"] = {"output_dir": str(tmp_path / "run"), "progress": False, "num_threads": 1, "max_steps": 1,
                      "batch_size": 16, "eval_batch_size": 16}
    return load_config(data=data)


def test_mismatched_line_counts_name_both_files_and_counts(tmp_path):
    cfg = multi30k_cfg(tmp_path, sentences(WORDS_EN, 5, 1), sentences(WORDS_DE, 4, 1))
    task = get_task("transformer")(cfg)
    task.prepare(cfg["Global"]["output_dir"])
    with pytest.raises(ValueError) as error:
        task.examples("val")
    assert str(error.value).startswith(f"{tmp_path / 'val.en'} has 5 lines but {tmp_path / 'val.de'} has 4")


def test_mismatched_line_counts_stop_training_before_anything_is_written(tmp_path):
    cfg = multi30k_cfg(tmp_path, sentences(WORDS_EN, 5, 1), sentences(WORDS_DE, 4, 1))
    with pytest.raises(ValueError, match=r"val\.en has 5 lines but .*val\.de has 4"):
        Trainer(cfg, get_task("transformer")(cfg)).fit()
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


def test_empty_lines_are_skipped_and_counted_at_eval(tmp_path):
    """Of 8 validation pairs, line 3 is empty in English and line 6 in German: 6 pairs are evaluated,
    the summary says 2 were skipped, and the references are the other 6 German lines."""
    val_en, val_de = sentences(WORDS_EN, 8, 2), sentences(WORDS_DE, 8, 2)
    val_en[2], val_de[5] = "", ""
    cfg = multi30k_cfg(tmp_path, val_en, val_de)
    trainer = Trainer(cfg, get_task("transformer")(cfg))
    trainer._prepare()
    examples = trainer.task.examples("val")
    assert [reference for _, _, reference in examples] == [t for i, t in enumerate(val_de) if i not in (2, 5)]
    metrics = trainer.evaluate("val", model=trainer.task.build_model(), write_artifacts=False)
    assert metrics["samples"] == 6
    assert metrics["data"] == {"val_pairs_skipped": 2}
