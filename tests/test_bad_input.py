"""Bad input and friction found by a new user (issue 19, item 6)."""

from __future__ import annotations

import pytest
import torch

import ddpm_lib as dl
from ddpm_lib.data import DataReport


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def tiny_unet(num_classes=None):
    torch.manual_seed(0)
    return dl.UNet(image_size=8, channels=(8, 16), layers_per_level=1, attention_resolutions=(),
                   num_classes=num_classes)


@pytest.mark.parametrize("data_on_device", ["auto", False])
def test_trainer_accepts_a_plain_tensor_of_images(tmp_path, data_on_device):
    images = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1  # (N, C, H, W)
    cfg = dl.TrainConfig(image_size=8, batch_size=4, max_steps=2, warmup_steps=1, num_timesteps=50,
                         num_sample_images=0, progress=False, out_dir=str(tmp_path), data_on_device=data_on_device)
    trainer = dl.Trainer(tiny_unet(), images, cfg)
    history = trainer.fit()
    assert trainer.step == 2 and all(torch.isfinite(torch.tensor(history.losses)))
    assert trainer.sample(n=2, steps=2).shape == (2, 1, 8, 8)


def test_guidance_on_a_loaded_conditional_model_needs_no_null_class(tmp_path):
    K = 3
    folder = dl.export_pipeline(tiny_unet(num_classes=K).eval(), dl.make_schedule("linear", num_timesteps=50),
                                tmp_path / "cond")
    pre = dl.load_pretrained(folder)
    assert pre.num_classes == K and pre.null_class == K
    labels = torch.tensor([0, 1, 2, 0])
    kwargs = dict(shape=(4, 1, 8, 8), schedule=pre.schedule, sampler="ddim", steps=3, prediction=pre.prediction,
                  class_labels=labels, guidance_scale=3.0)
    found = dl.sample(pre.model, generator=torch.Generator().manual_seed(0), **kwargs)
    explicit = dl.sample(pre.model, generator=torch.Generator().manual_seed(0), null_class=K, **kwargs)
    torch.testing.assert_close(found, explicit)
    with pytest.raises(ValueError, match="null_class"):  # an unconditional model still says what is missing
        dl.sample(tiny_unet(), **{**kwargs, "class_labels": None})


def test_the_data_report_names_a_few_skipped_files_per_reason():
    report = DataReport("photos", "folder", 32, 3, "crop", found=10, used=4)
    report.skipped = {f"bad{i}.png": "not an image PIL can read" for i in range(5)}
    report.skipped["empty.jpg"] = "empty file (0 bytes)"
    text = str(report)
    assert "5 x not an image PIL can read: bad0.png, bad1.png, bad2.png and 2 more" in text
    assert "1 x empty file (0 bytes): empty.jpg" in text
    assert "bad3.png" not in text
    assert "and 2 more" in report._repr_html_()
