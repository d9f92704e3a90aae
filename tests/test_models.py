"""Tests for ddpm_lib.models: shapes, switches, conditioning, errors, config round trips."""

import itertools
import json

import pytest
import torch

import ddpm_lib as dl
from ddpm_lib.models import (
    BasicUNet,
    DiT,
    UNet,
    build_model,
    count_parameters,
    diffusers_unet,
    model_config,
    timestep_embedding,
)


def tiny_unet(**kw):
    base = {
        "image_size": 8,
        "channels": (8, 16),
        "layers_per_level": 1,
        "attention_resolutions": (4,),
        "attention_heads": 2,
    }
    return UNet(**{**base, **kw})


def tiny_dit(**kw):
    base = {"image_size": 8, "in_channels": 1, "patch_size": 2, "dim": 16, "depth": 2, "heads": 2}
    return DiT(**{**base, **kw})


def randomize_zero_inits(model):
    """adaLN-Zero starts with zero gates and output; give them random values to test the wiring."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if torch.all(p == 0):
                p.normal_(0, 0.1)
    return model


def all_params_get_gradients(model, out):
    model.zero_grad()
    out.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"no gradient for {missing}"
    assert any(p.grad.abs().sum() > 0 for p in model.parameters())


# ----------------------------------------------------------------------------- BasicUNet


@pytest.mark.parametrize("size", [28, 32])
def test_basic_unet_shapes_with_and_without_t(size):
    torch.manual_seed(0)
    model = BasicUNet(in_channels=1, out_channels=1, channels=(8, 16, 16))
    x = torch.randn(2, 1, size, size)
    y = model(x)
    assert y.shape == x.shape
    assert torch.equal(y, model(x, torch.tensor([3, 900])))  # t is ignored
    assert torch.equal(y, dl.call_model(model, x, 7))
    all_params_get_gradients(model, y)
    assert y.min() < 0  # the output layer has no SiLU, so it can be negative


def test_basic_unet_bad_size():
    with pytest.raises(ValueError, match="multiple of 4"):
        BasicUNet()(torch.randn(1, 1, 30, 30))
    with pytest.raises(ValueError, match="3 entries"):
        BasicUNet(channels=(8, 16))


LADDER_SWITCHES = [
    {"time_embedding": True},
    {"time_embedding": True, "norm": "group"},
    {"norm": "batch"},
    {"residual": True},
    {"attention": True},
    {"skips": "concat"},
    {"skips": "none"},
    {"dropout": 0.1},
    {"time_embedding": True, "scale_shift": True},
    {"num_classes": 10},
    {
        "time_embedding": True,
        "norm": "group",
        "residual": True,
        "attention": True,
        "skips": "concat",
        "scale_shift": True,
        "num_classes": 10,
        "dropout": 0.1,
    },
]


@pytest.mark.parametrize(
    "switches", LADDER_SWITCHES, ids=lambda s: "-".join(f"{k}={v}" for k, v in s.items())
)
def test_basic_unet_switches_shapes_gradients_and_round_trip(switches):
    torch.manual_seed(0)
    model = BasicUNet(channels=(8, 16, 16), **switches)
    x, t = torch.randn(3, 1, 12, 12), torch.tensor([0, 500, 999])
    labels = torch.tensor([1, 2, 10]) if switches.get("num_classes") else None
    y = model(x, t, labels)
    assert y.shape == x.shape and torch.isfinite(y).all()
    all_params_get_gradients(model, y)
    rebuilt = build_model(json.loads(json.dumps(model_config(model))))
    rebuilt.load_state_dict(model.state_dict())
    model.eval(), rebuilt.eval()
    with torch.no_grad():
        assert torch.equal(model(x, t, labels), rebuilt(x, t, labels))


def test_basic_unet_default_is_the_minimal_unet():
    """No switch on: the same parameters as before the switches existed, and a hand-written forward."""
    torch.manual_seed(0)
    model = BasicUNet(channels=(4, 8, 8))
    assert sorted(model.state_dict()) == sorted(
        f"{side}_layers.{i}.{w}" for side in ("down", "up") for i in range(3) for w in ("weight", "bias")
    )
    x = torch.randn(2, 1, 8, 8)
    d, u, act = model.down_layers, model.up_layers, torch.nn.functional.silu
    pool, up = torch.nn.functional.max_pool2d, lambda h: torch.nn.functional.interpolate(h, scale_factor=2)
    h1 = act(d[0](x))
    h2 = act(d[1](pool(h1, 2)))
    h3 = act(d[2](pool(h2, 2)))
    o = act(u[0](h3))
    o = act(u[1](up(o) + h2))
    o = u[2](up(o) + h1)
    with torch.no_grad():
        assert torch.allclose(model(x), o, atol=1e-6)


def test_basic_unet_time_embedding_is_a_bias_per_channel():
    """With zeroed projections the timestep changes nothing; with a bias it changes the output."""
    torch.manual_seed(0)
    model = BasicUNet(channels=(4, 8, 8), time_embedding=True)
    x = torch.randn(1, 1, 8, 8)
    with torch.no_grad():
        for proj in model.emb_proj:
            proj.weight.zero_(), proj.bias.zero_()
        plain = BasicUNet(channels=(4, 8, 8))
        plain.load_state_dict({k: v for k, v in model.state_dict().items() if "_layers" in k})
        assert torch.allclose(model(x, 10), plain(x), atol=1e-6)
        assert torch.allclose(model(x, 10), model(x, 900), atol=1e-6)
        model.emb_proj[2].bias.fill_(1.0)  # the same +1 on every channel of the bottleneck
        assert not torch.allclose(model(x, 10), plain(x), atol=1e-4)
        torch.nn.init.normal_(model.emb_proj[2].weight)
        assert not torch.allclose(model(x, 10), model(x, 900), atol=1e-4)


def test_basic_unet_concat_with_tied_weights_equals_add():
    """A conv on [up; skip] with weights [W, W] is W(up + skip): concatenation can do what addition does."""
    torch.manual_seed(0)
    add, cat = BasicUNet(channels=(4, 8, 8)), BasicUNet(channels=(4, 8, 8), skips="concat")
    state = add.state_dict()
    for i in (1, 2):
        w = state[f"up_layers.{i}.weight"]
        state[f"up_layers.{i}.weight"] = torch.cat([w, w], dim=1)
    cat.load_state_dict(state)
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(add(x), cat(x), atol=1e-5)
        assert not torch.allclose(add(x), BasicUNet(channels=(4, 8, 8), skips="none")(x), atol=1e-3)


def test_basic_unet_bad_switches():
    with pytest.raises(ValueError, match="skips must be one of"):
        BasicUNet(skips="sum")
    with pytest.raises(ValueError, match="scale_shift=True needs a condition"):
        BasicUNet(scale_shift=True)
    with pytest.raises(ValueError, match="model\\(x, t\\)"):
        BasicUNet(channels=(4, 8, 8), time_embedding=True)(torch.randn(1, 1, 8, 8))
    with pytest.raises(ValueError, match="unconditional"):
        BasicUNet(channels=(4, 8, 8))(torch.randn(1, 1, 8, 8), 3, torch.tensor([1]))


# ----------------------------------------------------------------------------- UNet

SWITCHES = list(
    itertools.product(
        [True, False], ["group", "batch", None], [(), (4,), (8, 4)], [True, False], [False, True]
    )
)


@pytest.mark.parametrize("residual,norm,attention,time_embedding,scale_shift", SWITCHES)
def test_unet_every_switch_combination(residual, norm, attention, time_embedding, scale_shift):
    torch.manual_seed(0)
    model = tiny_unet(
        residual=residual, norm=norm, attention_resolutions=attention, time_embedding=time_embedding,
        scale_shift=scale_shift, dropout=0.1,
    )  # fmt: skip
    x = torch.randn(3, 1, 8, 8)
    y = model(x, torch.tensor([0, 10, 999]))
    assert y.shape == x.shape and torch.isfinite(y).all()
    all_params_get_gradients(model, y)
    n_attn = sum(type(m).__name__ == "SelfAttention2d" for m in model.modules())
    # one per block at each attention resolution (down, up) + the middle one at 4 px
    assert n_attn == 2 * len(attention) + (4 in attention)


def test_unet_default_sizes_and_out_channels():
    model = UNet(
        in_channels=3, out_channels=6, image_size=16, channels=(8, 16, 16), attention_resolutions=(4,)
    )
    assert model(torch.randn(2, 3, 16, 16), 5).shape == (2, 6, 16, 16)
    # fully convolutional: other sizes that the downsampling can handle work too
    assert model(torch.randn(1, 3, 24, 32), 5).shape == (1, 6, 24, 32)


def test_unet_timestep_forms_and_effect():
    torch.manual_seed(0)
    model = tiny_unet().eval()
    x = torch.randn(2, 1, 8, 8)
    y_int = model(x, 5)
    assert torch.allclose(y_int, model(x, torch.tensor([5, 5])))
    assert torch.allclose(y_int, model(x, torch.tensor(5.0)))
    assert not torch.allclose(y_int, model(x, 900), atol=1e-4)  # the network sees t
    blind = tiny_unet(time_embedding=False).eval()
    assert torch.equal(blind(x, 5), blind(x, 900))
    with pytest.raises(ValueError, match="one timestep per image"):
        model(x, torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match=r"model\(x_t, t\)"):
        model(x)


def test_unet_bad_image_size_is_clear():
    with pytest.raises(ValueError, match="multiple of 4") as err:
        UNet(image_size=30, channels=(8, 16, 32))
    assert "30x30" in str(err.value)
    model = tiny_unet()
    with pytest.raises(ValueError, match="multiple of 2"):
        model(torch.randn(1, 1, 9, 9), 0)
    with pytest.raises(ValueError, match="attention_resolutions"):
        tiny_unet(attention_resolutions=(16,))
    with pytest.raises(ValueError, match="unknown norm"):
        tiny_unet(norm="layer")


def test_unet_class_conditioning_and_null_class():
    torch.manual_seed(0)
    model = tiny_unet(num_classes=3).eval()
    x = torch.randn(2, 1, 8, 8)
    y0 = model(x, 10, class_labels=torch.tensor([0, 0]))
    y1 = model(x, 10, class_labels=torch.tensor([1, 1]))
    assert not torch.allclose(y0, y1, atol=1e-5)
    # label K=3 is the null class, and no labels means the null class
    assert torch.equal(model(x, 10, class_labels=torch.tensor([3, 3])), model(x, 10))
    assert torch.allclose(dl.call_model(model, x, 10, class_labels=torch.tensor([0, 0])), y0)
    all_params_get_gradients(model, model(x, 10, class_labels=torch.tensor([0, 2])))
    with pytest.raises(ValueError, match="null class"):
        model(x, 10, class_labels=torch.tensor([0, 4]))
    with pytest.raises(ValueError, match="unconditional"):
        tiny_unet()(x, 10, class_labels=torch.tensor([0, 1]))
    # class conditioning without a timestep input still conditions on the class
    blind = tiny_unet(num_classes=3, time_embedding=False).eval()
    assert not torch.allclose(blind(x, 0, torch.tensor([0, 0])), blind(x, 0, torch.tensor([1, 1])), atol=1e-5)


def test_unet_labels_on_a_device_are_checked_there_not_read_back():
    """A class-conditional training step must not wait for the GPU to read its labels back.

    The meta device stands in for the GPU (its tensors hold no data, so reading one back raises,
    as the former ``y.min() < 0`` check did); the range check is queued on the device instead
    (tools/device_check.py shows a bad label stopping a CUDA program). CPU labels keep the
    ValueError that names the values (test above).
    """
    from unittest import mock

    for make in (tiny_unet, tiny_dit):
        with torch.device("meta"):
            model = make(num_classes=3)
            x, t = torch.empty(2, 1, 8, 8), torch.empty(2, dtype=torch.long)
            y = torch.empty(2, dtype=torch.long)
        with mock.patch.object(torch, "_assert_async", wraps=torch._assert_async) as check:
            out = model(x, t, class_labels=y)
        assert out.device.type == "meta" and out.shape == x.shape
        check.assert_called_once()
        assert "[0, 2], or be 3 for the null class" in check.call_args.args[1]
    with mock.patch.object(torch, "_assert_async") as check:  # numbers and CPU tensors: on the host
        with pytest.raises(ValueError, match=r"got values in \[-1, 0\]"):
            tiny_unet(num_classes=3)(torch.randn(2, 1, 8, 8), 10, class_labels=[0, -1])
        tiny_unet(num_classes=3)(torch.randn(2, 1, 8, 8), 10, class_labels=2)
    check.assert_not_called()
    with pytest.raises(ValueError, match="not booleans"):
        tiny_unet(num_classes=3)(torch.randn(2, 1, 8, 8), 10, class_labels=torch.tensor([True, False]))


def test_a_class_conditional_training_step_on_the_test_device_waits_for_nothing(device):
    """The loss, forward and backward of a class-conditional UNet with labels on ``device``.

    With DDPM_TEST_DEVICE=cuda (tools/device_check.sh) this runs on the GPU with CUDA's sync
    debugging set to "error": any read-back to the host raises there. On the CPU it checks that the
    same step runs and trains every parameter.
    """
    torch.manual_seed(0)
    model = tiny_unet(num_classes=3).to(device)
    schedule = dl.make_schedule("linear", num_timesteps=100).to(device)
    x0 = torch.randn(4, 1, 8, 8, device=device)
    y = torch.tensor([0, 1, 2, 3], device=device)  # 3: the null class

    def step():
        model.zero_grad()
        loss = dl.diffusion_loss(model, x0, schedule, class_labels=y)
        loss.backward()
        return loss

    step()  # warm-up: first-use library set-up may synchronise once
    if device.type == "cuda":
        torch.cuda.set_sync_debug_mode("error")
    try:
        loss = step()
    finally:
        if device.type == "cuda":
            torch.cuda.set_sync_debug_mode("default")
    assert loss.device.type == device.type and bool(torch.isfinite(loss))
    assert all(p.grad is not None and bool(torch.isfinite(p.grad).all()) for p in model.parameters())


def test_timestep_embedding_values():
    emb = timestep_embedding(torch.tensor([0.0, 1.0]), 6)
    assert emb.shape == (2, 6)
    assert torch.allclose(emb[0], torch.tensor([1.0, 1, 1, 0, 0, 0]))  # cos(0)=1, sin(0)=0
    assert torch.isclose(emb[1, 0], torch.cos(torch.tensor(1.0)))  # the fastest frequency is 1
    assert timestep_embedding(torch.tensor([3.0]), 7).shape == (1, 7)


# ----------------------------------------------------------------------------- DiT


def test_dit_shapes_zero_init_and_conditioning():
    torch.manual_seed(0)
    model = tiny_dit(num_classes=4)
    x = torch.randn(2, 1, 8, 8)
    y = model(x, torch.tensor([1, 500]))
    assert y.shape == x.shape
    assert torch.equal(y, torch.zeros_like(y))  # adaLN-Zero: the network starts as "predict 0"
    randomize_zero_inits(model).eval()
    y0 = model(x, 10, class_labels=torch.tensor([0, 0]))
    assert not torch.allclose(y0, model(x, 10, class_labels=torch.tensor([1, 1])), atol=1e-5)
    assert not torch.allclose(y0, model(x, 900, class_labels=torch.tensor([0, 0])), atol=1e-5)
    assert torch.equal(model(x, 10, class_labels=torch.tensor([4, 4])), model(x, 10))
    all_params_get_gradients(model, model(x, 10, class_labels=torch.tensor([0, 3])))


def test_dit_patchify_roundtrip_and_channels():
    model = tiny_dit(in_channels=3, patch_size=4, image_size=16)
    x = torch.randn(2, 3, 16, 16)
    tokens = x.reshape(2, 3, 4, 4, 4, 4).permute(0, 2, 4, 3, 5, 1).reshape(2, 16, 48)  # (B, N, p*p*C)
    assert torch.equal(model.unpatchify(tokens), x)
    assert model(x, 3).shape == x.shape


def test_dit_errors():
    with pytest.raises(ValueError, match="multiple of 3"):
        tiny_dit(patch_size=3)
    with pytest.raises(ValueError, match="divisible by heads"):
        tiny_dit(dim=18, heads=4)
    with pytest.raises(ValueError, match="8x8"):
        tiny_dit()(torch.randn(1, 1, 16, 16), 0)


# ----------------------------------------------------------------------------- configs


@pytest.mark.parametrize(
    "make",
    [
        lambda: BasicUNet(channels=(4, 8, 8)),
        lambda: tiny_unet(norm="batch", residual=False, num_classes=2, dropout=0.2),
        lambda: tiny_unet(norm=None, attention_resolutions=(), scale_shift=True),
        lambda: tiny_dit(num_classes=3),
        lambda: diffusers_unet(image_size=8, block_out_channels=(8, 16), layers_per_block=1),
    ],
)
def test_config_round_trip(make):
    torch.manual_seed(0)
    model = make().eval()
    spec = json.loads(json.dumps(model_config(model)))  # survives JSON
    rebuilt = build_model(spec).eval()
    assert type(rebuilt) is type(model)
    assert model_config(rebuilt) == spec
    rebuilt.load_state_dict(model.state_dict())
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(dl.call_model(model, x, 3), dl.call_model(rebuilt, x, 3))
    assert count_parameters(rebuilt) == sum(p.numel() for p in model.parameters())


def test_build_model_flat_form_and_errors():
    assert isinstance(
        build_model({"class": "DiT", "image_size": 8, "patch_size": 2, "dim": 8, "heads": 2}), DiT
    )
    with pytest.raises(ValueError, match="unknown model class"):
        build_model({"class": "ResNet"})
    with pytest.raises(ValueError, match="'class'"):
        build_model({"image_size": 8})


def test_count_parameters_trainable_only():
    model = BasicUNet(channels=(4, 8, 8))
    total = count_parameters(model)
    model.down_layers[0].weight.requires_grad_(False)
    assert count_parameters(model) == total - model.down_layers[0].weight.numel()
    assert count_parameters(model, trainable_only=False) == total


def test_diffusers_unet_small_defaults():
    model = diffusers_unet(image_size=8, block_out_channels=(8, 16), layers_per_block=1, num_classes=10)
    assert model.config.down_block_types == (
        "DownBlock2D",
        "AttnDownBlock2D",
    )  # attention at lowest resolution
    assert model.config.up_block_types == ("AttnUpBlock2D", "UpBlock2D")
    assert model.config.num_class_embeds == 11  # 10 classes + the null class
    x = torch.randn(2, 1, 8, 8)
    assert dl.call_model(model, x, 5, class_labels=torch.tensor([0, 10])).shape == x.shape
    with pytest.raises(ValueError, match="multiple of 2"):
        diffusers_unet(image_size=9, block_out_channels=(8, 16))
