"""ddpm_lib: the small library behind *Diffusion Models, Step by Step*.

Every chapter notebook does ``import ddpm_lib as dl``. The modules follow the
chapters in order (see ``DESIGN.md`` in the repository):

========================  =====================================================
``dl.schedules``          noise schedules (chapter 3)
``dl.forward``            the forward process q(x_t | x_0) and its posterior (ch. 4)
``dl.targets``            eps / x0 / v targets, conversions, weightings, EDM (ch. 6)
``dl.losses``             ``diffusion_loss`` (chapters 2 and 6)
``dl.models``             ``BasicUNet``, ``UNet``, ``DiT`` (chapter 5)
``dl.samplers``           ``sample`` and every sampler (chapters 4 and 7)
``dl.toy``                Gaussian mixtures with exact scores (chapters 4 and 7)
``dl.consistency``        consistency models and consistency distillation (ch. 7)
``dl.data``               ``load_images`` (chapters 2 and 10)
``dl.train``              ``TrainConfig`` and ``Trainer`` (chapters 2 and 10)
``dl.checkpoint``         checkpoint files, resume checks, the run lock (ch. 10)
``dl.evaluate``           Frechet distance, FID/KID, the MNIST classifier (ch. 9)
``dl.pipelines``          diffusers export and ``load_pretrained`` (chapters 1, 10)
``dl.fit``                batch size that fits the device, by a trial step (ch. 10)
``dl.paths``              where runs live (Drive on Colab), ``run_dir``, ``delete_run``
``dl.viz``                plots and animations (every chapter)
``dl.widgets``            ipywidgets explorers (chapter 3; imported lazily)
``dl.book``               ``setup(chapter)``: profile, device, seed and sizes
========================  =====================================================
"""

from importlib import import_module as _import_module
from types import ModuleType as _ModuleType

# The public API, module by module: each module's ``__all__``, named here one by one so
# that what ``dl`` holds can be read in one place (tests/test_api.py pins the list).
from . import book
from .schedules import (
    SCHEDULES, make_schedule, NoiseSchedule, rescale_zero_terminal_snr, resolution_shift, scale_input,
    schedule_from_diffusers, shift_log_snr,
)
from .forward import (
    add_noise, forward_chain, posterior_mean_coef1, posterior_mean_coef2, posterior_variance, q_posterior,
    q_step,
)
from .targets import (
    PREDICTIONS, edm_loss_weight, edm_preconditioning, edm_sample_sigmas, edm_target, EDMDenoiser,
    eps_to_score, eps_to_v, eps_to_x0, loss_weight, make_target, score_to_eps, split_prediction, v_to_eps,
    v_to_x0, x0_eps_to_v, x0_to_eps, x0_to_v, x0_weight_of,
)
from .losses import diffusion_loss
from .modelcall import call_model, null_class_of
from .models import (
    MODELS, BasicUNet, build_model, count_parameters, diffusers_unet, DiT, forward_flops, model_config,
    SelfAttention2d, timestep_embedding, UNet,
)
from .samplers import (
    DEFAULT_CLIP_X0, DEFAULT_GUIDANCE_INTERVAL, DEFAULT_SPACING, GUIDED_DEFAULTS, SAMPLERS, SPACINGS,
    focused_sigmas, guided_levels, guided_nfe, karras_sigmas, log_snr_sigmas, make_denoiser, nfe, noise_levels,
    NoiseLevels, sample, sample_ddim, sample_ddpm, sample_dpmpp_2m, sample_euler, sample_euler_ancestral,
    sample_heun, sample_langevin, sample_pc, sample_unipc, sigma_to_t, timesteps,
)
from .toy import MIXTURES_2D, ExactDenoiser, GaussianMixture, make_2d_mixture, make_mixture
from .consistency import (
    ConsistencyConfig, ConsistencyModel, consistency_scalings, distill_consistency, DistillationResult, ode_step,
    sample_consistency,
)
from .data import DataReport, DatasetUnavailableError, ImageDataset, images_from_dataset, load_images
from .train import EMA, NonFiniteLossError, TrainConfig, Trainer, TrainHistory
from .checkpoint import CheckpointError, find_checkpoints, latest_checkpoint, load_checkpoint, save_checkpoint
from .presets import PRESETS, Preset, get_preset, preset_model
from .evaluate import (
    class_balance, ClassBalance, classifier_features, classify, confident_fraction, domain_fd,
    fd_by_sample_size, feature_diversity, feature_statistics, fid, frechet_distance,
    frechet_distance_from_features, image_features, inception_status, InceptionUnavailableError,
    jpeg_roundtrip, kid, kid_score, load_mnist_classifier, MetricResult, MNISTClassifier,
    sliced_wasserstein,
)
from .evaluate import memorisation_check, MemorisationCheck, nearest_neighbours, Neighbours
from .fit import DeviceFit, fit_batch_size, fit_resolution, measure_step_memory
from .paths import delete_run, run_dir, RunNotOursError, runs_dir
from .pipelines import (
    ddpm_scheduler, dpmsolver_scheduler, export_pipeline, list_pretrained, load_pretrained, Pretrained,
    PretrainedUnavailableError,
)
from .viz import animate_sampling, make_grid_image, plot_loss, plot_schedule, show_images, TrajectoryRecorder

__all__ = sorted(n for n, v in globals().items() if not n.startswith("_") and not isinstance(v, _ModuleType))

__version__ = "0.1.0"


def __getattr__(name: str):
    # ``dl.widgets`` needs ipywidgets; import it only when a notebook asks for it.
    if name == "widgets":
        return _import_module(".widgets", __name__)
    raise AttributeError(f"module 'ddpm_lib' has no attribute {name!r}")
