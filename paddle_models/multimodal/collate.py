"""The multimodal collate function: tokenize, pad and stack dataset items into the network's batch::

    input_ids int64 [B, L]          attention_mask int64 [B, L]          (1 = real token)
    caption_ids int64 [B, Nc, L]    caption_mask int64 [B, Nc, L]        (all-zero rows = no caption)
    image float32 [B, 3, H, W]      evidence_images float32 [B, Ni, 3, H, W]
    evidence_mask float32 [B, Ni]   (1 = image present)
    label int64 [B]                 (-1 = unlabelled)
    id  numpy str [B]
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np


class MultimodalCollate:
    """Tokenize, pad and stack items into the network's batch (see the module doc).

    ``L = min(max_len, longest text in the batch)`` (or ``max_len`` with ``pad_to_max_len``),
    ``Nc = max(1, min_captions, most captions)``, ``Ni = max(1, min_evidence_images, most evidence images)``
    (the server fixes ``Nc`` / ``Ni`` so that every batch has the same shape but its size). Texts longer than
    ``max_len`` tokens (``[CLS]`` and ``[SEP]`` included) are truncated. With ``use_text=False`` the
    post is ``[CLS] [SEP]`` and there are no captions; with ``use_image=False`` images are zeros.
    Token ids of each distinct text are cached (``cache_size`` entries).

    ``id`` is a numpy str array; ``paddle.io.DataLoader`` cannot carry numpy str arrays (its
    batch-to-tensor conversion fails on them, with or without workers), so a collate used directly as
    its ``collate_fn`` should be built with ``ids_as_list=True`` (a Python list of str passes through
    unchanged).
    """

    def __init__(self, tokenizer, max_len: int = 128, pad_to_max_len: bool = False,
                 image_size: int = 224, use_text: bool = True, use_image: bool = True,
                 cache_size: int = 200000, ids_as_list: bool = False, min_captions: int = 0,
                 min_evidence_images: int = 0):
        if max_len < 3:
            raise ValueError(f"Data.max_len={max_len}: must be at least 3 ([CLS] token [SEP])")
        self.tokenizer = tokenizer
        self.max_len = int(max_len)
        self.pad_to_max_len = bool(pad_to_max_len)
        self.image_size = int(image_size)
        self.use_text = use_text
        self.use_image = use_image
        self.pad_id = int(tokenizer.pad_token_id)
        self.cls_id = int(tokenizer.cls_token_id)
        self.sep_id = int(tokenizer.sep_token_id)
        self.cache_size = int(cache_size)
        self.ids_as_list = bool(ids_as_list)
        self.min_captions, self.min_evidence_images = max(0, int(min_captions)), max(0, int(min_evidence_images))
        self._cache: OrderedDict[str, list[int]] = OrderedDict()
        self.truncated = 0  # texts cut to max_len (this process)

    def encode(self, text: str) -> list[int]:
        """``[CLS] ids [SEP]`` of one text, at most ``max_len`` ids (same as the tokenizer's
        ``__call__(text, max_length=max_len, truncation=True)``)."""
        ids = self._cache.get(text)
        if ids is None:
            body = self.tokenizer.convert_tokens_to_ids(self.tokenizer.tokenize(text)) if text else []
            if len(body) > self.max_len - 2:
                body = body[: self.max_len - 2]
                self.truncated += 1
            ids = [self.cls_id] + body + [self.sep_id]
            if self.cache_size > 0:
                self._cache[text] = ids
                if len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        return ids

    def __call__(self, samples: list[dict]) -> dict[str, np.ndarray]:
        if not samples:
            raise ValueError("collate: empty batch")
        ids = [str(x["id"]) for x in samples]
        return {
            **self._text_arrays(samples),
            **self._image_arrays(samples),
            "label": np.array([int(x["label"]) for x in samples], dtype=np.int64),
            "id": ids if self.ids_as_list else np.array(ids),
        }

    def _text_arrays(self, samples: list[dict]) -> dict[str, np.ndarray]:
        """``input_ids`` / ``attention_mask`` [B, L] and ``caption_ids`` / ``caption_mask`` [B, Nc, L]."""
        if self.use_text:
            posts = [self.encode(s["text"]) for s in samples]
            captions = [[self.encode(c) for c in s["captions"]] for s in samples]
        else:
            posts = [[self.cls_id, self.sep_id] for _ in samples]
            captions = [[] for _ in samples]
        b = len(samples)
        longest = max([len(p) for p in posts] + [len(c) for cs in captions for c in cs])
        L = self.max_len if self.pad_to_max_len else min(self.max_len, longest)
        nc = max(1, self.min_captions, max(len(cs) for cs in captions))
        input_ids = np.full((b, L), self.pad_id, dtype=np.int64)
        attention = np.zeros((b, L), dtype=np.int64)
        caption_ids = np.full((b, nc, L), self.pad_id, dtype=np.int64)
        caption_mask = np.zeros((b, nc, L), dtype=np.int64)
        for i, p in enumerate(posts):
            input_ids[i, :len(p)] = p
            attention[i, :len(p)] = 1
            for j, c in enumerate(captions[i]):
                caption_ids[i, j, :len(c)] = c
                caption_mask[i, j, :len(c)] = 1
        return {"input_ids": input_ids, "attention_mask": attention, "caption_ids": caption_ids,
                "caption_mask": caption_mask}

    def _image_arrays(self, samples: list[dict]) -> dict[str, np.ndarray]:
        """``image`` [B, 3, H, W], ``evidence_images`` [B, Ni, 3, H, W] and ``evidence_mask`` [B, Ni]."""
        b, s = len(samples), self.image_size
        ni = max(1, self.min_evidence_images, max(int(x["evidence_images"].shape[0]) for x in samples)) \
            if self.use_image else 1
        image = np.zeros((b, 3, s, s), dtype=np.float32)
        evidence = np.zeros((b, ni, 3, s, s), dtype=np.float32)
        evidence_mask = np.zeros((b, ni), dtype=np.float32)
        if self.use_image:
            for i, x in enumerate(samples):
                if x["image"] is not None:
                    if x["image"].shape != (3, s, s):
                        raise ValueError(f"collate: item {x['id']}: image shape {x['image'].shape} "
                                         f"differs from (3, {s}, {s})")
                    image[i] = x["image"]
                n = int(x["evidence_images"].shape[0])
                if n:
                    evidence[i, :n] = x["evidence_images"]
                    evidence_mask[i, :n] = 1.0
        return {"image": image, "evidence_images": evidence, "evidence_mask": evidence_mask}
