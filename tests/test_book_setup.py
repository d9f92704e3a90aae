import dataclasses

import pytest
import torch

from ddpm_lib import book


def test_setup_reads_the_profile(monkeypatch):
    monkeypatch.setenv("DDPM_BOOK_PROFILE", "smoke")
    cfg = book.setup(2, verbose=False)
    assert cfg.profile == "smoke" and cfg.chapter == 2
    monkeypatch.setenv("DDPM_BOOK_PROFILE", "cpu")
    cpu = book.setup(2, verbose=False)
    assert cpu.profile == "cpu"
    assert 1 <= cfg.train_steps < cpu.train_steps  # the profile changes the sizes, smoke is the smaller
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.batch_size = 3


def test_unknown_profile_lists_valid_ones(monkeypatch):
    monkeypatch.setenv("DDPM_BOOK_PROFILE", "fast")
    with pytest.raises(ValueError, match="smoke, cpu, gpu"):
        book.setup(1, verbose=False)


def test_default_profile_follows_cuda(monkeypatch):
    monkeypatch.delenv("DDPM_BOOK_PROFILE", raising=False)
    assert book.get_profile() == ("gpu" if torch.cuda.is_available() else "cpu")


def test_setup_seeds_everything(monkeypatch):
    monkeypatch.setenv("DDPM_BOOK_PROFILE", "smoke")
    book.setup(1, seed=123, verbose=False)
    a = torch.rand(3)
    book.setup(1, seed=123, verbose=False)
    assert torch.equal(a, torch.rand(3))


def test_every_chapter_has_sizes_for_every_profile(monkeypatch):
    """Usable sizes everywhere (whole numbers, images a UNet can halve twice), smoke never above cpu, cpu never
    above gpu: the test profile must stay the cheapest."""
    sizes = {}
    for profile in book.PROFILES:
        monkeypatch.setenv("DDPM_BOOK_PROFILE", profile)
        for chapter in range(1, 11):
            cfg = book.setup(chapter, verbose=False)
            for name in ("image_size", "num_samples", "batch_size", "sample_steps"):
                value = getattr(cfg, name)
                assert isinstance(value, int) and value >= 1, (profile, chapter, name, value)
            assert cfg.image_size % 4 == 0, (profile, chapter, cfg.image_size)
            sizes[profile, chapter] = cfg
    for chapter in range(1, 11):
        smoke, cpu, gpu = (sizes[p, chapter] for p in ("smoke", "cpu", "gpu"))
        for name in ("train_steps", "num_samples", "sample_steps"):
            assert getattr(smoke, name) <= getattr(cpu, name), (chapter, name)
        assert smoke.image_size <= cpu.image_size <= gpu.image_size, chapter
        assert cpu.train_steps <= gpu.train_steps, chapter


def test_unknown_setting_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("DDPM_BOOK_PROFILE", "smoke")
    cfg = book.setup(3, verbose=False)
    with pytest.raises(AttributeError, match="no setting"):
        cfg.not_a_size
    with pytest.raises(ValueError):
        book.setup(42, verbose=False)


def test_check_says_correct_wrong_or_not_attempted(capsys):
    assert book.check(torch.tensor([1.0, 2.0]), [1.0, 2.0])
    assert "correct" in capsys.readouterr().out
    assert not book.check(torch.tensor([1.0, 2.5]), [1.0, 2.0])
    assert "differ" in capsys.readouterr().out
    assert not book.check(None, 3.0)
    assert "not attempted" in capsys.readouterr().out
    assert not book.check([1.0], (1.0, 2.0))
    assert book.check((0.5, "cosine"), (0.5, "cosine"))
    assert not book.check(torch.zeros(2, 2), torch.zeros(4))
    assert "shape" in capsys.readouterr().out
