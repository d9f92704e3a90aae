"""Chapter 10: dl.images_from_dataset, for datasets such as torchvision's CIFAR10."""

import numpy as np
import pytest
import torch
from PIL import Image

import ddpm_lib as dl


class FakeTorchvision(torch.utils.data.Dataset):
    """Items like torchvision's CIFAR10 without a transform: (PIL image, int); plus two broken ones."""

    classes = ["cat", "dog", "frog"]

    def __init__(self):
        rng = np.random.default_rng(0)
        self.items = [(Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)), i % 3) for i in range(6)]
        self.items.append(("not an image", 1))  # unusable value
        self.items.append((rng.integers(0, 256, (32, 32), dtype=np.uint8), 2))  # a gray uint8 array
        self.items.append((Image.new("RGB", (32, 32), (10, 20, 30)), 0))

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def test_reads_validates_and_keeps_labels():
    with pytest.warns(UserWarning, match="skipped 1 unusable"):
        ds = dl.images_from_dataset(FakeTorchvision(), image_size=16, source="fake CIFAR")
    r = ds.report
    assert (r.found, r.used, r.num_skipped, r.kind, r.source) == (9, 8, 1, "dataset", "fake CIFAR")
    assert "item 6" in r.skipped and "cannot read" in r.skipped["item 6"]
    assert ds.image_shape == (3, 16, 16) and r.channels == 3  # one colour image makes the set RGB
    assert ds.labels.tolist() == [0, 1, 2, 0, 1, 2, 2, 0]
    assert ds.class_names == ["cat", "dog", "frog"] and ds.num_classes == 3
    x = ds.images
    assert x.min() >= -1 and x.max() <= 1
    # the plain colour image survives resizing exactly: (10, 20, 30) / 127.5 - 1
    torch.testing.assert_close(x[-1][:, 0, 0], torch.tensor([10, 20, 30]) / 127.5 - 1)


def test_max_images_and_unlabelled_items():
    plain = [Image.new("L", (28, 28), v) for v in (0, 128, 255)]
    ds = dl.images_from_dataset(plain, image_size=8, max_images=2)
    assert (ds.report.found, ds.report.used, ds.report.not_read) == (3, 2, 1)
    assert ds.labels.tolist() == [-1, -1] and ds.num_classes == 0 and ds.image_shape == (1, 8, 8)


def test_trainer_accepts_it(tmp_path):
    ds = dl.images_from_dataset([Image.new("L", (16, 16), v) for v in range(0, 256, 32)], image_size=16)
    model = dl.diffusers_unet(image_size=16, in_channels=1, block_out_channels=(8, 16), layers_per_block=1,
                              attention_blocks=0)
    cfg = dl.TrainConfig(image_size=16, batch_size=4, max_steps=2, warmup_steps=1, out_dir=str(tmp_path),
                         num_sample_images=0, progress=False)
    history = dl.Trainer(model, ds, cfg).fit()
    assert history.steps[-1] == 2


def test_all_broken_is_an_error():
    with pytest.raises(ValueError, match="no usable image"), pytest.warns(UserWarning):
        dl.images_from_dataset([(None, 0), ("x", 1)])
