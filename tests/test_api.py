"""The public surface of ``import ddpm_lib as dl``: pinned, so it cannot grow (or shrink) silently.

Changing it is allowed; the change then shows here, in one reviewed line. DESIGN.md's API
contract and every ``dl.<name>`` that the chapters, the tests and the benchmarks use must stay.
"""

import importlib
import re
from pathlib import Path
from types import ModuleType

import ddpm_lib as dl

ROOT = Path(__file__).resolve().parent.parent

EXPECTED = {
    "DeviceFit", "fit_batch_size", "fit_resolution", "measure_step_memory", "MemorisationCheck", "memorisation_check",
    "nearest_neighbours", "Neighbours", "dpmsolver_scheduler", "delete_run", "run_dir", "RunNotOursError",
    "runs_dir",
    "PRESETS", "Preset", "get_preset", "preset_model",
    "ConsistencyConfig", "ConsistencyModel", "consistency_scalings", "distill_consistency", "DistillationResult",
    "ode_step", "sample_consistency",
    "BasicUNet", "CheckpointError", "ClassBalance", "DEFAULT_CLIP_X0", "DEFAULT_SPACING", "DataReport",
    "GUIDED_DEFAULTS", "DEFAULT_GUIDANCE_INTERVAL", "guided_levels", "guided_nfe",
    "DatasetUnavailableError", "DiT", "EDMDenoiser", "EMA", "ExactDenoiser", "GaussianMixture",
    "ImageDataset", "InceptionUnavailableError", "MIXTURES_2D", "MNISTClassifier", "MODELS",
    "MetricResult", "NoiseLevels", "NoiseSchedule", "NonFiniteLossError", "PREDICTIONS", "Pretrained",
    "PretrainedUnavailableError", "SAMPLERS", "SCHEDULES", "SPACINGS", "SelfAttention2d", "TrainConfig",
    "TrainHistory", "Trainer", "TrajectoryRecorder", "UNet", "add_noise", "animate_sampling",
    "build_model", "call_model", "class_balance", "classifier_features", "classify", "confident_fraction",
    "count_parameters", "ddpm_scheduler", "diffusers_unet", "diffusion_loss", "domain_fd",
    "edm_loss_weight", "edm_preconditioning", "edm_sample_sigmas", "edm_target", "eps_to_score",
    "eps_to_v", "eps_to_x0", "export_pipeline", "fd_by_sample_size", "feature_diversity",
    "feature_statistics", "fid", "find_checkpoints", "focused_sigmas", "forward_chain", "forward_flops",
    "frechet_distance", "frechet_distance_from_features", "image_features", "images_from_dataset",
    "inception_status", "jpeg_roundtrip", "karras_sigmas", "kid", "kid_score", "latest_checkpoint",
    "list_pretrained", "load_checkpoint", "load_images", "load_mnist_classifier", "load_pretrained",
    "log_snr_sigmas", "loss_weight", "make_2d_mixture", "make_denoiser", "make_grid_image",
    "make_mixture", "make_schedule", "make_target", "model_config", "nfe", "noise_levels",
    "null_class_of", "plot_loss", "plot_schedule", "posterior_mean_coef1", "posterior_mean_coef2",
    "posterior_variance", "q_posterior", "q_step", "rescale_zero_terminal_snr", "resolution_shift",
    "sample", "sample_ddim", "sample_ddpm", "sample_dpmpp_2m", "sample_euler", "sample_euler_ancestral",
    "sample_heun", "sample_langevin", "sample_pc", "sample_unipc", "save_checkpoint", "scale_input",
    "schedule_from_diffusers", "score_to_eps", "shift_log_snr", "show_images", "sigma_to_t",
    "sliced_wasserstein", "split_prediction", "timestep_embedding", "timesteps", "v_to_eps", "v_to_x0",
    "x0_eps_to_v", "x0_to_eps", "x0_to_v", "x0_weight_of",
}

# The modules whose ``__all__`` together make up ``dl``; their __all__ lists are the API reference.
MODULES = ("schedules", "forward", "targets", "losses", "modelcall", "models", "samplers", "toy",
           "consistency", "data", "train", "checkpoint", "evaluate", "presets", "pipelines", "viz", "fit")
# Modules of which dl holds only some names (the rest are the library's own plumbing).
PARTLY = {"paths": ("delete_run", "run_dir", "RunNotOursError", "runs_dir")}

# DESIGN.md's public API (the contract chapters, tests and benchmarks rely on).
DESIGN = {"make_schedule", "schedule_from_diffusers", "add_noise", "q_posterior", "make_target", "split_prediction",
          "diffusion_loss", "sample", "TrainConfig", "Trainer", "export_pipeline", "load_images", "show_images",
          "plot_schedule", "NoiseSchedule", "rescale_zero_terminal_snr", "BasicUNet", "UNet", "DiT", "call_model",
          "GaussianMixture", "EMA", "frechet_distance", "fid", "kid", "load_pretrained", "plot_loss",
          "animate_sampling", "EDMDenoiser", "SAMPLERS", "SCHEDULES", "PREDICTIONS"}


def test_dl_all_is_the_pinned_list():
    assert len(dl.__all__) == len(set(dl.__all__))
    assert set(dl.__all__) == EXPECTED, (
        f"added: {sorted(set(dl.__all__) - EXPECTED)}, removed: {sorted(EXPECTED - set(dl.__all__))}"
    )


def test_nothing_public_outside_all():
    """Every public attribute of dl is in __all__, or is one of its submodules."""
    extra = [n for n in dir(dl) if not n.startswith("_") and n not in dl.__all__
             and not isinstance(getattr(dl, n), ModuleType)]
    assert extra == []


def test_every_name_resolves_and_modules_agree():
    union = set()
    for m in MODULES:
        module = importlib.import_module(f"ddpm_lib.{m}")
        assert len(module.__all__) == len(set(module.__all__)), m
        for name in module.__all__:
            assert getattr(dl, name) is getattr(module, name), f"dl.{name} is not ddpm_lib.{m}.{name}"
        union |= set(module.__all__)
    for m, names in PARTLY.items():
        module = importlib.import_module(f"ddpm_lib.{m}")
        for name in names:
            assert name in module.__all__ and getattr(dl, name) is getattr(module, name), name
        union |= set(names)
    assert union == set(dl.__all__)


def test_design_contract_and_every_used_name_exist():
    used = set()
    for path in [*ROOT.glob("notebooks/*.ipynb"), *ROOT.glob("book/*.ipynb"), *ROOT.glob("tests/*.py"),
                 *ROOT.glob("benchmarks/*.py"), *ROOT.glob("tools/*.py")]:
        used |= set(re.findall(r"\bdl\.([A-Za-z_][A-Za-z0-9_]*)", path.read_text()))
    missing = sorted(n for n in (used | DESIGN) if not hasattr(dl, n))
    assert missing == []
    assert DESIGN <= set(dl.__all__)


def test_one_predictions_tuple():
    """The parameterisations are named once (targets); every module checks against that tuple."""
    from ddpm_lib import samplers, targets, toy, train

    assert dl.PREDICTIONS == ("eps", "x0", "v", "edm")
    for module in (samplers, toy, train):
        assert module.PREDICTIONS is targets.PREDICTIONS
    defined = [p.name for p in (ROOT / "ddpm_lib").rglob("*.py")
               if re.search(r"^PREDICTIONS\s*=", p.read_text(), re.M)]
    assert defined == ["targets.py"]


def test_no_duplicated_model_helpers():
    """_unwrap / image shape / num classes / atomic JSON live once (models.registry, paths)."""
    for path in (ROOT / "ddpm_lib").rglob("*.py"):
        text = path.read_text()
        for helper in ("def _unwrap", "def _write_json", "def _image_shape", "def _model_image_shape",
                       "def _model_num_classes", "def schedule_scales"):
            assert helper not in text, f"{path.name} defines {helper} again"
    samplers = (ROOT / "ddpm_lib" / "samplers.py").read_text()
    assert "from .toy" not in samplers and "import toy" not in samplers
