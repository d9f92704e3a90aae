"""Does it fit the device? Pick the batch size by measuring a trial training step (chapter 10).

A profile's batch size is a guess made for some machine; the device in front of you
may have less memory (a small GPU, a busy laptop) or more. ``fit_batch_size`` runs
one real training step (forward, backward and an AdamW update on random images of
the right shape) at batch sizes 1, 2, 4, ... and keeps the largest whose memory
stays inside a budget, stopping at the first that runs out of memory:

* on a GPU the memory is measured by the allocator (``torch.cuda.max_memory_allocated``
  around the step) and the budget is a fraction of the card's total memory;
* on the CPU, where torch keeps no such counter, it counts the bytes of the tensors
  autograd saves for the backward pass plus the weights, gradients and AdamW's two
  moments, and the budget is a number you give (``budget_bytes``; default: a
  quarter of the memory available when it is called).

When even ``min_batch_size`` images do not fit, the result says to lower the
resolution: activation memory grows with the number of pixels, so halving the side
of the images divides it by about four. ``fit_resolution`` does that itself: given
the image sides the data and the network allow (each a multiple of the network's
total downsampling factor) and a function that builds the network for a side, it
runs ``fit_batch_size`` at the largest side, then the next, ..., and keeps the first
side at which at least ``min_batch_size`` images fit.
"""

from __future__ import annotations

import dataclasses
import os
import textwrap
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from torch import nn

__all__ = ["DeviceFit", "fit_batch_size", "fit_resolution", "measure_step_memory"]


@dataclass
class DeviceFit:
    """What ``fit_batch_size`` (or ``fit_resolution``) found: the batch size to use, and every measurement.

    From ``fit_resolution`` it also holds the image side chosen (``image_size``) and the
    fits at every side tried (``by_size``, largest first; the last is this one).
    """

    batch_size: int  # the largest batch size tried that fitted the budget (0: none did)
    budget_bytes: int  # the memory one training step may use
    device: str
    measured: dict[int, int | None] = field(default_factory=dict)  # batch size -> bytes (None: out of memory)
    min_batch_size: int = 1
    image_size: int | None = None  # the side these measurements were made at (fit_resolution)
    by_size: dict[int, DeviceFit] = field(default_factory=dict)  # fit_resolution: side -> fit, largest first

    @property
    def fits(self) -> bool:
        """Whether at least ``min_batch_size`` images fit in one step."""
        return self.batch_size >= self.min_batch_size

    @property
    def lower_resolution(self) -> bool:
        """True when the images should be smaller: not even ``min_batch_size`` of them fit."""
        return not self.fits

    def _rows(self) -> str:
        return ", ".join(f"{b}: {'out of memory' if m is None else f'{m / 2**20:.1f} MiB'}"
                         for b, m in self.measured.items())

    def __str__(self) -> str:
        budget = f"{self.device}, budget {self.budget_bytes / 2**20:.0f} MiB per training step"
        if self.by_size:  # fit_resolution: one line per side tried
            lines = [f"{self.image_size} px images, batch size {self.batch_size} ({budget}); measured:"]
            for side, f in self.by_size.items():  # lines of at most 88 characters
                verdict = "fits" if f.fits else f"fewer than {f.min_batch_size} images fit"
                rows = f._rows().replace(" ", "\xa0").replace(",\xa0", ", ")  # break between entries only
                lines += [line.replace("\xa0", " ") for line in textwrap.wrap(
                    f"{side} px: {verdict} ({rows})", 88, initial_indent="  ", subsequent_indent="    ")]
            return "\n".join(lines)
        verdict = (f"batch size {self.batch_size} fits" if self.fits else
                   f"not even {self.min_batch_size} images fit: lower the resolution (half the side, "
                   "about a quarter of the memory) or use a smaller network")
        size = "" if self.image_size is None else f"{self.image_size} px images, "
        return f"{verdict} ({size}{budget}; measured: {self._rows()})"


def _is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower()


def _cpu_budget() -> int:
    """A quarter of the memory available now (Linux / macOS), else 2 GiB."""
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 4
    except (ValueError, OSError, AttributeError):
        return 2 * 2**30


def _budget(device: torch.device, budget_bytes: int | None, memory_fraction: float) -> int:
    if not 0 < memory_fraction <= 1:
        raise ValueError(f"memory_fraction must be in (0, 1], got {memory_fraction}.")
    if budget_bytes is not None:
        if budget_bytes <= 0:
            raise ValueError(f"budget_bytes must be positive, got {budget_bytes}.")
        return int(budget_bytes)
    if device.type == "cuda":
        return int(memory_fraction * torch.cuda.get_device_properties(device).total_memory)
    return _cpu_budget()


def measure_step_memory(
    model: nn.Module,
    batch_size: int,
    image_shape: tuple[int, int, int],
    device: torch.device | str | None = None,
    prediction: str = "eps",
    num_classes: int | None = None,
) -> int:
    """Bytes that one training step of ``model`` at ``batch_size`` needs on ``device`` (measured).

    The step is the Trainer's: ``dl.diffusion_loss`` on random images (labels when
    ``num_classes`` is given), backward, and one AdamW update, on a copy of the model
    so the original is untouched. GPU: the allocator's peak during the step minus
    what was allocated before. CPU: bytes saved for backward plus weights, gradients
    and AdamW's moments. Raises the device's out-of-memory error when it runs out.
    """
    import copy

    from .losses import diffusion_loss
    from .schedules import make_schedule

    device = torch.device(device or "cpu")
    net = copy.deepcopy(model).to(device).train()
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    schedule = make_schedule("linear")
    g = torch.Generator(device=device).manual_seed(0)
    x0 = torch.rand((batch_size, *image_shape), generator=g, device=device) * 2 - 1
    y = None if num_classes is None else torch.randint(0, num_classes, (batch_size,), generator=g, device=device)
    saved, weight_ptrs = [0], {p.data_ptr() for p in net.parameters()}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.data_ptr() not in weight_ptrs:  # the weights are counted once, below
            saved[0] += t.numel() * t.element_size()
        return t

    cuda = device.type == "cuda"
    try:
        if cuda:
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = diffusion_loss(net, x0, schedule, prediction=prediction, class_labels=y, generator=g)
        loss.backward()
        opt.step()
        if cuda:
            torch.cuda.synchronize(device)
            return int(torch.cuda.max_memory_allocated(device) - before)
        weights = sum(p.numel() * p.element_size() for p in params)
        return int(saved[0] + 4 * weights)  # weights, gradients, AdamW's exp_avg and exp_avg_sq
    finally:
        del net, opt
        if cuda:
            torch.cuda.empty_cache()


def fit_batch_size(
    model: nn.Module,
    image_shape: tuple[int, int, int],
    device: torch.device | str | None = None,
    max_batch_size: int = 256,
    min_batch_size: int = 1,
    budget_bytes: int | None = None,
    memory_fraction: float = 0.8,
    prediction: str = "eps",
    num_classes: int | None = None,
    measure: Callable[[int], int] | None = None,
) -> DeviceFit:
    """The largest power-of-two batch size up to ``max_batch_size`` whose training step fits (chapter 10).

    Tries 1, 2, 4, ... (and ``max_batch_size`` itself last) with ``measure_step_memory``;
    stops at the first size that runs out of memory or needs more than the budget.
    The budget is ``budget_bytes`` if given, else ``memory_fraction`` of a GPU's total
    memory, or on the CPU a quarter of the memory available now. ``measure(batch_size)
    -> bytes`` replaces the measurement (tests; it may raise an out-of-memory error).
    Returns a ``DeviceFit``; its ``lower_resolution`` is True when not even
    ``min_batch_size`` images fit.
    """
    for name, v in (("max_batch_size", max_batch_size), ("min_batch_size", min_batch_size)):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}.")
    if min_batch_size > max_batch_size:
        raise ValueError(f"min_batch_size={min_batch_size} is larger than max_batch_size={max_batch_size}.")
    device = torch.device(device or "cpu")
    budget_bytes = _budget(device, budget_bytes, memory_fraction)
    if measure is None:
        def measure(b: int) -> int:
            return measure_step_memory(model, b, image_shape, device, prediction, num_classes)

    sizes, b = [], 1
    while b < max_batch_size:
        sizes.append(b)
        b *= 2
    sizes.append(max_batch_size)
    result = DeviceFit(batch_size=0, budget_bytes=int(budget_bytes), device=str(device), min_batch_size=min_batch_size)
    for b in sizes:
        try:
            used = int(measure(b))
        except RuntimeError as e:
            if not _is_oom(e):
                raise
            result.measured[b] = None
            break
        result.measured[b] = used
        if used > budget_bytes:
            break
        result.batch_size = b
    return result


def fit_resolution(
    make_model: Callable[[int], nn.Module],
    sizes: Iterable[int],
    channels: int,
    device: torch.device | str | None = None,
    max_batch_size: int = 256,
    min_batch_size: int = 1,
    budget_bytes: int | None = None,
    memory_fraction: float = 0.8,
    prediction: str = "eps",
    num_classes: int | None = None,
    measure: Callable[[int, int], int] | None = None,
) -> DeviceFit:
    """The largest image side in ``sizes`` at which ``min_batch_size`` images fit, and the batch size there.

    ``make_model(side)`` builds the network for ``side`` x ``side`` images with
    ``channels`` channels; every side must be one it can take (for a UNet, a multiple
    of its total downsampling factor: a UNet with three levels halves twice, so 28, 24,
    20, ... px, not 14). The sides are tried largest first, each with ``fit_batch_size``
    (trial training steps at 1, 2, 4, ... up to ``max_batch_size`` images, against one
    budget: ``budget_bytes``, else ``memory_fraction`` of a GPU's memory, or on the CPU a
    quarter of the memory available now); the first side at which at least
    ``min_batch_size`` images fit is kept. ``measure(side, batch_size) -> bytes``
    replaces the measurement (tests; it may raise an out-of-memory error).

    Returns a ``DeviceFit`` for the chosen side (``image_size``, ``batch_size``,
    ``measured``) whose ``by_size`` holds the fits of every side tried. Raises
    ``ValueError`` for no sides, a side that is not a positive integer, or one the
    network cannot take (checked for every side before anything is measured), and
    ``RuntimeError`` when not even the smallest side fits, with what to do. Chapter 10.
    """
    sides = list(sizes)
    if not sides:
        raise ValueError("sizes is empty: give the image sides to try, e.g. [64, 56, 48] for a network "
                         "that downsamples 8 times.")
    bad = [s for s in sides if isinstance(s, bool) or not isinstance(s, int) or s < 1]
    if bad:
        raise ValueError(f"image sides must be positive integers, got {bad}.")
    sides = sorted(set(sides), reverse=True)
    if not isinstance(channels, int) or channels < 1:
        raise ValueError(f"channels must be a positive integer, got {channels!r}.")
    from .models.registry import model_image_shape

    for side in sides:  # a side the network cannot take is bad input, whichever side would fit
        try:
            model = make_model(side)
        except ValueError as e:
            raise ValueError(f"the network cannot take {side} px images ({e}). Give only sides it can "
                             "take, e.g. multiples of its total downsampling factor.") from e
        built = model_image_shape(model)[1]
        if built not in (None, side):
            raise ValueError(f"make_model({side}) built a network for {built} px images: it must build "
                             "the network for the side it is given.")
        del model
    device = torch.device(device or "cpu")
    budget_bytes = _budget(device, budget_bytes, memory_fraction)
    by_size: dict[int, DeviceFit] = {}
    for side in sides:
        fit = fit_batch_size(
            make_model(side), (channels, side, side), device, max_batch_size, min_batch_size, budget_bytes,
            prediction=prediction, num_classes=num_classes,
            measure=None if measure is None else (lambda b, side=side: measure(side, b)),
        )
        fit.image_size = side
        by_size[side] = fit
        if fit.fits:
            return dataclasses.replace(fit, by_size=by_size)  # a copy: by_size holds no cycle
    tried = "\n".join(f"  {side} px: {f._rows()}" for side, f in by_size.items())
    raise RuntimeError(
        f"not even {min_batch_size} image(s) of the smallest side, {sides[-1]} px, fit in "
        f"{budget_bytes / 2**20:.0f} MiB per training step on {device}; measured (batch size: memory):\n"
        f"{tried}\nUse a smaller network (fewer or narrower levels), smaller sides, a smaller "
        "min_batch_size (with gradient accumulation), or a device with more memory."
    )
