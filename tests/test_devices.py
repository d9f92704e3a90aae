"""Devices (issue 19, items 3 and 5), checked without a GPU.

A network on PyTorch's "meta" device stands in for a GPU: meta tensors have no data, so any
read back to the host inside the sampling loop (``.item()``, ``bool(t)``, ``.tolist()``,
``float(t)``, ``.cpu()``) raises, and a dispatch mode records every float64 tensor that reaches
the device (MPS has none).
"""

from __future__ import annotations

import inspect

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import ddpm_lib as dl
from ddpm_lib import samplers as S
from ddpm_lib import train


class Float64OnDevice(TorchDispatchMode):
    """Records the ops that leave a float64 tensor on the meta device."""

    def __init__(self):
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        outs = out if isinstance(out, (tuple, list)) else [out]
        if any(isinstance(o, torch.Tensor) and o.device.type == "meta" and o.dtype == torch.float64 for o in outs):
            self.ops.append(str(func))
        return out


class MetaNet(nn.Module):
    """A tiny conditional network on the meta device that checks what it is given."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1, device="meta")
        self.seen: list[tuple[torch.device, torch.dtype, torch.device, torch.dtype]] = []

    def forward(self, x, t, class_labels=None):
        self.seen.append((x.device, x.dtype, t.device, t.dtype))
        return self.conv(x)


@pytest.mark.parametrize("prediction", ["eps", "v", "edm"])
@pytest.mark.parametrize("sampler", sorted(S.SAMPLERS))
def test_sampling_never_reads_the_device_and_never_sends_float64(sampler, prediction):
    schedule = dl.make_schedule("linear", num_timesteps=100)
    model = MetaNet()
    x_T = torch.randn(2, 1, 4, 4, dtype=torch.float64)  # on the CPU, float64: both must be fixed up
    options = {"n_steps_each": 2} if sampler == "langevin" else {}
    with Float64OnDevice() as mode:
        x = dl.sample(model, (2, 1, 4, 4), schedule, sampler, steps=3, prediction=prediction,
                      x_T=x_T, dtype=torch.float32, class_labels=torch.tensor([0, 1]), guidance_scale=2.0,
                      null_class=2, **options)
    assert x.device.type == "meta" and x.dtype == torch.float32
    assert mode.ops == []
    assert model.seen and all(d.type == "meta" and td.type == "meta" and tt != torch.float64
                              for d, _, td, tt in model.seen)


def test_a_given_x_T_moves_to_the_models_device():
    model = MetaNet()
    x = dl.sample(model, (1, 1, 4, 4), dl.make_schedule("linear", num_timesteps=50), "ddim", steps=2,
                  x_T=torch.randn(1, 1, 4, 4))
    assert x.device.type == "meta"


# ----------------------------------------------------------------------------- mixed precision "auto"


def _fake_gpu(monkeypatch, capability: tuple[int, int], has_kwarg: bool) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    if has_kwarg:  # torch >= 2.4: emulation counts unless including_emulation=False
        def is_bf16_supported(including_emulation: bool = True) -> bool:
            return capability[0] >= 8 or including_emulation
    else:
        def is_bf16_supported() -> bool:
            return capability[0] >= 8
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)


@pytest.mark.parametrize("has_kwarg", [True, False])
@pytest.mark.parametrize("capability, expected", [((7, 5), "fp16"), ((8, 0), "bf16"), ((9, 0), "bf16")])
def test_auto_mixed_precision_needs_bf16_in_hardware(monkeypatch, capability, expected, has_kwarg):
    _fake_gpu(monkeypatch, capability, has_kwarg)
    assert train._resolve_mixed_precision(train.TrainConfig(mixed_precision="auto")) == expected
    monkeypatch.setattr(train, "_cpu_native_bf16", lambda: False)
    assert train._resolve_mixed_precision(train.TrainConfig(mixed_precision="auto", cpu=True)) == "no"
    assert train._resolve_mixed_precision(train.TrainConfig(mixed_precision="bf16")) == "bf16"


@pytest.mark.parametrize("flags, expected", [("fpu avx2 avx512f", "no"), ("fpu avx512f avx512_bf16", "bf16"),
                                             ("fpu amx_bf16 amx_tile", "bf16")])
def test_auto_mixed_precision_on_the_cpu_uses_bf16_only_in_hardware(monkeypatch, tmp_path, flags, expected):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    real_path = train.Path
    monkeypatch.setattr(train, "Path", lambda p: real_path(cpuinfo) if p == "/proc/cpuinfo" else real_path(p))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert train._resolve_mixed_precision(train.TrainConfig(mixed_precision="auto")) == expected


# ----------------------------------------------------------------------------- CLI sample --device


@pytest.mark.parametrize("cuda, requested, expected", [
    (True, None, "cuda"), (False, None, "cpu"), (True, "cpu", "cpu"), (False, "mps", "mps")])
def test_cli_sample_uses_cuda_by_default_when_there_is_one(monkeypatch, tmp_path, cuda, requested, expected):
    from ddpm_lib import __main__ as cli
    from ddpm_lib import pipelines

    seen = []

    def fake_load(name, device=None):
        seen.append(device)
        raise FileNotFoundError("stop here")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(pipelines, "load_pretrained", fake_load)
    argv = ["sample", "ddpm-mnist", "--out", str(tmp_path / "grid.png")]
    assert cli.main(argv + (["--device", requested] if requested else [])) == 2
    assert seen == [expected]


# ----------------------------------------------------------------------------- one clip_x0 default


def test_clip_x0_has_one_default_everywhere():
    from ddpm_lib import __main__ as cli

    def default(fn):
        return inspect.signature(fn).parameters["clip_x0"].default

    assert default(dl.sample) is S.DEFAULT_CLIP_X0
    assert default(dl.make_denoiser) is S.DEFAULT_CLIP_X0
    trainer_default = default(train.Trainer.sample)  # the config's clip_x0, or the constant itself
    if trainer_default == "config":
        trainer_default = train.TrainConfig().clip_x0
    assert trainer_default is S.DEFAULT_CLIP_X0
    args = cli.build_parser().parse_args(["sample", "ddpm-mnist", "--out", "x.png"])
    assert args.clip_x0 is cli.FROM_EXPORT  # the export's recorded setting, else the library default:
    assert dl.Pretrained(None, None, "eps", "/nonexistent").sampling["clip_x0"] is S.DEFAULT_CLIP_X0
