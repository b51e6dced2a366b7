"""The image pipeline of the multimodal family: safe decoding to RGB and the resize / crop / normalize
transform (ImageNet statistics by default), producing float32 ``[3, H, W]`` arrays."""
from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

logger = logging.getLogger("paddle_models.data")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
BAD_IMAGE_POLICIES = ("error", "skip", "blank")
#: images with more pixels are refused before decoding (a decompression bomb: a small file that would
#: decode to gigabytes)
MAX_IMAGE_PIXELS = 40_000_000


class DataError(ValueError):
    """Invalid data: the message names the file, the record and the field."""


def _pil():
    from PIL import Image
    return Image


def load_rgb(path: str):
    """Open an image as an RGB ``PIL.Image``.

    GIF (and other animations): the first frame. Transparent images (RGBA, LA, palette with a
    transparent colour) are composited on white. Greyscale, palette, CMYK, 16-bit and float images
    are converted to 8-bit RGB. Raises ``OSError`` / ``ValueError`` for unreadable files, and
    ``ValueError`` for images of more than ``MAX_IMAGE_PIXELS`` pixels (checked from the header).
    """
    Image = _pil()
    with _open_checked(path) as im:
        try:
            im.seek(0)
        except EOFError:  # pragma: no cover - single-frame formats
            pass
        im.load()
        mode = im.mode
        if mode == "P":
            im = im.convert("RGBA") if "transparency" in im.info else im.convert("RGB")
            mode = im.mode
        if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
            rgba = im.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(white, rgba).convert("RGB")
        if mode.startswith("I;16") or mode in ("I", "F"):
            arr = np.asarray(im, dtype=np.float64)
            if mode.startswith("I;16"):
                arr = arr / 257.0
            arr = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
            return Image.fromarray(arr, mode="L").convert("RGB")
        if mode != "RGB":
            return im.convert("RGB")
        return im.copy()


def _open_checked(path: str, max_pixels: int = MAX_IMAGE_PIXELS):
    """``Image.open(path)`` after checking the pixel count in the header (nothing is decoded yet)."""
    Image = _pil()
    try:
        im = Image.open(path)
    except Image.DecompressionBombError as e:
        raise ValueError(f"image too large to decode safely ({e})") from None
    w, h = im.size
    if w * h > max_pixels:
        im.close()
        raise ValueError(f"image too large to decode safely: {w}x{h} = {w * h} pixels in the header "
                         f"(limit {max_pixels})")
    return im


def check_image(path: str, max_pixels: int = MAX_IMAGE_PIXELS) -> None:
    """Raise ``OSError`` / ``ValueError`` unless ``path`` is an image that decodes (a truncated file, a
    decompression bomb and a non-image all raise). JPEGs are decoded at reduced scale (all the data is still
    read), other formats fully."""
    with _open_checked(path, max_pixels) as im:
        if im.format == "JPEG":
            im.draft("RGB", (max(1, im.size[0] // 8), max(1, im.size[1] // 8)))
        im.load()


class ImageTransform:
    """Resize (shorter side, bilinear) -> CenterCrop -> ToTensor (/255, CHW) -> Normalize.

    The same operations and rounding as ``paddle.vision.transforms`` with the PIL backend
    (``Resize(256), CenterCrop(224), ToTensor(), Normalize(ImageNet)`` in the baseline).
    """

    def __init__(self, resize: int = 256, crop: int = 224, mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD):
        resize, crop = int(resize), int(crop)
        if crop <= 0 or resize <= 0:
            raise ValueError(f"image sizes must be positive (resize={resize}, crop={crop})")
        if resize < crop:
            raise ValueError(f"image_resize={resize} is smaller than image_crop={crop}")
        if len(mean) != 3 or len(std) != 3 or any(float(s) <= 0 for s in std):
            raise ValueError(f"image mean/std must be 3 numbers with std > 0, got {mean} / {std}")
        self.resize = resize
        self.crop = crop
        self.mean = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)
        self.std = np.asarray(std, dtype=np.float32).reshape(3, 1, 1)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (3, self.crop, self.crop)

    def resize_crop(self, img):
        """The PIL part: shorter side to ``resize`` (no-op when it already is), centre crop."""
        Image = _pil()
        w, h = img.size
        s = self.resize
        if not ((w <= h and w == s) or (h <= w and h == s)):
            if w < h:
                img = img.resize((s, int(s * h / w)), Image.BILINEAR)
            else:
                img = img.resize((int(s * w / h), s), Image.BILINEAR)
        w, h = img.size
        top = int(round((h - self.crop) / 2.0))
        left = int(round((w - self.crop) / 2.0))
        return img.crop((left, top, left + self.crop, top + self.crop))

    def __call__(self, img) -> np.ndarray:
        img = self.resize_crop(img)
        arr = np.asarray(img, dtype=np.float32).transpose(2, 0, 1) / 255.0
        return ((arr - self.mean) / self.std).astype(np.float32, copy=False)

    def blank(self) -> np.ndarray:
        return np.zeros(self.shape, dtype=np.float32)
