"""SentencePiece tokenizer in ERNIE-M's format: training, loading with PaddleNLP, round trips, CLI."""
import json
import os
import random
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

from paddle_models.multimodal import tokenizer as tk

REPO = Path(__file__).resolve().parents[1]

WORDS = ("the red cat sat on mat happily blue dog runs fast good bad great awful photo today "
         "weather nice sunny rain friends party love hate movie music").split()


def _corpus(n=300, seed=0):
    r = random.Random(seed)
    out = []
    for _ in range(n):
        s = " ".join(r.choice(WORDS) for _ in range(r.randint(3, 10)))
        out.append(s + r.choice(["", ".", "!", "?", ","]))
    # some Chinese and digits, as in MR2 / tweets
    out += ["今天天气很好。", "突发：南京下雨了！", "score 2024 today", "RT @user: great movie #fun"] * 5
    return out


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tok")
    info = tk.train_tokenizer(_corpus(), str(d), vocab_size=150, character_coverage=1.0)
    return str(d), info


def test_files_and_vocab_layout(tok_dir):
    d, info = tok_dir
    assert os.path.isfile(os.path.join(d, "sentencepiece.bpe.model"))
    vocab = Path(d, "vocab.txt").read_text(encoding="utf-8").split("\n")[:-1]
    assert vocab[:5] == ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"]
    assert len(vocab) == len(set(vocab)) == info["vocab_size"]
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=os.path.join(d, "sentencepiece.bpe.model"))
    pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size())
              if not (sp.is_unknown(i) or sp.is_control(i))]
    assert set(pieces) <= set(vocab)  # every piece has a vocab.txt id


def test_loaded_tokenizer_ids_specials_and_decode(tok_dir):
    from paddlenlp.transformers import ErnieMTokenizer

    d, info = tok_dir
    tok = tk.load_tokenizer(d)
    assert isinstance(tok, ErnieMTokenizer)
    direct = ErnieMTokenizer(vocab_file=os.path.join(d, "vocab.txt"),
                             sentencepiece_model_file=os.path.join(d, "sentencepiece.bpe.model"))
    assert (tok.pad_token_id, tok.cls_token_id, tok.sep_token_id, tok.unk_token_id,
            tok.mask_token_id) == (0, 1, 2, 3, 4)
    assert tk.vocab_size(tok) == info["vocab_size"]
    for text in _corpus(40, seed=1) + ["今天天气很好。", "RT @user: great movie #fun"]:
        ids = tok(text)["input_ids"]
        assert ids == direct(text)["input_ids"]
        assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
        assert all(0 <= i < tk.vocab_size(tok) for i in ids)
        assert tok.unk_token_id not in ids  # every character was in the training corpus
        assert tok.pad_token_id not in ids
    # decode recovers the text, NFKC-normalised as SentencePiece does (full-width punctuation to
    # ASCII); ERNIE-M's splitting drops the space before a digit run, so no digits here
    for text in _corpus(40, seed=2)[:40] + ["今天天气很好。", "突发：南京下雨了！"]:
        ids = tok(text)["input_ids"]
        assert tok.decode(ids, skip_special_tokens=True) == unicodedata.normalize("NFKC", text)
    # padding uses id 0
    enc = tok(["great movie", "the red cat sat on the mat"], padding=True)
    assert enc["input_ids"][0][-1] == 0
    # an unseen character maps to [UNK]
    assert tok.unk_token_id in tok("great ☃ movie")["input_ids"]


def test_training_is_deterministic(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    tk.train_tokenizer(_corpus(), str(a), vocab_size=120)
    tk.train_tokenizer(_corpus(), str(b), vocab_size=120)
    for name in ("sentencepiece.bpe.model", "vocab.txt"):
        assert (a / name).read_bytes() == (b / name).read_bytes()


def test_errors(tmp_path):
    with pytest.raises(ValueError, match="no non-empty text"):
        tk.train_tokenizer(["", "  "], str(tmp_path / "x"))
    with pytest.raises(FileNotFoundError, match="missing vocab.txt"):
        (tmp_path / "half").mkdir()
        (tmp_path / "half" / "sentencepiece.bpe.model").write_bytes(b"")
        tk.load_tokenizer(str(tmp_path / "half"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"text": 3}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad.jsonl: line 2: field 'text' missing or not a string"):
        tk.read_texts([str(bad)])


def test_read_texts_formats(tmp_path):
    j = tmp_path / "a.jsonl"
    j.write_text('{"text": "hello there", "evidence_texts": ["ev one"]}\n\n{"text": "second"}\n')
    m = tmp_path / "dataset_items_val.json"
    m.write_text(json.dumps({"0": {"caption": "cap zero", "label": 1}, "1": {"caption": "cap one"}}))
    v = tmp_path / "mvsa.json"
    v.write_text(json.dumps([{"id": "1", "text": "mvsa text", "emotion_label": 0}]))
    p = tmp_path / "plain.txt"
    p.write_text("line one\n\nline two\n")
    assert tk.read_texts([str(j), str(m), str(v), str(p)]) == [
        "hello there", "ev one", "second", "cap zero", "cap one", "mvsa text", "line one", "line two"]


def test_cli_json(tmp_path):
    data = tmp_path / "train.jsonl"
    texts = _corpus(120)
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    out = tmp_path / "tok"
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "train_tokenizer.py"), "--input", str(data),
                           "--out", str(out), "--vocab-size", "100", "--json"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["num_texts"] == len(texts)
    assert res["vocab_size"] == len((out / "vocab.txt").read_text(encoding="utf-8").splitlines())
    tok = tk.load_tokenizer(str(out))
    assert tok("great movie")["input_ids"][0] == 1


def _hf_layout(src, dst):
    """``src``'s tokenizer laid out like a Hugging Face ERNIE-M folder: vocab.txt with ernie-m-base's order of the
    first two tokens ([CLS] 0, [PAD] 1), transformers' config.json and tokenizer_config.json, a weights file."""
    os.makedirs(dst)
    lines = Path(src, "vocab.txt").read_text(encoding="utf-8").splitlines()
    lines[0], lines[1] = lines[1], lines[0]
    Path(dst, "vocab.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    Path(dst, "sentencepiece.bpe.model").write_bytes(Path(src, "sentencepiece.bpe.model").read_bytes())
    Path(dst, "config.json").write_text(json.dumps({"model_type": "ernie_m", "transformers_version": "4.57.6"}))
    Path(dst, "tokenizer_config.json").write_text(json.dumps({
        "added_tokens_decoder": {}, "do_lower_case": False, "tokenizer_class": "ErnieMTokenizer",
        "sentencepiece_model_ckpt": "sentencepiece.bpe.model", "vocab_file": "vocab.txt"}))
    Path(dst, "model.safetensors").write_bytes(b"weights")
    return str(dst)


def test_a_hugging_face_folder_is_a_tokenizer_as_it_is(tok_dir, tmp_path):
    """Data.tokenizer=<HF ERNIE-M folder>: the same two files under the same names; [PAD] need not be id 0."""
    from paddlenlp.transformers import ErnieMTokenizer

    hf = _hf_layout(tok_dir[0], tmp_path / "hf")
    tok = tk.load_tokenizer(hf)
    direct = ErnieMTokenizer(vocab_file=os.path.join(hf, "vocab.txt"),
                             sentencepiece_model_file=os.path.join(hf, "sentencepiece.bpe.model"))
    assert (tok.cls_token_id, tok.pad_token_id, tok.sep_token_id) == (0, 1, 2)
    ours = tk.load_tokenizer(tok_dir[0])
    for text in _corpus(20, seed=3) + ["今天天气很好。"]:
        ids = tok(text)["input_ids"]
        assert ids == direct(text)["input_ids"]
        assert ids[1:] == ours(text)["input_ids"][1:] and ids[0] == 0  # only [CLS]'s id moved
    # an export copies the tokenizer, not the weights or transformers' files, and loads the same ids
    tk.copy_tokenizer(hf, str(tmp_path / "copy"))
    assert sorted(os.listdir(tmp_path / "copy")) == ["sentencepiece.bpe.model", "tokenizer_config.json", "vocab.txt"]
    copied = tk.load_tokenizer(str(tmp_path / "copy"))
    assert copied("今天天气很好。")["input_ids"] == tok("今天天气很好。")["input_ids"]
    tk.copy_tokenizer(tok_dir[0], str(tmp_path / "ours"))
    assert "tokenizer_info.json" in os.listdir(tmp_path / "ours")


def test_a_vocab_without_the_special_tokens_is_an_error(tok_dir, tmp_path):
    bad = _hf_layout(tok_dir[0], tmp_path / "bad")
    lines = Path(bad, "vocab.txt").read_text(encoding="utf-8").splitlines()
    Path(bad, "vocab.txt").write_text("\n".join(x for x in lines if x != "[MASK]") + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"vocab.txt: no line holds \[MASK\]"):
        tk.load_tokenizer(bad)
