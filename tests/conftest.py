"""Shared test fixtures, and the device the tests run on.

``DDPM_TEST_DEVICE`` (unset by default: nothing below changes anything):

* ``cuda``: the run stops at once unless torch sees a CUDA device (so a GPU run cannot quietly
  test the CPU). What then runs on the GPU: everything that picks its device itself (``dl.Trainer``,
  ``dl.book.setup``, the CLI, accelerate), and the tests that ask for the ``device`` fixture;
  tests that build CPU tensors stay on the CPU. Each test that allocated GPU memory records how
  much as the junit property ``cuda_bytes``, so that tools/device_check.py can say how many tests
  the GPU really ran.
* ``cpu``: hides every GPU (``CUDA_VISIBLE_DEVICES=""``), so a GPU machine runs the tests as a
  CPU-only one does.
"""

import os

_DEVICE = os.environ.get("DDPM_TEST_DEVICE", "").strip().lower()
if _DEVICE not in ("", "cpu", "cuda"):
    raise ValueError(f"DDPM_TEST_DEVICE={_DEVICE!r}: use 'cuda', 'cpu', or leave it unset")
if _DEVICE == "cpu":
    os.environ["CUDA_VISIBLE_DEVICES"] = ""  # before torch first asks CUDA how many devices there are

import pytest  # noqa: E402
import torch  # noqa: E402


def pytest_configure(config):
    if _DEVICE == "cuda" and not torch.cuda.is_available():
        pytest.exit("DDPM_TEST_DEVICE=cuda, but torch sees no CUDA device: run on a GPU machine, "
                    "or unset DDPM_TEST_DEVICE to test on the CPU.", returncode=4)


def pytest_report_header(config):
    if _DEVICE == "cuda":
        return f"DDPM_TEST_DEVICE=cuda: {torch.cuda.get_device_name()} (torch {torch.__version__})"
    if _DEVICE == "cpu":
        return "DDPM_TEST_DEVICE=cpu: GPUs hidden"
    return None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    if _DEVICE != "cuda":
        yield
        return
    before = torch.cuda.memory_allocated() if torch.cuda.is_initialized() else 0
    if torch.cuda.is_initialized():
        torch.cuda.reset_peak_memory_stats()
    yield
    if torch.cuda.is_initialized():
        used = torch.cuda.max_memory_allocated() - before
        if used > 0:
            item.user_properties.append(("cuda_bytes", used))


@pytest.fixture(scope="session")
def device():
    """The device of DDPM_TEST_DEVICE: cuda there, else the CPU."""
    return torch.device("cuda" if _DEVICE == "cuda" else "cpu")


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: on a busy 2-core machine, 2 torch threads make each op ~100x slower.

    Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
