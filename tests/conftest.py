"""Setup shared by every test module."""

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

# A test run started in the background by a non-interactive shell (as CI harnesses may do) inherits
# SIGINT as *ignored*, and so would every CLI process the tests start. The interrupt tests need Python's
# normal Ctrl-C behaviour here and in those children (a handled signal is reset to default on exec).
signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def _no_user_default_model(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """A user's ``DEBLUR_MODEL`` or saved default (``deblur models default``, in the platform's config folder,
    which platformdirs finds through ``XDG_CONFIG_HOME`` on Linux) must not change which model the tests
    (and the CLIs they start) use; each test gets an empty config folder of its own."""
    monkeypatch.delenv("DEBLUR_MODEL", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("config")))


@pytest.fixture(autouse=True)
def _torch_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tests' expected pixels are torch's, and ``--backend auto`` would run OpenVINO where it is
    installed on a bf16 CPU; tests/test_backends.py chooses its backend explicitly (or unsets this)."""
    monkeypatch.setenv("DEBLUR_BACKEND", "torch")


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Run torch single-threaded for a test: on a shared 2-core machine, OpenMP threads that wait for a busy
    core made small-tensor work (kernel estimation's FFTs, tiny models) several to 30 times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny real NAFNet (width 8, one block per level) saved as our own weights are, so CLI tests run the
    whole load path in milliseconds. Modules needing another network define their own ``model_file``."""
    from deblurcli import weights
    from deblurcli.models.nafnet import NAFNet

    torch.manual_seed(0)
    net = NAFNet(width=8, enc_blk_nums=[1], middle_blk_num=1, dec_blk_nums=[1], local_pool=16)
    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    weights.save_generator(net.eval(), path, {"name": "tiny"})
    return path
