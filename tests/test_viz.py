"""Tests for ddpm_lib.viz: images, schedule and loss plots, sampling animations."""

import matplotlib

matplotlib.use("Agg")

import math
import re

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from PIL import Image

from ddpm_lib import viz

try:  # TEMPORARY stand-in until schedules.py lands
    from ddpm_lib.schedules import make_schedule
except ImportError:
    import math

    class _S:
        def __init__(self, name, T):
            if name == "linear":
                self.betas = torch.linspace(1e-4, 0.02 * 1000 / T, T)
            else:
                f = torch.cos((torch.arange(T + 1) / T + 0.008) / 1.008 * math.pi / 2) ** 2
                self.betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)
            self.alphas_cumprod = torch.cumprod(1 - self.betas, 0)
            self.name = name

    def make_schedule(name, num_timesteps=1000):
        return _S(name, num_timesteps)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def image_axes(fig):
    return [ax for ax in fig.axes if ax.images]


def shown(fig):
    """The arrays drawn by show_images, in order."""
    return [np.asarray(ax.images[0].get_array()) for ax in image_axes(fig)]


# ----------------------------------------------------------------------------- show_images


@pytest.mark.parametrize("n, nrow, grid", [(7, 3, (3, 3)), (1, None, (1, 1)), (9, None, (2, 8)), (5, 10, (1, 5))])
def test_show_images_never_drops_an_image(n, nrow, grid):
    x = torch.rand(n, 1, 6, 6)
    fig = viz.show_images(x, nrow=nrow, titles=[f"#{k}" for k in range(n)])
    axes = image_axes(fig)
    assert len(axes) == n
    assert [ax.get_title() for ax in axes] == [f"#{k}" for k in range(n)]
    assert len(fig.axes) == grid[0] * grid[1]  # the unused cells are blank, not missing images
    assert fig._suptitle.get_text()


def test_show_images_detects_value_range():
    x01 = torch.tensor([[[[0.0, 0.5], [1.0, 0.25]]]])  # (1, 1, 2, 2) in [0, 1]
    np.testing.assert_allclose(shown(viz.show_images(x01))[0], x01[0, 0].numpy())
    xpm = x01 * 2 - 1  # the same image in [-1, 1]
    np.testing.assert_allclose(shown(viz.show_images(xpm))[0], x01[0, 0].numpy(), atol=1e-6)
    # An explicit range wins over detection; values outside are clipped.
    np.testing.assert_allclose(shown(viz.show_images(x01, value_range=(-1, 1)))[0],
                               (x01[0, 0].numpy() + 1) / 2)
    np.testing.assert_allclose(shown(viz.show_images(torch.full((1, 4, 4), 3.0)))[0], 1.0)


def test_show_images_accepts_every_input_type():
    rgb = Image.fromarray(np.full((5, 7, 3), 255, np.uint8))  # 7 wide, 5 high
    grey16 = Image.fromarray(np.full((3, 3), 65535, np.uint16))
    palette = Image.new("P", (4, 4))
    hwc = np.random.default_rng(0).random((6, 6, 3)).astype(np.float32)
    chw = np.zeros((3, 9, 9), np.float32)
    uint8 = np.full((2, 2), 255, np.uint8)
    batch = torch.rand(2, 3, 8, 8) * 2 - 1
    fig = viz.show_images([rgb, grey16, palette, hwc, chw, uint8, batch, torch.rand(1, 5, 5)])
    arrays = shown(fig)
    assert len(arrays) == 9  # the batch of 2 counts as 2 images
    assert arrays[0].shape == (5, 7, 3) and np.allclose(arrays[0], 1.0)
    assert arrays[1].shape == (3, 3) and np.allclose(arrays[1], 1.0)
    assert arrays[2].shape == (4, 4, 3)
    np.testing.assert_allclose(arrays[3], hwc)
    assert arrays[4].shape == (9, 9, 3)
    np.testing.assert_allclose(arrays[5], 1.0)
    np.testing.assert_allclose(arrays[6], (batch[0].permute(1, 2, 0).numpy() + 1) / 2, atol=1e-6)
    assert arrays[8].shape == (5, 5)


def test_show_images_single_chw_and_rgba_and_errors():
    assert len(image_axes(viz.show_images(torch.rand(3, 4, 4)))) == 1
    assert shown(viz.show_images(torch.rand(1, 4, 4, 4)))[0].shape == (4, 4, 4)  # RGBA kept
    with pytest.raises(ValueError, match="5 channels"):
        viz.show_images(torch.rand(1, 5, 4, 4))
    with pytest.raises(ValueError, match="no images"):
        viz.show_images(torch.rand(0, 1, 4, 4))
    with pytest.raises(ValueError, match="2 titles for 3 images"):
        viz.show_images(torch.rand(3, 1, 4, 4), titles=["a", "b"])
    with pytest.raises(TypeError, match="str"):
        viz.show_images("image.png")


def test_show_images_on_given_axes_tiles_everything():
    fig, ax = plt.subplots()
    out = viz.show_images(torch.ones(7, 1, 4, 4), nrow=3, ax=ax, titles=list("abcdefg"), title="seven")
    assert out is fig and ax.get_title() == "seven"
    grid = np.asarray(ax.images[0].get_array())
    assert grid.shape == (3 * 6 + 2, 3 * 6 + 2)  # 3 rows x 3 columns of 4 px + 2 px padding
    assert [t.get_text() for t in ax.texts] == list("abcdefg")


def test_make_grid_image_mixed_sizes():
    image = viz.make_grid_image([torch.zeros(3, 8, 8), torch.zeros(1, 4, 4), Image.new("L", (2, 6))], nrow=2)
    assert isinstance(image, Image.Image) and image.mode == "RGB"
    assert image.size == (2 * 10 + 2, 2 * 10 + 2)
    pixels = np.asarray(image)
    assert pixels[2, 2].tolist() == [0, 0, 0]  # all-zero images read as [0, 1]: black
    assert pixels[0, 0].tolist() == [255, 255, 255]  # white padding
    grey = viz.make_grid_image(torch.ones(5, 1, 3, 3), nrow=2, padding=0)
    assert grey.mode == "L" and grey.size == (6, 9)
    assert np.asarray(grey).min() == 255  # padding cell of the missing 6th image is white too


# ----------------------------------------------------------------------------- plot_schedule


def test_plot_schedule_lines_equal_scales():
    s = make_schedule("linear", num_timesteps=50)
    fig = viz.plot_schedule(s, label="linear")
    ax = fig.axes[0]
    signal, noise = ax.lines
    alpha_bar = s.alphas_cumprod.double().numpy()
    np.testing.assert_allclose(signal.get_xdata(), np.arange(50))
    np.testing.assert_allclose(signal.get_ydata(), np.sqrt(alpha_bar), rtol=1e-6)
    np.testing.assert_allclose(noise.get_ydata(), np.sqrt(1 - alpha_bar), rtol=1e-6)
    assert ax.get_title() and ax.get_xlabel() and ax.get_ylabel()
    assert "linear" in signal.get_label()


def test_plot_schedule_several_and_log_snr():
    schedules = {"linear": make_schedule("linear", num_timesteps=40), "cosine": make_schedule("cosine", 40)}
    fig = viz.plot_schedule(schedules, log_snr=True)
    scales_ax, log_ax = fig.axes
    assert len(scales_ax.lines) == 4
    curves = [line for line in log_ax.lines if not line.get_label().startswith("_")]  # not the zero line
    assert [line.get_label() for line in curves] == ["linear", "cosine"]
    alpha_bar = schedules["cosine"].alphas_cumprod.double().numpy()
    expected = np.log(alpha_bar / (1 - alpha_bar))
    got = curves[1].get_ydata()
    finite = np.isfinite(expected)
    np.testing.assert_allclose(got[finite], expected[finite], rtol=1e-4, atol=1e-4)
    assert log_ax.get_ylabel() and log_ax.get_title()
    # Only the log-SNR panel, drawn into a given axes.
    fig2, ax = plt.subplots()
    assert viz.plot_schedule(list(schedules.values()), ax=ax, which=(), log_snr=True, label=["a", "b"]) is fig2
    assert [line.get_label() for line in ax.lines if not line.get_label().startswith("_")] == ["a", "b"]
    with pytest.raises(ValueError, match="needs 2 axes"):
        viz.plot_schedule(schedules, ax=ax, log_snr=True)
    with pytest.raises(ValueError, match="which"):
        viz.plot_schedule(schedules, which=("snr",))


# ----------------------------------------------------------------------------- plot_loss


def test_smooth_curve_ema_and_window():
    np.testing.assert_allclose(viz.smooth_curve([2.0, 2.0, 2.0], 0.9), [2.0, 2.0, 2.0])  # bias-corrected
    v = [1.0, 3.0]
    np.testing.assert_allclose(viz.smooth_curve(v, 0.5), [1.0, (0.25 * 1 + 0.5 * 3) / 0.75])
    np.testing.assert_allclose(viz.smooth_curve([1.0, 2.0, 3.0, 4.0], 2), [1.0, 1.5, 2.5, 3.5])
    np.testing.assert_allclose(viz.smooth_curve(v, 0), v)
    with pytest.raises(ValueError, match="smooth"):
        viz.smooth_curve(v, 1.5)


def test_plot_loss_inputs_and_smoothing(tmp_path):
    rng = np.random.default_rng(0)
    losses = list(np.exp(-np.arange(200) / 50) + rng.random(200) * 0.1)
    fig = viz.plot_loss(losses, smooth=0.9)
    ax = fig.axes[0]
    raw, smoothed = ax.lines
    np.testing.assert_allclose(raw.get_ydata(), losses)
    np.testing.assert_allclose(smoothed.get_ydata(), viz.smooth_curve(losses, 0.9))
    assert np.std(np.diff(smoothed.get_ydata())) < np.std(np.diff(raw.get_ydata()))
    assert ax.get_yscale() == "log" and ax.get_title() and ax.get_xlabel() and ax.get_ylabel()

    history = [{"step": 10 * k, "loss": float(v)} for k, v in enumerate(losses[:20])]
    ax = viz.plot_loss(history, smooth=5, log=False).axes[0]
    np.testing.assert_allclose(ax.lines[0].get_xdata(), np.arange(20) * 10)
    assert ax.get_yscale() == "linear"

    csv_path = tmp_path / "loss.csv"
    csv_path.write_text("step,loss,lr\n" + "".join(f"{10 * k},{v},0.001\n" for k, v in enumerate(losses[:5])))
    ax = viz.plot_loss(csv_path).axes[0]
    np.testing.assert_allclose(ax.lines[0].get_xdata(), [0, 10, 20, 30, 40])
    np.testing.assert_allclose(ax.lines[0].get_ydata(), losses[:5])


def test_plot_loss_smoothing_is_bias_corrected_and_its_lag_documented():
    # a constant loss smooths to the same constant from the first step on (no pull towards 0)
    smoothed = viz.plot_loss([0.7] * 50, smooth=0.98).axes[0].lines[1].get_ydata()
    np.testing.assert_allclose(smoothed, 0.7, rtol=1e-12)
    # after a jump 1 -> 0 the EMA is half-way once ema_half_life points of the new level are in
    for beta in (0.9, 0.98, 0.995):
        jump = 2000
        curve = viz.smooth_curve([1.0] * jump + [0.0] * 2000, beta)
        points_in = int(np.argmax(curve[jump:] <= 0.5)) + 1
        assert points_in == math.ceil(viz.ema_half_life(beta)), (beta, points_in, viz.ema_half_life(beta))
    assert viz.ema_half_life(0.98) == pytest.approx(34.31, abs=0.01) and viz.ema_half_life(0.0) == 0.0
    with pytest.raises(ValueError, match="decay"):
        viz.ema_half_life(1.0)
    # the legend says what the smoothing is, in training steps (logged steps 10 apart: x 10)
    assert "EMA 0.98, half-life 34.3 steps" in viz.plot_loss([1.0] * 60).axes[0].lines[1].get_label()
    logged = {"step": list(range(0, 1000, 10)), "loss": [1.0] * 100}
    label = viz.plot_loss(logged, smooth=0.9).axes[0].lines[1].get_label()
    assert "half-life 65.8 steps (10 steps a point)" in label, label
    assert "mean of the last 50 steps" in viz.plot_loss(logged, smooth=5).axes[0].lines[1].get_label()
    repeated = {"step": [0] * 30, "loss": [1.0] * 30}  # steps that do not increase: counted as points
    assert "half-life 34.3 points" in viz.plot_loss(repeated).axes[0].lines[1].get_label()
    plt.close("all")


def test_plot_loss_edge_cases():
    with pytest.warns(UserWarning, match="non-finite"):
        ax = viz.plot_loss([1.0, float("nan"), 0.5]).axes[0]
    assert len(ax.lines[0].get_ydata()) == 2
    with pytest.warns(UserWarning, match="linear"):
        ax = viz.plot_loss([1.0, -0.5, 0.2]).axes[0]
    assert ax.get_yscale() == "linear"
    with pytest.raises(ValueError, match="no finite"):
        viz.plot_loss([])


# ----------------------------------------------------------------------------- animations


def recorded(steps=6, batch=3):
    recorder = viz.TrajectoryRecorder(max_images=2)
    g = torch.Generator().manual_seed(0)
    for i in range(steps):
        t = torch.full((batch,), 99 - 10 * i)
        recorder.callback(i, t, torch.randn(batch, 1, 8, 8, generator=g), torch.rand(batch, 1, 8, 8, generator=g))
    return recorder


def test_trajectory_recorder_collects_frames():
    recorder = recorded()
    assert len(recorder) == 6 and recorder.steps == list(range(6))
    assert recorder.frames_xt[0].shape == (2, 1, 8, 8) and recorder.frames_x0[0].shape == (2, 1, 8, 8)
    assert recorder.titles()[1] == "step 1, t = 89"
    every = viz.TrajectoryRecorder(every=2)
    for i in range(5):
        every(i, 1.5, torch.zeros(1, 1, 2, 2), None)
    assert every.steps == [0, 2, 4] and every.frames_x0 == [None] * 3


def test_animate_sampling_html_has_every_frame():
    recorder = recorded()
    html = viz.animate_sampling(recorder, fps=4)
    assert type(html).__name__ == "HTML"
    assert "new Array(6)" in html.data
    assert len(re.findall(r"frames\[\d+\] = \"data:image/png;base64", html.data)) == 6
    assert plt.get_fignums() == []  # closed, so the notebook does not show a stray still
    # max_frames keeps evenly spaced frames, the first and the last included.
    assert "new Array(3)" in viz.animate_sampling(recorder.frames_xt, recorder.frames_x0, max_frames=3).data
    assert "new Array(6)" in viz.animate_sampling(recorder.frames_xt).data  # x_t only


def test_animate_sampling_gif_and_errors(tmp_path):
    recorder = recorded(steps=4)
    path = tmp_path / "trajectory.gif"
    html = viz.animate_sampling(recorder, format="gif", path=path, fps=10)
    assert "data:image/gif;base64" in html.data
    with Image.open(path) as gif:
        assert gif.n_frames == 4
    with pytest.raises(ValueError, match="4 frames_xt but 3 titles"):
        viz.animate_sampling(recorder, titles=["a", "b", "c"])
    with pytest.raises(ValueError, match="no frames"):
        viz.animate_sampling([])
    with pytest.raises(ValueError, match="format"):
        viz.animate_sampling(recorder, format="avi")


def test_animate_sampling_mp4_needs_ffmpeg(monkeypatch, tmp_path):
    from matplotlib import animation

    monkeypatch.setattr(animation.writers, "is_available", lambda name: False)
    with pytest.raises(RuntimeError, match="format='gif'"):
        viz.animate_sampling(recorded(steps=2), format="mp4", path=tmp_path / "x.mp4")
    assert plt.get_fignums() == []
