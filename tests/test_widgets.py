"""Tests for ddpm_lib.widgets: the schedule explorer's state, live widget and static stand-in."""

import matplotlib

matplotlib.use("Agg")

import subprocess
import sys

import ipywidgets
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from ddpm_lib import schedules, widgets


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture
def images():
    g = torch.Generator().manual_seed(1)
    return torch.rand(3, 1, 8, 8, generator=g) * 2 - 1  # (B, C, H, W) in [-1, 1]


def test_ddpm_lib_imports_widgets_lazily():
    code = "import sys, ddpm_lib as dl; assert 'ddpm_lib.widgets' not in sys.modules; dl.widgets.explorer_state"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_explorer_state_matches_the_schedule(images):
    state = widgets.explorer_state(images, "linear", beta_start=1e-4, beta_end=0.02, num_timesteps=100,
                                   timesteps=(0, 500, 999), max_images=2)
    s = schedules.make_schedule("linear", num_timesteps=100, beta_start=1e-4, beta_end=0.02)
    alpha_bar = s.alphas_cumprod.double().numpy()
    assert state.notes == []
    assert state.timesteps == [0, 50, 99]  # positions on a 1000-step chain, moved to T = 100
    np.testing.assert_allclose(state.signal, np.sqrt(alpha_bar), rtol=1e-6)
    np.testing.assert_allclose(state.noise, np.sqrt(1 - alpha_bar), rtol=1e-6)
    np.testing.assert_allclose(state.log_snr, np.log(alpha_bar / (1 - alpha_bar)), rtol=1e-5, atol=1e-5)
    assert state.noised.shape == (3, 2, 1, 8, 8)
    # Same noise for every setting: only the schedule changes the images.
    eps = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    t = 50
    expected = np.sqrt(alpha_bar[t]) * images[:2] + np.sqrt(1 - alpha_bar[t]) * eps
    torch.testing.assert_close(state.noised[1], expected.float(), rtol=1e-5, atol=1e-5)


def test_explorer_state_clamps_with_a_note(images):
    state = widgets.explorer_state(images, "linear", beta_start=0.01, beta_end=0.001, num_timesteps=1)
    assert state.params["num_timesteps"] == 2 and state.params["beta_end"] == pytest.approx(0.0101)
    assert any("num_timesteps = 1" in n for n in state.notes)
    assert any("beta_end = 0.001" in n and "not above beta_start" in n for n in state.notes)
    state = widgets.explorer_state(images, "linear", beta_start=-1.0, beta_end=1.5, input_scale=0.0)
    assert state.params["beta_end"] == 0.999 and state.params["beta_start"] == 1e-6
    assert state.params["input_scale"] == 1e-3
    assert len(state.notes) == 3 and all("out of range" in n for n in state.notes)
    assert np.all(np.isfinite(state.signal))
    state = widgets.explorer_state(images, "cosine", num_timesteps=50)
    assert state.notes == ["'cosine' does not use beta_start or beta_end."]
    with pytest.raises(ValueError, match="unknown schedule"):
        widgets.explorer_state(images, "zigzag")
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        widgets.explorer_state(torch.rand(8, 8))


def test_resolution_shift_and_input_scale_move_log_snr(images):
    base = widgets.explorer_state(images, "cosine", num_timesteps=50)
    shifted = widgets.explorer_state(images, "cosine", num_timesteps=50, image_size=256, base_size=64)
    scaled = widgets.explorer_state(images, "cosine", num_timesteps=50, input_scale=0.5)
    finite = np.isfinite(base.log_snr)
    np.testing.assert_allclose((shifted.log_snr - base.log_snr)[finite], 2 * np.log(64 / 256), atol=1e-6)
    np.testing.assert_allclose((scaled.log_snr - base.log_snr)[finite], 2 * np.log(0.5), atol=1e-6)
    np.testing.assert_allclose(shifted.signal**2 + shifted.noise**2, 1.0, atol=1e-9)  # still variance preserving


def test_draw_explorer_has_images_and_curves(images):
    state = widgets.explorer_state(images, "linear", num_timesteps=40, max_images=2)
    fig = widgets.draw_explorer(state)
    image_axes = [ax for ax in fig.axes if ax.images]
    assert len(image_axes) == 2 * 5
    assert [ax.get_title() for ax in image_axes[::2]] == [f"t = {t}" for t in state.timesteps]
    curve_axes = [ax for ax in fig.axes if ax.lines]
    assert len(curve_axes) == 2 and all(ax.get_xlabel() and ax.get_ylabel() for ax in curve_axes)
    assert fig._suptitle.get_text().startswith("linear, T = 40")


def test_schedule_explorer_builds_and_updates(images, monkeypatch):
    monkeypatch.setattr("IPython.display.display", lambda *a, **k: None)
    explorer = widgets.schedule_explorer(images, num_timesteps=30)
    assert isinstance(explorer, ipywidgets.VBox)
    assert set(explorer.controls) == {"schedule", "beta_start", "beta_end", "num_timesteps", "image_size",
                                      "base_size", "input_scale"}
    assert all(isinstance(c, ipywidgets.ValueWidget) for c in explorer.controls.values())
    assert explorer.state.params["num_timesteps"] == 30 and explorer.note.value == ""
    before = explorer.state.signal.copy()
    explorer.controls["beta_end"].value = 0.2  # the observer fires and recomputes
    assert explorer.state.params["beta_end"] == pytest.approx(0.2)
    assert explorer.state.signal[-1] < before[-1]
    explorer.controls["num_timesteps"].value = 0  # out of range: clamped, with a visible note
    assert explorer.state.params["num_timesteps"] == 2
    assert "num_timesteps = 0" in explorer.note.value
    explorer.controls["schedule"].value = "cosine"
    assert explorer.state.params["schedule"] == "cosine"
    state = explorer.update({"name": "value"})  # calling the observer directly
    assert state is explorer.state
    with pytest.raises(TypeError, match="unknown settings"):
        widgets.schedule_explorer(images, beta_stop=0.1)


def test_schedule_explorer_static_returns_html(images):
    html = widgets.schedule_explorer_static(images[:1], vary="beta_end", values=(0.005, 0.05),
                                            num_timesteps=20, timesteps=(0, 999))
    assert type(html).__name__ == "HTML" and "new Array(2)" in html.data
    assert plt.get_fignums() == []
    with pytest.raises(ValueError, match="vary"):
        widgets.schedule_explorer_static(images, vary="colour")
    with pytest.raises(ValueError, match="both varied and fixed"):
        widgets.schedule_explorer_static(images, vary="beta_end", beta_end=0.1)
