"""EDM end to end (issue 19, item 1): sampling goes through EDMDenoiser, as training did.

Training calls F(c_in x, c_noise) with c_in = 1/√(σ² + σ_d²) and c_noise = ln(σ)/4 (Karras et
al. 2022, Table 1); sampling must do the same, whether through Trainer.sample, dl.sample or an
exported folder.
"""

from __future__ import annotations

import math

import pytest
import torch

import ddpm_lib as dl
from ddpm_lib.targets import SIGMA_DATA


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


class ZeroF:
    """F ≡ 0: D(x; σ) = c_skip x, the exact denoiser of data ~ N(0, σ_d² I). Records F's inputs."""

    def __init__(self):
        self.inputs: list[tuple[float, float]] = []  # (std of c_in x, c_noise)

    def __call__(self, x, c_noise):
        self.inputs.append((float(x.std()), float(c_noise[0])))
        return torch.zeros_like(x)


@pytest.mark.parametrize("sampler", ["euler", "dpmpp_2m", "ddim"])
def test_edm_network_sees_c_noise_and_unit_variance_input(sampler):
    schedule = dl.make_schedule("linear", num_timesteps=1000)
    F = ZeroF()
    steps = 6
    dl.sample(F, (4000, 1, 2, 2), schedule, sampler, steps=steps, prediction="edm",
              generator=torch.Generator().manual_seed(0))
    levels = dl.noise_levels(schedule, steps, dl.DEFAULT_SPACING[sampler])
    expected_c_noise = [math.log(s) / 4 for s in levels.sigma[:-1].tolist()]  # c_noise = ln(σ)/4, not t
    assert [c for _, c in F.inputs] == pytest.approx(expected_c_noise, rel=1e-5)
    # c_in x = x / √(σ² + σ_d²) has unit variance when x = x_0 + σ n with x_0 ~ N(0, σ_d²)
    assert F.inputs[0][0] == pytest.approx(1.0, abs=0.03)


def test_edm_with_the_exact_denoiser_lands_on_the_gaussian():
    F = ZeroF()
    x = dl.sample(F, (4000, 1, 2, 2), dl.make_schedule("linear", num_timesteps=1000), "dpmpp_2m", steps=25,
                  prediction="edm", generator=torch.Generator().manual_seed(0))
    assert [s for s, _ in F.inputs] == pytest.approx([1.0] * 25, abs=0.05)
    assert float(x.std()) == pytest.approx(SIGMA_DATA, rel=0.03)


def tiny_unet():
    torch.manual_seed(0)
    return dl.UNet(image_size=8, channels=(8, 16), layers_per_level=1, attention_resolutions=())


def test_trainer_dl_sample_and_export_give_the_same_edm_samples(tmp_path):
    images = torch.rand(32, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    cfg = dl.TrainConfig(image_size=8, batch_size=8, max_steps=3, warmup_steps=1, prediction="edm",
                         num_timesteps=100, num_sample_images=0, progress=False, out_dir=str(tmp_path / "run"),
                         sampler="euler", sample_steps=4)
    trainer = dl.Trainer(tiny_unet(), torch.utils.data.TensorDataset(images), cfg)
    trainer.fit()
    x_trainer = trainer.sample(n=4, seed=3)

    shape = (4, 1, 8, 8)
    x_dl = dl.sample(trainer.ema_model, shape, trainer.schedule, "euler", steps=4, prediction="edm",
                     generator=torch.Generator().manual_seed(3)).clamp(-1, 1)
    folder = trainer.export(tmp_path / "pipeline")
    pre = dl.load_pretrained(folder)
    assert pre.prediction == "edm"
    x_loaded = dl.sample(pre.model, shape, pre.schedule, "euler", steps=4, prediction=pre.prediction,
                         generator=torch.Generator().manual_seed(3)).clamp(-1, 1)
    assert torch.isfinite(x_trainer).all()
    torch.testing.assert_close(x_dl, x_trainer)
    torch.testing.assert_close(x_loaded, x_trainer)


def test_a_diffusers_unet_trained_for_edm_exports_as_a_ddpm_lib_folder(tmp_path):
    from ddpm_lib.models import diffusers_unet

    torch.manual_seed(0)
    unet = diffusers_unet(image_size=8, block_out_channels=(8, 16), layers_per_block=1).eval()
    schedule = dl.make_schedule("linear", num_timesteps=100)
    folder = dl.export_pipeline(unet, schedule, tmp_path / "edm", prediction="edm")
    assert (folder / "model_config.json").exists() and not (folder / "model_index.json").exists()
    pre = dl.load_pretrained(folder)
    x_T = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    a = dl.sample(unet, x_T.shape, schedule, "heun", steps=3, prediction="edm", x_T=x_T)
    b = dl.sample(pre.model, x_T.shape, pre.schedule, "heun", steps=3, prediction=pre.prediction, x_T=x_T)
    torch.testing.assert_close(a, b)
