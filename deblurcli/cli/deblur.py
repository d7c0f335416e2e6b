"""``deblur PATH...``: the default command -- photos and folders in, sharp photos out.

The command only parses options and drives the library: :mod:`deblurcli.batch` finds inputs, names
outputs and picks this task's shard (``--shard I/N``), and :mod:`deblurcli.runner` does the per-file work
(read with metadata, the Session's deblurring, atomic write, compare strip), overlapping the decode and encode
of the neighbouring photos with the work on the current one. The Session (model, method, tile plan) is built
once per run. What this
module owns is the run's behaviour as the user sees it:

* stdout carries only results (each written output's path, or one JSON object per file with ``--json``;
  with ``-o -`` the photo itself, see :mod:`deblurcli.cli.streams`); when its reader goes away (``| head``),
  the run goes on and says how many lines it could not list; the progress bar, warnings, errors and the
  summary go to stderr, the bar only when stderr is a terminal. There, results are printed above the bar
  (through the console that draws it), errors are red, one bar stays at the end and a table sums the run
  up; elsewhere every line is plain and the summary is one line;
* a bad file is one line ``error: <full path>: <reason>`` and the batch goes on (exit 1 at the end);
  a full disk stops the batch, since every further write would fail too;
* outputs that exist are skipped unless ``--overwrite``, so re-running an interrupted command finishes
  the rest; Ctrl-C (or SIGTERM) stops at once, lists the finished files and exits 130, and leaves no
  partial file (atomic.py writes to a temporary file and renames it only when complete); a second one
  cannot cut that clean-up short (:mod:`deblurcli.cli.interrupts`);
* two runs on the same folder at once cooperate instead of clashing: each re-checks that an output is
  still missing before starting it, and an output that appears while it is working (written by the
  other run) counts as skipped, never as an error or a clobbered file.

Exit codes: 0 all done (or skipped), 1 some files failed, 2 usage error, 130 interrupted.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from deblurcli.cli import interrupts
from deblurcli.cli.interrupts import EXIT_INTERRUPTED
from deblurcli.cli.options import device_options, method_options, model_option, output_options, tiling_options

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, TaskID

    from deblurcli.batch import Job
    from deblurcli.cli.streams import Streams
    from deblurcli.runner import Outcome, Settings
    from deblurcli.session import Session

#: Most finished files listed one by one after Ctrl-C (the rest are counted).
MAX_LISTED = 50
#: Images with at least this many tiles get their own progress bar.
TILE_BAR_MIN = 4


def parse_shard_option(_ctx: click.Context, _param: click.Parameter, value: str | None) -> tuple[int, int] | None:
    """``--shard I/N`` -> (I, N), 1-based; a malformed spec is a usage error (exit 2)."""
    if value is None:
        return None
    from deblurcli.batch import parse_shard

    try:
        return parse_shard(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


#: ``--format``'s choices (the keys of :data:`deblurcli.batch.FORMAT_SUFFIXES`, spelled out here so that
#: ``deblur --help`` does not import the photo package).
FORMATS = ("jpg", "png", "webp", "tif")
_SAME_FORMAT = {".jpeg": ".jpg", ".jpe": ".jpg", ".tiff": ".tif"}


def _canonical_suffix(output: Path) -> str | None:
    """``-o``'s suffix as ``--format`` spells it (``.jpeg`` -> ``.jpg``) when ``-o`` names a photo file; None
    for ``-o -`` and folders (``-o results.v2`` included)."""
    if str(output) == "-" or output.is_dir():
        return None
    suffix = _SAME_FORMAT.get(output.suffix.lower(), output.suffix.lower())
    return suffix if suffix in (".jpg", ".png", ".webp", ".tif", ".avif") else None


def parse_suffix(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """``--suffix TEXT``: part of a file name, so no path separator (and no NUL, which no name can hold)."""
    if value is not None and ("/" in value or os.sep in value or "\0" in value):
        raise click.BadParameter("a suffix is added to file names, so it cannot hold '/'")
    return value


#: Control characters (C0, DEL, C1): a file name holding a newline must not start a forged "error:" line.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _printable(text: str, stream: Any, *, one_line: bool = True) -> str:
    """``text`` as ``stream`` can encode it, on one line unless told otherwise: control characters (a
    newline in a file name) are written as ``\\n``, ``\\xNN``; a file name that is not valid UTF-8 (its bytes kept as
    surrogates by ``os.fsdecode``) shows them as ``\\xNN``, and characters the stream's encoding lacks
    become escapes, instead of a UnicodeEncodeError killing the run after the file was written."""
    if any("\udc80" <= ch <= "\udcff" for ch in text):
        text = os.fsencode(text).decode("utf-8", "backslashreplace")
    if one_line:
        text = _CONTROL.sub(lambda m: _ESCAPES.get(m[0], f"\\x{ord(m[0]):02x}"), text)
    encoding = getattr(stream, "encoding", None) or "utf-8"
    return text.encode(encoding, "backslashreplace").decode(encoding)


def _full(path: Path | str) -> str:
    """Absolute path for error lines, so a log line names its file unambiguously (labels pass through)."""
    text = str(path)
    return text if text.startswith("-") else os.path.abspath(text)


def _same_terminal(a: Any, b: Any) -> bool:
    """Whether two streams are the same terminal (``deblur dir`` typed in a shell: stdout and stderr both the
    screen), so that result lines must be printed through the console that draws the progress bar."""
    try:
        if not (a.isatty() and b.isatty()):
            return False
        sa, sb = os.fstat(a.fileno()), os.fstat(b.fileno())
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return False
    return (sa.st_rdev, sa.st_ino) == (sb.st_rdev, sb.st_ino)


class Reporter:
    """Everything the user sees: results on stdout; progress, warnings, errors and summary on stderr.

    On a terminal, stderr lines go through rich's console so they print above the live progress bar, in
    colour (errors red, warnings yellow); result lines go through that same console when stdout is the same
    terminal, since a line written to stdout behind rich's back lands after the bar and freezes a copy of it
    on the screen. Otherwise every line is plain, never shortened to a table width, so logs keep full paths.
    One bar (the photos) is left on the screen at the end, followed by a summary table.
    """

    def __init__(self, *, quiet: bool, verbose: bool, as_json: bool) -> None:
        from rich.console import Console

        self.quiet, self.verbose, self.as_json = quiet, verbose, as_json
        self.tty = sys.stderr.isatty()
        #: stdout is the terminal the bar is drawn on: results go through the console too
        self.shared = self.tty and _same_terminal(sys.stdout, sys.stderr)
        self.console: Console = Console(stderr=True, highlight=False, soft_wrap=True)
        self.progress: Progress | None = None
        self.files_task: TaskID | None = None
        self.tiles_task: TaskID | None = None
        #: (file, reason) of every file that failed, for the summary table
        self.failures: list[tuple[str, str]] = []
        self._megapixels = 0.0
        self._started = 0.0
        #: result lines dropped since stdout's reader went away (None while it is there)
        self.unlisted: int | None = None
        #: whether outputs are listed on stdout: not when stdout carries the photo itself (``-o -``)
        self.listing = True

    def _err(self, line: str, *, one_line: bool = True, style: str | None = None) -> None:
        line = _printable(line, sys.stderr, one_line=one_line)
        if self.tty:
            from rich.text import Text

            self.console.print(Text(line, style=style or ""))
        else:
            click.echo(line, err=True)

    def error(self, path: Path | str, message: str) -> None:
        self.failures.append((_full(path), message))
        self._err(f"error: {_full(path)}: {message}", style="red")

    def general_error(self, message: str) -> None:
        """An error that concerns no file (a missing optional dependency, an unreachable cluster)."""
        self._err(f"error: {message}", style="red")

    def warning(self, path: Path | str | None, message: str) -> None:
        if not self.quiet:
            self._err(f"warning: {message}" if path is None else f"warning: {_full(path)}: {message}", style="yellow")

    def info(self, message: str) -> None:
        if self.verbose and not self.quiet:
            self._err(message, style="dim")

    def traceback(self, text: str) -> None:
        """``-v``'s traceback of an unforeseen failure: the one text printed on several lines."""
        if self.verbose and not self.quiet:
            self._err(text, one_line=False)

    def interrupted(self, message: str) -> None:
        self._err(message)

    def note(self, message: str) -> None:
        if not self.quiet:
            self._err(message)

    def result(self, outcome: Outcome) -> None:
        if not self.listing:
            return
        if self.as_json:
            self.out(outcome.as_json())  # ASCII-only JSON
        elif not self.quiet and outcome.status == "done":
            self.out(_printable(str(outcome.output), sys.stdout))

    def out(self, line: str) -> None:
        """One line on stdout. On the bar's own terminal it goes through the console, above the bar.
        When its reader has gone (``deblur ... | head -n 1``: EPIPE), the run keeps going -- its outputs
        are the point, the listing is a courtesy -- and later lines are dropped; :meth:`stdout_note` says so
        at the end."""
        if self.shared and self.progress is not None:
            from rich.text import Text

            self.console.print(Text(line))
            return
        if self.unlisted is not None:
            self.unlisted += 1
            return
        try:
            click.echo(line)
        except BrokenPipeError:
            self.unlisted = 1
            # Point stdout at /dev/null, so that the flush at exit does not fail again.
            with contextlib.suppress(OSError, ValueError, io.UnsupportedOperation):
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
                os.close(devnull)

    def stdout_note(self) -> None:
        """After a broken pipe on stdout: which lines were lost, and that the work went on regardless."""
        if self.unlisted is not None:
            self.warning(None, f"stdout was closed early (broken pipe); the run kept going, {self.unlisted} result line(s) not listed")

    # --- progress (stderr, terminal only) ---------------------------------------------------------
    def start(self, files: int) -> None:
        """The live bar: the photo the model works on, done/total, elapsed time, ETA and MP/s so far."""
        if not self.tty or self.quiet:
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.table import Column

        self.progress = Progress(
            # markup off: a file name holding "[red]" is a name, not a style
            TextColumn("{task.fields[photo]}", markup=False, table_column=Column(min_width=12, max_width=32, no_wrap=True, overflow="ellipsis")),
            BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
            TextColumn("{task.fields[rate]}", markup=False),
            console=self.console, transient=False, refresh_per_second=4,
            # print() to stdout goes above the bar only where stdout is the bar's terminal, never into a pipe
            redirect_stdout=self.shared,
        )
        self._megapixels, self._started = 0.0, time.perf_counter()
        self.progress.start()
        self.files_task = self.progress.add_task("photos", total=files, photo="photos", rate="")
        self.tiles_task = self.progress.add_task("tiles", total=1, visible=False, photo="  tiles", rate="")

    def file_started(self, name: str) -> None:
        if self.progress is not None and self.files_task is not None:
            # drawn at once, not at the next tick: a quick photo would otherwise never be named
            self.progress.update(self.files_task, photo=_printable(name, sys.stderr), refresh=True)

    def file_finished(self, outcome: Outcome) -> None:
        if self.progress is not None and self.files_task is not None and self.tiles_task is not None:
            self._megapixels += outcome.megapixels if outcome.status == "done" else 0.0
            seconds = time.perf_counter() - self._started
            rate = f"{self._megapixels / seconds:.2f} MP/s" if self._megapixels and seconds > 0 else ""
            self.progress.update(self.files_task, advance=1, rate=rate)
            self.progress.update(self.tiles_task, visible=False)

    def tiles(self, done: int, total: int) -> None:
        if self.progress is not None and self.tiles_task is not None and total >= TILE_BAR_MIN:
            self.progress.update(self.tiles_task, completed=done, total=total, visible=True)

    def stop(self) -> None:
        """Leave the photos bar on the screen (the tiles bar goes), so the run's last state stays visible."""
        if self.progress is not None:
            assert self.files_task is not None and self.tiles_task is not None
            self.progress.update(self.tiles_task, visible=False)
            self.progress.update(self.files_task, photo="photos")
            self.progress.stop()
            self.progress = None

    def summary(self, outcomes: list[Outcome], problems: int, seconds: float) -> None:
        """The end of a run: on a terminal a table (done / skipped / failed, time, MP/s, the failed files and
        their reasons), elsewhere the one line that logs and scripts grep."""
        if self.quiet:
            return
        if not self.tty:
            self.note(summary_line(outcomes, problems, seconds))
            return
        from rich import box
        from rich.table import Table
        from rich.text import Text

        from deblurcli.runner import CLAIMED_BY_OTHER_RUN

        done = [o for o in outcomes if o.status == "done"]
        skipped = [o for o in outcomes if o.status == "skipped"]
        failed = sum(o.status == "failed" for o in outcomes) + problems
        megapixels = sum(o.megapixels for o in done)
        table = Table(box=box.SIMPLE, show_header=False, pad_edge=False)
        table.add_column(style="bold")
        table.add_column(justify="right")
        table.add_column()
        table.add_row("done", str(len(done)), "", style="green" if done else None)
        # a photo another live run is working on is the one skip that --overwrite does not concern
        hint = "outputs exist (--overwrite redoes them)" if any(o.reason != CLAIMED_BY_OTHER_RUN for o in skipped) else ""
        table.add_row("skipped", str(len(skipped)), hint)
        table.add_row("failed", str(failed), "", style="red" if failed else None)
        table.add_row("time", f"{seconds:.1f} s", "")
        if done and seconds > 0:
            table.add_row("speed", f"{megapixels / seconds:.2f}", "MP/s")
        self.console.print(table)
        if self.failures:
            # Lines, not a table: a table would fold the full paths that a user copies to find the file.
            self.console.print(Text("failed files:", style="bold red"))
            for path, reason in self.failures[:MAX_LISTED]:
                self.console.print(Text(f"  {_printable(path, sys.stderr)}: {_printable(reason, sys.stderr)}"))
            if len(self.failures) > MAX_LISTED:
                self.console.print(Text(f"  ... and {len(self.failures) - MAX_LISTED} more"))


class _LogToReporter(logging.Handler):
    """Library warnings (OOM back-off, fp32 retry) as ``warning:`` lines through the reporter."""

    def __init__(self, reporter: Reporter, current: list[str]) -> None:
        super().__init__(logging.INFO if reporter.verbose else logging.WARNING)
        self.reporter, self.current = reporter, current

    def emit(self, record: logging.LogRecord) -> None:
        where = self.current[0] if self.current else None
        if record.levelno >= logging.WARNING:
            self.reporter.warning(where, record.getMessage())
        else:
            self.reporter.info(record.getMessage())


def run_jobs(jobs: list[Job], session: Session, settings: Settings, reporter: Reporter, current: list[str], streams: Streams | None = None) -> tuple[list[Outcome], bool]:
    """Process every job through the library runner, reporting each result as it comes (in input order);
    a photo for stdout is copied there (``streams``) before it is reported.

    Returns the outcomes and whether Ctrl-C cut the run short. A full disk stops the batch: the file that
    found it is reported failed, and one more line says how many were left.
    """
    from deblurcli.runner import format_traceback, is_unexpected
    from deblurcli.runner import run_jobs as run

    outcomes: list[Outcome] = []

    def started(job: Job) -> None:
        current[:] = [str(job.src)]  # library log lines name the photo the model is working on
        reporter.file_started(job.src.name)

    def finished(_index: int, outcome: Outcome) -> None:
        if streams is not None:
            streams.deliver(outcome)
        if outcome.status == "failed":
            reporter.error(outcome.input, outcome.reason or "failed")
            if reporter.verbose and is_unexpected(outcome.exception):
                assert outcome.exception is not None
                reporter.traceback(format_traceback(outcome.exception))
        for warning in outcome.warnings:
            reporter.warning(outcome.input, warning)
        if outcome.method is not None:
            reporter.info(f"{outcome.input}: {describe_method(outcome)}")
        outcomes.append(outcome)
        reporter.result(outcome)
        reporter.file_finished(outcome)

    reporter.start(len(jobs))
    try:
        end = run(jobs, session, settings, on_result=finished, on_start=started, progress=reporter.tiles)
    finally:
        reporter.stop()
        current.clear()
    if end == "disk_full":
        last = outcomes[-1]
        left = _count(len(jobs) - len(outcomes), "photo")
        reporter.error(last.output.parent if last.output is not None else last.input, f"disk full: stopped, {left} not processed")
    return outcomes, end == "interrupted"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def summary_line(outcomes: list[Outcome], problems: int, seconds: float) -> str:
    done = [o for o in outcomes if o.status == "done"]
    skipped = sum(o.status == "skipped" for o in outcomes)
    failed = sum(o.status == "failed" for o in outcomes) + problems
    megapixels = sum(o.megapixels for o in done)
    rate = f", {megapixels / seconds:.2f} MP/s" if done and seconds > 0 else ""
    return f"done {len(done)}, skipped {skipped}, failed {failed} in {seconds:.1f} s{rate}"


def describe_method(outcome: Outcome) -> str:
    """``-v``'s line per photo: which method ran, with the kernel's size and the estimator's confidence."""
    text = f"method {outcome.method}"
    if outcome.kernel_size is not None:
        text += f", kernel {outcome.kernel_size} px"
    if outcome.confidence is not None:
        text += f", confidence {outcome.confidence:.2f}"
    if outcome.decision:
        text += f" ({outcome.decision})"
    return text


def open_session(options: dict[str, Any], reporter: Reporter) -> Session:
    """The run's Session (device, precision, method, model, tile plan: once); a failure is one line and exit."""
    from deblurcli.cli.errors import setup_error
    from deblurcli.devices import keep_host_memory
    from deblurcli.errors import DeblurError
    from deblurcli.session import Session

    keep_host_memory()
    started = time.perf_counter()
    try:
        session = Session(**options)
    except DeblurError as exc:
        label = str(options["weights"]) if options.get("weights") is not None else options.get("model") and f"--model {options['model']}"
        line, code = setup_error(exc, model_label=label or None)
        reporter.general_error(line)
        raise click.exceptions.Exit(code) from None
    except KeyboardInterrupt:
        reporter.interrupted("interrupted before any photo was processed")
        raise click.exceptions.Exit(EXIT_INTERRUPTED) from None
    reporter.info(f"{session.describe()}; ready in {time.perf_counter() - started:.1f} s")
    return session


def plan(paths: tuple[Path, ...], output: Path | None, *, recursive: bool, in_place: bool, shard: tuple[int, int] | None, settings: Settings, reporter: Reporter, suffix: str | None = None, extension: str | None = None) -> tuple[list[Job], int]:
    """Inputs found, outputs named (with ``suffix`` and ``extension``, and the strips and kernel pictures
    ``settings`` asks for) and this task's shard taken: (jobs, number of inputs that are problems).

    Each mistake is said once: an ``-o`` that cannot work is a usage error before any input is looked at,
    and inputs that are all problems (``deblur x.gif``) get their error lines and no "no photos found".
    """
    from deblurcli.batch import PlanError, check_output, find_inputs, is_compare_strip, output_is_file, photos_below, plan_jobs
    from deblurcli.batch import shard as shard_of
    from deblurcli.runner import Outcome, compare_path, kernel_path

    try:
        check_output(output, paths, recursive=recursive)
    except PlanError as exc:
        raise click.UsageError(str(exc)) from None
    exclude = [output] if output is not None and not output_is_file(output) else []
    inputs, problems = find_inputs(paths, recursive=recursive, exclude=exclude)
    for path, reason in problems:
        reporter.error(path, reason)
        reporter.result(Outcome(path, None, "failed", reason))
    for path in paths:
        if path.is_file() and is_compare_strip(path):
            reporter.note(f"skipped {path}: a --compare strip made by deblurcli, not a photo")
        elif not recursive and path.is_dir() and photos_below(path, exclude=exclude):
            reporter.note(f"hint: {path} has photos in sub-folders, left out without -r (--recursive)")
    try:
        extras = [("--compare", compare_path)] if settings.compare else []
        extras += [("--save-kernel", kernel_path)] if settings.save_kernel else []
        jobs = plan_jobs(inputs, output, in_place=in_place, suffix=suffix, extension=extension, extras=extras)
    except PlanError as exc:
        raise click.UsageError(str(exc)) from None
    if not jobs and not problems:
        reporter.note(f"no photos found in {', '.join(map(str, paths))}")
    elif shard is not None and jobs:
        index, count = shard
        total = len(jobs)
        jobs = shard_of(jobs, index, count)
        reporter.info(f"shard {index}/{count}: {_count(len(jobs), 'photo')} of {total}")
        if not jobs:
            reporter.note(f"shard {index}/{count} has no photos (the {total} found all fall in other shards)")
    return jobs, len(problems)


def dry_run_listing(jobs: list[Job], settings: Settings, reporter: Reporter, streams: Streams | None = None) -> None:
    """``--dry-run``: what would be written or skipped, and nothing else (stdin and stdout named ``-``)."""
    from deblurcli.runner import Outcome, compare_path

    for job in jobs:
        skipped = settings.existing(job, "output exists")
        outcome = skipped or Outcome(job.src, job.dst, "planned")
        outcome.compare = compare_path(job.dst) if settings.compare and skipped is None else None
        action = "write" if skipped is None else "skip (exists)" if skipped.status == "skipped" else f"fail ({skipped.reason})"
        if reporter.as_json:
            reporter.result(outcome)
        elif not reporter.quiet:
            src, dst = (streams.shown(job.src), streams.shown(job.dst)) if streams is not None else (job.src, job.dst)
            reporter.out(_printable(f"{action}: {src} -> {dst}", sys.stdout))


def deblur_jobs(jobs: list[Job], session_options: dict[str, Any], settings: Settings, reporter: Reporter, *, recursive: bool, streams: Streams | None = None) -> tuple[list[Outcome], int, bool]:
    """Clean up after killed runs (in the whole output trees with ``recursive``), skip existing outputs, then
    run the rest through one Session: (outcomes, photos left unfinished by Ctrl-C, interrupted)."""
    from deblurcli.atomic import remove_stale_temp_files
    from deblurcli.runner import complete_extras

    # Leftovers of a run killed outright (SIGKILL, power loss) anywhere in the output trees (with -r), not
    # only where this run writes: the photo being written then may be gone from the inputs, or in another
    # shard. Live writes and claims of another run are kept.
    for root in sorted({job.dst.parents[len(job.rel.parts) - 1] for job in jobs}):
        for leftover in remove_stale_temp_files(root, recursive=recursive):
            reporter.info(f"removed {leftover}, left by an earlier run that was killed mid-write")
    outcomes: list[Outcome] = []
    todo: list[Job] = []
    for job in jobs:
        skipped = settings.existing(job)
        if skipped is None:
            todo.append(job)
            continue
        skipped = complete_extras(job, settings, skipped)
        outcomes.append(skipped)
        if skipped.status == "failed":
            reporter.error(skipped.input, skipped.reason or "failed")
        for warning in skipped.warnings:
            reporter.warning(skipped.input, warning)
        reporter.result(skipped)
    existing = [o for o in outcomes if o.status == "skipped"]
    if len(existing) == 1:  # said without -v: a re-run that does nothing must say why, and how to redo it
        reporter.note(f"skipped {_full(existing[0].output or existing[0].input)}: it exists (--overwrite redoes it)")
    elif existing:
        reporter.note(f"skipped {len(existing)} photos whose outputs exist (--overwrite redoes them)")
    if not todo:
        return outcomes, 0, False
    session = open_session(session_options, reporter)
    current: list[str] = []
    handler = _LogToReporter(reporter, current)
    library_log = logging.getLogger("deblurcli")
    level = library_log.level
    library_log.addHandler(handler)
    library_log.setLevel(handler.level)
    try:
        done, interrupted = run_jobs(todo, session, settings, reporter, current, streams)
    finally:
        library_log.removeHandler(handler)
        library_log.setLevel(level)
    return outcomes + done, len(todo) - len(done), interrupted


def report_interrupted(outcomes: list[Outcome], left: int, reporter: Reporter) -> None:
    """After Ctrl-C: what is complete (said even with -q: the user needs to know) and how to finish."""
    finished = [o for o in outcomes if o.status == "done"]
    reporter.interrupted(
        f"interrupted: {_count(len(finished), 'photo')} finished (their outputs are complete), {left} not "
        "finished (no partial files); run the same command again to do the rest"
    )
    for outcome in finished[:MAX_LISTED]:
        reporter.interrupted(f"finished: {outcome.input} -> {outcome.output}")
    if len(finished) > MAX_LISTED:
        reporter.interrupted(f"... and {len(finished) - MAX_LISTED} more")


@click.command("deblur", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Output file (one photo), folder (keeps input names; default: NAME_deblurred beside each input), or - for stdout.")
@click.option("-r", "--recursive", is_flag=True, help="Go into sub-folders; the tree is mirrored under the output folder.")
@method_options
@model_option("Catalogue model (see 'deblur models'; default: $DEBLUR_MODEL, else 'deblur models default').")
@click.option("--weights", type=click.Path(path_type=Path, dir_okay=False, exists=True), help="Weights file to use instead of a catalogue model.")
@tiling_options
@device_options
@click.option("--compile", "compile_model", is_flag=True, help="torch.compile the model: faster on long GPU runs; compiling takes minutes on a CPU.")
@output_options
@click.option("--save-kernel", is_flag=True, help="Also write NAME_kernel.png: the blur kernel that was estimated (or given), scaled up.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), help="Write every output in this format (default: each input's own; JPEG for -o -).")
@click.option("--suffix", callback=parse_suffix, help="Added to each output's name (default: _deblurred beside the inputs, nothing under -o DIR).")
@click.option("--in-place", is_flag=True, help="Replace the input files themselves.")
@click.option("--dry-run", is_flag=True, help="List what would be written, write nothing.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per file on stdout (with the method chosen, kernel size and confidence).")
@click.option("-q", "--quiet", is_flag=True, help="No progress, summary or warnings; errors only.")
@click.option("-v", "--verbose", is_flag=True, help="Say which device, precision, model and method were picked, and more.")
@click.option("--allow-huge", is_flag=True, help="Read images above the decompression-bomb limit (if memory allows).")
@click.option("--quality", type=click.IntRange(1, 100), default=95, show_default=True, help="JPEG/WebP quality of the outputs.")
@click.option("--shard", metavar="I/N", callback=parse_shard_option, help="Process only shard I of N (1-based; e.g. a job array's task): a fixed share of the photos, chosen by a hash of each one's relative path.")
@click.pass_context
def command(ctx: click.Context, paths: tuple[Path, ...], output: Path | None, recursive: bool, in_place: bool, dry_run: bool, as_json: bool, quiet: bool, verbose: bool, shard: tuple[int, int] | None, fmt: str | None, suffix: str | None, **options: Any) -> None:
    """Remove blur from photos and folders of photos.

    \b
      deblur photo.jpg -o sharp.jpg        one photo (EXIF, ICC and bit depth kept)
      deblur photo.jpg                     writes photo_deblurred.jpg beside it
      deblur dir/ --recursive -o out/      mirrors the tree under out/
      deblur a.jpg b.png c.tif -o out/     several files into a folder
      deblur shaky.jpg --save-kernel -v    shows the camera-shake kernel it found
      deblur dir/ -r -o out/ --shard 2/4   the second quarter (one task of a job array)
      deblur dir/ --format png --suffix _sharp   dir_sharp/NAME.png
      deblur - < in.jpg > out.jpg          stdin to stdout (-o - --format png for PNG)

    --method auto (the default) deconvolves camera shake with the kernel it estimates, uses the network for
    other blur, and leaves sharp photos unchanged. Existing outputs are skipped unless --overwrite, so
    re-running an interrupted command finishes the rest. Exit codes: 0 all done, 1 some files failed,
    2 usage error, 130 interrupted.
    """
    from deblurcli.batch import FORMAT_SUFFIXES
    from deblurcli.cli.streams import open_streams
    from deblurcli.runner import Settings

    if not paths:
        raise click.UsageError("give at least one photo or folder")
    if in_place and output is not None:
        raise click.UsageError("--in-place writes over the inputs, so it cannot be combined with -o")
    if in_place and (fmt is not None or suffix is not None):
        raise click.UsageError("--in-place keeps each input's name and format, so it cannot be combined with --format or --suffix")
    if quiet and verbose:
        raise click.UsageError("-q/--quiet and -v/--verbose contradict each other")
    if suffix is not None and output is not None and (str(output) == "-" or _canonical_suffix(output) is not None):
        raise click.UsageError("--suffix names the outputs of a batch; -o FILE (or -o -) names the one output itself")
    extension = FORMAT_SUFFIXES[fmt] if fmt is not None else None
    if extension is not None and output is not None and _canonical_suffix(output) not in (extension, None):
        raise click.UsageError(f"--format {fmt} and -o '{output}' disagree: the suffix of -o decides the format of one output file")
    started = time.perf_counter()
    reporter = Reporter(quiet=quiet, verbose=verbose, as_json=as_json)
    settings = Settings(
        compare=options.pop("compare"), overwrite=options.pop("overwrite"), in_place=in_place,
        allow_huge=options.pop("allow_huge"), quality=options.pop("quality"), save_kernel=options.pop("save_kernel"),
    )
    options["model"], options["compile"] = options.pop("model_name"), options.pop("compile_model")
    with interrupts.handled(), contextlib.ExitStack() as stack:
        try:
            paths, output, streams = open_streams(
                paths, output, stack, fmt=fmt, in_place=in_place, as_json=as_json, extras=settings.compare or settings.save_kernel
            )
            reporter.listing = streams is None or streams.dst is None
            jobs, problems = plan(paths, output, recursive=recursive, in_place=in_place, shard=shard, settings=settings, reporter=reporter, suffix=suffix, extension=extension)
            if not jobs or dry_run:
                if dry_run:
                    dry_run_listing(jobs, settings, reporter, streams)
                    reporter.stdout_note()
                ctx.exit(1 if problems else 0)
            outcomes, left, interrupted = deblur_jobs(jobs, options, settings, reporter, recursive=recursive, streams=streams)
        except KeyboardInterrupt:
            reporter.interrupted("interrupted before any photo was processed")
            ctx.exit(EXIT_INTERRUPTED)
        reporter.stdout_note()
        if interrupted:  # a further signal while this is said only notes that the clean-up is under way
            report_interrupted(outcomes, left, reporter)
            ctx.exit(EXIT_INTERRUPTED)
        reporter.summary(outcomes, problems, time.perf_counter() - started)
    ctx.exit(1 if problems or any(o.status == "failed" for o in outcomes) else 0)
