import dataclasses

import pytest
import torch

from ddpm_lib import book


def test_setup_reads_the_profile(monkeypatch):
    monkeypatch.setenv("DDPM_BOOK_PROFILE", "smoke")
    cfg = book.setup(2, verbose=False)
    assert cfg.profile == "smoke" and cfg.chapter == 2
    assert cfg.train_steps > 0 and cfg.batch_size > 0
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
    for profile in book.PROFILES:
        monkeypatch.setenv("DDPM_BOOK_PROFILE", profile)
        for chapter in range(1, 11):
            cfg = book.setup(chapter, verbose=False)
            assert cfg.image_size > 0 and cfg.num_samples > 0


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
