"""Save a trained model to a folder and load it back (chapters 1 and 10).

Two folder formats, chosen by the network:

* a diffusers ``UNet2DModel`` is written as a diffusers ``DDPMPipeline`` folder
  (``model_index.json``, ``unet/``, ``scheduler/``), which
  ``diffusers.DDPMPipeline.from_pretrained(folder)`` loads as it is. Its scheduler
  is the fast one the book recommends (chapter 7): a ``DPMSolverMultistepScheduler``
  (DPM-Solver++ 2M, trailing timesteps, first order into sigma = 0), the same
  update as ``dl.sample(..., sampler="dpmpp_2m")``, so 20 steps are enough; its
  config reproduces the noise schedule exactly (a named ``beta_schedule`` where
  one matches, otherwise ``trained_betas``). A class-conditional UNet2DModel is
  written the same way, but diffusers' DDPMPipeline has no way to pass labels:
  sample it with ``dl.load_pretrained`` and ``dl.sample(..., class_labels=...,
  guidance_scale=...)`` (its model card says so);
* our own networks (``UNet``, ``DiT``, ``BasicUNet``) are written as a ddpm_lib
  folder: ``model_config.json`` (class name and constructor arguments),
  ``model.safetensors`` (the weights), ``schedule.json`` (the betas, plus the
  schedule's name and arguments where known). So is an EDM network
  (``prediction="edm"``, any of the above): a ``DDPMScheduler`` has no way to say
  that the network is F of D = c_skip x + c_out F(c_in x; c_noise), so only
  ddpm_lib (``dl.sample(..., prediction="edm")``) samples it correctly.

Both folders also hold ``ddpm_lib.json`` (format, prediction type, versions, any
metadata) and a ``README.md`` model card. ``load_pretrained`` reads either kind,
a bare name from the repository's ``pretrained/`` folder, or a Hugging Face Hub id.
Weights are read with safetensors only for local folders, and no remote code is
ever run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from .models import build_model, count_parameters, model_config
from .modelcall import null_class_of
from .models.registry import model_image_shape, model_num_classes, unwrap_model
from .paths import pretrained_dir, write_json

__all__ = [
    "Pretrained",
    "PretrainedUnavailableError",
    "ddpm_scheduler",
    "dpmsolver_scheduler",
    "export_pipeline",
    "list_pretrained",
    "load_pretrained",
]

# Our prediction names -> DDPMScheduler's ``prediction_type``.
PREDICTION_TO_DIFFUSERS = {"eps": "epsilon", "x0": "sample", "v": "v_prediction"}
_PREDICTION_FROM_DIFFUSERS = {v: k for k, v in PREDICTION_TO_DIFFUSERS.items()}
# What a ddpm_lib folder can hold: the above, and EDM's F (Karras et al. 2022; targets.EDMDenoiser).
_DDPM_LIB_PREDICTIONS = (*PREDICTION_TO_DIFFUSERS, "edm")

_DIFFUSERS_FILES = ("model_index.json", "unet/config.json", "scheduler/scheduler_config.json")
_DIFFUSERS_WEIGHTS = "unet/diffusion_pytorch_model.safetensors"
_DDPM_LIB_FILES = ("model_config.json", "schedule.json", "model.safetensors")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")  # "owner/name"


class PretrainedUnavailableError(OSError):
    """A Hub model that cannot be downloaded (offline, unknown id, no access)."""


class Pretrained(NamedTuple):
    """A loaded model: ``model, schedule, prediction, pipeline_dir = dl.load_pretrained(...)``."""

    model: nn.Module  # in eval mode, on the requested device
    schedule: Any  # a ddpm_lib NoiseSchedule
    prediction: str  # "eps" | "x0" | "v" | "edm"
    pipeline_dir: Path | str  # the local folder, or the Hub id it came from

    @property
    def image_shape(self) -> tuple[int, int, int] | None:
        """(C, H, W) the network was built for, or None when it takes any size (BasicUNet)."""
        shape = model_image_shape(self.model)
        return None if None in shape else shape

    @property
    def num_classes(self) -> int | None:
        """K for a class-conditional model (labels 0..K-1, K = the null class), else None."""
        return model_num_classes(self.model)

    @property
    def null_class(self) -> int | None:
        """The class index meaning "no label" (K) for classifier-free guidance, else None.

        ``dl.sample(pre.model, ..., class_labels=y, guidance_scale=w)`` finds it by itself."""
        return null_class_of(self.model)

    @property
    def sampling(self) -> dict[str, Any]:
        """The sampler settings recorded at export (``sampler``, ``steps``, ``clip_x0``), else dl.sample's.

        ``dl.sample(pre.model, shape, pre.schedule, prediction=pre.prediction, **pre.sampling)``
        samples the model the way its recipe was measured (``benchmarks/quality.py``)."""
        from .samplers import DEFAULT_CLIP_X0

        recorded = {}
        info = Path(self.pipeline_dir) / "ddpm_lib.json"
        if info.is_file():
            recorded = json.loads(info.read_text()).get("sampling") or {}
        return {"sampler": "dpmpp_2m", "steps": 20, "clip_x0": DEFAULT_CLIP_X0, **recorded}


# --------------------------------------------------------------------------- schedules


def _diffusers_beta_schedules(betas: torch.Tensor) -> list[dict[str, Any]]:
    """Candidate DDPMScheduler configs that might reproduce ``betas`` (checked by the caller)."""
    b0, bT = (float(f"{float(b):.6g}") for b in (betas[0], betas[-1]))
    return [
        {"beta_schedule": "linear", "beta_start": b0, "beta_end": bT},
        {"beta_schedule": "scaled_linear", "beta_start": b0, "beta_end": bT},
        {"beta_schedule": "squaredcos_cap_v2"},
    ]


def _schedule_betas(schedule) -> torch.Tensor:
    betas = getattr(schedule, "betas", None)
    if betas is None:
        raise ValueError(
            f"a {type(schedule).__name__} has no betas; pass a ddpm_lib NoiseSchedule "
            "(e.g. dl.make_schedule('cosine')) or a diffusers DDPMScheduler."
        )
    return torch.as_tensor(betas).detach().cpu().float()


def ddpm_scheduler(schedule, prediction: str = "eps", **kwargs: Any):
    """A diffusers ``DDPMScheduler`` with exactly the betas of ``schedule`` (chapters 1 and 10).

    Uses the matching named ``beta_schedule`` ("linear", "scaled_linear",
    "squaredcos_cap_v2") when it reproduces the betas, so the saved config stays
    readable; otherwise passes the betas themselves as ``trained_betas``.
    Extra keyword arguments (``clip_sample``, ``variance_type`` ...) go to the scheduler.
    """
    from diffusers import DDPMScheduler

    _check_prediction(prediction)
    kind = getattr(schedule, "kind", "vp")
    if kind != "vp":
        raise ValueError(
            f"a DDPMScheduler describes a variance-preserving process, but this schedule is of kind "
            f"{kind!r}; use a 'vp' schedule (linear, cosine ...) for a diffusers pipeline, or export one "
            "of ddpm_lib's own networks (UNet, DiT), whose folder keeps any kind of schedule."
        )
    betas = _schedule_betas(schedule)  # (T,)
    common = {
        "num_train_timesteps": len(betas),
        "prediction_type": PREDICTION_TO_DIFFUSERS[prediction],
        **kwargs,
    }
    for named in _diffusers_beta_schedules(betas):
        candidate = DDPMScheduler(**named, **common)
        if torch.allclose(candidate.betas.float(), betas, rtol=1e-5, atol=1e-9):
            return candidate
    return DDPMScheduler(trained_betas=betas.tolist(), **common)


def dpmsolver_scheduler(schedule, prediction: str = "eps", **kwargs: Any):
    """A diffusers ``DPMSolverMultistepScheduler`` for ``schedule``: the sampler exported pipelines carry.

    DPM-Solver++ (2M) on "trailing" timesteps, first order on the last step into
    sigma = 0: the same update and grid as ``dl.sample(..., sampler="dpmpp_2m")``
    (chapter 7), which is close to 1,000 DDPM steps at 20-25 steps. The betas are
    exactly those of ``schedule`` (as in ``ddpm_scheduler``); a zero-terminal-SNR
    schedule sets ``rescale_betas_zero_snr`` so that the last step stays finite.
    Not the uniform log-SNR grid (``use_lu_lambdas``), which dl.sample's dpmpp_2m uses by
    default: diffusers rounds it to integer timesteps, and with the cosine schedule it then
    repeats t = 998 four times at the start. Extra keyword arguments go to the scheduler
    (e.g. ``solver_order=3``).
    """
    from diffusers import DPMSolverMultistepScheduler

    ddpm = ddpm_scheduler(schedule, prediction)  # checks prediction and kind, matches the betas
    named = {k: ddpm.config[k] for k in ("beta_schedule", "beta_start", "beta_end")}
    betas = None if ddpm.config.trained_betas is None else list(ddpm.config.trained_betas)
    zero_terminal = float(ddpm.alphas_cumprod[-1]) == 0.0
    return DPMSolverMultistepScheduler(
        num_train_timesteps=ddpm.config.num_train_timesteps,
        trained_betas=betas,
        prediction_type=ddpm.config.prediction_type,
        **named,
        **{"algorithm_type": "dpmsolver++", "solver_order": 2, "timestep_spacing": "trailing",
           "final_sigmas_type": "zero", "rescale_betas_zero_snr": zero_terminal, **kwargs},
    )


def _schedule_to_dict(schedule) -> dict[str, Any]:
    """schedule.json: name, arguments and kind, plus the betas and log-SNR that define it exactly."""
    betas = _schedule_betas(schedule)
    return {
        "name": getattr(schedule, "name", "custom"),
        "args": dict(getattr(schedule, "args", None) or {}),
        "kind": getattr(schedule, "kind", "vp"),
        "num_timesteps": len(betas),
        "betas": betas.tolist(),  # float32 values, as the schedule holds them
        "log_snr": torch.as_tensor(schedule.log_snrs).double().tolist()
        if hasattr(schedule, "log_snrs")
        else None,
    }


def _schedule_from_dict(d: dict[str, Any], file: Path):
    """Rebuild a schedule from schedule.json: by name when that reproduces the stored betas exactly."""
    from .schedules import SCHEDULES, NoiseSchedule, make_schedule

    if not isinstance(d.get("betas"), list) or not d["betas"]:
        raise ValueError(
            f"{file} has no 'betas' list; it is corrupt: re-export the model with dl.export_pipeline."
        )
    betas, name, args, kind = (
        torch.tensor(d["betas"]),
        d.get("name", "custom"),
        d.get("args") or {},
        d.get("kind", "vp"),
    )
    if name in SCHEDULES:
        try:
            schedule = make_schedule(name, **args)
            if torch.equal(schedule.betas.float(), betas):
                return schedule
        except (TypeError, ValueError):
            pass  # the named schedule changed since export: the stored arrays are the truth
    if kind == "vp" or d.get("log_snr") is None:
        return NoiseSchedule(betas, name=name, args=args)
    return NoiseSchedule.from_log_snr(d["log_snr"], kind=kind, name=name, args=args)


# --------------------------------------------------------------------------- export


def _check_prediction(prediction: str, allowed: tuple[str, ...] = tuple(PREDICTION_TO_DIFFUSERS)) -> None:
    if prediction not in allowed:
        raise ValueError(f"unknown prediction {prediction!r}; choose one of {list(allowed)}.")


def _is_diffusers_unet(model: nn.Module) -> bool:
    return type(model).__name__ == "UNet2DModel" and type(model).__module__.startswith("diffusers")


def _write_diffusers(model: nn.Module, schedule, folder: Path, prediction: str) -> None:
    from diffusers import DDPMPipeline

    pipe = DDPMPipeline(unet=model, scheduler=dpmsolver_scheduler(schedule, prediction))
    pipe.save_pretrained(folder, safe_serialization=True)


def _write_ddpm_lib(model: nn.Module, schedule, folder: Path, prediction: str) -> None:
    from safetensors.torch import save_file

    write_json(folder / "model_config.json", model_config(model))
    save_file(
        {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
        folder / "model.safetensors",
    )
    write_json(folder / "schedule.json", _schedule_to_dict(schedule))


def _model_card(
    model: nn.Module, schedule, folder_name: str, fmt: str, prediction: str, card: str | None
) -> str:
    import ddpm_lib

    betas = _schedule_betas(schedule)
    name = getattr(schedule, "name", None) or "custom betas"
    shape = model_image_shape(model)
    shape_text = "x".join(map(str, shape)) if None not in shape else "any size that is a multiple of 4"
    k = model_num_classes(model)
    diffusers_ok = fmt == "diffusers" and k is None  # DDPMPipeline cannot pass class labels
    load = (
        "from diffusers import DDPMPipeline\n"
        f'pipe = DDPMPipeline.from_pretrained("{folder_name}")  # carries a DPMSolverMultistepScheduler\n'
        "images = pipe(batch_size=4, num_inference_steps=20).images\n"
        if diffusers_ok
        else ""
    )
    draw = (
        "x = dl.sample(pre.model, shape=(16, *pre.image_shape), schedule=pre.schedule, "
        "prediction=pre.prediction, **pre.sampling)"
    )
    if k is not None:
        draw = (
            f"labels = torch.arange(16) % {k}  # classes 0..{k - 1}; {k} is the null class\n"
            "x = dl.sample(pre.model, shape=(16, *pre.image_shape), schedule=pre.schedule, "
            "prediction=pre.prediction,\n              class_labels=labels, guidance_scale=3.0, "
            "**pre.sampling)"
        )
    conditional = (
        [f"Class-conditional: {k} classes (labels 0 to {k - 1}) and the null class {k}, which classifier-free "
         "guidance uses. diffusers' `DDPMPipeline` cannot pass labels, so sample it with ddpm_lib as below.", ""]
        if k is not None else []
    )
    lines = [
        f"# {folder_name}",
        "",
        f'A denoising diffusion model exported by ddpm_lib {ddpm_lib.__version__} ("Diffusion Models, Step by Step").',
        "",
        "| | |",
        "|---|---|",
        f"| format | {'diffusers DDPMPipeline' if fmt == 'diffusers' else 'ddpm_lib folder'} |",
        f"| network | {type(model).__name__}, {count_parameters(model):,} parameters |",
        f"| image shape (C x H x W) | {shape_text} |",
        f"| noise schedule | {name} ({getattr(schedule, 'kind', 'vp')}), T = {len(betas)}, beta from {betas[0]:.3g} to {betas[-1]:.3g} |",
        f"| prediction | {prediction} |",
        f"| classes | {k if k is not None else 'none (unconditional)'} |",
        "",
        *conditional,
        "## Load it",
        "",
        "```python",
        "import torch",
        "import ddpm_lib as dl",
        f'pre = dl.load_pretrained("{folder_name}")  # a name in pretrained/, or the path of this folder',
        draw,
        load + "```",
        "",
    ]
    if card:
        lines += [card.strip(), ""]
    return "\n".join(lines)


def _replace_folder(new: Path, path: Path) -> None:
    """Move the finished folder ``new`` to ``path``, replacing an earlier export there."""
    if path.exists():
        if not path.is_dir():
            raise FileExistsError(f"{path} is a file; export_pipeline needs a folder path.")
        earlier_export = (path / "ddpm_lib.json").exists() or (path / "model_index.json").exists()
        if any(path.iterdir()) and not earlier_export:
            raise FileExistsError(
                f"{path} already holds files that are not an exported model; "
                "choose a new or empty folder so nothing of yours is overwritten."
            )
        old = path.with_name(f".{path.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
        os.replace(new, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(new, path)


def export_pipeline(
    model: nn.Module,
    schedule,
    path: str | os.PathLike,
    prediction: str = "eps",
    card: str | None = None,
    metadata: dict[str, Any] | None = None,
    sampling: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` and ``schedule`` to the folder ``path``; return the folder (chapters 2 and 10).

    ``schedule`` is a ddpm_lib ``NoiseSchedule`` or a diffusers ``DDPMScheduler``;
    ``prediction`` ("eps", "x0", "v" or "edm") is what the network outputs.

    A diffusers ``UNet2DModel`` becomes a ``DDPMPipeline`` folder; ``UNet``,
    ``DiT`` and ``BasicUNet``, and every "edm" network, become a ddpm_lib folder
    (see the module docstring).
    ``sampling`` (``sampler``, ``steps``, ``clip_x0``: dl.sample's arguments) records how
    the model is meant to be sampled; ``load_pretrained(path).sampling`` returns it.
    ``card`` is markdown appended to the README.md model card (say how the model
    was trained); ``metadata`` (JSON-serialisable) is stored in ``ddpm_lib.json``.
    The folder is written next to ``path`` and then moved in place, so an earlier
    export at ``path`` is replaced whole, never half-overwritten.
    """
    import ddpm_lib

    _check_prediction(prediction, _DDPM_LIB_PREDICTIONS)
    model = unwrap_model(model)
    fmt = "diffusers" if _is_diffusers_unet(model) and prediction in PREDICTION_TO_DIFFUSERS else "ddpm_lib"
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        (_write_diffusers if fmt == "diffusers" else _write_ddpm_lib)(model, schedule, tmp, prediction)
        info = {
            "format": fmt,
            "prediction": prediction,
            "ddpm_lib_version": ddpm_lib.__version__,
            "torch_version": torch.__version__,
            "metadata": metadata or {},
            "sampling": sampling or {},
        }
        write_json(tmp / "ddpm_lib.json", info)
        (tmp / "README.md").write_text(_model_card(model, schedule, path.name, fmt, prediction, card))
        _replace_folder(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


# --------------------------------------------------------------------------- load


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing; the folder {path.parent} is not a complete exported model."
        )
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e}); the file is corrupt: re-export the model.") from e


def _check_safetensors(path: Path) -> None:
    """Raise a clear error unless ``path`` is a readable safetensors file."""
    from safetensors import safe_open

    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing; the folder {path.parent} is not a complete exported model."
        )
    try:
        with safe_open(str(path), framework="pt"):
            pass  # opening checks the header and that the data covers the whole file
    except Exception as e:  # SafetensorError, OSError, ...
        raise ValueError(
            f"{path} is not a readable safetensors file ({e}); it is corrupt or truncated: re-export the model."
        ) from e


def _load_diffusers_folder(folder: Path, device: torch.device) -> Pretrained:
    from diffusers import DDPMScheduler, UNet2DModel

    for name in _DIFFUSERS_FILES:
        _read_json(folder / name)
    _check_safetensors(folder / _DIFFUSERS_WEIGHTS)
    try:
        unet = UNet2DModel.from_pretrained(folder, subfolder="unet", use_safetensors=True)
    except Exception as e:
        raise ValueError(f"could not load the network from {folder / 'unet'}: {e}") from e
    scheduler = DDPMScheduler.from_pretrained(folder, subfolder="scheduler")
    return _pretrained_from_diffusers(unet, scheduler, folder, device)


def _pretrained_from_diffusers(
    unet: nn.Module, scheduler, source: Path | str, device: torch.device
) -> Pretrained:
    from .schedules import schedule_from_diffusers

    prediction = _PREDICTION_FROM_DIFFUSERS.get(scheduler.config.prediction_type)
    if prediction is None:
        raise ValueError(f"{source}: unsupported prediction_type {scheduler.config.prediction_type!r}.")
    return Pretrained(unet.to(device).eval(), schedule_from_diffusers(scheduler), prediction, source)


def _load_ddpm_lib_folder(folder: Path, device: torch.device) -> Pretrained:
    from safetensors.torch import load_file

    spec_file, schedule_file, weights_file = (folder / name for name in _DDPM_LIB_FILES)
    spec = _read_json(spec_file)
    schedule = _schedule_from_dict(_read_json(schedule_file), schedule_file)
    info = _read_json(folder / "ddpm_lib.json")
    _check_prediction(info.get("prediction"), _DDPM_LIB_PREDICTIONS)
    try:
        model = build_model(spec)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{spec_file} does not describe a model ddpm_lib can build: {e}") from e
    _check_safetensors(weights_file)
    try:
        model.load_state_dict(load_file(str(weights_file)))
    except RuntimeError as e:
        raise ValueError(f"the weights in {weights_file} do not fit the model in {spec_file}: {e}") from e
    return Pretrained(model.to(device).eval(), schedule, info["prediction"], folder)


def _is_pipeline_folder(folder: Path) -> bool:
    return (folder / "model_index.json").exists() or (folder / "model_config.json").exists()


def list_pretrained() -> list[str]:
    """Names of the models shipped in the repository's ``pretrained/`` folder (chapter 1); [] without it."""
    try:
        root = pretrained_dir()
    except FileNotFoundError:  # installed without the repository: nothing ships
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and _is_pipeline_folder(p))


def _load_folder(folder: Path, device: torch.device) -> Pretrained:
    if (folder / "model_index.json").exists():
        return _load_diffusers_folder(folder, device)
    if (folder / "model_config.json").exists():
        return _load_ddpm_lib_folder(folder, device)
    raise FileNotFoundError(
        f"{folder} holds neither model_index.json (a diffusers DDPMPipeline folder) nor "
        "model_config.json (a ddpm_lib folder); write one with dl.export_pipeline."
    )


def _load_hub(repo_id: str, device: torch.device) -> Pretrained:
    from diffusers import DDPMPipeline

    try:
        pipe = DDPMPipeline.from_pretrained(repo_id)  # never custom or remote code
    except Exception as e:  # OSError, connection errors, LocalEntryNotFoundError, ...
        shipped = sorted(list_pretrained(), key=lambda name: not name.startswith("ddpm-mnist"))
        instead = (
            f"use a model that ships with the book: dl.load_pretrained({shipped[0]!r}) (shipped: {shipped})"
            if shipped
            else "pass the folder of a model you exported with dl.export_pipeline (pretrained/ holds none)"
        )
        raise PretrainedUnavailableError(
            f"could not load {repo_id!r} from the Hugging Face Hub, and there is no local folder of that "
            f"name. Offline, {instead}; online, check the id and your access to it. "
            f"({type(e).__name__}: {str(e)[:300]})"
        ) from e
    return _pretrained_from_diffusers(pipe.unet, pipe.scheduler, repo_id, device)


def load_pretrained(name_or_path: str | os.PathLike, device: torch.device | str | None = None) -> Pretrained:
    """Load an exported model: a folder, a name in ``pretrained/``, or a Hub id (chapter 1).

    ``"ddpm-mnist"`` (no slash) is looked up in the repository's ``pretrained/``
    folder; an existing path is read as a folder of either format; ``"owner/name"``
    that is not a local folder goes to ``DDPMPipeline.from_pretrained`` (the Hub).
    Returns ``Pretrained(model, schedule, prediction, pipeline_dir)``; the model is
    in eval mode on ``device`` (default: CPU). Missing or corrupt files raise an
    error that names the file; an unreachable Hub raises PretrainedUnavailableError.
    """
    device = torch.device(device or "cpu")
    text = os.fspath(name_or_path)
    path = Path(text).expanduser()
    if path.is_dir():
        return _load_folder(path, device)
    if path.exists():
        raise NotADirectoryError(
            f"{path} is a file; load_pretrained needs the folder that export_pipeline wrote."
        )
    if "/" not in text and "\\" not in text and not text.startswith("."):
        folder = pretrained_dir(text)  # a clear error when the package has no repository around it
        if folder.is_dir():
            return _load_folder(folder, device)
        raise FileNotFoundError(
            f"no pretrained model named {text!r} in {folder.parent}; shipped: {list_pretrained()}. "
            "Pass a folder path, or a Hub id such as 'google/ddpm-celebahq-256'."
        )
    if _HUB_ID.match(text):
        return _load_hub(text, device)
    raise FileNotFoundError(f"no folder at {path}; pass the folder that dl.export_pipeline wrote.")
