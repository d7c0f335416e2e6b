"""Setup shared by every test module."""

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

# A test run started in the background by a non-interactive shell (as CI harnesses may do) inherits
# SIGINT as *ignored*, and so would every CLI process the tests start. The interrupt tests need Python's
# normal Ctrl-C behaviour here and in those children (a handled signal is reset to default on exec).
signal.signal(signal.SIGINT, signal.default_int_handler)


# The tests' expected pixels are torch's, and ``--backend auto`` would run OpenVINO where it is installed on a
# bf16 CPU. Set for the whole process, not per test: module- and session-scoped fixtures build Sessions
# before any function fixture runs. tests/test_backends.py chooses its backend explicitly (or unsets this).
os.environ["DEBLUR_BACKEND"] = "torch"

#: Set (to the test's node id) in the interpreter an ``own_process`` test runs in.
_CHILD = "DEBLURCLI_TEST_OWN_PROCESS"


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run ``@pytest.mark.own_process`` tests in a fresh interpreter and report its verdict here.

    OpenVINO's CPU runtime, once it has run a model in a process, makes a later ``os.kill(os.getpid(),
    SIGINT)`` in that process (the training tests' simulated Ctrl-C) crash it with SIGSEGV, taking the
    whole suite down. The CLI itself is not affected: Ctrl-C during an OpenVINO run exits 130 and leaves no
    partial file. Isolating those tests keeps one runtime's process-wide state out of the others.
    """
    if pyfuncitem.get_closest_marker("own_process") is None or os.environ.get(_CHILD) == pyfuncitem.nodeid:
        return None
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", pyfuncitem.nodeid],
        cwd=root, env={**os.environ, _CHILD: pyfuncitem.nodeid}, capture_output=True, text=True, check=False,
    )
    last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    if proc.returncode == 0 and "skipped" in last and "passed" not in last:
        pytest.skip(f"skipped in its own process: {last}")
    if proc.returncode != 0:
        pytest.fail(f"failed in its own process (exit {proc.returncode}):\n{proc.stdout[-4000:]}{proc.stderr[-2000:]}", pytrace=False)
    return True


@pytest.fixture(autouse=True)
def _no_user_default_model(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """A user's ``DEBLUR_MODEL`` or saved default (``deblur models default``, in the platform's config folder,
    which platformdirs finds through ``XDG_CONFIG_HOME`` on Linux) must not change which model the tests
    (and the CLIs they start) use; each test gets an empty config folder of its own."""
    monkeypatch.delenv("DEBLUR_MODEL", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("config")))


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Run torch single-threaded for a test: on a shared 2-core machine, OpenMP threads that wait for a busy
    core made small-tensor work (kernel estimation's FFTs, tiny models) several to 30 times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _tiny_weights(tmp_path_factory: pytest.TempPathFactory, name: str, *, still: bool = False) -> Path:
    """A tiny real NAFNet (width 8, one block per level, seed 0) saved as our own weights are; ``still`` zeroes
    its last convolution, so its global skip returns the input."""
    from deblurcli import weights
    from deblurcli.models.nafnet import NAFNet

    torch.manual_seed(0)
    net = NAFNet(width=8, enc_blk_nums=[1], middle_blk_num=1, dec_blk_nums=[1], local_pool=16)
    if still:
        with torch.no_grad():
            net.ending.weight.zero_()
            net.ending.bias.zero_()
    path = tmp_path_factory.mktemp("weights") / f"{name}.safetensors"
    weights.save_generator(net.eval(), path, {"name": name})
    return path


@pytest.fixture(scope="session")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny NAFNet with random weights, so CLI tests run the whole load path in milliseconds. Modules
    needing another network define their own ``model_file``."""
    return _tiny_weights(tmp_path_factory, "tiny")


@pytest.fixture(scope="session")
def still_model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny NAFNet returning its input, as a trained network nearly does on a sharp photo (a random one
    redraws all of it, so auto's look past the sharp-photo gate would keep its output)."""
    return _tiny_weights(tmp_path_factory, "still", still=True)
