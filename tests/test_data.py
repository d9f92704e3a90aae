"""Tests for ddpm_lib.data: MNIST, folders of odd files, datasets-library sources, errors."""

from __future__ import annotations

import time
import warnings

import numpy as np
import pytest
import torch
from PIL import Image, features

import ddpm_lib as dl
from ddpm_lib import data as dd

# --------------------------------------------------------------------------- MNIST


def test_mnist_default_is_padded_32px_with_labels():
    ds = dl.load_images("mnist-5k")
    assert len(ds) == 5000 and ds.image_shape == (1, 32, 32)
    assert ds.num_classes == 10 and ds.labels.bincount().tolist() == [500] * 10
    x = ds.images
    assert x.dtype == torch.float32 and x.min() == -1 and x.max() == 1
    # padding: the 2-pixel border is background (-1) and the 28x28 centre is the digit
    assert (x[:, :, :2] == -1).all() and (x[:, :, -2:] == -1).all() and (x[..., :2] == -1).all()
    raw, _ = dd._mnist_arrays()
    order = dd.mnist_split_indices(None)
    assert torch.equal(ds.pixels[7, 0, 2:30, 2:30], torch.from_numpy(raw[order[7]]))
    assert ds.labels[:20].tolist() == list(range(10)) * 2  # classes interleaved
    img, label = ds[4999]
    assert img.shape == (1, 32, 32) and label == 9
    assert "5000 used of 5000 found" in str(ds.report)


def test_mnist_split_is_fixed_stratified_and_disjoint():
    train = dl.load_images("mnist-5k", split="train")
    test = dl.load_images("mnist-5k", split="test")
    assert len(train) == 4000 and len(test) == 1000
    assert test.labels.bincount().tolist() == [100] * 10
    i_train, i_test = dd.mnist_split_indices("train"), dd.mnist_split_indices("test")
    assert not set(i_train) & set(i_test) and len(set(i_train) | set(i_test)) == 5000
    with pytest.raises(ValueError, match="'train', 'test'"):
        dl.load_images("mnist-5k", split="validation")


def test_mnist_resize_channels_and_max_images():
    ds = dl.load_images("mnist-5k", image_size=16, channels=3, resize="crop", max_images=20)
    assert ds.pixels.shape == (20, 3, 16, 16)
    assert torch.equal(ds.pixels[:, 0], ds.pixels[:, 2])  # gray replicated
    assert dl.load_images("mnist-5k", image_size=16, max_images=3).pixels.shape == (3, 1, 16, 16)  # pad < 28
    few = dl.load_images("mnist-5k", max_images=256)
    assert few.labels.bincount().min() >= 25  # a prefix is class-balanced
    assert few.report.found == 5000 and few.report.not_read == 4744


def test_flip_per_item_and_batch_augment():
    ds = dl.load_images("mnist-5k", max_images=8, flip=True, seed=3)
    x0 = ds.images[0]
    seen = {bool(torch.equal(ds[0][0], x0.flip(-1))) for _ in range(40)}
    assert seen == {True, False}  # both orientations appear
    for _ in range(10):
        v = ds[0][0]
        assert torch.equal(v, x0) or torch.equal(v, x0.flip(-1))
    batch = ds.as_tensor("cpu")
    out = ds.augment(batch, torch.Generator().manual_seed(0))
    flipped = [torch.equal(o, b.flip(-1)) and not torch.equal(o, b) for o, b in zip(out, batch)]
    assert 0 < sum(flipped) < len(batch)
    assert dl.load_images("mnist-5k", max_images=2).augment(batch) is batch  # flip=False: unchanged


def test_preview_titles_are_class_names():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = dl.load_images("mnist-5k", max_images=12).preview(4)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["0", "1", "2", "3"]
    plt.close(fig)


# --------------------------------------------------------------------------- odd files


def _save(im: Image.Image, path, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, **kw)
    return path


@pytest.fixture
def odd_folder(tmp_path):
    """A folder with every kind of file a reader might bring."""
    root = tmp_path / "odd"
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 40, 3), dtype=np.uint8))
    _save(rgb, root / "good.png")
    _save(rgb.convert("L"), root / "gray.jpeg")
    rgba = Image.new("RGBA", (8, 8), (255, 0, 0, 0))  # fully transparent red
    _save(rgba, root / "rgba.png")
    _save(Image.new("LA", (8, 8), (0, 0)), root / "la.png")  # transparent black
    _save(rgb.convert("P", palette=Image.Palette.ADAPTIVE), root / "palette.png")
    arr16 = np.full((8, 8), 65535, np.uint16)
    arr16[:, :4] = 128 * 257
    _save(Image.fromarray(arr16), root / "sixteen.png")
    _save(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), root / "cmyk.jpg")  # red in CMYK
    _save(Image.new("RGB", (1, 1), (0, 0, 255)), root / "tiny.png")
    _save(Image.new("RGB", (4000, 100), (0, 255, 0)), root / "wide.png")
    _save(Image.new("RGB", (16, 16), (10, 20, 30)), root / "nested" / "a" / "b" / "deep.bmp")
    frames = [Image.new("P", (8, 8), 0), Image.new("P", (8, 8), 1)]
    for f in frames:
        f.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)  # index 0 red, 1 blue
    frames[0].save(root / "anim.gif", save_all=True, append_images=frames[1:])
    _save(Image.new("RGB", (9, 9), (200, 200, 200)), root / "x.tif")
    if features.check("webp"):
        _save(Image.new("RGB", (9, 9), (100, 100, 100)), root / "x.webp")
    # unusable files
    buf = (root / "good.png").read_bytes()
    (root / "truncated.png").write_bytes(buf[: len(buf) // 2])
    _save(rgb, root / "cut.jpg", quality=90)
    (root / "cut.jpg").write_bytes((root / "cut.jpg").read_bytes()[:400])
    (root / "empty.png").write_bytes(b"")
    (root / "text.jpg").write_text("this is not a JPEG")
    # ignored
    (root / "notes.txt").write_text("hello")
    _save(rgb, root / ".ipynb_checkpoints" / "hidden.png")
    return root


def test_odd_folder_loads_good_files_and_reports_the_rest(odd_folder):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = dl.load_images(odd_folder, image_size=16)
    skip_warnings = [w for w in caught if "skipped" in str(w.message)]
    assert len(skip_warnings) == 1 and "4 unusable" in str(skip_warnings[0].message)
    r = ds.report
    expected_used = 12 + features.check("webp")
    assert r.used == len(ds) == expected_used and r.found == expected_used + 4
    assert r.skipped["empty.png"] == "empty file (0 bytes)"
    assert r.skipped["text.jpg"] == "not an image PIL can read"
    assert r.skipped["truncated.png"].startswith("truncated or corrupt")
    assert r.skipped["cut.jpg"].startswith("truncated or corrupt")
    assert r.ignored == 1  # notes.txt
    assert any(".ipynb_checkpoints" in n for n in r.notes)  # hidden folders are not searched
    assert r.channels == 3 and ds.image_shape == (3, 16, 16)  # colour present -> 3 channels
    assert r.min_size == (1, 1) and r.max_size == (4000, 100) and r.upscaled >= 1
    assert r.modes["CMYK"] == 1 and r.modes["LA"] == 1 and r.modes["P"] >= 2
    assert any("aspect ratio" in n for n in r.notes)
    assert ds.num_classes == 0 and (ds.labels == -1).all()  # files at the top level: no labels
    text = str(r)
    assert "4 skipped" in text and "empty file" in text and "<table>" in r._repr_html_()

    names = sorted(str(p.relative_to(odd_folder)) for p in dd._list_folder(odd_folder)[0])
    usable = [n for n in names if n not in r.skipped]

    def pixel(name):  # value at the centre, as 0..255 per channel
        return ((ds.images[usable.index(name)][:, 8, 8] + 1) * 127.5).round().tolist()

    assert pixel("rgba.png") == [255, 255, 255]  # transparent -> white background
    assert pixel("la.png") == [255, 255, 255]
    assert pixel("cmyk.jpg")[0] > 200 and pixel("cmyk.jpg")[1] < 60  # CMYK red stays red
    assert pixel("anim.gif") == [255, 0, 0]  # first frame
    assert pixel("tiny.png") == [0, 0, 255]
    assert pixel("wide.png") == [0, 255, 0]
    assert pixel("nested/a/b/deep.bmp") == [10, 20, 30]


def test_sixteen_bit_grayscale_scaled_and_single_channel(tmp_path):
    arr16 = np.full((8, 8), 65535, np.uint16)
    arr16[:, :4] = 128 * 257
    _save(Image.fromarray(arr16), tmp_path / "a.png")
    _save(Image.new("L", (8, 8), 7), tmp_path / "b.png")
    ds = dl.load_images(tmp_path, image_size=8)
    assert ds.report.channels == 1 and ds.image_shape == (1, 8, 8)  # all grayscale -> 1 channel
    px = ds.pixels[0, 0]
    assert px[0, 0] == 128 and px[0, 7] == 255  # 16-bit values divided by 257


def test_background_black_and_pad_vs_crop(tmp_path):
    _save(Image.new("RGBA", (40, 20), (255, 0, 0, 0)), tmp_path / "clear.png")
    black = dl.load_images(tmp_path, image_size=8, background="black")
    assert (black.pixels == 0).all()
    _save(Image.new("RGB", (40, 20), (0, 255, 0)), tmp_path / "clear.png")
    pad = dl.load_images(tmp_path, image_size=8, resize="pad")
    assert (pad.pixels[0, :, 0] == 255).all()  # top rows: white padding
    assert pad.pixels[0, :, 4].tolist() == [[0] * 8, [255] * 8, [0] * 8]  # middle row: the green image
    crop = dl.load_images(tmp_path, image_size=8, resize="crop")
    assert (crop.pixels[0, 1] == 255).all() and (crop.pixels[0, 0] == 0).all()
    stretch = dl.load_images(tmp_path, image_size=8, resize="stretch", channels=1)
    assert stretch.image_shape == (1, 8, 8)


def test_labels_from_subfolders_and_max_images(tmp_path):
    for cls, colour in (("cats", 0), ("dogs", 255)):
        for i in range(3):
            _save(Image.new("L", (10, 10), colour), tmp_path / cls / f"{i}.png")
    ds = dl.load_images(tmp_path, image_size=8)
    assert ds.num_classes == 2 and ds.class_names == ["cats", "dogs"]
    assert ds.labels.tolist() == [0, 0, 0, 1, 1, 1] and ds[5][1] == 1
    assert "first-level subfolder" in str(ds.report)
    assert dl.load_images(tmp_path, labels_from_folders=False).num_classes == 0
    few = dl.load_images(tmp_path, image_size=8, max_images=2)
    assert len(few) == 2 and few.report.not_read == 4 and "not read" in str(few.report)
    _save(Image.new("L", (10, 10)), tmp_path / "loose.png")  # one image outside the class folders
    assert dl.load_images(tmp_path).num_classes == 0
    with pytest.raises(ValueError, match="directly in"):
        dl.load_images(tmp_path, labels_from_folders=True)


def test_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="no folder"):
        dl.load_images(tmp_path / "missing" / "deeper")
    with pytest.raises(FileNotFoundError, match="mnist-5k"):
        dl.load_images("./not/here")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.md").write_text("no images")
    with pytest.raises(ValueError, match="no image files.*1 other file"):
        dl.load_images(tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.png").write_bytes(b"")
    (tmp_path / "bad" / "b.jpg").write_text("nope")
    with pytest.raises(ValueError, match="no usable image.*all 2"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dl.load_images(tmp_path / "bad")
    with pytest.raises(ValueError, match="is a file"):
        dl.load_images(tmp_path / "empty" / "readme.md")
    with pytest.raises(ValueError, match="split"):
        dl.load_images(tmp_path / "empty", split="train")
    for bad in ({"resize": "squash"}, {"channels": 2}, {"image_size": 0}, {"background": "red"},
                {"max_images": 0}):
        with pytest.raises(ValueError):
            dl.load_images("mnist-5k", **bad)


# --------------------------------------------------------------------------- datasets library


def _hf_dataset(n=6, image_col="picture"):
    import datasets

    imgs = [Image.new("RGB", (12, 10), (20 * i, 0, 0)) for i in range(n)]
    feats = datasets.Features({"caption": datasets.Value("string"), image_col: datasets.Image(),
                               "label": datasets.ClassLabel(names=["a", "b"])})
    return datasets.Dataset.from_dict(
        {"caption": [f"c{i}" for i in range(n)], image_col: imgs, "label": [i % 2 for i in range(n)]},
        features=feats)


def test_hub_style_dataset_column_detection(monkeypatch):
    import datasets

    ds = _hf_dataset()
    assert dd.find_image_column(ds.features) == "picture"  # found by feature type, not by name
    assert dd.find_label_column(ds.features) == "label"
    plain = datasets.Features({"text": datasets.Value("string"), "img": datasets.Value("string"),
                               "target": datasets.Value("int64")})
    assert dd.find_image_column(plain) == "img" and dd.find_label_column(plain) == "target"
    assert dd.find_image_column(datasets.Features({"text": datasets.Value("string")})) is None

    calls = []

    def fake_load_dataset(name, split):
        calls.append((name, split))
        return ds

    monkeypatch.setattr(dd, "_hub_reachable", lambda timeout=3.0: True)
    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    out = dl.load_images("someone/tiny-set", image_size=8)
    assert calls == [("someone/tiny-set", "train")]
    assert len(out) == 6 and out.image_shape == (3, 8, 8) and out.report.kind == "hub"
    assert out.class_names == ["a", "b"] and out.labels.tolist() == [0, 1, 0, 1, 0, 1]
    assert out.pixels[3, 0, 4, 4] == 60  # row order kept

    text_only = datasets.Dataset.from_dict({"text": ["a"]})
    monkeypatch.setattr(datasets, "load_dataset", lambda name, split: text_only)
    with pytest.raises(dl.DatasetUnavailableError, match="no image column"):
        dl.load_images("someone/text-set")


def test_save_to_disk_round_trip_with_a_corrupt_row(tmp_path):
    import datasets

    ds = _hf_dataset(4, image_col="image")
    ds.save_to_disk(str(tmp_path / "saved"))
    out = dl.load_images(tmp_path / "saved", image_size=8)
    assert out.report.kind == "saved" and len(out) == 4 and out.num_classes == 2
    few = dl.load_images(tmp_path / "saved", image_size=8, max_images=3)
    assert len(few) == 3 and few.report.found == 4 and few.report.not_read == 1

    rows = [{"bytes": b"garbage", "path": None}, Image.new("L", (5, 5), 9)]
    broken = datasets.Dataset.from_dict({"image": rows}, features=datasets.Features({"image": datasets.Image()}))
    datasets.DatasetDict({"test": broken}).save_to_disk(str(tmp_path / "dict"))
    with pytest.warns(UserWarning, match="skipped 1"):
        out = dl.load_images(tmp_path / "dict", image_size=4)
    assert len(out) == 1 and out.report.skipped == {"row 0": "not an image PIL can read"}
    assert out.report.channels == 1 and out.num_classes == 0
    with pytest.raises(ValueError, match="splits"):
        dl.load_images(tmp_path / "dict", split="train")


def test_offline_hub_name_fails_fast_with_a_suggestion(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    start = time.perf_counter()
    with pytest.raises(dl.DatasetUnavailableError, match="mnist-5k") as e:
        dl.load_images("huggan/smithsonian_butterflies_subset")
    assert time.perf_counter() - start < 10
    assert "offline" in str(e.value) and isinstance(e.value, ValueError)

    # without HF_HUB_OFFLINE, an unreachable Hub is detected by a quick probe
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(dd, "_hub_reachable", lambda timeout=3.0: False)
    start = time.perf_counter()
    with pytest.raises(dl.DatasetUnavailableError, match="cannot be reached"):
        dl.load_images("someone/never-downloaded")
    assert time.perf_counter() - start < 10
    assert constants.HF_HUB_OFFLINE is False  # the temporary offline switch was undone


def test_name_classification():
    assert dd._looks_like_hub_name("huggan/smithsonian_butterflies_subset")
    assert dd._looks_like_hub_name("cifar10")
    for name in ("./x", "/abs/path", "a/b/c", "~/pics", "photo.png", "..", ".hidden"):
        assert not dd._looks_like_hub_name(name), name
