"""dl.fit_batch_size and dl.fit_resolution: the largest batch (and image side) whose trial training step fits
the device's memory (chapter 10)."""

import dataclasses

import pytest
import torch

import ddpm_lib as dl

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_net(**kw):
    return dl.diffusers_unet(image_size=8, in_channels=1, block_out_channels=(8, 16), layers_per_block=1,
                             attention_blocks=0, **kw)


def test_doubling_stops_at_the_budget():
    per_image = 1000
    fit = dl.fit_batch_size(tiny_net(), (1, 8, 8), max_batch_size=64, budget_bytes=10_500,
                            measure=lambda b: 500 + per_image * b)
    assert fit.batch_size == 8 and fit.fits and not fit.lower_resolution
    assert list(fit.measured) == [1, 2, 4, 8, 16]  # stopped at the first size over the budget
    assert fit.measured[16] > fit.budget_bytes >= fit.measured[8]
    assert "batch size 8 fits" in str(fit)


def test_doubling_stops_at_out_of_memory():
    def measure(b):
        if b >= 32:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return b

    fit = dl.fit_batch_size(tiny_net(), (1, 8, 8), max_batch_size=128, budget_bytes=10**9, measure=measure)
    assert fit.batch_size == 16 and fit.measured[32] is None and 64 not in fit.measured
    assert "out of memory" in str(fit)


def test_max_batch_size_is_tried_last_and_caps():
    fit = dl.fit_batch_size(tiny_net(), (1, 8, 8), max_batch_size=24, budget_bytes=10**9, measure=lambda b: b)
    assert list(fit.measured) == [1, 2, 4, 8, 16, 24] and fit.batch_size == 24


def test_nothing_fits_says_lower_the_resolution():
    fit = dl.fit_batch_size(tiny_net(), (1, 8, 8), min_batch_size=4, budget_bytes=100, measure=lambda b: 60 * b)
    assert fit.batch_size == 1 and not fit.fits and fit.lower_resolution
    assert "lower the resolution" in str(fit)


def test_other_errors_are_not_swallowed():
    def measure(b):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    with pytest.raises(RuntimeError, match="shapes"):
        dl.fit_batch_size(tiny_net(), (1, 8, 8), budget_bytes=10**9, measure=measure)


def test_cpu_measurement_grows_with_batch_and_pixels_and_leaves_the_model_alone():
    net = tiny_net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    m = {b: dl.measure_step_memory(net, b, (1, 8, 8)) for b in (2, 4, 8)}
    weights = sum(p.numel() * p.element_size() for p in net.parameters())
    assert all(v > 4 * weights for v in m.values())
    act = {b: m[b] - 4 * weights for b in m}  # the activations saved for backward
    assert act[4] == pytest.approx(2 * act[2], rel=0.1) and act[8] == pytest.approx(2 * act[4], rel=0.1)
    big = dl.diffusers_unet(image_size=16, in_channels=1, block_out_channels=(8, 16), layers_per_block=1,
                            attention_blocks=0)
    act16 = dl.measure_step_memory(big, 2, (1, 16, 16)) - 4 * weights
    assert act16 == pytest.approx(4 * act[2], rel=0.1), "four times the pixels, four times the activations"
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items()), "the model was changed"


def test_real_measurement_on_the_cpu_with_a_budget():
    net = tiny_net(num_classes=3)
    per_2 = dl.measure_step_memory(net, 2, (1, 8, 8), num_classes=3)
    fit = dl.fit_batch_size(net, (1, 8, 8), max_batch_size=16, budget_bytes=per_2 + 1, num_classes=3)
    assert fit.batch_size == 2 and set(fit.measured) == {1, 2, 4}


@pytest.mark.parametrize("kw,match", [
    (dict(max_batch_size=0), "max_batch_size"), (dict(min_batch_size=8, max_batch_size=4), "larger"),
    (dict(memory_fraction=1.5), "memory_fraction"), (dict(budget_bytes=-1), "budget_bytes"),
])
def test_bad_input(kw, match):
    with pytest.raises(ValueError, match=match):
        dl.fit_batch_size(tiny_net(), (1, 8, 8), measure=lambda b: b, **kw)


# ----------------------------------------------------------------------------- fit_resolution


def net_for(side):
    """Two levels: the network halves the side once, so it takes even sides only."""
    return dl.diffusers_unet(image_size=side, in_channels=1, block_out_channels=(8, 16), layers_per_block=1,
                             attention_blocks=0)


def memory_model(limit):
    """A fake device: a step needs 1,000 bytes + 10 bytes per pixel per image; past ``limit`` it runs out."""
    calls = []

    def measure(side, batch):
        calls.append((side, batch))
        used = 1000 + 10 * side * side * batch
        if used > limit:
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {used} bytes")
        return used

    return measure, calls


def test_resolution_keeps_the_largest_side_that_fits():
    measure, calls = memory_model(limit=10**9)
    fit = dl.fit_resolution(net_for, [16, 8, 12], channels=1, max_batch_size=32, min_batch_size=8,
                            budget_bytes=10**9, measure=measure)
    assert (fit.image_size, fit.batch_size) == (16, 32) and fit.fits
    assert list(fit.by_size) == [16] and {side for side, _ in calls} == {16}, "smaller sides are not measured"
    assert fit.measured == {b: 1000 + 2560 * b for b in (1, 2, 4, 8, 16, 32)}
    assert "16 px images, batch size 32" in str(fit)


def test_resolution_is_lowered_until_min_batch_size_fits():
    # 16 px: 2,560 bytes an image; 12 px: 1,440; 8 px: 640. Budget 12,000 bytes, at least 8 images.
    measure, calls = memory_model(limit=12_000)
    fit = dl.fit_resolution(net_for, [8, 12, 16], channels=1, max_batch_size=64, min_batch_size=8,
                            budget_bytes=10**9, measure=measure)
    assert fit.image_size == 8 and fit.batch_size == 16 and fit.fits  # 1,000 + 640 x 16 = 11,240
    assert list(fit.by_size) == [16, 12, 8] and list(dict.fromkeys(s for s, _ in calls)) == [16, 12, 8], \
        "largest first"
    assert fit.by_size[16].batch_size == 4 and fit.by_size[16].measured[8] is None  # out of memory at 8
    assert fit.by_size[12].batch_size == 4 and not fit.by_size[12].fits
    assert fit.by_size[8].measured == fit.measured and not fit.by_size[8].by_size
    assert dataclasses.asdict(fit)["by_size"][16]["batch_size"] == 4, "no cycle"
    text = str(fit)
    assert "8 px images, batch size 16" in text and "16 px: fewer than 8 images fit" in text, text
    assert "out of memory" in text


def test_resolution_respects_the_budget_as_well_as_out_of_memory():
    measure, _ = memory_model(limit=10**9)
    fit = dl.fit_resolution(net_for, [16, 8], channels=1, max_batch_size=64, min_batch_size=4,
                            budget_bytes=7_000, measure=measure)
    assert fit.image_size == 8 and fit.batch_size == 8  # 16 px: 4 images need 11,240 > 7,000
    assert fit.by_size[16].measured == {1: 3560, 2: 6120, 4: 11240}


def test_resolution_nothing_fits_says_what_to_do():
    measure, _ = memory_model(limit=1500)
    with pytest.raises(RuntimeError, match="smallest side, 8 px") as e:
        dl.fit_resolution(net_for, [16, 8], channels=1, min_batch_size=2, budget_bytes=10**9, measure=measure)
    message = str(e.value)
    assert "16 px: 1: out of memory" in message and "smaller network" in message, message


def test_resolution_refuses_a_side_the_network_cannot_take_before_measuring():
    measure, calls = memory_model(limit=10**9)

    def three_levels(side):  # halves twice: sides that are multiples of 4
        return dl.diffusers_unet(image_size=side, in_channels=1, block_out_channels=(8, 16, 16),
                                 layers_per_block=1, attention_blocks=0)

    with pytest.raises(ValueError, match="cannot take 14 px") as e:
        dl.fit_resolution(three_levels, [28, 14], channels=1, budget_bytes=10**9, measure=measure)
    assert "multiple" in str(e.value) and calls == [], "nothing is measured before the sides are checked"
    with pytest.raises(ValueError, match=r"make_model\(8\) built a network for 16 px"):
        dl.fit_resolution(lambda side: net_for(16), [16, 8], channels=1, budget_bytes=10**9, measure=measure)


@pytest.mark.parametrize("sizes,kw,match", [
    ([], {}, "sizes is empty"), ([16, 0], {}, "positive integers"), ([16.0], {}, "positive integers"),
    ([16], dict(channels=0), "channels"), ([16], dict(min_batch_size=8, max_batch_size=4), "larger"),
    ([16], dict(budget_bytes=0), "budget_bytes"),
])
def test_resolution_bad_input(sizes, kw, match):
    with pytest.raises(ValueError, match=match):
        dl.fit_resolution(net_for, sizes, **{"channels": 1, "measure": lambda s, b: b, **kw})


def test_resolution_real_measurement_on_the_cpu():
    """Without the hook: real trial steps; a budget between the 16 px and the 8 px need picks 8 px."""
    at_16 = dl.measure_step_memory(net_for(16), 4, (1, 16, 16))
    at_8 = dl.measure_step_memory(net_for(8), 4, (1, 8, 8))
    assert at_8 < at_16
    fit = dl.fit_resolution(net_for, [16, 8], channels=1, max_batch_size=4, min_batch_size=4,
                            budget_bytes=(at_8 + at_16) // 2)
    assert (fit.image_size, fit.batch_size) == (8, 4) and fit.measured[4] == at_8
    assert fit.by_size[16].batch_size < 4
