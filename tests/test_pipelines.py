"""Tests for ddpm_lib.pipelines: export / load round trips in both formats, diffusers loading, errors."""

import json

import pytest
import torch
from diffusers import DDPMPipeline

import ddpm_lib as dl
from ddpm_lib import paths
from ddpm_lib.models import BasicUNet, DiT, UNet, diffusers_unet
from ddpm_lib.pipelines import (
    PretrainedUnavailableError,
    ddpm_scheduler,
    export_pipeline,
    list_pretrained,
    load_pretrained,
)

T = 100


def tiny_diffusers_unet(**kw):
    torch.manual_seed(0)
    return diffusers_unet(image_size=8, block_out_channels=(8, 16), layers_per_block=1, **kw).eval()


def linear_schedule():
    return dl.make_schedule("linear", num_timesteps=T, beta_start=1e-4, beta_end=0.02)


def assert_same_outputs(a, b, class_labels=None):
    torch.manual_seed(1)
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([3, T - 1])
    with torch.no_grad():
        assert torch.equal(dl.call_model(a, x, t, class_labels), dl.call_model(b, x, t, class_labels))


def assert_same_schedule(s1, s2):
    assert torch.allclose(
        torch.as_tensor(s1.alphas_cumprod).float(),
        torch.as_tensor(s2.alphas_cumprod).float(),
        rtol=1e-6,
        atol=1e-8,
    )


# ----------------------------------------------------------------------------- diffusers format


def test_diffusers_export_load_round_trip(tmp_path):
    model, schedule = tiny_diffusers_unet(), linear_schedule()
    folder = export_pipeline(model, schedule, tmp_path / "pipe", card="Trained for 0 steps.")
    for name in ("model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
                 "scheduler/scheduler_config.json", "ddpm_lib.json", "README.md"):  # fmt: skip
        assert (folder / name).is_file(), name
    assert "Trained for 0 steps." in (folder / "README.md").read_text()
    pre = load_pretrained(folder)
    assert pre.prediction == "eps" and pre.pipeline_dir == folder and pre.image_shape == (1, 8, 8)
    assert_same_outputs(model, pre.model)
    assert_same_schedule(schedule, pre.schedule)
    # the same sampler run gives the same images with the loaded model
    kw = {"shape": (2, 1, 8, 8), "sampler": "ddim", "steps": 3}
    x_a = dl.sample(model, schedule=schedule, generator=torch.Generator().manual_seed(0), **kw)
    x_b = dl.sample(pre.model, schedule=pre.schedule, generator=torch.Generator().manual_seed(0), **kw)
    assert torch.allclose(x_a, x_b, atol=1e-6)


def test_diffusers_can_load_the_exported_folder(tmp_path):
    schedule = linear_schedule()
    folder = export_pipeline(tiny_diffusers_unet(), schedule, tmp_path / "pipe")
    pipe = DDPMPipeline.from_pretrained(folder)
    assert pipe.scheduler.config.beta_schedule == "linear"  # a readable config, not a list of betas
    assert_same_schedule(schedule, pipe.scheduler)
    images = pipe(
        batch_size=1, num_inference_steps=2, output_type="np", generator=torch.Generator().manual_seed(0)
    ).images
    assert images.shape == (1, 8, 8, 1)


SCHEDULES = {  # schedule, prediction, the named beta_schedule expected (None: trained_betas)
    "cosine": (lambda: dl.make_schedule("cosine", num_timesteps=T), "v", "squaredcos_cap_v2"),
    "scaled_linear": (lambda: dl.make_schedule("scaled_linear", num_timesteps=T), "eps", "scaled_linear"),
    "shifted": (lambda: dl.resolution_shift(linear_schedule(), 16, base_size=8), "x0", None),
    "zero_terminal_snr": (lambda: dl.rescale_zero_terminal_snr(linear_schedule()), "v", None),
}


@pytest.mark.parametrize("name", SCHEDULES)
def test_scheduler_config_reproduces_any_schedule(name):
    make, prediction, expected = SCHEDULES[name]
    schedule = make()
    scheduler = ddpm_scheduler(schedule, prediction)
    assert (
        scheduler.config.prediction_type
        == {"eps": "epsilon", "x0": "sample", "v": "v_prediction"}[prediction]
    )
    assert (scheduler.config.trained_betas is None) == (expected is not None)
    if expected:
        assert scheduler.config.beta_schedule == expected
    assert torch.equal(scheduler.betas.float(), schedule.betas.float())
    assert_same_schedule(schedule, scheduler)


def test_diffusers_export_refuses_a_non_vp_schedule(tmp_path):
    with pytest.raises(ValueError, match="variance-preserving.*'ve'"):
        export_pipeline(tiny_diffusers_unet(), dl.make_schedule("ve", num_timesteps=T), tmp_path / "ve")
    assert list(tmp_path.iterdir()) == []


def test_diffusers_prediction_survives(tmp_path):
    folder = export_pipeline(
        tiny_diffusers_unet(), dl.make_schedule("cosine", num_timesteps=T), tmp_path / "v", prediction="v"
    )
    assert load_pretrained(folder).prediction == "v"


# ----------------------------------------------------------------------------- ddpm_lib format


@pytest.mark.parametrize(
    "make,labels",
    [
        (lambda: UNet(image_size=8, channels=(8, 16), layers_per_level=1, attention_resolutions=(4,),
                      attention_heads=2, norm="batch", num_classes=3), torch.tensor([0, 2])),
        (lambda: DiT(image_size=8, patch_size=2, dim=16, depth=1, heads=2), None),
        (lambda: BasicUNet(channels=(4, 8, 8)), None),
    ],
)  # fmt: skip
def test_ddpm_lib_export_load_round_trip(tmp_path, make, labels):
    torch.manual_seed(0)
    model = make()
    with torch.no_grad():  # non-trivial weights and BatchNorm statistics
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
        model(torch.randn(4, 1, 8, 8), torch.tensor([1, 2, 3, 4]))
    model.eval()
    schedule = dl.make_schedule("cosine", num_timesteps=T)
    folder = export_pipeline(model, schedule, tmp_path / "ours", prediction="x0", metadata={"steps": 0})
    for name in ("model_config.json", "model.safetensors", "schedule.json", "ddpm_lib.json", "README.md"):
        assert (folder / name).is_file(), name
    info = json.loads((folder / "ddpm_lib.json").read_text())
    assert info["format"] == "ddpm_lib" and info["metadata"] == {"steps": 0}
    assert type(model).__name__ in (folder / "README.md").read_text()
    pre = load_pretrained(folder, device="cpu")
    assert type(pre.model) is type(model) and not pre.model.training
    assert pre.prediction == "x0"
    assert pre.num_classes == model.config.get("num_classes")
    assert_same_outputs(model, pre.model, labels)
    assert_same_schedule(schedule, pre.schedule)


@pytest.mark.parametrize(
    "make",
    [
        lambda: dl.make_schedule("ve", num_timesteps=T, sigma_min=0.01, sigma_max=50.0),
        lambda: dl.make_schedule("simple", num_timesteps=T),
        lambda: dl.resolution_shift(dl.make_schedule("cosine", num_timesteps=T), 32, base_size=8),
        lambda: dl.rescale_zero_terminal_snr(linear_schedule()),
    ],
)
def test_ddpm_lib_folder_keeps_any_schedule(tmp_path, make):
    schedule = make()
    pre = load_pretrained(export_pipeline(BasicUNet(channels=(4, 8, 8)), schedule, tmp_path / "m"))
    assert (pre.schedule.name, pre.schedule.kind, pre.schedule.args) == (
        schedule.name,
        schedule.kind,
        schedule.args,
    )
    assert torch.equal(pre.schedule.betas, schedule.betas)
    t = torch.tensor([0.0, 10.5, T - 2.0])
    assert torch.allclose(pre.schedule.signal_scale(t), schedule.signal_scale(t), rtol=1e-5)
    assert torch.allclose(pre.schedule.noise_scale(t), schedule.noise_scale(t), rtol=1e-5)


def test_export_replaces_an_earlier_export_but_not_other_files(tmp_path):
    schedule = linear_schedule()
    folder = export_pipeline(BasicUNet(channels=(4, 8, 8)), schedule, tmp_path / "m")
    export_pipeline(tiny_diffusers_unet(), schedule, folder)  # same folder, other format
    assert not (folder / "model_config.json").exists()
    assert (folder / "model_index.json").exists()
    other = tmp_path / "notes"
    other.mkdir()
    (other / "todo.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not an exported model"):
        export_pipeline(tiny_diffusers_unet(), schedule, other)
    assert (other / "todo.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m", "notes"]  # no temporary folders left


def test_export_bad_input(tmp_path):
    with pytest.raises(ValueError, match="unknown prediction"):
        export_pipeline(BasicUNet(), linear_schedule(), tmp_path / "a", prediction="epsilon")
    with pytest.raises(ValueError, match="MODELS"):
        export_pipeline(torch.nn.Conv2d(1, 1, 3), linear_schedule(), tmp_path / "b")
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- broken folders


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("exported")
    schedule = linear_schedule()
    return {
        "ours": export_pipeline(BasicUNet(channels=(4, 8, 8)), schedule, root / "ours"),
        "diffusers": export_pipeline(tiny_diffusers_unet(), schedule, root / "diffusers"),
    }


def copy_of(folder, tmp_path):
    import shutil

    return shutil.copytree(folder, tmp_path / folder.name)


@pytest.mark.parametrize(
    "kind,file,damage,error",
    [
        ("ours", "model.safetensors", "delete", FileNotFoundError),
        ("ours", "model.safetensors", "truncate", ValueError),
        ("ours", "model_config.json", "truncate", ValueError),
        ("ours", "schedule.json", "delete", FileNotFoundError),
        ("diffusers", "unet/diffusion_pytorch_model.safetensors", "truncate", ValueError),
        ("diffusers", "unet/diffusion_pytorch_model.safetensors", "delete", FileNotFoundError),
        ("diffusers", "scheduler/scheduler_config.json", "delete", FileNotFoundError),
        ("diffusers", "unet/config.json", "truncate", ValueError),
    ],
)
def test_broken_folder_error_names_the_file(exported, tmp_path, kind, file, damage, error):
    folder = copy_of(exported[kind], tmp_path)
    target = folder / file
    if damage == "delete":
        target.unlink()
    else:
        target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
    with pytest.raises(error, match=target.name):
        load_pretrained(folder)


def test_weights_that_do_not_fit_the_config(exported, tmp_path):
    folder = copy_of(exported["ours"], tmp_path)
    spec = json.loads((folder / "model_config.json").read_text())
    spec["config"]["channels"] = [4, 8, 16]
    (folder / "model_config.json").write_text(json.dumps(spec))
    with pytest.raises(ValueError, match="do not fit"):
        load_pretrained(folder)


def test_not_a_model_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="model_index.json"):
        load_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="no folder at"):
        load_pretrained(tmp_path / "does" / "not" / "exist")


# ----------------------------------------------------------------------------- names and the Hub


def test_bare_name_resolves_to_pretrained_dir(exported, tmp_path, monkeypatch):
    import shutil

    shutil.copytree(exported["diffusers"], tmp_path / "ddpm-mnist")
    (tmp_path / "mnist-classifier").mkdir()  # not a pipeline: not listed
    monkeypatch.setattr(paths, "PRETRAINED_DIR", tmp_path)
    assert list_pretrained() == ["ddpm-mnist"]
    pre = load_pretrained("ddpm-mnist")
    assert pre.pipeline_dir == tmp_path / "ddpm-mnist"
    with pytest.raises(FileNotFoundError, match=r"shipped: \['ddpm-mnist'\]"):
        load_pretrained("ddpm-celeba")


def test_hub_id_offline_is_a_clear_error(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(paths, "PRETRAINED_DIR", tmp_path)
    (tmp_path / "ddpm-mnist").mkdir()
    (tmp_path / "ddpm-mnist" / "model_index.json").write_text("{}")
    with pytest.raises(
        PretrainedUnavailableError, match=r"google/ddpm-celebahq-256.*load_pretrained\('ddpm-mnist'\)"
    ):
        load_pretrained("google/ddpm-celebahq-256")


def test_installed_without_the_repository_is_a_clear_error(tmp_path, monkeypatch):
    """A bare name needs the repository's pretrained/ folder; without it the error says why and what to do."""
    monkeypatch.setattr(paths, "PRETRAINED_DIR", tmp_path / "site-packages" / "pretrained")
    assert list_pretrained() == []
    with pytest.raises(FileNotFoundError, match=r"installed without the book's repository.*pip install -e"):
        load_pretrained("ddpm-mnist")
    with pytest.raises(FileNotFoundError, match=r"installed without the book's repository"):
        dl.evaluate._load_classifier_cached.cache_clear()
        dl.load_mnist_classifier()


# ----------------------------------------------------------------------------- the fast scheduler (chapter 10)


@pytest.mark.parametrize("name,prediction", [("linear", "eps"), ("cosine", "v"), ("linear", "x0")])
def test_exported_pipeline_samples_with_dpm_solver_in_20_steps(tmp_path, name, prediction):
    """The folder carries DPMSolverMultistepScheduler; its 20 steps are dl.sample's dpmpp_2m (trailing)."""
    from diffusers import DiffusionPipeline, DPMSolverMultistepScheduler

    model, schedule = tiny_diffusers_unet(), dl.make_schedule(name)  # T = 1000, as trained
    folder = export_pipeline(model, schedule, tmp_path / "pipe", prediction=prediction)
    index = json.loads((folder / "model_index.json").read_text())
    assert index["scheduler"] == ["diffusers", "DPMSolverMultistepScheduler"]
    for cls in (DDPMPipeline, DiffusionPipeline):
        pipe = cls.from_pretrained(folder)
        assert type(pipe).__name__ == "DDPMPipeline" and isinstance(pipe.scheduler, DPMSolverMultistepScheduler)
    cfg = pipe.scheduler.config
    assert cfg.prediction_type == {"eps": "epsilon", "v": "v_prediction", "x0": "sample"}[prediction]
    assert cfg.algorithm_type == "dpmsolver++" and cfg.solver_order == 2 and cfg.timestep_spacing == "trailing"
    assert_same_schedule(schedule, pipe.scheduler)
    pipe.set_progress_bar_config(disable=True)
    images = pipe(batch_size=2, num_inference_steps=20, output_type="np",
                  generator=torch.Generator().manual_seed(0)).images  # (2, 8, 8, 1) in [0, 1]
    assert len(pipe.scheduler.timesteps) == 20
    ours = dl.sample(model, (2, 1, 8, 8), schedule, sampler="dpmpp_2m", steps=20, spacing="trailing",
                     prediction=prediction, generator=torch.Generator().manual_seed(0))
    ours = (ours / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    assert abs(images - ours).max() < 1e-3, "diffusers' DPM-Solver++ 2M and dl.sample's dpmpp_2m agree"
    pre = load_pretrained(folder)  # ddpm_lib still reads the folder, and the same schedule
    assert pre.prediction == prediction
    assert_same_schedule(schedule, pre.schedule)


def test_dpmsolver_scheduler_zero_terminal_snr_stays_finite():
    schedule = dl.rescale_zero_terminal_snr(dl.make_schedule("linear"))
    scheduler = dl.dpmsolver_scheduler(schedule, "v")
    assert scheduler.config.rescale_betas_zero_snr
    scheduler.set_timesteps(20)
    x = torch.randn(1, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    for t in scheduler.timesteps:
        x = scheduler.step(torch.zeros_like(x), t, x).prev_sample
    assert torch.isfinite(x).all()


def test_class_conditional_export_samples_with_labels_and_guidance(tmp_path):
    """A class-conditional network: dl.load_pretrained + dl.sample(class_labels, guidance_scale) use it."""
    model, schedule = tiny_diffusers_unet(num_classes=3), dl.make_schedule("cosine")
    folder = export_pipeline(model, schedule, tmp_path / "cond", prediction="v",
                             sampling={"sampler": "dpmpp_2m", "steps": 6, "clip_x0": None})
    card = (folder / "README.md").read_text()
    assert "Class-conditional: 3 classes" in card and "guidance_scale=3.0" in card
    assert "DDPMPipeline.from_pretrained" not in card, "DDPMPipeline cannot pass labels; the card must not offer it"
    pre = load_pretrained(folder)
    assert pre.num_classes == 3 and pre.null_class == 3 and pre.sampling["steps"] == 6
    labels = torch.tensor([0, 1, 2])

    def draw(model, **kw):
        return dl.sample(model, (3, 1, 8, 8), pre.schedule, prediction=pre.prediction,
                         generator=torch.Generator().manual_seed(0), **pre.sampling, **kw)

    x_guided = draw(pre.model, class_labels=labels, guidance_scale=3.0)
    assert torch.equal(x_guided, draw(model, class_labels=labels, guidance_scale=3.0)), "same as the original"
    x_plain = draw(pre.model, class_labels=labels)
    x_other = draw(pre.model, class_labels=torch.tensor([2, 0, 1]))
    assert not torch.allclose(x_guided, x_plain) and not torch.allclose(x_plain, x_other), (
        "the labels and the guidance scale change the samples")
    assert torch.isfinite(x_guided).all()


def test_why_trailing_and_not_diffusers_uniform_log_snr():
    """Chapter 10's reason for "trailing": diffusers' use_lu_lambdas repeats timesteps near T (cosine)."""
    scheduler = dl.dpmsolver_scheduler(dl.make_schedule("cosine"), "v", use_lu_lambdas=True)
    scheduler.set_timesteps(20)
    t = scheduler.timesteps.tolist()
    assert t[1:5] == [998] * 4, t
    ours = dl.dpmsolver_scheduler(dl.make_schedule("cosine"), "v")
    ours.set_timesteps(20)
    assert len(set(ours.timesteps.tolist())) == 20
