"""A deterministic synthetic multimodal dataset whose label needs both the text and the image.

Each post has a *text attribute* ``t`` in {0, 1, 2}, carried by one sentiment word among filler
(``awful`` ... / ``ordinary`` ... / ``wonderful`` ...), and an *image attribute* ``v`` in {0, 1, 2},
carried by the colour of a big shape (blue / green / red, jittered) on a noisy grey background. The
nine ``(t, v)`` cells are equally frequent and independent. The label is, by ``rule``:

* ``sum`` (default): the overall mood ``t + v`` cut into three balanced classes,
  ``negative`` if ``t + v <= 1``, ``neutral`` if ``t + v == 2``, ``positive`` if ``t + v >= 3``.
  One modality alone predicts at most 5/9 ~ 0.56 of the labels (accuracy and macro-F1 of the best
  single-modality rule), both give 1.0. The label is a monotone function of ``t + v``, so a model
  that adds a text score and an image score (the network's head is linear over the concatenated
  text and image features) can learn it.
* ``mod``: ``(t + v) mod 3``. Each modality alone carries no information at all (chance, 1/3), but
  the label is not additive: only a head with an interaction between the modalities can learn it.

Evidence: 0-3 evidence texts (filler about the post's subject, no sentiment word) and 0-2 evidence
images (shapes in other colours) per post; they carry no label information.

Layout (``Data.format: jsonl``): ``<out>/{train,val,test}.jsonl`` and ``<out>/images/<split>/*.png``,
with paths relative to ``<out>``, plus ``<out>/demo_info.json``. The same arguments give byte-identical
files.
"""
from __future__ import annotations

import io
import json
import os

import numpy as np

from ..fileio import write_bytes_atomic

LABEL_NAMES = ["negative", "neutral", "positive"]

TEXT_WORDS = {
    0: ["awful", "terrible", "horrible", "dreadful", "miserable"],
    1: ["ordinary", "average", "plain", "typical", "unremarkable"],
    2: ["wonderful", "excellent", "fantastic", "brilliant", "delightful"],
}
SUBJECTS = ["the concert", "my lunch", "this trip", "the new phone", "our team", "the weather",
            "that movie", "the hotel", "my morning", "the game", "the museum", "this book",
            "the train ride", "the party", "our picnic", "the lecture", "the market", "my garden"]
FILLERS = ["today", "again", "honestly", "this week", "at last", "for sure", "in the city",
           "with friends", "so far", "as expected", "this time", "after all"]
TEMPLATES = [
    "{S} was {W} {F}.",
    "{F}, {s} felt {W}.",
    "I found {s} {W} {F}.",
    "Just saw {s}: {W}!",
    "{S} {F} - simply {W}.",
    "Everyone says {s} is {W}.",
]
EVIDENCE_TEMPLATES = [
    "A photo of {s} posted {F}.",
    "People talk about {s} {F}.",
    "News about {s} {F}.",
    "Another post on {s}.",
    "{S} mentioned {F} by a friend.",
]
# image attribute -> base colour of the big shape (RGB)
SHAPE_COLOURS = {0: (40, 80, 225), 1: (40, 190, 60), 2: (225, 50, 40)}
EVIDENCE_COLOURS = [(225, 205, 40), (150, 60, 185), (40, 200, 205), (120, 120, 120)]
RULES = ("sum", "mod")


def label_of(t: int, v: int, rule: str = "sum") -> int:
    if rule == "sum":
        s = t + v
        return 0 if s <= 1 else (1 if s == 2 else 2)
    if rule == "mod":
        return (t + v) % 3
    raise ValueError(f"rule must be one of {RULES}, got {rule!r}")


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _sentence(rng: np.random.RandomState, templates: list[str], word: str | None) -> str:
    tpl = templates[rng.randint(len(templates))]
    subj = SUBJECTS[rng.randint(len(SUBJECTS))]
    fill = FILLERS[rng.randint(len(FILLERS))]
    out = tpl.format(S=_cap(subj), s=subj, W=word or "", F=fill)
    return _cap(out)


def _draw(rng: np.random.RandomState, size: int, colour, shape_scale=(0.22, 0.38)) -> np.ndarray:
    """A noisy grey background with one big filled shape (circle, square or triangle)."""
    grey = rng.randint(90, 200)
    img = grey + rng.randint(-10, 11, size=(size, size, 1))
    img = np.repeat(img, 3, axis=2).astype(np.int32)
    r = rng.uniform(*shape_scale) * size
    cx = rng.uniform(r, size - r)
    cy = rng.uniform(r, size - r)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    kind = rng.randint(3)
    if kind == 0:
        mask = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
    elif kind == 1:
        mask = (np.abs(xx - cx) <= r * 0.85) & (np.abs(yy - cy) <= r * 0.85)
    else:
        top = cy - r
        mask = (yy >= top) & (yy <= cy + r) & (np.abs(xx - cx) <= (yy - top) * 0.6)
    jitter = rng.randint(-25, 26, size=3)
    fg = np.clip(np.asarray(colour) + jitter, 0, 255)
    img[mask] = fg + rng.randint(-8, 9, size=(int(mask.sum()), 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def _png_bytes(arr: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr, mode="RGB").save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def generate_split(split: str, n: int, seed: int, image_size: int = 64, rule: str = "sum",
                   split_index: int = 0, as_arrays: bool = False):
    """Records and images (``(relpath, png bytes)``, or uint8 ``[H, W, 3]`` arrays with
    ``as_arrays``: the same pixels, PNG being lossless) of one split, without writing anything."""
    encode = (lambda a: a) if as_arrays else _png_bytes
    rng = np.random.RandomState((seed * 7919 + split_index * 104729) % (2 ** 32))
    cells = np.tile(np.arange(9), int(np.ceil(n / 9)))[:n]
    cells = cells[rng.permutation(n)]
    records, images = [], []
    for i in range(n):
        t, v = int(cells[i] // 3), int(cells[i] % 3)
        rid = f"{split}-{i:05d}"
        word = TEXT_WORDS[t][rng.randint(len(TEXT_WORDS[t]))]
        text = _sentence(rng, TEMPLATES, word)
        img_rel = f"images/{split}/{i:05d}.png"
        images.append((img_rel, encode(_draw(rng, image_size, SHAPE_COLOURS[v]))))
        ev_texts = [_sentence(rng, EVIDENCE_TEMPLATES, None) for _ in range(rng.randint(0, 4))]
        ev_images = []
        for k in range(rng.randint(0, 3)):
            colour = EVIDENCE_COLOURS[rng.randint(len(EVIDENCE_COLOURS))]
            rel = f"images/{split}/{i:05d}_e{k}.png"
            images.append((rel, encode(_draw(rng, image_size, colour, (0.15, 0.3)))))
            ev_images.append(rel)
        records.append({
            "id": rid, "text": text, "image": img_rel, "label": LABEL_NAMES[label_of(t, v, rule)],
            "evidence_texts": ev_texts, "evidence_images": ev_images,
            "text_attr": t, "image_attr": v,
        })
    return records, images


def make_demo_data(out_dir: str, n_train: int = 3000, n_val: int = 600, n_test: int = 600,
                   seed: int = 2026, image_size: int = 64, rule: str = "sum") -> dict:
    """Write the dataset under ``out_dir``; return a summary (counts, label balance, files)."""
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    if image_size < 16:
        raise ValueError(f"image_size={image_size} is too small (minimum 16)")
    sizes = {"train": int(n_train), "val": int(n_val), "test": int(n_test)}
    for k, v in sizes.items():
        if v < 1:
            raise ValueError(f"{k} size must be positive, got {v}")
    os.makedirs(out_dir, exist_ok=True)
    summary = {"out_dir": os.path.abspath(out_dir), "seed": seed, "rule": rule,
               "image_size": image_size, "label_names": LABEL_NAMES, "splits": {}}
    for index, (split, n) in enumerate(sizes.items()):
        img_dir = os.path.join(out_dir, "images", split)
        os.makedirs(img_dir, exist_ok=True)
        for name in os.listdir(img_dir):  # stale images of an earlier, larger run
            if name.endswith(".png") or name.endswith(".png.tmp"):
                os.remove(os.path.join(img_dir, name))
        records, images = generate_split(split, n, seed, image_size, rule, index)
        for rel, data in images:
            with open(os.path.join(out_dir, rel), "wb") as f:
                f.write(data)
        lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        write_bytes_atomic(os.path.join(out_dir, f"{split}.jsonl"), lines.encode("utf-8"))
        counts = {name: 0 for name in LABEL_NAMES}
        for r in records:
            counts[r["label"]] += 1
        summary["splits"][split] = {"items": n, "images": len(images), "labels": counts,
                                    "file": f"{split}.jsonl"}
    info = {k: v for k, v in summary.items() if k != "out_dir"}
    write_bytes_atomic(os.path.join(out_dir, "demo_info.json"),
                       (json.dumps(info, indent=2) + "\n").encode("utf-8"))
    return summary
