"""``deblur serve``: the HTTP API on a real loopback port, the queue, its limits, and the command itself.

Every test starts its own server (fast: the model is a tiny NAFNet, the photos are a few thousand pixels)
so a test that breaks a server cannot hide behind another's. What a photographer would notice is checked
from outside, over HTTP: the downloaded bytes are what ``deblur`` writes, a bad upload gets one plain line,
and after an oversized upload, a non-image or a client that hangs up the server still answers and has
left no files behind.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import piexif
import pytest
from click.testing import CliRunner

from deblurcli.cli import group
from deblurcli.server.app import ServerConfig
if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

from serving import call, make_tiny_weights, multipart, photo_bytes, post_photo, running, slow_sessions, wait_for

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_weights(tmp_path_factory.mktemp("weights") / "tiny.safetensors")


def config_for(weights: Path, temp: Path, **kwargs: object) -> ServerConfig:
    return ServerConfig.from_catalogue(weights=weights, temp_root=temp, **kwargs)  # type: ignore[arg-type]


def leftovers(temp: Path) -> list[Path]:
    """Files the server still holds under its temporary root (its own root folder aside)."""
    return [p for root in temp.glob("deblurcli-serve-*") for p in root.rglob("*")]


def cli_output(tmp_path: Path, data: bytes, name: str, weights: Path, *options: str) -> bytes:
    """What ``deblur NAME -o OUT --weights W OPTIONS`` writes for the photo ``data``."""
    folder = tmp_path / "cli"
    folder.mkdir(exist_ok=True)
    src = folder / name
    src.write_bytes(data)
    out = folder / f"out{src.suffix}"
    result = CliRunner().invoke(group, [str(src), "-o", str(out), "--weights", str(weights), *options], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    data = out.read_bytes()
    out.unlink()
    return data


def exif_jpeg() -> bytes:
    exif = piexif.dump({"0th": {piexif.ImageIFD.Make: b"Canon", piexif.ImageIFD.Model: b"EOS R5"}, "Exif": {piexif.ExifIFD.FNumber: (28, 10)}})
    return photo_bytes(fmt="JPEG", quality=92, exif=exif)


# ------------------------------------------------------------------------------------------ the API


def test_models_lists_what_the_page_offers(tiny: Path, tmp_path: Path) -> None:
    with running(config_for(tiny, tmp_path, max_upload_bytes=5_000_000)) as url:
        answer = call(url, "GET", "/api/models")
    assert answer.status == 200
    body = answer.json()
    assert [m["name"] for m in body["models"]] == ["tiny.safetensors"] and body["default_model"] == "tiny.safetensors"
    assert body["methods"] == ["auto", "network", "kernel"] and body["max_upload_bytes"] == 5_000_000


def test_the_catalogue_offers_the_clis_model_choices(tmp_path: Path) -> None:
    config = ServerConfig.from_catalogue(temp_root=tmp_path)
    names = [m.name for m in config.models]
    assert names[:2] == ["nafnet-s", "nafnet-s-free"] and "dgf-light" not in names  # untrained: not offered
    assert config.default_model == "nafnet-s"


@pytest.mark.parametrize(("method", "strength"), [("auto", "1"), ("network", "0.6")])
def test_api_deblur_answers_the_bytes_the_cli_writes(tiny: Path, tmp_path: Path, method: str, strength: str) -> None:
    data = exif_jpeg()
    with running(config_for(tiny, tmp_path)) as url:
        answer = post_photo(url, data, "IMG_0042.jpg", method=method, strength=strength)
        health = call(url, "GET", "/api/health").json()
    assert answer.status == 200, answer.body[:300]
    assert answer.headers["content-type"] == "image/jpeg"
    assert 'filename="IMG_0042_deblurred.jpg"' in answer.headers["content-disposition"]
    assert answer.headers["x-deblur-method"] == "network"
    assert answer.body == cli_output(tmp_path, data, "IMG_0042.jpg", tiny, "--method", method, "--strength", strength)
    assert piexif.load(answer.body)["0th"][piexif.ImageIFD.Make] == b"Canon"  # metadata kept
    assert health == {"ok": True, "queued": 0, "running": 0, "kept": 0}
    assert leftovers(tmp_path) == []


def test_a_16_bit_png_comes_back_16_bit_and_identical(tiny: Path, tmp_path: Path) -> None:
    import io

    import numpy as np
    from PIL import Image

    pixels = (np.random.default_rng(1).random((40, 56)) * 65535).astype(np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    with running(config_for(tiny, tmp_path)) as url:
        answer = post_photo(url, buffer.getvalue(), "scan.png", method="network")
    assert answer.status == 200, answer.body[:300]
    assert answer.body == cli_output(tmp_path, buffer.getvalue(), "scan.png", tiny, "--method", "network")
    assert Image.open(io.BytesIO(answer.body)).mode == "I;16"


def test_an_upload_without_a_usable_name_is_recognised_by_its_content(tiny: Path, tmp_path: Path) -> None:
    data = photo_bytes(fmt="PNG")
    with running(config_for(tiny, tmp_path)) as url:
        answer = post_photo(url, data, "-", method="network")
    assert answer.status == 200, answer.body[:300]
    assert answer.body.startswith(b"\x89PNG") and 'filename="-_deblurred.png"' in answer.headers["content-disposition"]


def test_page_jobs_report_their_state_and_serve_previews_kernel_and_download(tiny: Path, tmp_path: Path) -> None:
    from test_auto import blur, line, shapes  # a photo with real camera shake, so the kernel path runs

    import io

    from PIL import Image

    shaken = blur(shapes(128, 128, seed=3), line(9))
    buffer = io.BytesIO()
    Image.fromarray((shaken * 255 + 0.5).astype("uint8")).save(buffer, "PNG")
    data = buffer.getvalue()
    with running(config_for(tiny, tmp_path)) as url:
        created = post_photo(url, data, "shake.png", path="/api/jobs", method="kernel")
        assert created.status == 202, created.body
        job_id = created.json()["id"]
        assert created.headers["location"] == f"/api/jobs/{job_id}"
        job = wait_for(lambda: (j := call(url, "GET", f"/api/jobs/{job_id}").json())["status"] in ("done", "failed") and j, 60, "the photo never finished")
        assert job["status"] == "done", job["error"]
        assert job["method"] == "kernel" and job["kernel_size"] >= 3 and job["download_name"] == "shake_deblurred.png"
        assert job["files"] == ["after.jpg", "before.jpg", "kernel.png", "result"]
        assert (job["width"], job["height"]) == (128, 128)
        previews = {name: call(url, "GET", f"/api/jobs/{job_id}/{name}") for name in ("before.jpg", "after.jpg", "kernel.png")}
        result = call(url, "GET", f"/api/jobs/{job_id}/result")
        assert call(url, "GET", f"/api/jobs/{job_id}/../../etc/passwd").status == 404
        assert call(url, "GET", f"/api/jobs/{job_id}/photo.png").status == 404  # only the named previews
        assert call(url, "DELETE", f"/api/jobs/{job_id}").status == 204
        assert call(url, "GET", f"/api/jobs/{job_id}").status == 404
        assert wait_for(lambda: leftovers(tmp_path) == [], 5, "deleting the photo left files")
    for name, answer in previews.items():
        assert answer.status == 200 and Image.open(io.BytesIO(answer.body)).size[0] >= 9, name
    assert Image.open(io.BytesIO(previews["before.jpg"].body)).size == (128, 128)
    assert result.status == 200 and result.body == cli_output(tmp_path, data, "shake.png", tiny, "--method", "kernel")


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"method": "magic"}, "unknown method 'magic'"),
        ({"model": "nafnet-s"}, "unknown model 'nafnet-s': this server offers tiny.safetensors"),
        ({"strength": "2"}, "strength must be a number between 0 and 1"),
        ({"strength": "nan"}, "strength must be a number between 0 and 1"),
    ],
)
def test_bad_settings_are_one_plain_line(tiny: Path, tmp_path: Path, fields: dict[str, str], needle: str) -> None:
    with running(config_for(tiny, tmp_path)) as url:
        answer = post_photo(url, photo_bytes(), **fields)
    assert answer.status == 400 and needle in answer.json()["error"]
    assert leftovers(tmp_path) == []


def test_a_request_without_a_photo_is_refused(tiny: Path, tmp_path: Path) -> None:
    with running(config_for(tiny, tmp_path)) as url:
        empty = call(url, "POST", "/api/deblur", b"method=auto", {"Content-Type": "application/x-www-form-urlencoded"})
        broken = call(url, "POST", "/api/deblur", b"--x\r\nnonsense", {"Content-Type": "multipart/form-data; boundary=x"})
        assert call(url, "GET", "/api/health").status == 200
    assert empty.status == 400 and "no photo" in empty.json()["error"]
    assert broken.status == 400 and broken.json()["error"]


@pytest.mark.parametrize(("name", "data"), [("notes.txt", b"not a photo at all"), ("fake.jpg", b"\x00" * 500), ("empty.jpg", b"")], ids=["text", "zeros", "empty"])
def test_a_non_image_fails_in_plain_words_and_the_server_goes_on(tiny: Path, tmp_path: Path, name: str, data: bytes) -> None:
    with running(config_for(tiny, tmp_path)) as url:
        refused = post_photo(url, data, name)
        after = post_photo(url, photo_bytes(), "ok.jpg", method="network")
    assert refused.status == 422
    error = refused.json()["error"]
    assert ("not a recognised image" in error or "empty" in error) and "Traceback" not in error and "\n" not in error
    assert after.status == 200
    assert leftovers(tmp_path) == []


def test_a_model_that_breaks_fails_that_photo_only(tiny: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import torch
    from torch import nn

    from deblurcli.server.jobs import SessionCache
    from deblurcli.session import Session

    class Broken(nn.Module):
        size_multiple, tile_margin = 1, 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("a bug\nover two lines")

    calls: list[str] = []

    def build(method: str, model: str) -> Session:
        calls.append(method)
        if method == "kernel":
            raise FileNotFoundError("weights vanished")
        return Session(method, module=Broken(), tile=0) if method == "network" else Session(method, weights=tiny)

    with running(config_for(tiny, tmp_path), SessionCache(build)) as url:
        broken = post_photo(url, photo_bytes(), method="network")
        unloadable = post_photo(url, photo_bytes(), method="kernel")
        fine = post_photo(url, photo_bytes(), method="auto")
    assert broken.status == 422 and broken.json()["error"].endswith("a bug over two lines")  # one line, as the CLI says it
    assert unloadable.status == 422 and "weights vanished" in unloadable.json()["error"]
    assert fine.status == 200 and calls == ["network", "kernel", "auto"]
    assert "Traceback" in caplog.text  # a bug is logged with its traceback for the server's operator


def test_an_oversized_upload_is_refused_and_the_server_stays_healthy(tiny: Path, tmp_path: Path) -> None:
    big = photo_bytes(320, 240, fmt="PNG")
    assert len(big) > 20_000
    with running(config_for(tiny, tmp_path, max_upload_bytes=20_000)) as url:
        declared = post_photo(url, big, "big.png")
        # Without a Content-Length (chunked), the body is counted as it arrives.
        body, kind = multipart({}, "big.png", big)
        chunked = call(url, "POST", "/api/jobs", [body[i : i + 4096] for i in range(0, len(body), 4096)], {"Content-Type": kind})
        small = post_photo(url, photo_bytes(), "small.jpg", method="network")
        health = call(url, "GET", "/api/health").json()
    for answer in (declared, chunked):
        assert answer.status == 413 and "larger than this server's limit of 0.02 MB" in answer.json()["error"]
    assert small.status == 200 and health["ok"]
    assert leftovers(tmp_path) == []


def test_a_client_that_hangs_up_mid_job_cancels_it_and_the_server_goes_on(tiny: Path, tmp_path: Path) -> None:
    body, kind = multipart({}, "long.png", photo_bytes(128, 128, fmt="PNG"))
    with running(config_for(tiny, tmp_path), slow_sessions()) as url:
        port = int(url.rsplit(":", 1)[1].strip("/"))
        client = socket.create_connection(("127.0.0.1", port))
        client.sendall(f"POST /api/deblur HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        wait_for(lambda: call(url, "GET", "/api/health").json()["running"], 10, "the photo never started")
        started = time.monotonic()
        client.close()  # the browser tab is closed while the photo runs
        wait_for(lambda: call(url, "GET", "/api/health").json() == {"ok": True, "queued": 0, "running": 0, "kept": 0}, 5, "the photo was not cancelled")
        assert time.monotonic() - started < 2.5  # stopped at the next tile, long before its ~3 s were up
        assert wait_for(lambda: leftovers(tmp_path) == [], 5, "the cancelled photo left files")
        assert post_photo(url, photo_bytes(16, 16), "next.png").status == 200


def test_a_page_photo_is_cancelled_when_the_page_stops_asking(tiny: Path, tmp_path: Path) -> None:
    with running(config_for(tiny, tmp_path, lease=0.5), slow_sessions()) as url:
        first = post_photo(url, photo_bytes(128, 128, fmt="PNG"), "a.png", path="/api/jobs").json()["id"]
        second = post_photo(url, photo_bytes(128, 128, fmt="PNG"), "b.png", path="/api/jobs").json()
        assert second["status"] == "queued" and second["position"] >= 1
        # nobody asks about either photo: the page was closed
        wait_for(lambda: call(url, "GET", "/api/health").json()["kept"] == 0, 8, "the abandoned photos were kept")
        assert call(url, "GET", f"/api/jobs/{first}").status == 404
        assert wait_for(lambda: leftovers(tmp_path) == [], 5, "the abandoned photos left files")


def test_a_beacon_cancels_a_photo(tiny: Path, tmp_path: Path) -> None:
    with running(config_for(tiny, tmp_path), slow_sessions()) as url:
        job_id = post_photo(url, photo_bytes(128, 128, fmt="PNG"), "a.png", path="/api/jobs").json()["id"]
        wait_for(lambda: call(url, "GET", f"/api/jobs/{job_id}").json()["status"] == "running", 10, "the photo never started")
        assert call(url, "POST", f"/api/jobs/{job_id}/cancel").status == 204
        wait_for(lambda: call(url, "GET", "/api/health").json()["kept"] == 0 and not leftovers(tmp_path), 3, "the beacon cancelled nothing")
        assert call(url, "POST", f"/api/jobs/{job_id}/cancel").status == 204  # twice is harmless (a beacon has no answer)


def test_a_queued_photo_waits_its_turn(tiny: Path, tmp_path: Path) -> None:
    with running(config_for(tiny, tmp_path), slow_sessions()) as url:
        ids = [post_photo(url, photo_bytes(64, 64, fmt="PNG", seed=i), f"{i}.png", path="/api/jobs").json()["id"] for i in range(3)]
        states = [call(url, "GET", f"/api/jobs/{i}").json() for i in ids]
        assert [s["status"] for s in states[1:]] == ["queued", "queued"] and states[2]["position"] == 2
        assert call(url, "GET", "/api/health").json()["running"] <= 1
        done = wait_for(lambda: all(call(url, "GET", f"/api/jobs/{i}").json()["status"] == "done" for i in ids), 30, "the queue stalled")
        assert done


def test_one_model_load_serves_every_strength(tiny: Path) -> None:
    from deblurcli.server.jobs import Options, SessionCache
    from deblurcli.session import Session

    built: list[tuple[str, str]] = []

    def build(method: str, model: str) -> Session:
        built.append((method, model))
        return Session(method, weights=tiny, tile=0)

    cache = SessionCache(build, size=2)
    sessions = [cache.get(Options("network", "m", s)) for s in (1.0, 0.5, 0.5, 0.25)]
    assert built == [("network", "m")] and [s.strength for s in sessions] == [1.0, 0.5, 0.5, 0.25]
    assert all(s.model is sessions[0].model for s in sessions)  # the networks are shared, not copied
    cache.get(Options("auto", "m", 1.0))
    cache.get(Options("kernel", "m", 1.0))  # a third setting drops the least recently used
    cache.get(Options("network", "m", 1.0))
    assert built == [("network", "m"), ("auto", "m"), ("kernel", "m"), ("network", "m")]


def test_with_strength_gives_the_pixels_of_a_session_built_with_it(tiny: Path) -> None:
    import numpy as np

    from deblurcli.errors import OptionError
    from deblurcli.session import Session

    rgb = np.random.default_rng(0).random((40, 48, 3), dtype=np.float32)
    full = Session("network", weights=tiny, tile=0)
    shared = full.with_strength(0.4).deblur(rgb).rgb
    assert np.array_equal(shared, Session("network", weights=tiny, tile=0, strength=0.4).deblur(rgb).rgb)
    assert full.strength == 1.0 and not np.array_equal(shared, full.deblur(rgb).rgb)
    with pytest.raises(OptionError):
        full.with_strength(1.5)


# ------------------------------------------------------------------------------------- the page and safety


def test_the_page_and_its_files_come_from_the_package_alone(tiny: Path, tmp_path: Path) -> None:
    with running(config_for(tiny, tmp_path)) as url:
        page = call(url, "GET", "/")
        assets = {name: call(url, "GET", f"/static/{name}") for name in ("app.js", "style.css")}
        missing = [call(url, "GET", path).status for path in ("/static/../jobs.py", "/static/%2e%2e%2fapp.py", "/static/nope.js")]
    assert page.status == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for answer in (page, *assets.values()):
        assert answer.status == 200
        assert b"http://" not in answer.body and b"https://" not in answer.body  # no CDN, works offline
    assert assets["app.js"].headers["content-type"].startswith("text/javascript")
    assert missing == [404, 404, 404]


def test_foreign_hosts_and_cross_site_posts_are_refused(tiny: Path, tmp_path: Path) -> None:
    body, kind = multipart({}, "p.jpg", photo_bytes())
    with running(config_for(tiny, tmp_path)) as url:
        rebound = call(url, "GET", "/api/models", headers={"Host": "attacker.example:7860"})
        cross = call(url, "POST", "/api/deblur", body, {"Content-Type": kind, "Origin": "http://attacker.example"})
        port = url.rsplit(":", 1)[1].strip("/")
        same = call(url, "POST", "/api/deblur", body, {"Content-Type": kind, "Origin": f"http://127.0.0.1:{port}", "Host": f"127.0.0.1:{port}"})
        localhost = call(url, "GET", "/api/health", headers={"Host": f"localhost:{port}"})
    assert rebound.status == 403 and cross.status == 403 and "other sites" in cross.json()["error"]
    assert same.status == 200 and localhost.status == 200


def test_a_download_name_is_sanitised_and_never_a_path(tiny: Path, tmp_path: Path) -> None:
    with running(config_for(tiny, tmp_path)) as url:
        answer = post_photo(url, photo_bytes(), "../../etc/Café \"x\".jpg", method="network")
    assert answer.status == 200
    disposition = answer.headers["content-disposition"]
    assert 'filename="Caf_ _x_.jpg"'.replace(".jpg", "_deblurred.jpg") in disposition
    assert "filename*=UTF-8''Caf%C3%A9%20%22x%22_deblurred.jpg" in disposition
    assert not (tmp_path.parent / "etc").exists()


# ------------------------------------------------------------------------------------------ the command


def test_without_the_serve_extra_the_command_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as if not installed
    result = CliRunner().invoke(group, ["serve"])
    assert result.exit_code == 2
    assert "uvicorn is not installed; install the 'serve' extra: pip install 'deblurcli[serve]'" in result.output


def test_the_dev_extra_brings_the_server_and_the_browser_driver() -> None:
    extras = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"]
    assert {r.split(">")[0] for r in extras["serve"]} == {"starlette", "uvicorn", "python-multipart"}
    assert any(r.startswith("deblurcli[") and "serve" in r for r in extras["dev"]) and any(r.startswith("playwright") for r in extras["dev"])


def test_a_host_other_machines_reach_needs_allow_remote(tiny: Path) -> None:
    result = CliRunner().invoke(group, ["serve", "--host", "0.0.0.0", "--weights", str(tiny)])
    assert result.exit_code == 2 and "--allow-remote" in result.output


def test_a_port_in_use_is_one_error_line(tiny: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = CliRunner().invoke(group, ["serve", "--port", str(port), "--weights", str(tiny)])
    assert result.exit_code == 1
    assert f"error: cannot listen on 127.0.0.1:{port}:" in result.stderr and "Traceback" not in result.output


def test_open_shows_the_page_once_it_answers(tiny: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading
    import webbrowser

    seen: list[tuple[str, int]] = []

    def fake_open(url: str) -> None:  # the "browser": looks at the page, then Ctrl-C ends the command
        seen.append((url, call(url, "GET", "/").status))
        os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(webbrowser, "open", fake_open)
    safety = threading.Timer(60, os.kill, (os.getpid(), signal.SIGINT))  # never hang the suite
    safety.start()
    try:
        result = CliRunner().invoke(group, ["serve", "--port", "0", "--open", "--weights", str(tiny)])
    finally:
        safety.cancel()
    assert result.exit_code == 0, result.output
    assert len(seen) == 1 and seen[0][0].startswith("http://127.0.0.1:") and seen[0][1] == 200


def test_deblur_serve_runs_until_ctrl_c_and_cleans_up(tiny: Path, tmp_path: Path) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parent.parent)}
    command = [sys.executable, "-c", "from deblurcli.cli import main; main()", "serve", "--port", "0", "--weights", str(tiny), "--threads", "1"]
    with subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env) as process:
        try:
            assert process.stderr is not None
            line = process.stderr.readline()
            assert line.startswith("deblur serve: http://127.0.0.1:") and "(Ctrl-C stops)" in line, line
            url = line.split()[2]
            answer = post_photo(url, photo_bytes(), "p.jpg", method="network")
            assert answer.status == 200 and answer.body[:3] == b"\xff\xd8\xff"
            assert any(tmp_path.glob("deblurcli-serve-*"))
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=30) == 0
        finally:
            process.kill()
    assert not any(tmp_path.glob("deblurcli-serve-*"))  # its temporary folder is gone
