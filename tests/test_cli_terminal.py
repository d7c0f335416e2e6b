"""``deblur`` as a person sees it in a terminal: run under a pseudo-terminal, its screen rebuilt by a terminal
emulator (pyte), so the tests see what is left on the screen, not the stream of redraws.

The rules (issue 18, "Progress"): output paths are printed above the live bar, never below it; one bar is
left at the end (no frozen copies); the bar names the photo being worked on and shows the ETA and MP/s;
errors are in colour; the run ends with a table of done / skipped / failed, time, MP/s and the failed files
with their reasons; a skipped output says, without ``-v``, that ``--overwrite`` redoes it.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import numpy as np
import pyte
import pytest
from PIL import Image

COLUMNS, LINES = 200, 60  # wide: a long temporary path must not wrap
BAR = "━"  # rich's bar character


def photos(folder: Path, count: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"p{i}.png"
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def in_terminal(*args: str | Path, timeout: float = 180) -> tuple[int, bytes]:
    """Run ``python -m deblurcli ARGS`` with stdin, stdout and stderr on one pseudo-terminal of
    COLUMNS x LINES: (exit code, every byte it wrote to the terminal)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", LINES, COLUMNS, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "COLUMNS", "LINES")}
    env["TERM"] = "xterm-256color"
    argv = [sys.executable, "-m", "deblurcli", *map(str, args), "--method", "network", "--threads", "1"]
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True)
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed its end of the terminal
                break
            if not data:
                break
            chunks.append(data)
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    return code, b"".join(chunks)


def screen_of(raw: bytes) -> list[str]:
    """The lines left on the screen after ``raw`` was drawn, trailing blanks removed."""
    screen = pyte.Screen(COLUMNS, LINES)
    pyte.ByteStream(screen).feed(raw)
    lines = [line.rstrip() for line in screen.display]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def test_one_bar_at_the_end_and_every_output_path_above_it(tmp_path: Path, model_file: Path) -> None:
    photos(tmp_path / "in", 4)
    out = tmp_path / "out"
    code, raw = in_terminal(tmp_path / "in", "-o", out, "--weights", model_file)
    lines = screen_of(raw)
    assert code == 0, "\n".join(lines)
    bars = [i for i, line in enumerate(lines) if BAR in line]
    assert len(bars) == 1, "\n".join(lines)  # no frozen copies of the bar
    bar = lines[bars[0]]
    assert "4/4" in bar and "eta" in bar and "MP/s" in bar
    paths = [str(out / f"p{i}.png") for i in range(4)]
    assert [lines.index(p) for p in paths] == sorted(lines.index(p) for p in paths)  # each on a line of its own, in order
    assert all(lines.index(p) < bars[0] for p in paths)  # above the bar
    below = lines[bars[0] + 1 :]
    assert not any(str(out) in line for line in below)
    summary = {line.split()[0]: line.split()[1:] for line in below if line.split()}
    assert summary["done"] == ["4"] and summary["skipped"] == ["0"] and summary["failed"] == ["0"]
    assert summary["time"][1] == "s" and summary["speed"][1] == "MP/s"
    # While it ran, the bar named each photo before its output was listed (the photo being worked on).
    for i, path in enumerate(paths):
        assert raw.index(f"p{i}.png".encode()) < raw.index(path.encode())


def test_errors_in_colour_skips_said_and_failed_files_in_the_table(tmp_path: Path, model_file: Path) -> None:
    photos(tmp_path / "in", 2)
    (tmp_path / "in" / "broken.png").write_bytes(b"not a photo")
    out = tmp_path / "out"
    out.mkdir()
    Image.new("RGB", (8, 8)).save(out / "p0.png")  # an earlier run's output
    code, raw = in_terminal(tmp_path / "in", "-o", out, "--weights", model_file)
    lines = screen_of(raw)
    assert code == 1, "\n".join(lines)
    error = f"error: {tmp_path / 'in' / 'broken.png'}: "
    assert any(line.startswith(error) for line in lines)
    coloured = raw.split(error.encode())[0].rsplit(b"\n", 1)[-1]
    assert b"\x1b[31m" in coloured  # red, set just before the line
    assert f"skipped {out / 'p0.png'}: it exists (--overwrite redoes it)" in lines  # said without -v
    assert sum(BAR in line for line in lines) == 1
    bar = next(i for i, line in enumerate(lines) if BAR in line)
    rows: dict[str, str] = {}
    for line in lines[bar + 1 :]:
        if line.split():
            rows.setdefault(line.split()[0], line)  # the first "failed" row, not the failed-file table's header
    assert rows["done"].split()[1] == "1" and rows["failed"].split()[1] == "1"
    assert rows["skipped"].split()[1] == "1" and "--overwrite redoes them" in rows["skipped"]
    below = lines[bar + 1 :]
    listed = below[below.index("failed files:") + 1 :]
    assert listed[0].startswith(f"  {tmp_path / 'in' / 'broken.png'}: not a recognised image")  # the full path and the reason
    assert not any("Traceback" in line for line in lines)


def test_quiet_and_json_leave_the_terminal_machine_clean(tmp_path: Path, model_file: Path) -> None:
    photos(tmp_path / "in", 2)
    code, raw = in_terminal(tmp_path / "in", "-o", tmp_path / "out", "--weights", model_file, "-q")
    assert code == 0 and screen_of(raw) == []  # no bar, no summary, no paths
    code, raw = in_terminal(tmp_path / "in", "-o", tmp_path / "out2", "--weights", model_file, "--json")
    assert code == 0
    # JSON lines are wider than the screen: read them from the stream, where no redraw may cut into them.
    text = re.sub(rb"\x1b\[[0-9;?]*[A-Za-z]", b"", raw).decode()
    records = [json.loads(line) for line in re.split(r"[\r\n]+", text) if line.startswith("{")]
    assert [Path(r["input"]).name for r in records] == ["p0.png", "p1.png"] and {r["status"] for r in records} == {"done"}


@pytest.mark.parametrize(("args", "message"), [(["{in}/p0.png", "-o", "-"], "redirect stdout"), (["-"], "stdin is a terminal")])
def test_photo_bytes_never_go_to_or_come_from_a_terminal(tmp_path: Path, model_file: Path, args: list[str], message: str) -> None:
    photos(tmp_path / "in", 1)
    code, raw = in_terminal(*[a.format(**{"in": tmp_path / "in"}) for a in args], "--weights", model_file)
    text = "\n".join(screen_of(raw))
    assert code == 2 and message in text and "Traceback" not in text
    assert b"\xff\xd8" not in raw  # no JPEG bytes on the screen
