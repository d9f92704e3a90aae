"""dl.fit_batch_size: the largest batch whose trial training step fits the device's memory (chapter 10)."""

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
