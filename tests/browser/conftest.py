"""The console in a real browser: headless Chromium (the system's, driven by Playwright) against the
embedded stack. ``tox -e browser`` runs these; elsewhere they skip when Playwright or Chromium is missing.

Screenshots of the main views go to ``$PIJOBS_BROWSER_ARTIFACTS`` (else a temporary folder, printed)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pijobs.local.stack import LocalConfig, LocalStack

CHROMIUM = Path(os.environ.get("PIJOBS_CHROMIUM", "/usr/bin/chromium"))
# No sandbox: CI containers run as root, where Chromium's sandbox cannot start; the page under test is ours.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
DESKTOP = {"width": 1100, "height": 800}
TIMEOUT_MS = 30_000


def _missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright is not installed (tox -e browser installs it)"
    if not CHROMIUM.exists() and not shutil.which(str(CHROMIUM)):
        return f"no Chromium at {CHROMIUM} (apt-get install chromium, or set PIJOBS_CHROMIUM)"
    return None


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    reason = _missing()
    if reason and os.environ.get("PIJOBS_BROWSER_REQUIRED"):
        pytest.fail(reason)  # tox -e browser: a browser suite that skipped would pass having tested nothing
    if reason:
        pytest.skip(reason)
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=TIMEOUT_MS)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="package")
def stack(
    browser: Any, tmp_path_factory: pytest.TempPathFactory, wordcount_plugin: None
) -> Iterator[LocalStack]:
    """The embedded stack (started after the browser: without one there is nothing to test), with the
    word-count plug-in (a function whose job can be made to run for a while)."""
    config = LocalConfig(
        max_active_stacks=4,
        log_dir=tmp_path_factory.mktemp("workers"),
        extra_env={"PIJOBS_HEARTBEAT_SECONDS": "1"},
    )
    with LocalStack(config) as local:
        yield local


@pytest.fixture(scope="package")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = os.environ.get("PIJOBS_BROWSER_ARTIFACTS")
    path = Path(folder) if folder else tmp_path_factory.mktemp("console-screenshots")
    path.mkdir(parents=True, exist_ok=True)
    print(f"console screenshots: {path}")
    return path


class Console:
    """One browser context (its own sessionStorage) on the console, and what its page did."""

    def __init__(self, stack: LocalStack, page: Any, artifacts: Path) -> None:
        self.stack = stack
        self.page = page
        self.artifacts = artifacts
        self.errors: list[str] = []  # uncaught exceptions and policy violations
        self.requests: list[Any] = []
        page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))
        page.on("console", self._console)
        page.on("request", lambda request: self.requests.append(request))

    def _console(self, message: Any) -> None:
        if "Content Security Policy" in message.text or "Refused to" in message.text:
            self.errors.append(f"console: {message.text}")

    @property
    def url(self) -> str:
        return f"{self.stack.api_url}/console"

    def open(self) -> Console:
        self.page.goto(self.url)
        return self

    def sign_in(self, key: str) -> Console:
        self.open()
        self.page.fill("#api-key", key)
        self.page.press("#api-key", "Enter")
        self.page.wait_for_selector("#view-jobs:not([hidden])")
        return self

    def screenshot(self, name: str) -> None:
        """``name``-light.png and ``name``-dark.png of what the page shows now."""
        for scheme in ("light", "dark"):
            self.page.emulate_media(color_scheme=scheme)
            self.page.screenshot(path=str(self.artifacts / f"{name}-{scheme}.png"), full_page=True)
        self.page.emulate_media(color_scheme="light")


@pytest.fixture
def console(browser: Any, stack: LocalStack, artifacts: Path) -> Iterator[Console]:
    context = browser.new_context(viewport=DESKTOP, color_scheme="light", accept_downloads=True)
    context.set_default_timeout(TIMEOUT_MS)
    try:
        opened = Console(stack, context.new_page(), artifacts)
        yield opened
        assert not opened.errors, opened.errors
    finally:
        context.close()


@pytest.fixture
def key(stack: LocalStack, request: pytest.FixtureRequest) -> str:
    """A key of its own for each test, so each sees only its own jobs."""
    return stack.create_api_key(f"browser-{request.node.name[:40]}")[1]
