"""A tiny Multi30k-style setup for the Transformer tool tests: a 300-line corpus of two languages' words, a
40-piece SentencePiece vocabulary in ``RUN/spm``, and a config of the smallest model that still builds."""
import numpy as np
from conftest import ROOT

WORDS = "ein Hund läuft über die Wiese zwei Männer spielen Fußball a dog runs across the meadow men play".split()


def tiny_run(tmp_path):
    """(run folder with its vocabulary, the corpus lines, the -o overrides, the loaded config)."""
    from paddle_models.config import load_config
    from paddle_models.transformer.data import train_sentencepiece

    r = np.random.RandomState(0)
    lines = [" ".join(r.choice(WORDS, r.randint(3, 8))) + "." for _ in range(300)]
    (tmp_path / "corpus.txt").write_text("\n".join(lines), encoding="utf-8")
    run = tmp_path / "run"
    train_sentencepiece([str(tmp_path / "corpus.txt")], str(run / "spm"), vocab_size=40)
    overrides = ["Arch.vocab_size=40", "Arch.d_model=16", "Arch.num_heads=2", "Arch.num_encoder_layers=1",
                 "Arch.num_decoder_layers=1", "Arch.d_ff=16", f"Global.output_dir={tmp_path / 'eval'}",
                 "Global.progress=false"]
    cfg = load_config(str(ROOT / "configs" / "transformer" / "multi30k_small.yaml"), overrides)
    return run, lines, overrides, cfg
