"""Bad input on the Transformer data paths: damaged gzip and bytes that are not UTF-8 name the file and the
line; every split's files are checked before the run writes anything; text cut to the model's positions is
counted (eval and translate); decoding options out of range name the key or the flag; beam search runs on
the exported graphs exactly as in dygraph. A property test feeds arbitrary bytes to the parallel-text reader."""
import copy
import gzip
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import paddle
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from paddle_models import ConfigError, get_task, load_config
from paddle_models.engine.trainer import Trainer
from paddle_models.registry import model_entry
from paddle_models.transformer import data as D
from paddle_models.transformer import translate as T
from paddle_models.transformer.decoding import (
    DecoderStepGraph,
    EncoderGraph,
    beam_search,
    export_beam_search,
    greedy_search,
)
from paddle_models.transformer.model import EOS_ID, Transformer

#: bounded example counts (each example reads two small files); no example database, so a run depends on nothing
#: a previous run left behind
PROPERTY = settings(max_examples=60, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
ROOT = Path(__file__).resolve().parents[1]
WORDS = "ein Hund läuft über die Wiese zwei Männer spielen Fußball a dog runs across the meadow men play".split()


def write(path, data: bytes | str):
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return str(path)


# ---- 2. damaged gzip, bytes that are not UTF-8 ------------------------------------------------------
def test_damaged_gzip_names_the_file_and_line(tmp_path):
    packed = gzip.compress("".join(f"sentence number {i}\n" for i in range(20000)).encode())
    cut = write(tmp_path / "cut.en.gz", packed[: len(packed) // 2])
    with pytest.raises(ValueError, match=rf"^{re.escape(cut)}: line \d+: the gzip data is damaged or cut short"):
        D.read_lines(cut)
    garbage = write(tmp_path / "garbage.en.gz", b"\x1f\x8b" + b"this is no deflate stream" * 3)
    with pytest.raises(ValueError, match=rf"^{re.escape(garbage)}: line 1: the gzip data is damaged"):
        D.read_lines(garbage)


def test_translate_input_that_is_not_utf8_names_the_line(tmp_path):
    path = write(tmp_path / "in.txt", b"ein Hund\nzwei \xe4pfel\n")
    with pytest.raises(ValueError, match=rf"^{re.escape(path)}: line 2: not valid UTF-8"):
        T.read_source_lines(path)
    assert T.read_source_lines(write(tmp_path / "ok.txt", "\ufeffa\r\nb\n")) == ["a", "b"]


def test_a_file_of_only_a_byte_order_mark_has_no_lines_like_an_empty_file(tmp_path):
    """It read as one empty line (a pair of files, one empty and one a mark only, then failed to align)."""
    empty, mark = write(tmp_path / "empty.en", b""), write(tmp_path / "mark.de", b"\xef\xbb\xbf")
    assert D.read_parallel(empty, mark) == ([], [])
    assert T.read_source_lines(write(tmp_path / "mark.gz", gzip.compress(b"\xef\xbb\xbf"))) == []


@pytest.mark.parametrize("packed", [False, True])
def test_translate_tool_names_the_file_and_line_of_input_that_is_not_utf8(tmp_path, packed):
    """tools/translate.py ends in one ``error:`` line naming the input file and the line (it printed a bare codec
    error), before it loads a model and before it writes ``--out``."""
    body = "".join(f"ein Hund {i}\n" for i in range(7)).encode() + b"zwei \xe4pfel\nein Ball\n"
    path = write(tmp_path / ("in.txt.gz" if packed else "in.txt"), gzip.compress(body) if packed else body)
    out = tmp_path / "out.txt"
    p = subprocess.run([sys.executable, "tools/translate.py", "--model-dir", str(tmp_path / "no_export"), "--input",
                        path, "--out", str(out), "--json"], cwd=str(ROOT), capture_output=True, text=True,
                       timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert p.returncode == 2, p.stderr[-2000:]
    assert p.stderr.strip().splitlines()[-1].startswith(f"error: {path}: line 8: not valid UTF-8"), p.stderr[-2000:]
    assert "Traceback" not in p.stderr and not out.exists()


# ---- a small multi30k-kind setup (text files, a 40-piece vocabulary) -----------------------------------
@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("m30k_bad")
    r = np.random.RandomState(0)
    lines = [" ".join(r.choice(WORDS, r.randint(3, 8))) + "." for _ in range(240)]
    (root / "corpus.txt").write_text("\n".join(lines), encoding="utf-8")
    spm = D.train_sentencepiece([str(root / "corpus.txt")], str(root / "vocab" / "spm"), vocab_size=40)
    for split, part in (("train", lines[:200]), ("val", lines[200:])):
        (root / f"{split}.en").write_text("\n".join(part) + "\n", encoding="utf-8")
        (root / f"{split}.de").write_text("\n".join(reversed(part)) + "\n", encoding="utf-8")
    return {"root": root, "spm": spm, "lines": lines}


def m30k_cfg(corpus, out, **data):
    base = copy.deepcopy(model_entry("transformer")["small_config"])
    arch = {**base["Arch"], "name": "transformer", "vocab_size": 40, "max_len": 64}
    return load_config(data={
        "Arch": arch, "Global": {"output_dir": str(out), "epochs": 1, "progress": False, "num_threads": 1,
                                 "batch_size": 32},
        "Data": {"kind": "multi30k", "data_dir": str(corpus["root"]), "train_src": "train.en", "train_tgt": "train.de",
                 "val_src": "val.en", "val_tgt": "val.de", "max_tokens": 0, **data}})


def files_in(folder) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


# ---- 4. every split before the first step --------------------------------------------------------------
@pytest.mark.parametrize("damage", ["one line less", "not UTF-8", "gzip cut short"])
def test_bad_validation_files_are_reported_before_anything_is_written(corpus, tmp_path, damage):
    val_de = (corpus["root"] / "val.de").read_bytes()
    if damage == "one line less":
        bad, name = val_de[: val_de.rstrip(b"\n").rindex(b"\n") + 1], "val.de"
        pattern = r"val\.en has 40 lines but .*val\.de has 39"
    elif damage == "not UTF-8":
        bad, name = val_de.replace(b"\n", b"\n\xff", 1), "val.de"
        pattern = r"val\.de: line 2: not valid UTF-8"
    else:
        packed = gzip.compress(val_de * 200)
        bad, name = packed[: len(packed) // 2], "val.de.gz"
        pattern = r"val\.de\.gz: line \d+: the gzip data is damaged or cut short"
    write(tmp_path / name, bad)
    out = tmp_path / "run"
    for spm in ("", corpus["spm"]):  # a vocabulary trained here (not before the check), or given
        cfg = m30k_cfg(corpus, out, val_tgt=str(tmp_path / name), spm_model=spm)
        with pytest.raises(ValueError, match=pattern):
            Trainer(cfg, get_task("transformer")(cfg)).fit()
        assert files_in(out) == []


# ---- 7. truncation is counted ------------------------------------------------------------------------
def test_a_too_long_validation_source_is_cut_and_counted(corpus, tmp_path, caplog):
    long_src = " ".join(["Hund"] * 5000)
    val_en = (corpus["root"] / "val.en").read_text(encoding="utf-8").splitlines()
    write(tmp_path / "val.en", "\n".join([long_src] + val_en[1:]) + "\n")
    cfg = m30k_cfg(corpus, tmp_path / "run", val_src=str(tmp_path / "val.en"), spm_model=corpus["spm"])
    task = get_task("transformer")(cfg)
    paddle.seed(0)
    model = task.build_model()
    with caplog.at_level("WARNING", logger="paddle_models"):
        res = Trainer(cfg, task).evaluate("val", model=model, write_artifacts=False)
    assert res["samples"] == 40 and res["data"] == {"val_pairs_truncated": 1}
    assert any("1 of 40 sentence pairs have a side longer than the model's 63 positions" in r.getMessage()
               for r in caplog.records)
    examples, counts = D.make_examples(task.tokenizer, [long_src, "a dog"], ["ein Hund", "ein Hund"], 64,
                                       drop_long=False)
    assert (counts.truncated, counts.skipped) == (1, 0) and len(examples[0][0]) == 63
    assert examples[0][2] == "ein Hund"  # the reference stays whole


# ---- 8. ranges of decoding options -------------------------------------------------------------------
@pytest.mark.parametrize("override,key", [
    ("Arch.max_len=1", "Arch.max_len: must be >= 2"), ("Arch.max_len=0", "Arch.max_len: must be >= 2"),
    ("Decode.beam_size=0", "Decode.beam_size: must be >= 1"), ("Decode.beam_size=-3", "Decode.beam_size: must be >= 1"),
    ("Decode.max_len_a=-1.0", "Decode.max_len_a: must be >= 0"),
    ("Decode.max_len_b=-2", "Decode.max_len_b: must be >= 0"),
    ("Decode.length_penalty=-0.5", "Decode.length_penalty: must be >= 0"),
])
def test_decoding_options_out_of_range_name_the_key(override, key):
    with pytest.raises(ConfigError, match=re.escape(f"-o {override}: {key}")):
        load_config(None, [override], data={"Arch": {"name": "transformer"}})


@pytest.mark.parametrize("a,b", [(0.0, 0), (0.0, 1), (0.4, 0)])
def test_an_output_budget_of_one_token_is_refused(a, b):
    cfg = load_config(data={"Arch": {"name": "transformer"}, "Decode": {"max_len_a": a, "max_len_b": b}})
    with pytest.raises(ValueError, match=r"Decode\.max_len_a / Decode\.max_len_b: .* fewer than 2 output tokens"):
        get_task("transformer")(cfg)


def test_translate_beam_flag_is_range_checked(tmp_path):
    from paddle_models.commands import translate as command

    (tmp_path / "in.txt").write_text("5 6 7\n")
    with pytest.raises(ValueError, match=r"--beam must be >= 0 .* got -2"):
        command.main(["--model-dir", str(tmp_path), "--input", str(tmp_path / "in.txt"), "--beam", "-2"])


# ---- 9. beam search on the exported graphs ---------------------------------------------------------------
def test_beam_search_on_the_export_graphs_equals_dygraph_beam_search(tmp_path):
    from paddle.static import InputSpec

    paddle.seed(3)
    m = Transformer(20, d_model=32, num_heads=4, num_encoder_layers=2, num_decoder_layers=2, d_ff=48, dropout=0.0,
                    max_len=40)
    m.eval()
    m.src_embed.weight.set_value((np.random.RandomState(3).randn(20, 32) * 0.6).astype("float32"))
    kv = [None, 2, 4, None, 8]
    step_spec = [InputSpec([None, 1], "int64", "token"), InputSpec(kv, "float32", "memory_k"),
                 InputSpec(kv, "float32", "memory_v"), InputSpec([None, 1, 1, None], "float32", "memory_mask"),
                 InputSpec(kv, "float32", "cache_k"), InputSpec(kv, "float32", "cache_v")]
    paddle.jit.save(paddle.jit.to_static(EncoderGraph(m), input_spec=[InputSpec([None, None], "int64", "src_ids")],
                                         full_graph=True), str(tmp_path / "enc"))
    paddle.jit.save(paddle.jit.to_static(DecoderStepGraph(m), input_spec=step_spec, full_graph=True),
                    str(tmp_path / "step"))
    enc, step = paddle.jit.load(str(tmp_path / "enc")), paddle.jit.load(str(tmp_path / "step"))
    rng = np.random.RandomState(0)
    src = np.zeros([6, 9], "int64")
    for i in range(6):
        n = rng.randint(2, 9)
        src[i, :n] = rng.randint(4, 20, n)
        src[i, n] = EOS_ID

    def encoder_fn(s):
        return [o.numpy() for o in enc(paddle.to_tensor(s))]

    def step_fn(*inputs):
        return [o.numpy() for o in step(*[paddle.to_tensor(x) for x in inputs])]

    for beam, alpha in ((4, 0.6), (3, 0.0)):
        got = export_beam_search(encoder_fn, step_fn, src, beam, 14, 2, 4, 8, alpha=alpha)
        want = beam_search(m, src, beam, 14, alpha=alpha)
        np.testing.assert_array_equal(got, want)
    greedy = greedy_search(m, src, 14)
    width = min(greedy.shape[1], want.shape[1])
    assert (greedy[:, :width] != want[:, :width]).any()  # the beam found other outputs than greedy


# ---- property test: any bytes in parallel text files ----------------------------------------------------
_TEXT_PIECES = st.sampled_from([b"ein Hund", b" ", b"\n", b"\r\n", b"\r", b"\xc3\xa4", b"\xe4", b"\xff", b"\x00",
                                b"\xef\xbb\xbf", b"\xe2\x82", b"\t", b"Fu\xc3\x9fball.", b"\x1f\x8b"])
_GOOD_LINES = st.lists(st.sampled_from([b"ein Hund.\n", b"zwei M\xc3\xa4nner\r\n", b"\n", b"Fu\xc3\x9fball\n"]),
                       max_size=8).map(b"".join)
_FILE_BYTES = st.one_of(st.lists(st.one_of(_TEXT_PIECES, st.binary(max_size=3)), max_size=40).map(b"".join),
                        _GOOD_LINES, _GOOD_LINES)
_NAMED = re.compile(r": line (\d+): | has (\d+) lines but .* has (\d+)")


def expected_lines(data: bytes) -> list[str]:
    """The lines of a text file computed here, without the reader: gzip detected by its magic bytes, a leading
    byte-order mark dropped, lines ending at ``\\n`` (a ``\\r`` before it dropped too)."""
    text = (gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data).decode("utf-8")
    lines = (text[1:] if text.startswith("\ufeff") else text).split("\n")
    return [line.rstrip("\r") for line in (lines[:-1] if lines[-1] == "" else lines)]


def lines_or_named_error(read, path: str, data: bytes):
    """``read(path)``'s lines, which must be the file's own; or None after a ValueError naming ``path`` and a line
    of the file."""
    try:
        got = read(path)
    except ValueError as e:
        msg = str(e)
        named = _NAMED.search(msg)
        assert msg.startswith(path) and named and named.group(1), msg
        if "the gzip data is damaged" not in msg:
            content = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
            assert 1 <= int(named.group(1)) <= content.count(b"\n") + 1, msg
        return None
    assert got == expected_lines(data)  # every line, in order, none dropped or merged
    return got


@PROPERTY
@given(src=_FILE_BYTES, tgt=_FILE_BYTES, how=st.sampled_from(["plain", "plain", "gzip", "gzip cut"]))
def test_any_bytes_in_parallel_text_give_lines_or_a_named_error(tmp_path, src, tgt, how):
    """read_parallel (training and evaluation) and read_source_lines (translate) on the same bytes."""
    def stored(name, data):
        if how != "plain":
            data = gzip.compress(data)
            data = data if how == "gzip" else data[: max(2, len(data) * 2 // 3)]
        write(tmp_path / name, data)
        return str(tmp_path / name), data

    (src_path, src_data), (tgt_path, tgt_data) = stored("p.en", src), stored("p.de", tgt)
    one = [lines_or_named_error(T.read_source_lines, p, d) for p, d in ((src_path, src_data), (tgt_path, tgt_data))]
    try:
        a, b = D.read_parallel(src_path, tgt_path)
    except ValueError as e:
        msg = str(e)
        named = _NAMED.search(msg)
        assert msg.startswith((src_path, tgt_path)) and named, msg
        if named.group(2):  # both files read: the counts named are theirs, and they differ
            assert one[0] is not None and one[1] is not None
            assert (int(named.group(2)), int(named.group(3))) == (len(one[0]), len(one[1])) and named.group(2) != \
                named.group(3), msg
        else:
            assert None in one, msg  # the file named fails on its own too
        event("named error")
    else:
        assert (a, b) == (one[0], one[1]) and len(a) == len(b)
        event("lines")
