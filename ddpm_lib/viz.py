"""Plots and animations used in every chapter.

Every function draws with matplotlib, returns what it drew (a ``Figure``, or an
``IPython.display.HTML`` for animations) and, where it makes sense, draws into an
``ax=`` you pass instead of a new figure. Every figure gets a title and labelled axes.

In a notebook, a cell whose last line is ``dl.show_images(x)`` shows the figure twice
(once by the inline backend, once as the returned value): end the line with ``;`` or
assign the result (``fig = dl.show_images(x)``).

Notation (see ``book/notation.md``):

=================  ==========================================================
``alpha_bar``      ᾱ_t, the cumulative product of α_s = 1 - β_s for s <= t
signal scale       √ᾱ_t, the factor on x_0 in x_t = √ᾱ_t x_0 + √(1 - ᾱ_t) ε
noise scale        √(1 - ᾱ_t), the factor on ε
``log_snr``        λ_t = log(ᾱ_t / (1 - ᾱ_t)) = log SNR(t)
``t``              0-based timestep index in [0, T-1] (the paper's t = 1 is index 0)
=================  ==========================================================

Images are tensors (B, C, H, W) in [-1, 1] unless said otherwise.
"""

from __future__ import annotations

import base64
import csv
import math
import os
import tempfile
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from PIL import Image

__all__ = [
    "TrajectoryRecorder",
    "animate_sampling",
    "make_grid_image",
    "plot_loss",
    "plot_schedule",
    "show_images",
]

ANIMATION_FORMATS = ("html", "gif", "mp4")

# ----------------------------------------------------------------------------- images


def _value_range_of(values: np.ndarray) -> tuple[float, float]:
    """[-1, 1] if any value is negative, else [0, 1] (the two ranges the book uses)."""
    finite = values[np.isfinite(values)]
    return (-1.0, 1.0) if finite.size and finite.min() < 0 else (0.0, 1.0)


def _channels_last(array: np.ndarray, channel_first: bool) -> np.ndarray:
    """One image as (H, W) for one channel or (H, W, 3|4) for colour."""
    if array.ndim == 2:
        return array
    if channel_first:
        array = np.moveaxis(array, 0, -1)  # (C, H, W) -> (H, W, C)
    channels = array.shape[-1]
    if channels == 1:
        return array[..., 0]
    if channels in (3, 4):
        return array
    raise ValueError(
        f"show_images got an image with {channels} channels (shape {tuple(array.shape)}); "
        "expected 1 (grey), 3 (RGB) or 4 (RGBA). Select channels first, e.g. x[:, :3]."
    )


def _looks_channel_first(shape: tuple[int, ...]) -> bool:
    """For numpy arrays: (C, H, W) if the first axis looks like channels and the last does not."""
    return shape[0] in (1, 3, 4) and shape[-1] not in (1, 3, 4)


def _item_to_arrays(item: Any, value_range: tuple[float, float] | None) -> list[np.ndarray]:
    """Convert one input (tensor, array or PIL image) to display arrays in [0, 1]."""
    if isinstance(item, Image.Image):
        return [_pil_to_array(item)]
    if isinstance(item, torch.Tensor):
        item = item.detach().cpu()
        array = item.numpy() if item.dtype == torch.uint8 else item.to(torch.float32).numpy()
        channel_first = True
    elif isinstance(item, np.ndarray):
        array, channel_first = item, None
    else:
        raise TypeError(
            f"show_images got a {type(item).__name__}; expected a torch tensor, a numpy array, "
            "a PIL image or a list of these."
        )
    if array.ndim not in (2, 3, 4):
        raise ValueError(
            f"show_images got an array of shape {tuple(array.shape)}; expected (B, C, H, W), "
            "(C, H, W), (H, W, C) or (H, W)."
        )
    if array.dtype == np.uint8:  # 0..255 pixels
        array, low, high = array.astype(np.float32), 0.0, 255.0
    else:
        array = array.astype(np.float32)
        low, high = value_range if value_range is not None else _value_range_of(array)
    array = np.clip((array - low) / (high - low), 0.0, 1.0)
    batch = array if array.ndim == 4 else array[None]
    if channel_first is None:  # numpy: guess the layout from the shape of one image
        channel_first = batch.ndim == 4 and _looks_channel_first(batch.shape[1:])
    if array.ndim == 2:
        return [array]
    return [_channels_last(image, channel_first) for image in batch]


def _pil_to_array(image: Image.Image) -> np.ndarray:
    """A PIL image as an (H, W) or (H, W, 3|4) float array in [0, 1]."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float32)
        return array / (65535.0 if image.mode.startswith("I;16") else max(float(array.max()), 1.0))
    if image.mode == "F":
        return np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)
    if image.mode not in ("L", "RGB", "RGBA"):
        has_alpha = image.mode in ("LA", "PA", "RGBa") or "transparency" in image.info
        image = image.convert("L" if image.mode == "1" else "RGBA" if has_alpha else "RGB")
    return np.asarray(image, dtype=np.float32) / 255.0


def _to_display_arrays(images: Any, value_range: tuple[float, float] | None = None) -> list[np.ndarray]:
    """Flatten any supported input into a list of (H, W) or (H, W, C) arrays in [0, 1].

    A list is converted element by element, so each element's value range is
    detected on its own (a [0, 1] mask next to a [-1, 1] image shows correctly).
    """
    items = list(images) if isinstance(images, (list, tuple)) else [images]
    arrays = [array for item in items for array in _item_to_arrays(item, value_range)]
    if not arrays:
        raise ValueError("show_images got no images (an empty batch or list); pass at least one image.")
    return arrays


def _grid_shape(n: int, nrow: int | None) -> tuple[int, int]:
    """(rows, columns) for n images with ``nrow`` images per row (torchvision's meaning)."""
    ncol = min(n, 8) if nrow is None else nrow
    if ncol < 1:
        raise ValueError(f"nrow must be at least 1 (images per row); got {nrow}.")
    ncol = min(ncol, n)
    return math.ceil(n / ncol), ncol


def _as_rgb(array: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, 3|4) -> (H, W, 3); RGBA is composited over white."""
    if array.ndim == 2:
        return np.repeat(array[..., None], 3, axis=-1)
    if array.shape[-1] == 4:
        alpha = array[..., 3:]
        return array[..., :3] * alpha + (1.0 - alpha)
    return array


def _compose_grid(arrays: list[np.ndarray], nrow: int | None, padding: int = 2, pad_value: float = 1.0):
    """Tile images into one (H, W) or (H, W, 3) array; smaller images are centred in their cell.

    Returns the array and the (row, column) pixel centre of the top edge of each cell
    (where a title goes).
    """
    rows, cols = _grid_shape(len(arrays), nrow)
    grey = all(a.ndim == 2 for a in arrays)
    arrays = arrays if grey else [_as_rgb(a) for a in arrays]
    cell_h = max(a.shape[0] for a in arrays)
    cell_w = max(a.shape[1] for a in arrays)
    shape = (rows * (cell_h + padding) + padding, cols * (cell_w + padding) + padding)
    grid = np.full(shape if grey else (*shape, 3), pad_value, dtype=np.float32)
    tops = []
    for k, a in enumerate(arrays):
        r, c = divmod(k, cols)
        top = padding + r * (cell_h + padding) + (cell_h - a.shape[0]) // 2
        left = padding + c * (cell_w + padding) + (cell_w - a.shape[1]) // 2
        grid[top : top + a.shape[0], left : left + a.shape[1]] = a
        tops.append((padding + r * (cell_h + padding), left + a.shape[1] / 2))
    return grid, tops


def make_grid_image(
    images: Any,
    nrow: int | None = None,
    padding: int = 2,
    pad_value: float = 1.0,
    value_range: tuple[float, float] | None = None,
) -> Image.Image:
    """Tile images into one PIL image (for saving a PNG). Chapter 2.

    Accepts everything :func:`show_images` accepts. ``nrow`` is the number of images
    per row, as in torchvision's ``make_grid`` (default: up to 8); no image is dropped.
    Images of different sizes are centred in cells of the largest size; ``pad_value``
    in [0, 1] fills the gaps (1 = white).
    """
    grid, _ = _compose_grid(_to_display_arrays(images, value_range), nrow, padding, pad_value)
    return Image.fromarray(np.round(grid * 255.0).astype(np.uint8))


def _range_note(images: Any, value_range: tuple[float, float] | None) -> str:
    if value_range is not None:
        return f"shown from [{value_range[0]:g}, {value_range[1]:g}]"
    if isinstance(images, torch.Tensor) and images.is_floating_point():
        low, _ = _value_range_of(images.detach().float().cpu().numpy())
        return f"shown from [{low:g}, 1]"
    return ""


def show_images(
    images: Any,
    nrow: int | None = None,
    titles: Sequence[str] | None = None,
    title: str | None = None,
    figsize: tuple[float, float] | None = None,
    value_range: tuple[float, float] | None = None,
    ax: Axes | None = None,
    cmap: str = "gray",
) -> Figure:
    """Show images in a grid and return the figure. Chapter 1 (used in every chapter).

    Args:
        images: a (B, C, H, W) or (C, H, W) tensor, a numpy array ((B, C, H, W),
            (B, H, W, C), (H, W, C) or (H, W); uint8 arrays are read as 0..255), a PIL
            image, or a list of any of these (sizes may differ).
        nrow: images per row, as in torchvision's ``make_grid`` (default: up to 8).
            Every image is shown: 7 images with ``nrow=3`` fill rows of 3, 3 and 1.
        titles: one title per image.
        title: the figure's title (default: the number of images and their value range).
        value_range: the (low, high) values mapped to black and white. By default a
            float input with any negative value is read as [-1, 1], otherwise as
            [0, 1]; each element of a list is detected on its own. Values outside
            the range are clipped.
        ax: draw all images tiled into this one axes instead of a new figure.
        cmap: colour map for one-channel images.
    """
    arrays = _to_display_arrays(images, value_range)
    n = len(arrays)
    if titles is not None and len(titles) != n:
        raise ValueError(f"show_images got {len(titles)} titles for {n} images; pass one title per image.")
    if title is None:
        note = _range_note(images, value_range)
        title = f"{n} image{'s' if n != 1 else ''}" + (f" ({note})" if note else "")
    if ax is not None:
        return _show_on_axes(arrays, ax, nrow, titles, title, cmap)

    rows, cols = _grid_shape(n, nrow)
    if figsize is None:
        figsize = (max(1.6 * cols, 3.0), 1.6 * rows + (0.3 * rows if titles else 0) + 0.5)
    fig, axes = plt.subplots(rows, cols, figsize=figsize, squeeze=False)
    for k, image_ax in enumerate(axes.flat):
        image_ax.axis("off")
        if k < n:
            image_ax.imshow(arrays[k], cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
            if titles is not None:
                image_ax.set_title(str(titles[k]), fontsize=9)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def _show_on_axes(arrays, ax: Axes, nrow, titles, title: str, cmap: str) -> Figure:
    """All images tiled into one given axes (per-image titles become small labels)."""
    grid, tops = _compose_grid(arrays, nrow)
    ax.imshow(grid, cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title)
    for (top, centre), text in zip(tops, titles or []):
        ax.text(centre, top, str(text), ha="center", va="top", fontsize=7, color="white",
                bbox={"facecolor": "black", "alpha": 0.5, "pad": 1, "linewidth": 0})
    return ax.figure


# ----------------------------------------------------------------------------- schedules


def _named_schedules(schedules: Any, label: str | Sequence[str] | None) -> list[tuple[str, Any]]:
    """Accept one schedule, a list of schedules or a dict name -> schedule; return (label, schedule)."""
    if isinstance(schedules, Mapping):
        return [(str(name), s) for name, s in schedules.items()]
    items = list(schedules) if isinstance(schedules, (list, tuple)) else [schedules]
    if isinstance(label, str):
        labels = [label] if len(items) == 1 else [f"{label} {i}" for i in range(len(items))]
    elif label is not None:
        if len(label) != len(items):
            raise ValueError(f"plot_schedule got {len(label)} labels for {len(items)} schedules.")
        labels = list(label)
    else:
        labels = [str(getattr(s, "name", None) or f"schedule {i}") for i, s in enumerate(items)]
    return list(zip(labels, items))


def _schedule_curves(schedule: Any) -> dict[str, np.ndarray]:
    """Timesteps, signal scale, noise scale and log-SNR of a schedule as numpy arrays.

    Variance-preserving schedules give √ᾱ_t and √(1 - ᾱ_t); schedules of another
    kind ("simple", "ve") give their own ``signal_scale(t)`` and ``noise_scale(t)``.
    log-SNR is 2 log(signal / noise); infinite values (zero noise or zero signal)
    are left out of the plot.
    """
    t = torch.arange(len(schedule.alphas_cumprod))
    variance_preserving = not (hasattr(schedule, "signal_scale") and hasattr(schedule, "noise_scale"))
    if not variance_preserving:
        signal = torch.as_tensor(schedule.signal_scale(t), dtype=torch.float64)
        noise = torch.as_tensor(schedule.noise_scale(t), dtype=torch.float64)
    else:
        alpha_bar = schedule.alphas_cumprod.to(torch.float64)  # ᾱ_t, (T,)
        signal, noise = alpha_bar.sqrt(), (1.0 - alpha_bar).sqrt()
    with np.errstate(divide="ignore"):
        log_snr = 2.0 * (np.log(signal.numpy()) - np.log(noise.numpy()))
    log_snr[~np.isfinite(log_snr)] = np.nan
    return {"t": t.numpy(), "signal": signal.numpy(), "noise": noise.numpy(), "log_snr": log_snr,
            "vp": variance_preserving}


_CURVE_STYLE = {  # line style, legend text for a variance-preserving schedule
    "signal": ("-", "signal √ᾱ_t"),
    "noise": ("--", "noise √(1-ᾱ_t)"),
}


def plot_schedule(
    schedules: Any,
    ax: Axes | Sequence[Axes] | None = None,
    label: str | Sequence[str] | None = None,
    log_snr: bool = False,
    which: Sequence[str] = ("signal", "noise"),
    title: str | None = None,
) -> Figure:
    """Signal and noise scales (and optionally log-SNR) of schedules against t. Chapter 3.

    For a variance-preserving schedule the signal scale is √ᾱ_t and the noise scale
    √(1 - ᾱ_t) (x_t = √ᾱ_t x_0 + √(1 - ᾱ_t) ε, Ho et al. 2020 eq. 4); schedules of
    another kind use their own ``signal_scale(t)`` / ``noise_scale(t)``. The log-SNR
    panel shows λ_t = log SNR(t) = 2 log(signal / noise).

    Args:
        schedules: one schedule, a list of them, or a dict name -> schedule; all are
            drawn on the same axes, one colour per schedule (signal solid, noise dashed).
        ax: the axes to draw in; with ``log_snr=True`` a pair (scales_ax, log_snr_ax).
        label: legend name(s) for a schedule or a list of schedules (default: the
            schedule's ``name`` attribute; a dict's keys are used as names).
        which: the scale curves to draw: any of "signal" and "noise" (may be empty
            when ``log_snr=True``).
        title: title of the scales panel.
    """
    unknown = set(which) - set(_CURVE_STYLE)
    if unknown:
        raise ValueError(f"plot_schedule got which={tuple(which)}; choose from {tuple(_CURVE_STYLE)}.")
    if not which and not log_snr:
        raise ValueError("plot_schedule has nothing to draw: which=() and log_snr=False.")
    panels = int(bool(which)) + int(log_snr)
    if ax is None:
        fig, axes = plt.subplots(1, panels, figsize=(5.0 * panels, 3.6), squeeze=False)
        axes = list(axes.flat)
    else:
        axes = list(ax) if isinstance(ax, (list, tuple, np.ndarray)) else [ax]
        if len(axes) != panels:
            raise ValueError(
                f"plot_schedule needs {panels} axes for which={tuple(which)} and log_snr={log_snr}; "
                f"got {len(axes)}. Pass ax=(scales_ax, log_snr_ax) or ax=None."
            )
        fig = axes[0].figure
    scales_ax = axes[0] if which else None
    log_ax = axes[-1] if log_snr else None

    for k, (name, schedule) in enumerate(_named_schedules(schedules, label)):
        curves, colour = _schedule_curves(schedule), f"C{k % 10}"
        for kind in which:
            style, what = _CURVE_STYLE[kind]
            what = what if curves["vp"] else kind
            scales_ax.plot(curves["t"], curves[kind], style, color=colour, label=f"{name}: {what}")
        if log_ax is not None:
            log_ax.plot(curves["t"], curves["log_snr"], color=colour, label=name)
    if scales_ax is not None:
        scales_ax.set(xlabel="timestep t (0-based index)", ylabel="scale",
                      title=title or "Signal and noise scales")
        scales_ax.legend(fontsize=8)
    if log_ax is not None:
        log_ax.axhline(0.0, color="grey", linewidth=0.8, linestyle=":")
        log_ax.set(xlabel="timestep t (0-based index)", ylabel="log-SNR λ_t", title="log-SNR")
        log_ax.legend(fontsize=8)
    if ax is None:
        fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- loss


def smooth_curve(values: Sequence[float] | np.ndarray, smooth: float = 0.98) -> np.ndarray:
    """Smooth a noisy curve. Chapter 2.

    A float in [0, 1) is the decay β of a bias-corrected exponential moving average
    (as Adam corrects its moments, and as TensorBoard draws it): m_k = β m_{k-1} +
    (1 - β) v_k from m_0 = 0, shown as m_k / (1 - β^k). Without the division the first
    points would be pulled towards 0; with it a constant curve stays that constant from
    the first point on. The average trails the curve: after a jump, the smoothed curve has
    moved half-way once ``ema_half_life(β)`` = ln 2 / ln(1/β) points of the new level have
    entered it (34.3 for β = 0.98), and its weights' centre lies β / (1 - β) points back
    (49 for 0.98).
    An int w >= 1 is the window of a trailing moving average over the last w points
    (the first points average what is available); it lags (w - 1) / 2 points.
    0 returns the values unchanged.
    """
    v = np.asarray(values, dtype=np.float64)
    if isinstance(smooth, (bool, np.bool_)) or not isinstance(smooth, (int, float, np.integer, np.floating)):
        raise TypeError(f"smooth must be a float in [0, 1) or an int window; got {smooth!r}.")
    if isinstance(smooth, (int, np.integer)) and smooth >= 1:
        cumsum = np.concatenate([[0.0], np.cumsum(v)])
        k = np.arange(1, len(v) + 1)
        start = np.maximum(k - int(smooth), 0)
        return (cumsum[k] - cumsum[start]) / (k - start)
    if not 0.0 <= smooth < 1.0:
        raise ValueError(
            f"smooth={smooth!r}: use a float in [0, 1) for an exponential moving average "
            "or an int >= 1 for a moving-average window."
        )
    out, m = np.empty_like(v), 0.0
    for k, value in enumerate(v):
        m = smooth * m + (1.0 - smooth) * value
        out[k] = m / (1.0 - smooth ** (k + 1))
    return out


def ema_half_life(smooth: float) -> float:
    """The half-life, in points, of an exponential moving average of decay ``smooth``: after a
    jump it has moved half-way once ln 2 / ln(1/smooth) points of the new level have entered it
    (0 for smooth = 0). Chapter 2."""
    if not 0.0 <= smooth < 1.0:
        raise ValueError(f"smooth={smooth!r}: the decay of an exponential moving average is in [0, 1).")
    return 0.0 if smooth == 0 else math.log(2.0) / -math.log(smooth)


def _smoothing_label(smooth: float, steps: np.ndarray) -> str:
    """What the smoothed curve is, in training steps (points times the median step spacing)."""
    spacing = float(np.median(np.diff(steps))) if len(steps) > 1 else 1.0
    unit = "steps" if spacing > 0 else "points"  # steps not increasing: count points instead
    spacing = spacing if spacing > 0 else 1.0
    per_point = "" if spacing == 1 else f" ({spacing:g} steps a point)"
    if isinstance(smooth, float):
        return f"EMA {smooth:g}, half-life {ema_half_life(smooth) * spacing:.3g} {unit}{per_point}"
    return f"mean of the last {smooth * spacing:g} {unit}{per_point}"


def _read_loss_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Columns ``step`` and ``loss`` from a CSV file with a header (the trainer's loss.csv)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or "loss" not in rows[0]:
        columns = list(rows[0]) if rows else []
        raise ValueError(f"{path} has no 'loss' column (columns: {columns}); expected a header step,loss,...")
    steps = [float(r["step"]) if r.get("step") not in (None, "") else k for k, r in enumerate(rows)]
    losses = [float(r["loss"]) if r["loss"] not in (None, "") else math.nan for r in rows]
    return np.asarray(steps), np.asarray(losses)


def _loss_series(history: Any) -> tuple[np.ndarray, np.ndarray]:
    """(steps, losses) from a CSV path, a dict of lists, a list of dicts, or a list of floats."""
    if isinstance(history, (str, os.PathLike)):
        return _read_loss_csv(Path(history))
    if isinstance(history, Mapping):
        if "loss" not in history:
            raise ValueError(f"plot_loss got a dict with keys {list(history)}; expected a 'loss' key.")
        losses = np.asarray(history["loss"], dtype=np.float64)
        steps = np.asarray(history.get("step", np.arange(len(losses))), dtype=np.float64)
        return steps, losses
    if isinstance(history, torch.Tensor):
        history = history.detach().cpu().numpy()
    items = list(history)
    if items and isinstance(items[0], Mapping):
        losses = np.asarray([float(d["loss"]) for d in items])
        steps = np.asarray([float(d.get("step", k)) for k, d in enumerate(items)])
        return steps, losses
    losses = np.asarray([float(x) for x in items])
    return np.arange(len(losses), dtype=np.float64), losses


def plot_loss(
    history: Any,
    smooth: float = 0.98,
    ax: Axes | None = None,
    log: bool = True,
    label: str = "loss",
    title: str | None = None,
) -> Figure:
    """Training loss against step: raw values (faint) and a smoothed curve. Chapter 2.

    Args:
        history: a list of floats, a list of dicts with "loss" (and "step"), a dict
            with lists "loss" (and "step"), or the path of a CSV file with columns
            step,loss,... (the trainer writes ``out_dir/loss.csv``).
        smooth: see :func:`smooth_curve`: a float in [0, 1) for a bias-corrected
            exponential moving average with that decay (0.98: half-life 34 points), an int
            for the window of a trailing moving average, 0 for no smoothed curve. Both
            trail the raw loss; the legend says by how much, in training steps (the
            half-life, or the window), taking the spacing of logged steps into account.
        log: logarithmic loss axis (falls back to linear, with a warning, if a loss is <= 0).
    """
    steps, losses = _loss_series(history)
    finite = np.isfinite(losses)
    if not finite.all():
        warnings.warn(f"plot_loss: left out {int((~finite).sum())} non-finite loss values (NaN or inf).",
                      stacklevel=2)
        steps, losses = steps[finite], losses[finite]
    if len(losses) == 0:
        raise ValueError("plot_loss got no finite loss values to plot.")
    own_figure = ax is None
    if own_figure:
        _, ax = plt.subplots(figsize=(6.0, 3.6))
    smoothed = smooth != 0 and len(losses) > 1
    ax.plot(steps, losses, color="C0", alpha=0.3 if smoothed else 1.0, linewidth=0.8, label=f"{label} (raw)")
    if smoothed:
        how = _smoothing_label(smooth, steps)
        ax.plot(steps, smooth_curve(losses, smooth), color="C0", linewidth=1.8, label=f"{label} ({how})")
    if log and (losses <= 0).any():
        warnings.warn("plot_loss: a loss is <= 0, so the loss axis stays linear.", stacklevel=2)
    elif log:
        ax.set_yscale("log")
    ax.set(xlabel="training step", ylabel=label, title=title or "Training loss")
    ax.legend(fontsize=8)
    if own_figure:
        ax.figure.tight_layout()
    return ax.figure


# ----------------------------------------------------------------------------- animations


class TrajectoryRecorder:
    """Collects the sampler's intermediate states for an animation. Chapter 1.

    Pass ``recorder.callback`` as the ``callback=`` of ``dl.sample`` (samplers call
    ``callback(i, t, x_t, x0_hat)`` once per step), then
    ``dl.animate_sampling(recorder)``. Tensors are copied to the CPU; only the first
    ``max_images`` images of the batch and every ``every``-th step are kept (each kept
    step holds two (max_images, C, H, W) float tensors).
    """

    def __init__(self, max_images: int | None = 8, every: int = 1):
        if every < 1:
            raise ValueError(f"every must be >= 1 (keep every k-th step); got {every}.")
        self.max_images, self.every = max_images, every
        self.steps: list[int] = []  # sampler step index i
        self.timesteps: list[Any] = []  # the t passed by the sampler (an int, float or tensor)
        self.frames_xt: list[torch.Tensor] = []  # x_t, (b, C, H, W)
        self.frames_x0: list[torch.Tensor | None] = []  # predicted x0, (b, C, H, W), or None

    def _keep(self, x: torch.Tensor | None) -> torch.Tensor | None:
        return None if x is None else x[: self.max_images].detach().to("cpu", torch.float32).clone()

    def callback(self, i: int, t: Any, x_t: torch.Tensor, x0_hat: torch.Tensor | None) -> None:
        """Record step ``i``; matches the sampler callback signature ``(i, t, x_t, x0_hat)``."""
        if i % self.every:
            return
        self.steps.append(int(i))
        self.timesteps.append(t.detach().cpu() if isinstance(t, torch.Tensor) else t)
        self.frames_xt.append(self._keep(x_t))
        self.frames_x0.append(self._keep(x0_hat))

    __call__ = callback

    def __len__(self) -> int:
        return len(self.frames_xt)

    def titles(self) -> list[str]:
        """One title per recorded step: ``"step i, t = ..."``."""
        return [f"step {i}, t = {_format_t(t)}" for i, t in zip(self.steps, self.timesteps)]


def _format_t(t: Any) -> str:
    if isinstance(t, torch.Tensor):
        t = t.flatten()[0].item() if t.numel() else float("nan")
    return f"{t:.4g}" if isinstance(t, float) else str(t)


def render_animation(
    fig: Figure,
    update: Callable[[int], Any],
    num_frames: int,
    fps: float = 5.0,
    format: str = "html",
    path: str | os.PathLike | None = None,
) -> Any:
    """Render ``update(k)`` for k = 0..num_frames-1 on ``fig`` as something a static page plays.

    ``format="html"``: matplotlib's ``to_jshtml`` (frames embedded as PNG with a
    slider and play buttons; plays in the rendered book without a kernel).
    ``"gif"``: encoded with Pillow and returned as an embedded ``<img>``.
    ``"mp4"``: needs ffmpeg; returned as an embedded ``<video>``. With ``path`` the
    HTML page, GIF or MP4 is also written there. The figure is closed afterwards so
    the notebook does not show it a second time. Returns ``IPython.display.HTML``.
    """
    from IPython.display import HTML
    from matplotlib import animation

    if format not in ANIMATION_FORMATS:
        raise ValueError(f"format={format!r}; choose one of {ANIMATION_FORMATS}.")
    if format == "mp4" and not animation.writers.is_available("ffmpeg"):
        plt.close(fig)
        raise RuntimeError(
            "Saving an MP4 needs ffmpeg, which was not found on PATH. Install it (e.g. "
            "`apt install ffmpeg` or `conda install ffmpeg`) or use format='gif'."
        )
    anim = animation.FuncAnimation(fig, update, frames=num_frames, interval=1000.0 / fps, blit=False)
    try:
        if format == "html":
            html = anim.to_jshtml(fps=fps, default_mode="once")
            if path is not None:
                Path(path).write_text(html)
            return HTML(html)
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(path) if path is not None else Path(tmp) / f"animation.{format}"
            writer = animation.PillowWriter(fps=fps) if format == "gif" else animation.FFMpegWriter(fps=fps)
            anim.save(out, writer=writer)
            data = base64.b64encode(out.read_bytes()).decode("ascii")
        if format == "gif":
            return HTML(f'<img src="data:image/gif;base64,{data}" alt="animation"/>')
        return HTML(f'<video controls loop><source src="data:video/mp4;base64,{data}" type="video/mp4"></video>')
    finally:
        plt.close(fig)


def _frame_indices(n: int, max_frames: int | None) -> list[int]:
    """Up to ``max_frames`` evenly spaced indices of n frames, always the first and the last."""
    if max_frames is None or n <= max_frames:
        return list(range(n))
    if max_frames < 2:
        raise ValueError(f"max_frames must be >= 2 (first and last frame); got {max_frames}.")
    return sorted({round(k * (n - 1) / (max_frames - 1)) for k in range(max_frames)})


def _frame_grid(frame: Any, max_images: int, nrow: int | None, value_range) -> np.ndarray:
    batch = frame[:max_images] if isinstance(frame, torch.Tensor) and frame.dim() == 4 else frame
    return _compose_grid(_to_display_arrays(batch, value_range), nrow)[0]


def animate_sampling(
    frames_xt: Sequence[torch.Tensor] | TrajectoryRecorder,
    frames_x0: Sequence[torch.Tensor | None] | None = None,
    titles: Sequence[str] | None = None,
    fps: float = 5.0,
    format: str = "html",
    path: str | os.PathLike | None = None,
    max_images: int = 8,
    nrow: int | None = None,
    max_frames: int | None = 60,
    value_range: tuple[float, float] = (-1.0, 1.0),
    figsize: tuple[float, float] | None = None,
    dpi: int = 80,
) -> Any:
    """Animate a sampling trajectory: x_t and the predicted x̂_0 side by side. Chapter 1.

    Args:
        frames_xt: one (B, C, H, W) or (C, H, W) tensor per step, or a
            :class:`TrajectoryRecorder` (then ``frames_x0`` and ``titles`` come from it).
        frames_x0: the model's prediction of x_0 at the same steps (None: x_t only;
            a None frame is drawn blank).
        titles: one title per frame (default: "frame k").
        format: "html" (a slider player that plays in the static book), "gif" or
            "mp4" (needs ffmpeg); see :func:`render_animation`. ``path`` also saves it.
        max_images: images of the batch shown per panel, tiled ``nrow`` per row.
        max_frames: keep at most this many evenly spaced frames (first and last
            included) so the page stays small; None keeps all.
        value_range: the values mapped to black and white (x_t of a VP sampler is
            roughly in [-3, 3] early on; values outside are clipped).

    Returns:
        ``IPython.display.HTML``.
    """
    if isinstance(frames_xt, TrajectoryRecorder):
        recorder = frames_xt
        frames_xt = recorder.frames_xt
        frames_x0 = recorder.frames_x0 if frames_x0 is None else frames_x0
        titles = recorder.titles() if titles is None else titles
    frames_xt = list(frames_xt)
    n = len(frames_xt)
    if n == 0:
        raise ValueError("animate_sampling got no frames; record some steps first (see TrajectoryRecorder).")
    if frames_x0 is not None and all(f is None for f in frames_x0):
        frames_x0 = None
    for name, other in (("frames_x0", frames_x0), ("titles", titles)):
        if other is not None and len(other) != n:
            raise ValueError(f"animate_sampling got {n} frames_xt but {len(other)} {name}; they must match.")

    keep = _frame_indices(n, max_frames)
    grids_xt = [_frame_grid(frames_xt[k], max_images, nrow, value_range) for k in keep]
    grids_x0 = None
    if frames_x0 is not None:
        blank = np.full_like(grids_xt[0], np.nan)
        grids_x0 = [blank if frames_x0[k] is None else _frame_grid(frames_x0[k], max_images, nrow, value_range)
                    for k in keep]
    labels = [str(titles[k]) if titles is not None else f"frame {k}" for k in keep]

    panels = 1 if grids_x0 is None else 2
    height, width = grids_xt[0].shape[:2]
    if figsize is None:
        figsize = (min(4.0 * panels * width / height, 12.0), 4.4)
    fig, axes = plt.subplots(1, panels, figsize=figsize, dpi=dpi, squeeze=False)
    axes = axes.flat
    images = []
    for ax, grids, name in zip(axes, (grids_xt, grids_x0), ("current x_t", "predicted x̂_0")):
        images.append(ax.imshow(grids[0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest"))
        ax.set(xticks=[], yticks=[], title=name)
    heading = fig.suptitle(labels[0])
    fig.tight_layout()

    def update(k: int):
        images[0].set_data(grids_xt[k])
        if grids_x0 is not None:
            images[1].set_data(grids_x0[k])
        heading.set_text(labels[k])
        return [*images, heading]

    return render_animation(fig, update, len(keep), fps=fps, format=format, path=path)
