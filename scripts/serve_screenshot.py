"""Take the README's screenshot of ``deblur serve``: the bundled sample deblurred, before/after split.

Runs the real server (default model, CPU) on a free loopback port, drives the page in headless Chromium
through Playwright, and writes docs/images/serve_page.jpg. Needs the ``serve`` extra, Playwright and a
Chromium (``apt-get install chromium``; or pass ``--chromium PATH``).

    python scripts/serve_screenshot.py [--method auto] [--chromium /usr/bin/chromium]
"""

from __future__ import annotations

import argparse
import shutil
import threading
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

from deblurcli.server.app import ServerConfig, bind, create_app, make_server, url_of

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--method", default="auto")
    parser.add_argument("--photo", type=Path, default=ROOT / "samples" / "coffee_blurry.jpg")
    parser.add_argument("--chromium", default=shutil.which("chromium") or shutil.which("chromium-browser"))
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images" / "serve_page.jpg")
    args = parser.parse_args()

    sock = bind("127.0.0.1", 0)
    server = make_server(create_app(ServerConfig.from_catalogue()))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=args.chromium, headless=True)
            page = browser.new_page(viewport={"width": 1280, "height": 820})
            page.goto(url_of(sock))
            page.wait_for_function("document.querySelectorAll('#model option').length > 0")
            page.select_option("#method", args.method)
            page.set_input_files("#file-input", str(args.photo))
            page.wait_for_selector("#viewer[data-ready=true]", timeout=300_000)
            page.fill("#split", "50")
            args.out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(args.out), type="jpeg", quality=85, full_page=True)
            browser.close()
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    print(args.out)


if __name__ == "__main__":
    main()
