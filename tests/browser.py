"""Browser tests: a real headless Chromium driven by Playwright (sync API), and ASGI apps served for it.

The browser is Debian's `chromium` (`/usr/bin/chromium`, or the path in `PIPELINE_CHROMIUM`); Playwright's own
browser downloads are never used. When it is missing the `browser` and `page` fixtures (tests/conftest.py)
skip, saying so, on a developer machine and fail when `PIPELINE_REQUIRE_BROWSER=1` (CI, `.ci/run`).

Screenshots go to the artefacts folder: `PIPELINE_TEST_ARTIFACTS`, else `build/test-artifacts/` (git-ignored).
The `page` fixture saves one of every failed test by itself; `screenshot(page, name)` saves one on purpose.

In a test module::

    def test_something(page: Page) -> None:
        with serve_asgi(app) as base_url:
            page.goto(f"{base_url}/")
            screenshot(page, "home")
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import pytest
import uvicorn

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, Playwright

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CHROMIUM = Path("/usr/bin/chromium")
DEFAULT_ARTIFACTS = REPO / "build" / "test-artifacts"
# We run as root in CI (Chromium's sandbox refuses root) and /dev/shm may be small in containers.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-dev-shm-usage"]
INSTALL_HINT = "install with `apt-get install --no-install-recommends chromium` (see .ci/run) or set PIPELINE_CHROMIUM"
SERVER_READY_TIMEOUT_S = 15.0
SERVER_STOP_TIMEOUT_S = 10.0


def browser_required() -> bool:
    """Whether a missing browser must fail the tests (CI) rather than skip them (a developer machine)."""
    return os.environ.get("PIPELINE_REQUIRE_BROWSER", "").lower() in {"1", "true", "yes"}


def chromium_path() -> Path:
    """The Chromium binary the tests drive: `PIPELINE_CHROMIUM`, else Debian's `/usr/bin/chromium`."""
    return Path(os.environ.get("PIPELINE_CHROMIUM") or DEFAULT_CHROMIUM)


def browser_available() -> str | None:
    """None when the browser tests can run here, else why not."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as error:
        return f"Python Playwright is not installed ({error}; `pip install -e '.[test]'`)"
    path = chromium_path()
    if not path.is_file():
        return f"no Chromium at {path}"
    if not os.access(path, os.X_OK):
        return f"{path} is not executable"
    return None


def unavailable(reason: str) -> NoReturn:
    """Skip (developer machine) or fail (`PIPELINE_REQUIRE_BROWSER=1`) because the browser cannot run here."""
    if browser_required():
        pytest.fail(f"{reason}; PIPELINE_REQUIRE_BROWSER=1, so this fails instead of skipping", pytrace=False)
    pytest.skip(f"browser tests skipped: {reason}; {INSTALL_HINT}")


def artifacts_dir() -> Path:
    """The folder screenshots go to (created): `PIPELINE_TEST_ARTIFACTS`, else `build/test-artifacts/`."""
    folder = Path(os.environ.get("PIPELINE_TEST_ARTIFACTS") or DEFAULT_ARTIFACTS)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def artifact_name(text: str) -> str:
    """A file name made from a test id or a label: `tests/test_x.py::test_y[a-b]` -> `test_x.py-test_y-a-b`."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", text.rsplit("/", 1)[-1]).strip("-.")
    return name[:150] or "page"


def launch_chromium(playwright: Playwright) -> Browser:
    """Launch the headless Chromium of `chromium_path()` (never a Playwright download)."""
    return playwright.chromium.launch(executable_path=str(chromium_path()), headless=True, args=CHROMIUM_ARGS)


def screenshot(page: Page, name: str, *, full_page: bool = True) -> Path:
    """Save a PNG of `page` as `<artefacts>/<name>.png`; returns its path."""
    path = artifacts_dir() / f"{artifact_name(name)}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path


@contextlib.contextmanager
def outside_playwright_loop() -> Iterator[None]:
    """Run code that calls `asyncio.run()` (the LLM engine, say) while a Playwright sync session is open.

    Between its calls Playwright's sync API leaves its own event loop marked as running in the main thread, so
    `asyncio.run()` there fails ("cannot be called from a running event loop"). Nothing runs in that loop
    between sync calls: this unmarks it for the block and marks it again afterwards. Never call Playwright
    inside the block.
    """
    loop = asyncio._get_running_loop()
    asyncio._set_running_loop(None)
    try:
        yield
    finally:
        asyncio._set_running_loop(loop)


def _wait_until_answers(host: str, port: int, deadline: float, thread: threading.Thread) -> None:
    """Return once an HTTP request to `/` gets any response; raise if the server thread died or time runs out."""
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if not thread.is_alive():
            raise RuntimeError(f"the ASGI server on {host}:{port} stopped before it answered (see its log above)")
        connection = http.client.HTTPConnection(host, port, timeout=2)
        try:
            connection.request("GET", "/")
            connection.getresponse().read()
            return
        except OSError as error:
            last_error = error
            time.sleep(0.05)
        finally:
            connection.close()
    raise TimeoutError(f"the ASGI server on {host}:{port} did not answer in {SERVER_READY_TIMEOUT_S} s: {last_error}")


@contextlib.contextmanager
def serve_asgi(app: Any, *, host: str = "127.0.0.1", log_level: str = "warning") -> Iterator[str]:
    """Serve an ASGI app with uvicorn in a background thread on a free port; yields its base URL (no slash).

    The listening socket is bound before the server starts (no race for the port), the URL is yielded only once
    a request is answered, and on exit the server is asked to stop (`should_exit`), then forced if it lingers.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port: int = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        lifespan="auto",
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    failures: list[BaseException] = []

    def run() -> None:
        try:
            server.run(sockets=[sock])
        except BaseException as error:  # uvicorn exits (SystemExit) when the app fails to start
            failures.append(error)

    thread = threading.Thread(target=run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    try:
        try:
            _wait_until_answers(host, port, time.monotonic() + SERVER_READY_TIMEOUT_S, thread)
        except RuntimeError as error:
            raise RuntimeError(f"{error}: {failures[0]!r}" if failures else str(error)) from None
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(SERVER_STOP_TIMEOUT_S)
        if thread.is_alive():  # open connections outlived the graceful shutdown
            server.force_exit = True
            thread.join(SERVER_STOP_TIMEOUT_S)
        sock.close()
        if thread.is_alive():
            raise RuntimeError(f"the ASGI server on {host}:{port} did not stop within {2 * SERVER_STOP_TIMEOUT_S} s")
