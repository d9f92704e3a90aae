"""Interactive explorers for notebooks (ipywidgets). Chapter 3.

``dl.widgets`` is imported only when a notebook asks for it, so the rest of the
library works without ipywidgets or a running notebook.

* :func:`schedule_explorer`: live controls for a noise schedule (type, β_start,
  β_end, T, resolution shift, input scale) driving the noised images at several t
  and the signal, noise and log-SNR curves. Needs a kernel (Jupyter or Colab).
* :func:`schedule_explorer_static`: the same picture pre-rendered for a few settings
  as a slider animation, which is what the rendered book shows without a kernel.
* :func:`explorer_state`: the computation behind both, a pure function.

Notation: ᾱ_t = alpha_bar; λ_t = log SNR(t) = log(ᾱ_t / (1 - ᾱ_t)); x_t = √ᾱ_t x_0 + √(1 - ᾱ_t) ε;
t is a 0-based index in [0, T-1].
"""

from __future__ import annotations

import inspect
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

from . import schedules as _schedules
from .viz import _to_display_arrays, plot_schedule, render_animation

__all__ = [
    "ExplorerState",
    "ScheduleExplorer",
    "draw_explorer",
    "explorer_state",
    "schedule_explorer",
    "schedule_explorer_static",
]

REFERENCE_T = 1000  # the ``timesteps`` given to the explorers are positions on a 1000-step chain
LIMITS = {  # (low, high) of every control; values outside are clamped with a note
    "beta_start": (1e-6, 0.999),
    "beta_end": (1e-6, 0.999),  # and at least beta_start
    "num_timesteps": (2, 10_000),
    "image_size": (8, 4096),
    "base_size": (8, 4096),
    "input_scale": (1e-3, 1e3),
}
CONTROLS = ("schedule", "beta_start", "beta_end", "num_timesteps", "image_size", "base_size", "input_scale")
BETA_SCHEDULES = ("linear", "scaled_linear")  # the schedules that read beta_start and beta_end


@dataclass(frozen=True)
class ExplorerState:
    """What the schedule explorer shows for one setting (see :func:`explorer_state`)."""

    params: dict[str, Any]  # the values used, after clamping
    notes: list[str]  # one line per clamped value or ignored control
    schedule: Any  # the NoiseSchedule made from params, before shift and scaling
    timesteps: list[int]  # the t of each image column, 0-based, in [0, T-1]
    signal: np.ndarray  # (T,) signal scale after resolution shift and input scaling
    noise: np.ndarray  # (T,) noise scale after resolution shift and input scaling
    log_snr: np.ndarray  # (T,) λ_t after shift and scaling
    noised: torch.Tensor  # (len(timesteps), B, C, H, W) x_t of the same x_0 and ε
    extra: dict[str, Any] = field(default_factory=dict)


def _clamp(name: str, value: float, low: float, high: float, notes: list[str], why: str = "") -> float:
    """Clamp ``value`` to [low, high]; add a note saying what was changed."""
    if isinstance(value, float) and math.isnan(value):
        notes.append(f"{name} was NaN; using {low:g}.")
        return low
    clamped = min(max(value, low), high)
    if clamped != value:
        notes.append(f"{name} = {value:g} is out of range{why}; using {clamped:g}.")
    return clamped


def _clamped_params(params: dict[str, Any], notes: list[str]) -> dict[str, Any]:
    """Clamp every numeric control to LIMITS (and beta_end >= beta_start)."""
    out = dict(params)
    for name, (low, high) in LIMITS.items():
        value = out[name]
        if name == "num_timesteps":
            value = int(np.rint(value))
        out[name] = _clamp(name, value, low, high, notes)
    # make_schedule needs beta_end > beta_start, so the smallest allowed beta_end is just above it
    out["beta_end"] = _clamp("beta_end", out["beta_end"], out["beta_start"] * 1.01, LIMITS["beta_end"][1], notes,
                             f" (not above beta_start = {out['beta_start']:g})")
    return out


def _scales(schedule: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """(signal, noise) scales of a schedule at every t, float64 (T,)."""
    t = torch.arange(len(schedule.alphas_cumprod))
    if hasattr(schedule, "signal_scale") and hasattr(schedule, "noise_scale"):
        return (torch.as_tensor(schedule.signal_scale(t), dtype=torch.float64),
                torch.as_tensor(schedule.noise_scale(t), dtype=torch.float64))
    alpha_bar = schedule.alphas_cumprod.to(torch.float64)  # ᾱ_t
    return alpha_bar.sqrt(), (1.0 - alpha_bar).sqrt()


def _shifted_scales(signal, noise, factor: float, variance_preserving: bool):
    """Multiply the signal by ``factor`` (log-SNR moves by 2 log factor).

    Resolution shift (Hoogeboom et al. 2023, "simple diffusion"): factor = base / res,
    so λ shifts by 2 log(base / res). Input scaling (Chen 2023): x_0 -> b x_0 multiplies
    the SNR by b². A variance-preserving schedule is then renormalised so that
    signal² + noise² = 1 (Chen's normalisation of x_t by its standard deviation).
    """
    signal = signal * factor
    if variance_preserving:
        norm = (signal**2 + noise**2).sqrt()
        signal, noise = signal / norm, noise / norm
    return signal, noise


def _timesteps_for(num_timesteps: int, timesteps: Sequence[int]) -> list[int]:
    """Move positions given on a 1000-step chain to the same fraction of a T-step chain."""
    return [min(max(round(t / (REFERENCE_T - 1) * (num_timesteps - 1)), 0), num_timesteps - 1)
            for t in timesteps]


def _as_batch(images: Any) -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or images.dim() not in (3, 4):
        got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(
            f"the schedule explorer got images {got}; expected a (B, C, H, W) or (C, H, W) tensor "
            "in [-1, 1], e.g. a batch from dl.load_images(...)."
        )
    return (images if images.dim() == 4 else images[None]).detach().to("cpu", torch.float32)


def explorer_state(
    images: torch.Tensor,
    schedule: str = "linear",
    beta_start: float = 1e-4,
    beta_end: float = 0.02,
    num_timesteps: int = 1000,
    image_size: int = 64,
    base_size: int = 64,
    input_scale: float = 1.0,
    timesteps: Sequence[int] = (0, 250, 500, 750, 999),
    noise: torch.Tensor | None = None,
    seed: int = 0,
    max_images: int = 2,
) -> ExplorerState:
    """Compute everything the schedule explorer shows for one setting. Chapter 3.

    Out-of-range values are clamped (β in [1e-6, 0.999], β_end > β_start,
    T in [2, 10000], sizes in [8, 4096], input scale in [1e-3, 1e3]) and each clamp
    is described in ``notes``.

    Args:
        images: (B, C, H, W) or (C, H, W) in [-1, 1]; the first ``max_images`` are used.
        schedule: a name from ``dl.SCHEDULES``; beta_start and beta_end are read by
            "linear" and "scaled_linear" only.
        image_size, base_size: resolution shift (Hoogeboom et al. 2023): the log-SNR
            moves by 2 log(base_size / image_size); equal sizes: no shift.
        input_scale: b in x_0 -> b x_0 (Chen 2023); the log-SNR moves by 2 log b.
        timesteps: the columns of noised images, as positions on a 1000-step chain;
            for another T each moves to the same fraction, round(t / 999 * (T - 1)).
        noise: the ε used for every setting (default: drawn once from ``seed``), so
            that only the schedule changes between settings.

    Returns:
        An :class:`ExplorerState`. The noised images are s'_t x_0 + n'_t ε with the
        shifted and scaled signal and noise scales (for a variance-preserving schedule,
        renormalised to unit variance).
    """
    x0 = _as_batch(images)[:max_images]  # (B, C, H, W)
    if noise is None:
        noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    noise = noise[: len(x0)].to(torch.float32)
    if noise.shape != x0.shape:
        raise ValueError(f"noise has shape {tuple(noise.shape)}; expected the images' shape {tuple(x0.shape)}.")
    if schedule not in _schedules.SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; choose one of {list(_schedules.SCHEDULES)}.")

    notes: list[str] = []
    requested = {"schedule": schedule, "beta_start": beta_start, "beta_end": beta_end,
                 "num_timesteps": num_timesteps, "image_size": image_size, "base_size": base_size,
                 "input_scale": input_scale}
    params = _clamped_params(requested, notes)
    kwargs = {}
    if schedule in BETA_SCHEDULES:
        kwargs = {"beta_start": params["beta_start"], "beta_end": params["beta_end"]}
    else:
        notes.append(f"'{schedule}' does not use beta_start or beta_end.")
    base = _schedules.make_schedule(schedule, num_timesteps=params["num_timesteps"], **kwargs)

    signal, noise_scale = _scales(base)
    factor = params["input_scale"] * params["base_size"] / params["image_size"]
    variance_preserving = getattr(base, "kind", "vp") == "vp"
    signal, noise_scale = _shifted_scales(signal, noise_scale, factor, variance_preserving)
    with np.errstate(divide="ignore"):
        log_snr = 2.0 * (np.log(signal.numpy()) - np.log(noise_scale.numpy()))

    shown = _timesteps_for(params["num_timesteps"], timesteps)
    s_t = signal[shown].float().view(-1, 1, 1, 1, 1)  # (n_t, 1, 1, 1, 1)
    n_t = noise_scale[shown].float().view(-1, 1, 1, 1, 1)
    noised = s_t * x0[None] + n_t * noise[None]  # (n_t, B, C, H, W)
    return ExplorerState(params, notes, base, shown, signal.numpy(), noise_scale.numpy(), log_snr, noised)


class _Curves:
    """Adapter so plot_schedule can draw the shifted scales held by an ExplorerState."""

    def __init__(self, state: ExplorerState):
        self.alphas_cumprod = torch.as_tensor(state.signal**2)
        self._signal, self._noise = torch.as_tensor(state.signal), torch.as_tensor(state.noise)

    def signal_scale(self, t):
        return self._signal[t]

    def noise_scale(self, t):
        return self._noise[t]


def _describe(params: dict[str, Any]) -> str:
    text = f"{params['schedule']}, T = {params['num_timesteps']}"
    if params["schedule"] in BETA_SCHEDULES:
        text += f", β from {params['beta_start']:.2g} to {params['beta_end']:.2g}"
    if params["image_size"] != params["base_size"]:
        text += f", shift {params['base_size']}→{params['image_size']} px"
    if params["input_scale"] != 1.0:
        text += f", input × {params['input_scale']:.3g}"
    return text


def draw_explorer(state: ExplorerState, fig: Figure | None = None) -> Figure:
    """Draw a state: noised images (rows: images, columns: t) above the scale and log-SNR curves.

    Draws into ``fig`` after clearing it (the static explorer redraws one figure per frame).
    """
    columns = len(state.timesteps)
    rows = state.noised.shape[1]
    if fig is None:
        fig = plt.figure(figsize=(max(1.9 * columns, 8.0), 1.9 * rows + 3.4))
    fig.clear()
    grid = fig.add_gridspec(rows + 1, 2 * columns, height_ratios=[1.0] * rows + [1.8])
    for c, t in enumerate(state.timesteps):
        arrays = _to_display_arrays(state.noised[c], value_range=(-1.0, 1.0))  # clipped to [-1, 1]
        for r, array in enumerate(arrays):
            ax = fig.add_subplot(grid[r, 2 * c : 2 * c + 2])
            ax.imshow(array, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"t = {t}", fontsize=9)
            if c == 0:
                ax.set_ylabel(f"image {r}", fontsize=8)
    scales_ax = fig.add_subplot(grid[rows, :columns])
    log_ax = fig.add_subplot(grid[rows, columns:])
    plot_schedule({"schedule": _Curves(state)}, ax=(scales_ax, log_ax), log_snr=True)
    for ax in (scales_ax, log_ax):
        for t in state.timesteps:
            ax.axvline(t, color="grey", linewidth=0.6, alpha=0.5)
    fig.suptitle(_describe(state.params))
    fig.tight_layout()
    return fig


def _controls(params: dict[str, Any]) -> dict[str, widgets.Widget]:
    """One widget per explorer_state parameter (out-of-range values can be typed or slid in)."""
    sizes = [16, 32, 64, 128, 256, 512, 1024]
    style = {"description_width": "110px"}
    layout = widgets.Layout(width="380px")
    common = {"continuous_update": False, "style": style, "layout": layout}
    return {
        "schedule": widgets.Dropdown(options=list(_schedules.SCHEDULES), value=params["schedule"],
                                     description="schedule", style=style, layout=layout),
        "beta_start": widgets.FloatLogSlider(value=params["beta_start"], base=10, min=-6, max=0, step=0.1,
                                             description="β_start", readout_format=".1e", **common),
        "beta_end": widgets.FloatLogSlider(value=params["beta_end"], base=10, min=-4, max=0, step=0.05,
                                           description="β_end", readout_format=".2e", **common),
        "num_timesteps": widgets.IntText(value=params["num_timesteps"], description="T (steps)",
                                         continuous_update=False, style=style, layout=layout),
        "image_size": widgets.Dropdown(options=sorted({*sizes, params["image_size"]}), value=params["image_size"],
                                       description="image size (px)", style=style, layout=layout),
        "base_size": widgets.Dropdown(options=sorted({*sizes, params["base_size"]}), value=params["base_size"],
                                      description="base size (px)", style=style, layout=layout),
        "input_scale": widgets.FloatLogSlider(value=params["input_scale"], base=10, min=-1.5, max=1, step=0.05,
                                              description="input scale b", readout_format=".3g", **common),
    }


def _note_html(notes: list[str]) -> str:
    if not notes:
        return ""
    items = "".join(f"<li>{note}</li>" for note in notes)
    return f"<div style='color:#b35900'><b>Note:</b><ul style='margin:0'>{items}</ul></div>"


class ScheduleExplorer(widgets.VBox):
    """The live schedule explorer widget (see :func:`schedule_explorer`).

    Attributes: ``controls`` (name -> widget), ``note`` (the HTML widget listing
    clamped values), ``output`` (where the figure is drawn), ``state`` (the latest
    :class:`ExplorerState`). ``update()`` recomputes and redraws; every control calls it.
    """

    def __init__(self, images: torch.Tensor, timesteps: Sequence[int], seed: int, max_images: int, **params):
        x0 = _as_batch(images)[:max_images]
        noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))  # ε, fixed
        self._fixed = {"images": x0, "timesteps": tuple(timesteps), "max_images": max_images, "noise": noise}
        self.controls = _controls(params)
        self.note = widgets.HTML()
        self.output = widgets.Output()
        self.state: ExplorerState | None = None
        left = widgets.VBox(list(self.controls.values())[:4])
        right = widgets.VBox(list(self.controls.values())[4:])
        super().__init__([widgets.HBox([left, right]), self.note, self.output])
        for control in self.controls.values():
            control.observe(self.update, names="value")
        self.update()

    def update(self, change: Any = None) -> ExplorerState:
        """Recompute the state from the controls and redraw (the observer of every control)."""
        from IPython.display import display

        values = {name: control.value for name, control in self.controls.items()}
        self.state = explorer_state(**self._fixed, **values)
        self.note.value = _note_html(self.state.notes)
        with self.output:
            self.output.clear_output(wait=True)
            fig = draw_explorer(self.state)
            display(fig)
            plt.close(fig)
        return self.state


def schedule_explorer(
    images: torch.Tensor,
    timesteps: Sequence[int] = (0, 250, 500, 750, 999),
    seed: int = 0,
    max_images: int = 2,
    **start: Any,
) -> ScheduleExplorer:
    """The live schedule explorer: controls driving noised images and schedule curves. Chapter 3.

    Choose the schedule type, β_start, β_end, T, a resolution shift (image size vs.
    the base size the schedule was made for) and an input scale b; the figure shows
    x_t of the same x_0 and the same ε at several t, and the signal scale, noise
    scale and log-SNR against t, redrawn when a control is released. Values out of
    range are clamped and listed in an orange note above the figure.

    Usage (the last line of a cell)::

        dl.widgets.schedule_explorer(batch[:2])
        dl.widgets.schedule_explorer(batch[:2], schedule="cosine", num_timesteps=200)

    It needs a running kernel (Jupyter, JupyterLab, VS Code or Colab); on Colab the
    custom widget manager is switched on. The rendered book shows
    :func:`schedule_explorer_static` instead.

    Args:
        images, timesteps, seed, max_images: as :func:`explorer_state`.
        start: the controls' start values, any of ``CONTROLS`` (defaults: those of
            :func:`explorer_state`).

    Returns:
        a :class:`ScheduleExplorer` (an ``ipywidgets.VBox``).
    """
    unknown = set(start) - set(CONTROLS)
    if unknown:
        raise TypeError(f"schedule_explorer got unknown settings {sorted(unknown)}; the controls are {CONTROLS}.")
    defaults = inspect.signature(explorer_state).parameters
    start = {name: start.get(name, defaults[name].default) for name in CONTROLS}
    if "google.colab" in sys.modules:  # ipywidgets 8 on Colab needs the custom manager
        from google.colab import output  # type: ignore[import-not-found]

        output.enable_custom_widget_manager()
    return ScheduleExplorer(images, timesteps, seed, max_images, **start)


STATIC_SWEEPS = {  # the values the static explorer steps through, per control
    "beta_end": (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.3),
    "beta_start": (1e-5, 1e-4, 1e-3, 1e-2),
    "num_timesteps": (10, 50, 200, 1000),
    "image_size": (32, 64, 128, 256, 512),
    "input_scale": (0.1, 0.25, 0.5, 1.0, 2.0),
}


def schedule_explorer_static(
    images: torch.Tensor,
    vary: str = "beta_end",
    values: Sequence[Any] | None = None,
    fps: float = 1.0,
    format: str = "html",
    path: str | None = None,
    dpi: int = 72,
    **fixed: Any,
) -> Any:
    """A pre-rendered stand-in for :func:`schedule_explorer` in the static book. Chapter 3.

    Renders the explorer's figure for each value of one control and returns them as
    an animation with a frame slider (matplotlib's ``to_jshtml``), which plays in the
    rendered book without a kernel. Example::

        dl.widgets.schedule_explorer_static(batch[:2], vary="beta_end")
        dl.widgets.schedule_explorer_static(batch[:2], vary="schedule")  # every named schedule
        dl.widgets.schedule_explorer_static(batch[:2], vary="image_size", schedule="cosine")

    Args:
        images: as :func:`explorer_state`.
        vary: the control to step: "schedule" or a key of ``STATIC_SWEEPS``.
        values: its values (default: every schedule name, or ``STATIC_SWEEPS[vary]``).
        format, path, fps: as :func:`ddpm_lib.viz.render_animation` ("html", "gif", "mp4").
        fixed: the other controls, as keyword arguments of :func:`explorer_state`.

    Returns:
        ``IPython.display.HTML``.
    """
    if vary != "schedule" and vary not in STATIC_SWEEPS:
        raise ValueError(f"vary={vary!r}; choose 'schedule' or one of {list(STATIC_SWEEPS)}.")
    if vary in fixed:
        raise ValueError(f"{vary!r} is both varied and fixed; leave it out of the keyword arguments.")
    if values is None:
        values = list(_schedules.SCHEDULES) if vary == "schedule" else STATIC_SWEEPS[vary]
    values = list(values)
    if not values:
        raise ValueError("schedule_explorer_static got no values to step through.")
    states = [explorer_state(images, **{**fixed, vary: value}) for value in values]
    fig = draw_explorer(states[0])
    fig.set_dpi(dpi)

    def update(k: int):
        draw_explorer(states[k], fig)
        notes = " ".join(states[k].notes)
        if notes:
            fig.text(0.5, 0.005, notes, ha="center", va="bottom", fontsize=8, color="#b35900", wrap=True)

    return render_animation(fig, update, len(states), fps=fps, format=format, path=path)
