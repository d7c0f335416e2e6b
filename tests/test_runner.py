"""deblurcli.runner: the per-file stages and the overlapped folder run.

The overlap must be invisible in what is written and reported: the same bytes as the sequential path,
results in input order, failures per file, a full disk and Ctrl-C handled as before. The timing tests
use events rather than sleeps: a stage waits (with a generous timeout) for a sign that only overlap can
give, so they fail deterministically when there is no overlap and pass at once when there is.
"""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path
from typing import ClassVar

import numpy as np
import piexif
import pytest
import torch
from PIL import Image
from torch import nn

from deblurcli import photo as photo_io
from deblurcli.atomic import TEMP_TAG
from deblurcli.batch import Job, find_inputs, plan_jobs
from deblurcli.errors import DiskFullError, OutputExistsError, PhotoError
from deblurcli.runner import (
    WRITTEN_BY_OTHER_RUN,
    Outcome,
    Settings,
    describe_failure,
    failure_outcome,
    process,
    run_jobs,
)
from deblurcli.session import Session

WAIT = 20.0  # seconds an overlap test waits for the other thread before declaring there is no overlap


class Shade(nn.Module):
    """A cheap generator that is not the identity (keeps the contract: [0,1] in, [0,1] out)."""

    size_multiple = 1
    tile_margin = 0
    config: ClassVar[dict] = {}

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.tensor(0.8))
        self.calls: list[tuple[str, tuple[int, ...]]] = []
        self.before_forward = lambda x: None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append((threading.current_thread().name, tuple(x.shape)))
        self.before_forward(x)
        return (x * self.weight + 0.1).clamp(0, 1)


def settings(**kwargs: object) -> Settings:
    return Settings(**kwargs)  # type: ignore[arg-type]


def session(model: nn.Module, strength: float = 1.0) -> Session:
    """The network alone, whole images, fp32: what these tests check is the runner around it."""
    return Session("network", module=model, device="cpu", precision="fp32", tile=0, strength=strength)


def folder(tmp_path: Path, n: int = 4) -> list[Job]:
    """``n`` photos of different kinds (JPEG with EXIF, PNG, 16-bit PNG) planned into ``out/``."""
    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        pixels = rng.integers(0, 256, (24 + i, 40, 3), dtype=np.uint8)
        if i % 3 == 0:
            exif = piexif.dump({"0th": {piexif.ImageIFD.Make: b"Test", piexif.ImageIFD.Orientation: 6}})
            Image.fromarray(pixels).save(src / f"{i}.jpg", quality=90, exif=exif)
        elif i % 3 == 1:
            Image.fromarray(pixels).save(src / f"{i}.png")
        else:
            Image.fromarray(pixels[..., 0].astype(np.uint16) * 257).save(src / f"{i}.png")  # 16-bit grey
    inputs, problems = find_inputs([src], recursive=False)
    assert not problems
    return plan_jobs(inputs, tmp_path / "out")


def run(
    jobs: list[Job], model: nn.Module, opts: Settings, *, overlap_io: bool = True, strength: float = 1.0
) -> tuple[str, list[tuple[int, Outcome]]]:
    results: list[tuple[int, Outcome]] = []
    end = run_jobs(jobs, session(model, strength), opts, on_result=lambda i, o: results.append((i, o)), overlap_io=overlap_io)
    return end, results


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_overlapped_run_writes_the_same_bytes_as_the_sequential_one(tmp_path: Path) -> None:
    jobs = folder(tmp_path, 6)
    end, results = run(jobs, Shade(), settings(compare=True), strength=0.7)
    assert end == "completed" and [i for i, _ in results] == list(range(6))
    first = tree(tmp_path / "out")
    assert len(first) == 12  # 6 outputs + 6 compare strips
    for path in (tmp_path / "out").iterdir():
        path.unlink()
    end, again = run(jobs, Shade(), settings(compare=True), overlap_io=False, strength=0.7)
    assert end == "completed" and tree(tmp_path / "out") == first
    strip = lambda o: {**o.as_dict(), "seconds": 0, "model_seconds": 0}
    assert [strip(o) for _, o in results] == [strip(o) for _, o in again]
    # and both equal one photo processed on its own with process()
    single = Job(jobs[0].src, tmp_path / "single" / jobs[0].dst.name, jobs[0].rel)
    outcome = process(single, session(Shade(), 0.7), settings(compare=True))
    assert outcome.status == "done" and single.dst.read_bytes() == first[jobs[0].dst.name]
    with Image.open(single.dst) as im:  # metadata went through: orientation applied, EXIF kept
        assert im.getexif()[0x0112] == 1 and im.getexif()[0x010F] == "Test"


def test_model_runs_on_the_calling_thread_and_io_on_two_others(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    jobs = folder(tmp_path, 3)
    threads: dict[str, set[str]] = {"read": set(), "write": set()}
    real_read, real_write = photo_io.read_photo, photo_io.write_photo

    def read(*a: object, **k: object) -> photo_io.Photo:
        threads["read"].add(threading.current_thread().name)
        return real_read(*a, **k)  # type: ignore[arg-type]

    def write(*a: object, **k: object) -> list[str]:
        threads["write"].add(threading.current_thread().name)
        return real_write(*a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(photo_io, "read_photo", read)
    monkeypatch.setattr(photo_io, "write_photo", write)
    model = Shade()
    assert run(jobs, model, settings())[0] == "completed"
    assert {name for name, _ in model.calls} == {threading.current_thread().name}
    (reader,), (writer,) = threads["read"], threads["write"]
    assert len({reader, writer, threading.current_thread().name}) == 3


def test_next_photo_is_read_while_the_model_works(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    jobs = folder(tmp_path, 3)
    second_read = threading.Event()
    real_read = photo_io.read_photo

    def read(path: Path, **k: bool) -> photo_io.Photo:
        if Path(path) == jobs[1].src:
            second_read.set()
        return real_read(path, **k)

    monkeypatch.setattr(photo_io, "read_photo", read)
    model = Shade()
    seen: list[bool] = []
    model.before_forward = lambda x: seen.append(second_read.wait(WAIT)) if not seen else None
    assert run(jobs, model, settings())[0] == "completed"
    assert seen == [True]  # the model's first photo waited for the reader to start the second: overlap


def test_previous_photo_is_written_while_the_model_works(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    jobs = folder(tmp_path, 3)
    second_model = threading.Event()
    model = Shade()
    model.before_forward = lambda x: second_model.set() if len(model.calls) == 2 else None
    real_write = photo_io.write_photo
    waited: list[bool] = []

    def write(path: Path, *a: object, **k: object) -> list[str]:
        if Path(path) == jobs[0].dst:
            waited.append(second_model.wait(WAIT))  # finish only once the model is on the next photo
        return real_write(path, *a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(photo_io, "write_photo", write)
    end, results = run(jobs, model, settings())
    assert end == "completed" and waited == [True]
    assert [o.status for _, o in results] == ["done"] * 3


def test_memory_stays_bounded_three_photos_at_most(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """However slow the writer, at most one photo is read ahead and one is being written."""
    jobs = folder(tmp_path, 8)
    alive: set[Path] = set()
    peak = [0]
    lock = threading.Lock()
    real_read, real_write = photo_io.read_photo, photo_io.write_photo

    def read(path: Path, **k: bool) -> photo_io.Photo:
        with lock:
            alive.add(Path(path))
            peak[0] = max(peak[0], len(alive))
        return real_read(path, **k)

    def write(path: Path, rgb: np.ndarray, source: photo_io.Photo, **k: object) -> list[str]:
        threading.Event().wait(0.05)  # a slow disk
        result = real_write(path, rgb, source, **k)  # type: ignore[arg-type]
        with lock:
            alive.discard(source.path)
        return result

    monkeypatch.setattr(photo_io, "read_photo", read)
    monkeypatch.setattr(photo_io, "write_photo", write)
    assert run(jobs, Shade(), settings())[0] == "completed"
    assert 2 <= peak[0] <= 3


def test_failures_stay_per_file_and_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    jobs = folder(tmp_path, 5)
    jobs[1].src.write_bytes(b"not a photo at all")  # read fails
    model = Shade()

    def explode_on_third(x: torch.Tensor) -> None:  # model fails (engine calls: one per photo)
        if len(model.calls) == 2:
            raise RuntimeError("boom\nsecond line")

    model.before_forward = explode_on_third
    real_write = photo_io.write_photo

    def write(path: Path, *a: object, **k: object) -> list[str]:
        if Path(path) == jobs[3].dst:
            raise PhotoError("cannot write '3.png': permission denied (the folder is not writable)")
        return real_write(path, *a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(photo_io, "write_photo", write)
    for overlap in (True, False):
        for path in (tmp_path / "out").glob("*"):
            path.unlink()
        model.calls.clear()
        end, results = run(jobs, model, settings(), overlap_io=overlap)
        assert end == "completed" and [i for i, _ in results] == list(range(5))
        statuses = [(o.status, o.reason) for _, o in results]
        assert statuses[0] == ("done", None) and statuses[4] == ("done", None)
        assert statuses[1][0] == "failed" and "not a recognised image" in str(statuses[1][1])
        assert statuses[2] == ("failed", "cannot process this photo: boom second line")
        assert isinstance(results[2][1].exception, RuntimeError)
        assert statuses[3] == ("failed", "cannot write '3.png': permission denied (the folder is not writable)")
        assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [jobs[0].dst.name, jobs[4].dst.name]


@pytest.mark.parametrize("overlap", [True, False])
def test_disk_full_stops_after_reporting_that_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, overlap: bool) -> None:
    jobs = folder(tmp_path, 4)
    attempts: list[Path] = []

    def full(path: Path, *a: object, **k: object) -> list[str]:
        attempts.append(Path(path))
        raise DiskFullError(f"cannot write '{Path(path).name}': no space left on device")

    monkeypatch.setattr(photo_io, "write_photo", full)
    end, results = run(jobs, Shade(), settings(), overlap_io=overlap)
    assert end == "disk_full" and attempts == [jobs[0].dst]  # no write is tried after the disk is full
    assert [(i, o.status) for i, o in results] == [(0, "failed")] and "no space left" in str(results[0][1].reason)


def test_real_enospc_leaves_no_temporary_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    jobs = folder(tmp_path, 3)

    def fsync(_fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", fsync)
    end, results = run(jobs, Shade(), settings())
    assert end == "disk_full" and len(results) == 1
    assert not [p for p in (tmp_path / "out").rglob("*") if p.is_file()]


def test_ctrl_c_in_the_model_finishes_the_write_in_flight(tmp_path: Path) -> None:
    jobs = folder(tmp_path, 5)
    model = Shade()

    def interrupt_third(x: torch.Tensor) -> None:
        if len(model.calls) == 3:
            raise KeyboardInterrupt

    model.before_forward = interrupt_third
    end, results = run(jobs, model, settings())
    assert end == "interrupted"
    assert [(i, o.status) for i, o in results] == [(0, "done"), (1, "done")]  # photo 1 was with the writer
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted([jobs[0].dst.name, jobs[1].dst.name])


def test_ctrl_c_inside_the_writer_thread_counts_as_an_interrupt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    jobs = folder(tmp_path, 3)

    def fsync(_fd: int) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", fsync)
    end, results = run(jobs, Shade(), settings())
    assert end == "interrupted" and results == []
    assert not [p for p in (tmp_path / "out").rglob("*") if p.is_file()]


def test_output_that_appears_before_its_turn_is_skipped_not_clobbered(tmp_path: Path) -> None:
    jobs = folder(tmp_path, 3)
    jobs[1].dst.parent.mkdir(parents=True)
    jobs[1].dst.write_bytes(b"another run's output")
    end, results = run(jobs, Shade(), settings())
    assert end == "completed"
    assert [(o.status, o.reason) for _, o in results][1] == ("skipped", WRITTEN_BY_OTHER_RUN)
    assert jobs[1].dst.read_bytes() == b"another run's output"
    end, results = run(jobs, Shade(), settings(overwrite=True))  # replaced when asked
    assert [o.status for _, o in results] == ["done"] * 3 and jobs[1].dst.read_bytes() != b"another run's output"
    assert not [p for p in (tmp_path / "out").iterdir() if TEMP_TAG in p.name]


def test_describe_failure_is_one_line_per_kind() -> None:
    assert describe_failure(PhotoError("file is empty (0 bytes)")) == "file is empty (0 bytes)"
    assert describe_failure(MemoryError()) == "not enough memory for this photo (try a smaller --tile)"
    assert describe_failure(OSError(errno.EIO, "Input/output error")) == "Input/output error"
    assert describe_failure(ValueError("a\n  b" + "x" * 400)) == "cannot process this photo: a b" + "x" * 297
    # Issue 19.17: no internal class names (they are in -v's traceback)
    assert describe_failure(OverflowError()) == "cannot process this photo (an internal error; -v shows it)"
    from PIL import Image

    bomb = describe_failure(Image.DecompressionBombError("Image size (1 pixels) exceeds limit"))
    assert "DecompressionBombError" not in bomb and "--allow-huge" in bomb


def test_failure_outcome_turns_a_lost_race_into_a_skip(tmp_path: Path) -> None:
    """Decided by the error's type, not its wording: a PhotoError that merely says "already exists" fails."""
    job = Job(tmp_path / "a.png", tmp_path / "out.png", Path("a.png"))
    job.dst.write_bytes(b"x")
    lost = OutputExistsError("'out.png' already exists; pass --overwrite to replace it")
    assert (failure_outcome(job, lost, settings()).status, failure_outcome(job, lost, settings()).reason) == (
        "skipped", WRITTEN_BY_OTHER_RUN)
    assert failure_outcome(job, PhotoError(str(lost)), settings()).status == "failed"
    assert failure_outcome(job, lost, settings(overwrite=True)).status == "failed"


def test_a_write_that_loses_the_race_raises_output_exists(tmp_path: Path) -> None:
    from deblurcli.atomic import atomic_write_bytes

    target = tmp_path / "out.png"
    target.write_bytes(b"theirs")
    with pytest.raises(OutputExistsError):
        atomic_write_bytes(target, b"ours", overwrite=False)
    assert target.read_bytes() == b"theirs" and sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]


def test_empty_job_list_completes() -> None:
    assert run([], Shade(), settings()) == ("completed", [])


def test_compare_label_says_which_estimate_auto_did_not_trust() -> None:
    from deblurcli.runner import method_label
    from deblurcli.session import Result

    rgb, kernel = np.zeros((4, 4, 3), np.float32), np.ones((9, 9), np.float32) / 81
    assert method_label(Result(rgb, "kernel", kernel, 0.9)) == "kernel 9 px"
    assert method_label(Result(rgb, "network", kernel, 0.04)) == "network (kernel estimate 9 px, confidence 0.04: not used)"
    assert method_label(Result(rgb, "network")) == "network"  # no estimate (--method network, tiny photos)
    partly = Result(rgb, "network", np.ones((1, 1), np.float32), 0.25, point=True)  # auto's look past the gate
    assert method_label(partly) == "network (the kernel estimate is a point, but part of the photo is blurred)"
    patched = Result(rgb, "network", np.ones((1, 1), np.float32), 0.25, point=True, patched=0.034)
    assert method_label(patched) == "network on 3% of the photo (the kernel estimate is a point; the rest unchanged)"
    assert method_label(Result(rgb, "unchanged", np.ones((1, 1), np.float32), 0.0)) == "unchanged"
