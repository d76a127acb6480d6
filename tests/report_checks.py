"""Checks on a run directory's report.html shared by the report, CLI and quickstart tests."""

from __future__ import annotations

import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse


class _Refs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs: list[str] = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("src", "href") and value:
                self.refs.append(value)


def referenced_paths(report: Path) -> list[str]:
    """Every src/href of the page (the report must have no external or absolute references at all)."""
    parser = _Refs()
    parser.feed(report.read_text())
    return parser.refs


def assert_report_references_only_existing_files(run_dir: Path) -> list[str]:
    report = run_dir / "report.html"
    assert report.is_file(), f"no report.html in {run_dir}"
    refs = referenced_paths(report)
    for ref in refs:
        parsed = urlparse(ref)
        assert not parsed.scheme and not parsed.netloc and not ref.startswith("/"), \
            f"{report}: {ref!r} is not a path relative to the run directory"
        assert (run_dir / unquote(parsed.path)).exists(), f"{report} references {ref!r}, which does not exist"
    return refs


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    assert exe, ("Debian's chromium is needed for the report rendering test: apt-get install chromium "
                 "(bash scripts/test.sh installs it when it can)")
    return exe


def render(report: Path, screenshot: Path, width: int = 1200, height: int = 1600) -> str:
    """Screenshot ``report`` headless; returns the DOM after the page's load event."""
    base = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            "--allow-file-access-from-files", f"--window-size={width},{height}"]
    url = report.resolve().as_uri()
    shot = subprocess.run([*base, f"--screenshot={screenshot}", url], capture_output=True, text=True, timeout=120)
    assert shot.returncode == 0 and screenshot.is_file(), shot.stderr[-2000:]
    dom = subprocess.run([*base, "--virtual-time-budget=5000", "--dump-dom", url], capture_output=True, text=True,
                         timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    return dom.stdout
