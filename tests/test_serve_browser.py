"""``deblur serve``'s page, driven in a real headless Chromium through Playwright.

What a photographer does: pick photos, wait for them, compare before and after with the slider, zoom to
1:1, pan, download. The download must be the bytes ``deblur`` writes. The browser is the system's
Chromium (Debian's ``chromium``, which .ci/run installs when it can; ``$DEBLUR_TEST_CHROMIUM`` names
another) or one Playwright downloaded itself; without any, or without Playwright, the test is skipped.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from deblurcli.cli import group
from deblurcli.server.app import ServerConfig
from serving import call, make_tiny_weights, photo_bytes, running, slow_sessions, wait_for

pytestmark = pytest.mark.usefixtures("one_thread")


def chromium_path(playwright: Any) -> str | None:
    """A Chromium to drive: ``$DEBLUR_TEST_CHROMIUM``, the system's, or Playwright's own download."""
    for candidate in (os.environ.get("DEBLUR_TEST_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        found = candidate and shutil.which(candidate)
        if found:
            return found
    bundled = playwright.chromium.executable_path
    return bundled if bundled and Path(bundled).is_file() else None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (pip install -e '.[dev]')")
    with sync_api.sync_playwright() as playwright:
        executable = chromium_path(playwright)
        if executable is None:
            pytest.skip("no Chromium to drive: apt-get install chromium (or set DEBLUR_TEST_CHROMIUM)")
        try:
            launched = playwright.chromium.launch(executable_path=executable, headless=True, args=["--no-sandbox"])
        except Exception as exc:  # noqa: BLE001 - a browser that cannot start here is a skip, not a failure
            pytest.skip(f"Chromium at {executable} does not start: {' '.join(str(exc).split())[:200]}")
        yield launched
        launched.close()


def test_the_page_deblurs_compares_and_downloads_the_clis_bytes(browser: Any, tmp_path: Path) -> None:
    weights = make_tiny_weights(tmp_path / "tiny.safetensors")
    photo = tmp_path / "street.jpg"
    photo.write_bytes(photo_bytes(800, 450, quality=90))  # wider than the viewer, so 1:1 can be panned
    not_a_photo = tmp_path / "notes.txt"
    not_a_photo.write_text("shopping list")
    config = ServerConfig.from_catalogue(weights=weights, temp_root=tmp_path)
    with running(config) as url:
        page = browser.new_page(viewport={"width": 1000, "height": 640}, accept_downloads=True)
        problems: list[str] = []
        page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
        page.on("requestfailed", lambda request: problems.append(f"{request.url}: {request.failure}"))
        page.goto(url)
        page.wait_for_selector("#model option", state="attached")  # no string eval: the page's CSP forbids it
        page.select_option("#method", "network")
        page.set_input_files("#file-input", str(photo))
        # ... and one dropped on the drop zone, as from a file manager
        page.evaluate(
            """text => { const files = new DataTransfer(); files.items.add(new File([text], 'notes.txt'));
                         document.getElementById('drop').dispatchEvent(new DragEvent('drop', {dataTransfer: files, bubbles: true})); }""",
            not_a_photo.read_text(),
        )

        # The photo is deblurred and shown; the non-image gets its own plain error and stops nothing.
        page.wait_for_selector(".card[data-status=done]", timeout=60_000)
        page.wait_for_selector("#viewer[data-ready=true]", timeout=10_000)
        failed = page.wait_for_selector(".card[data-status=failed] .error", timeout=10_000)
        assert "not a recognised image" in failed.inner_text()
        assert "street_deblurred.jpg" in page.inner_text("#download")

        # Before/after: full-size previews, the split follows the slider, 1:1 and back to fit.
        sizes = page.evaluate("[before.naturalWidth, before.naturalHeight, after.naturalWidth, after.naturalHeight]")
        assert sizes == [800, 450, 800, 450]
        page.fill("#split", "25")
        width = page.evaluate("document.getElementById('viewer').clientWidth")
        assert abs(page.evaluate("parseFloat(document.getElementById('divider').style.left)") - 0.25 * width) < 1
        assert "inset(0px" in page.evaluate("getComputedStyle(before).clipPath")
        page.click("#zoom-1")
        assert page.get_attribute("#zoom-1", "aria-pressed") == "true"
        transform = "document.getElementById('stage').style.transform"
        assert page.evaluate(transform).endswith("scale(1)")
        box = page.query_selector("#viewer").bounding_box()
        start = page.evaluate(transform)
        page.mouse.move(box["x"] + box["width"] * 0.8, box["y"] + 50)  # away from the divider: a pan
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] * 0.8 - 40, box["y"] + 30, steps=4)
        page.mouse.up()
        assert page.evaluate(transform) != start and page.evaluate(transform).endswith("scale(1)")
        page.click("#zoom-fit")
        assert page.get_attribute("#zoom-fit", "aria-pressed") == "true"

        with page.expect_download() as download_info:
            page.click("#download")
        download = download_info.value
        assert download.suggested_filename == "street_deblurred.jpg"
        downloaded = Path(download.path()).read_bytes()
        page.close()
    out = tmp_path / "cli.jpg"
    result = CliRunner().invoke(group, [str(photo), "-o", str(out), "--weights", str(weights), "--method", "network"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert downloaded == out.read_bytes()
    assert problems == [], problems


def test_the_kernel_the_kernel_method_found_is_shown(browser: Any, tmp_path: Path) -> None:
    from PIL import Image

    from test_auto import blur, line, shapes  # a photo with real camera shake

    photo = tmp_path / "shake.png"
    Image.fromarray((blur(shapes(128, 128, seed=3), line(9)) * 255 + 0.5).astype("uint8")).save(photo)
    config = ServerConfig.from_catalogue(weights=make_tiny_weights(tmp_path / "tiny.safetensors"), temp_root=tmp_path)
    with running(config) as url:
        page = browser.new_page()
        page.goto(url)
        page.wait_for_selector("#method option", state="attached")
        page.select_option("#method", "kernel")
        page.set_input_files("#file-input", str(photo))
        page.wait_for_selector("#viewer[data-ready=true]", timeout=60_000)
        assert page.is_visible("#kernel-figure")
        page.wait_for_function("document.getElementById('kernel').naturalWidth > 0")
        assert "found" in page.inner_text("#kernel-caption") and "px" in page.inner_text("#kernel-caption")
        assert "camera shake removed" in page.inner_text(".card .status")
        page.close()


@pytest.mark.parametrize("how", ["closed", "left"])
def test_a_page_closed_or_left_mid_job_cancels_it_and_the_server_goes_on(browser: Any, tmp_path: Path, how: str) -> None:
    photo = tmp_path / "long.png"
    photo.write_bytes(photo_bytes(256, 256, fmt="PNG"))  # 64 slow tiles: about 13 s
    # The default lease (minutes): only the page saying it is going can cancel the photo this soon.
    config = ServerConfig.from_catalogue(weights=make_tiny_weights(tmp_path / "tiny.safetensors"), temp_root=tmp_path)
    with running(config, slow_sessions()) as url:
        page = browser.new_page()
        page.goto(url)
        page.wait_for_selector("#model option", state="attached")  # no string eval: the page's CSP forbids it
        page.set_input_files("#file-input", str(photo))
        page.wait_for_selector(".card[data-status=running]", timeout=10_000)
        if how == "closed":
            page.close(run_before_unload=True)  # the tab is closed as a person closes it, unload events and all
        else:
            page.goto("about:blank")  # the page is left for another
        wait_for(lambda: call(url, "GET", "/api/health").json() == {"ok": True, "queued": 0, "running": 0, "kept": 0}, 5, f"the {how} page's photo was not cancelled")
        assert [p for p in tmp_path.glob("deblurcli-serve-*/*")] == []
        again = browser.new_page()
        again.goto(url)
        assert again.wait_for_selector("#drop").is_visible()
        again.close()
        if how == "left":
            page.close()
