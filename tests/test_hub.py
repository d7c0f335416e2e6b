"""Hub downloads with the real huggingface_hub client against a loopback server speaking the Hub protocol.

The server answers ``HEAD``/``GET /{repo_id}/resolve/{revision}/{filename}`` with the headers the client
needs (``X-Repo-Commit``, ``ETag``, ``Content-Length``), on 127.0.0.1 only. huggingface_hub reads
``HF_ENDPOINT``, ``HF_HUB_CACHE`` and ``HF_HUB_OFFLINE`` into ``huggingface_hub.constants`` when it is
imported, so in-process tests patch those constants; one test runs fresh interpreters with the real
environment variables to prove they are honoured end to end.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner
from huggingface_hub import constants

from deblurcli.errors import WeightsError
from deblurcli.weights import ModelEntry, get_entry, is_cached, resolve_weights

REPO = "someone/deblur-test"
REVISION = "0123456789abcdef0123456789abcdef01234567"
FILENAME = "model.bin"
PAYLOAD = os.urandom(50_000)


@dataclass
class FakeHub:
    """Files served by the loopback Hub, and a log of the requests it answered."""

    files: dict[str, bytes] = field(default_factory=dict)  # "repo/resolve/revision/filename" -> bytes
    requests: list[str] = field(default_factory=list)
    url: str = ""

    def put(self, repo: str, revision: str, filename: str, data: bytes) -> None:
        self.files[f"{repo}/resolve/{revision}/{filename}"] = data


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _answer(self, body: bool) -> None:
            hub.requests.append(f"{self.command} {self.path}")
            path = self.path.split("?", 1)[0].lstrip("/")
            m = re.fullmatch(r"[^/]+/[^/]+/resolve/([0-9a-f]{40})/.+", path)
            data = hub.files.get(path)
            if m is None or data is None:
                self.send_response(404)
                self.send_header("X-Error-Code", "EntryNotFound")
                self.send_header("X-Error-Message", "Entry not found")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("X-Repo-Commit", m.group(1))
            self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            if body:
                self.wfile.write(data)

        def do_HEAD(self) -> None:
            self._answer(body=False)

        def do_GET(self) -> None:
            self._answer(body=True)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeHub]:
    """A loopback Hub, with huggingface_hub pointed at it and at an empty cache."""
    fake = FakeHub()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setattr(constants, "ENDPOINT", fake.url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", fake.url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()


def _entry(sha256: str | None = None, **changes: object) -> ModelEntry:
    entry = ModelEntry(
        name="test-model",
        arch="nafnet",
        config={},
        source="hub",
        file=FILENAME,
        repo_id=REPO,
        revision=REVISION,
        sha256=sha256 or hashlib.sha256(PAYLOAD).hexdigest(),
        size=len(PAYLOAD),
    )
    return replace(entry, **changes)


def _cache_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() or p.is_symlink()]


def test_download_verifies_and_caches(hub: FakeHub) -> None:
    hub.put(REPO, REVISION, FILENAME, PAYLOAD)
    entry = _entry()
    assert not is_cached(entry)
    path = resolve_weights(entry, progress=False)
    assert path.read_bytes() == PAYLOAD
    assert Path(constants.HF_HUB_CACHE) in path.parents
    assert f"snapshots/{REVISION}" in path.as_posix()
    assert is_cached(entry)
    served = len(hub.requests)
    assert any(r.startswith("GET ") for r in hub.requests)
    # A pinned commit that is cached is used without asking the server again.
    assert resolve_weights(entry, progress=False) == path
    assert len(hub.requests) == served


def test_wrong_sha256_is_refused_and_deleted(hub: FakeHub) -> None:
    hub.put(REPO, REVISION, FILENAME, PAYLOAD)
    entry = _entry(sha256="0" * 64)
    with pytest.raises(WeightsError, match="checksum mismatch.*deleted from the cache") as info:
        resolve_weights(entry, progress=False)
    assert "\n" not in str(info.value)
    assert _cache_files(Path(constants.HF_HUB_CACHE) / "models--someone--deblur-test" / "blobs") == []
    assert not is_cached(entry)
    # The next attempt downloads afresh (and succeeds once the pin matches what the server holds).
    assert resolve_weights(_entry(), progress=False).read_bytes() == PAYLOAD


def test_tampered_cache_file_is_refused_and_deleted(hub: FakeHub) -> None:
    hub.put(REPO, REVISION, FILENAME, PAYLOAD)
    path = resolve_weights(_entry(), progress=False)
    blob = path.resolve()
    blob.write_bytes(b"x" + PAYLOAD[1:])  # same size, different bytes: only the sha256 can tell
    with pytest.raises(WeightsError, match="sha256"):
        resolve_weights(_entry(), progress=False)
    assert not blob.exists() and not path.exists()


def test_size_mismatch_is_refused_before_hashing(hub: FakeHub) -> None:
    hub.put(REPO, REVISION, FILENAME, PAYLOAD + b"extra")
    with pytest.raises(WeightsError, match=f"expected {len(PAYLOAD):,} bytes"):
        resolve_weights(_entry(), progress=False)


def test_offline_uses_the_cache_or_says_so(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    hub.put(REPO, REVISION, FILENAME, PAYLOAD)
    path = resolve_weights(_entry(), progress=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    served = len(hub.requests)
    assert resolve_weights(_entry(), progress=False) == path
    with pytest.raises(WeightsError, match="not in the Hugging Face cache and HF_HUB_OFFLINE is set") as info:
        resolve_weights(_entry(file="other.bin"), progress=False)
    assert "\n" not in str(info.value)
    assert len(hub.requests) == served


def test_unreachable_hub_gives_one_line(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    dead = "http://127.0.0.1:9"  # discard port: connection refused
    monkeypatch.setattr(constants, "ENDPOINT", dead)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", dead + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr("time.sleep", lambda _s: None)  # the client's retry back-off, not under test
    with pytest.raises(WeightsError, match="cannot be reached") as info:
        resolve_weights(_entry(), progress=False)
    assert "\n" not in str(info.value)


def test_missing_file_on_hub_gives_one_line(hub: FakeHub) -> None:
    with pytest.raises(WeightsError, match="cannot download model.bin from someone/deblur-test") as info:
        resolve_weights(_entry(), progress=False)
    assert "\n" not in str(info.value)


def test_cli_download_refuses_a_file_that_is_not_the_pinned_one(hub: FakeHub) -> None:
    """The real catalogue entry, served bogus bytes by the mirror: exit 1, one line, nothing left cached."""
    from deblurcli.cli import group

    entry = get_entry("nafnet-gopro-w32")
    hub.put(entry.repo_id, entry.revision, entry.file, b"not the published checkpoint")
    result = CliRunner().invoke(group, ["models", "download", "nafnet-gopro-w32"])
    assert result.exit_code == 1
    assert result.output.strip().count("\n") == 0
    assert "error:" in result.output and "checksum mismatch" in result.output
    assert not is_cached(entry)
    assert _cache_files(Path(constants.HF_HUB_CACHE) / "models--mikestealth--nafnet-models" / "blobs") == []


_CHILD = """
import sys
from deblurcli.errors import WeightsError
from deblurcli.weights import ModelEntry, resolve_weights
for filename in sys.argv[1:]:
    entry = ModelEntry(name="t", arch="nafnet", config={{}}, source="hub", file=filename, repo_id={repo!r},
                       revision={rev!r}, sha256={sha!r}, size=None)
    try:
        print("PATH", resolve_weights(entry, progress=False))
    except WeightsError as exc:
        print("ERROR", exc)
"""


def test_environment_variables_are_honoured(hub: FakeHub, tmp_path: Path) -> None:
    """Fresh interpreters: HF_ENDPOINT and HF_HUB_CACHE steer the download; HF_HUB_OFFLINE=1 uses the cache."""
    hub.put(REPO, REVISION, FILENAME, PAYLOAD)
    script = _CHILD.format(repo=REPO, rev=REVISION, sha=hashlib.sha256(PAYLOAD).hexdigest())
    cache = tmp_path / "env-cache"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_ENDPOINT=hub.url, HF_HUB_CACHE=str(cache), NO_PROXY="127.0.0.1,localhost")

    def child(*filenames: str, **extra: str) -> list[str]:
        run = subprocess.run(
            [sys.executable, "-c", script, *filenames],
            env={**env, **extra},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert run.returncode == 0, run.stderr
        return run.stdout.strip().splitlines()

    [online] = child(FILENAME)
    assert online.startswith(f"PATH {cache}")
    assert any(r.startswith("GET ") for r in hub.requests)
    served = len(hub.requests)
    offline, missing = child(FILENAME, "other.bin", HF_HUB_OFFLINE="1")
    assert offline == online
    assert missing.startswith("ERROR") and "HF_HUB_OFFLINE is set" in missing
    assert len(hub.requests) == served


def _snapshot_entry() -> Path:
    return Path(constants.HF_HUB_CACHE) / "models--someone--deblur-test" / "snapshots" / REVISION / FILENAME


def test_checksum_clean_up_never_deletes_through_a_link(hub: FakeHub, tmp_path: Path) -> None:
    """Issue 19.2: a snapshot entry linking to a user's file loses the link; the file is left intact."""
    hub.put(REPO, REVISION, FILENAME, PAYLOAD)
    path = resolve_weights(_entry(), progress=False)
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"not a model")
    secret.chmod(0o600)
    path.unlink()
    path.symlink_to(secret)
    with pytest.raises(WeightsError, match="outside the cache: the link was removed") as info:
        resolve_weights(_entry(), progress=False)
    assert "\n" not in str(info.value)
    assert secret.read_bytes() == b"not a model"
    assert not os.path.lexists(path)
    assert resolve_weights(_entry(), progress=False).read_bytes() == PAYLOAD  # downloaded afresh


def test_checksum_clean_up_leaves_a_linked_snapshot_folder_alone(hub: FakeHub, tmp_path: Path) -> None:
    """A folder above the entry that links out of the cache: nothing there is touched."""
    hub.put(REPO, REVISION, FILENAME, PAYLOAD)
    path = resolve_weights(_entry(), progress=False)
    elsewhere = tmp_path / "my-documents"
    elsewhere.mkdir()
    (elsewhere / FILENAME).write_bytes(b"precious")
    snapshot = path.parent
    for child in snapshot.iterdir():
        child.unlink()
    snapshot.rmdir()
    snapshot.symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(WeightsError, match="outside the Hugging Face cache.*left alone"):
        resolve_weights(_entry(), progress=False)
    assert (elsewhere / FILENAME).read_bytes() == b"precious"


@pytest.mark.parametrize("kind", ["folder", "fifo"])
def test_cache_entry_that_is_not_a_file_is_one_line(hub: FakeHub, kind: str) -> None:
    """Issue 19.4: a folder or a FIFO where the cached file should be: one line, no hang, no traceback."""
    import signal

    hub.put(REPO, REVISION, FILENAME, PAYLOAD)
    path = resolve_weights(_entry(), progress=False)
    path.unlink()
    if kind == "folder":
        path.mkdir()
    else:
        os.mkfifo(path)
    previous = signal.signal(signal.SIGALRM, lambda *_: pytest.fail("resolving the weights hung"))
    signal.alarm(30)
    try:  # no pinned size: only hashing could tell, and reading a FIFO blocks
        with pytest.raises(WeightsError, match=f"cache entry is unusable.*a {'folder' if kind == 'folder' else 'FIFO'}") as info:
            resolve_weights(_entry(size=None), progress=False)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert "\n" not in str(info.value)
    if kind == "folder":  # a real folder is never deleted for the user: the message names it
        assert path.is_dir() and f"remove the folder {path}" in str(info.value)
    else:  # a FIFO inside the cache (not a link) is removed, and the next attempt downloads afresh
        assert not os.path.lexists(path)
        assert resolve_weights(_entry(), progress=False).read_bytes() == PAYLOAD
