"""Issue 8, interrupts and crashes: nothing partial, no temporary file, no lock or state left behind.

Already proven in test_cli_deblur.py (not repeated here):
  * Ctrl-C while a photo is being deblurred stops, lists what finished, and a re-run does the rest:
    test_ctrl_c_in_process_stops_cleanly_and_rerun_finishes;
  * Ctrl-C inside a write leaves nothing: test_ctrl_c_during_the_write_leaves_no_partial_file;
  * disk full (ENOSPC) stops the batch with a clear message and no file: test_disk_full_stops_the_batch_...;
  * SIGINT to a real process at a random moment: test_sigint_to_a_real_process;
  * two real processes on one folder: test_two_processes_on_the_same_folder.
and in test_photo.py for atomic_output itself (ENOSPC mid-write, Ctrl-C mid-write, fsync failure).

Here: signals that land *inside* a write in a real process (made deterministic by slowing fsync down), the
exact content of the output folder after finished and interrupted runs (hidden files included: the claim
files a run holds while it works go with it), the leftovers of a process killed outright, and (issue 19)
further signals during the clean-up, signals while modules load, and a stdout closed early.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result
from PIL import Image

from deblurcli import atomic
from deblurcli.cli import group
from deblurcli.atomic import (
    TEMP_TAG,
    atomic_output,
    is_temp_file,
    remove_stale_temp_files,
)

#: Runs the real CLI with every fsync slowed down, so that a signal can be sent while a write is open.
SLOW_FSYNC_CLI = """
import os, sys, time
real_fsync = os.fsync
def slow_fsync(fd):
    time.sleep(float(os.environ["SLOW_FSYNC_S"]))
    real_fsync(fd)
os.fsync = slow_fsync
from deblurcli.cli import main
main()
"""


def photos(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        paths.append(folder / f"{i:02d}.png")
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(paths[-1])
    return paths


def everything(folder: Path) -> list[str]:
    """All entries under ``folder``, hidden ones included."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


def deblur(*args: str | Path) -> Result:
    return CliRunner().invoke(group, [*map(str, args), "--threads", "1"], catch_exceptions=False)


def signal_during_first_write(
    src: Path, out: Path, model: Path, sig: signal.Signals, *, again: tuple[signal.Signals, ...] = ()
) -> tuple[int, str, str]:
    """Start a real run, wait until its first temporary output exists, send ``sig`` (then each of ``again``,
    0.2 s apart, while that write is still being synced); (rc, stdout, stderr)."""
    env = {**os.environ, "SLOW_FSYNC_S": "1.5", "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-c", SLOW_FSYNC_CLI, str(src), "-o", str(out), "--weights", str(model), "--threads", "1"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + 300  # generous for a starved machine
    while time.monotonic() < deadline and proc.poll() is None:
        if out.is_dir() and any(TEMP_TAG in p.name for p in out.iterdir()):  # a temporary output, not a claim
            break
        time.sleep(0.01)
    else:
        proc.kill()
        pytest.fail("the run never started writing")
    proc.send_signal(sig)
    for more in again:
        time.sleep(0.2)
        proc.send_signal(more)
    stdout, stderr = proc.communicate(timeout=60)
    return proc.returncode, stdout.decode(), stderr.decode()


def test_finished_run_leaves_only_outputs(tmp_path: Path, model_file: Path) -> None:
    photos(tmp_path / "in", 2)
    (tmp_path / "in" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    result = deblur(tmp_path / "in", "-o", tmp_path / "out", "--weights", model_file, "--compare")
    assert result.exit_code == 1
    assert everything(tmp_path / "out") == ["00.png", "00_compare.jpg", "01.png", "01_compare.jpg"]


def test_sigint_inside_a_write_completes_that_file_and_leaves_nothing_partial(tmp_path: Path, model_file: Path) -> None:
    src = tmp_path / "in"
    photos(src, 3)
    out = tmp_path / "out"
    rc, stdout, stderr = signal_during_first_write(src, out, model_file, signal.SIGINT)
    assert rc == 130, stderr
    assert "Traceback" not in stderr and "interrupted:" in stderr
    written = everything(out)
    assert all(name.endswith(".png") and not name.startswith(".") for name in written), written
    reported = sorted(Path(line).name for line in stdout.splitlines())
    # Every reported output is on disk; the write the signal landed in is finished, and may be unlisted.
    assert set(reported) <= set(written) and len(written) - len(reported) <= 1, (reported, written, stderr)
    for name in written:
        with Image.open(out / name) as im:
            im.load()  # complete, decodable
    result = deblur(src, "-o", out, "--weights", model_file)  # the same command finishes the rest
    assert result.exit_code == 0 and f"done {3 - len(written)}, skipped {len(written)}, failed 0" in result.stderr
    assert everything(out) == ["00.png", "01.png", "02.png"]


def test_sigterm_inside_a_write_behaves_like_ctrl_c(tmp_path: Path, model_file: Path) -> None:
    src = tmp_path / "in"
    photos(src, 3)
    out = tmp_path / "out"
    rc, _, stderr = signal_during_first_write(src, out, model_file, signal.SIGTERM)
    assert rc == 130, stderr
    assert "interrupted:" in stderr
    assert not [name for name in everything(out) if TEMP_TAG in name]


@pytest.mark.parametrize("again", [(signal.SIGINT,), (signal.SIGTERM, signal.SIGINT)], ids=["ctrl-c-twice", "three-signals"])
def test_more_signals_during_the_write_cannot_cut_its_clean_up(tmp_path: Path, model_file: Path, again: tuple[signal.Signals, ...]) -> None:
    """Issue 19.14: the second and third signal only say the clean-up is under way; the photo being
    written is finished, nothing partial is left, exit 130 (it was "Aborted!", exit 1, a 0-byte temp file)."""
    src = tmp_path / "in"
    photos(src, 3)
    out = tmp_path / "out"
    rc, stdout, stderr = signal_during_first_write(src, out, model_file, signal.SIGINT, again=again)
    assert rc == 130, stderr
    assert "Aborted" not in stderr and "Traceback" not in stderr and "interrupted:" in stderr
    assert "finishing the clean-up" in stderr
    written = everything(out)
    assert written and all(not name.startswith(".") for name in written), written
    assert "00.png" in written  # the photo the signals landed in was finished
    for name in written:
        with Image.open(out / name) as im:
            im.load()


def test_a_command_keeps_the_console_scripts_count_after_its_block() -> None:
    """A second Ctrl-C that lands after the command's own block (CI once caught it while the interpreter
    joined the writer thread at exit) is noted, not raised: the block keeps the installed handler and its
    count instead of restoring a fresh one."""
    from deblurcli.cli import interrupts

    saved = [signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)]
    try:
        interrupts.install()
        installed = signal.getsignal(signal.SIGINT)
        with interrupts.handled():
            assert signal.getsignal(signal.SIGINT) is installed
            with pytest.raises(KeyboardInterrupt):
                installed(signal.SIGINT, None)  # type: ignore[operator]
        installed(signal.SIGINT, None)  # type: ignore[operator]  # the second: a note on stderr, no raise
    finally:
        for sig, old in zip((signal.SIGINT, signal.SIGTERM), saved):
            signal.signal(sig, old)


def test_stdout_closed_by_head_keeps_the_run_going_and_says_so(tmp_path: Path, model_file: Path) -> None:
    """Issue 19.20: ``deblur in -o out | head -n 1`` stopped after 2 of 4 photos, exit 1, silently."""
    src = tmp_path / "in"
    photos(src, 4)
    out = tmp_path / "out"
    env = {**os.environ, "SLOW_FSYNC_S": "0.3", "OMP_NUM_THREADS": "1"}  # results come well apart
    argv = [sys.executable, "-c", SLOW_FSYNC_CLI, str(src), "-o", str(out), "--weights", str(model_file), "--threads", "1"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()  # what head does after its line
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0, stderr
    assert Path(first.decode().strip()) == out / "00.png"
    assert everything(out) == ["00.png", "01.png", "02.png", "03.png"]
    assert "stdout was closed early (broken pipe); the run kept going, 3 result line(s) not listed" in stderr
    assert "done 4, skipped 0, failed 0" in stderr and "Exception ignored" not in stderr and "Traceback" not in stderr


#: Runs the real console script with one import made slow, so that a signal lands while it is imported.
SLOW_IMPORT_CLI = """
import importlib.abc, os, sys, time
class SlowImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == os.environ["SLOW_IMPORT"]:
            sys.stderr.write("importing\\n")
            sys.stderr.flush()
            time.sleep(60)
        return None
sys.meta_path.insert(0, SlowImport())
from deblurcli.cli import main
main()
"""


@pytest.mark.parametrize("module", ["deblurcli.cli.deblur", "deblurcli.session"], ids=["command", "model-load"])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_a_signal_while_imports_load_exits_130_in_one_line(tmp_path: Path, model_file: Path, module: str, sig: signal.Signals) -> None:
    """Issue 19.14: SIGTERM while the command or the model's modules were imported exited 143, SIGINT 1."""
    photos(tmp_path / "in", 1)
    env = {**os.environ, "SLOW_IMPORT": module, "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-c", SLOW_IMPORT_CLI, str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--weights", str(model_file)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert proc.stderr is not None
    assert proc.stderr.readline() == b"importing\n"
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr.decode()
    lines = stderr.decode().splitlines()
    assert lines in (["interrupted"], ["interrupted before any photo was processed"]), lines
    assert stdout == b"" and not (tmp_path / "out").exists()


# ------------------------------------------------------------------------ a process killed outright


def _aged(path: Path, seconds: float = 3600.0) -> None:
    when = time.time() - seconds
    os.utime(path, (when, when))


def test_stale_temp_files_are_removed_and_nothing_else(tmp_path: Path) -> None:
    stale = tmp_path / f".a.png{TEMP_TAG}0badf00d"
    fresh = tmp_path / f".b.png{TEMP_TAG}12345678"  # just created by a writer that has not locked it yet
    theirs = [tmp_path / ".DS_Store", tmp_path / f"a.png{TEMP_TAG}notours", tmp_path / "c.png"]
    for path in (stale, fresh, *theirs):
        path.write_bytes(b"x")
    for path in (stale, *theirs):
        _aged(path)
    (tmp_path / f".dir{TEMP_TAG}00000000").mkdir()
    _aged(tmp_path / f".dir{TEMP_TAG}00000000")
    if atomic.fcntl is None:
        assert remove_stale_temp_files(tmp_path) == []
        return
    assert remove_stale_temp_files(tmp_path) == [stale]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [fresh.name, f".dir{TEMP_TAG}00000000", *(p.name for p in theirs)]
    )
    assert remove_stale_temp_files(tmp_path / "missing") == []


@pytest.mark.skipif(atomic.fcntl is None, reason="no flock on this platform")
def test_a_live_write_is_never_taken_for_a_leftover(tmp_path: Path) -> None:
    """A second run cleaning the folder while the first one is writing (slowly) leaves its file alone,
    through the whole write including the rename."""
    target = tmp_path / "a.png"
    inside = threading.Event()
    release = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            with atomic_output(target) as fh:
                fh.write(b"complete")
                inside.set()
                release.wait(10)
        except BaseException as e:  # noqa: BLE001 - reported to the test thread
            errors.append(e)

    thread = threading.Thread(target=writer)
    thread.start()
    assert inside.wait(10)
    (tmp,) = [p for p in tmp_path.iterdir() if is_temp_file(p.name)]
    _aged(tmp)  # old enough: only the lock protects it now
    assert remove_stale_temp_files(tmp_path) == []
    release.set()
    thread.join(10)
    assert errors == [] and target.read_bytes() == b"complete"
    assert everything(tmp_path) == ["a.png"]


def test_next_run_removes_a_killed_runs_leftover(tmp_path: Path, model_file: Path) -> None:
    photos(tmp_path / "in", 1)
    out = tmp_path / "out"
    out.mkdir()
    leftover = out / f".00.png{TEMP_TAG}deadbeef"  # what SIGKILL during a write leaves
    leftover.write_bytes(b"\x89PNG half")
    _aged(leftover)
    result = deblur(tmp_path / "in", "-o", out, "--weights", model_file)
    assert result.exit_code == 0
    assert everything(out) == ["00.png"]


def test_leftovers_anywhere_in_the_output_tree_are_removed(tmp_path: Path, model_file: Path) -> None:
    """Issue 19.18: a killed run's leftover in an output folder this run does not write to (its input
    folder was renamed since) was kept forever; claims left by a killed run go the same way."""
    photos(tmp_path / "in" / "kept", 1)
    out = tmp_path / "out"
    (out / "renamed" / "deeper").mkdir(parents=True)
    leftovers = [out / "renamed" / "deeper" / f".00.png{TEMP_TAG}deadbeef", out / "renamed" / ".01.png.deblurcli-claim"]
    for leftover in leftovers:
        leftover.write_bytes(b"")
        _aged(leftover)
    live = out / "renamed" / f".02.png{TEMP_TAG}0000live"  # young: another run may be about to lock it
    live.write_bytes(b"")
    result = deblur(tmp_path / "in", "-r", "-o", out, "--weights", model_file)
    assert result.exit_code == 0, result.output
    assert everything(out) == ["kept", "kept/00.png", "renamed", f"renamed/{live.name}", "renamed/deeper"]
