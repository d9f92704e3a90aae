"""Browser test of the rendered book: ``make test-site`` (or ``python tests/site/check_site.py _build/html``).

Serves the built site on localhost, opens every page in headless Chromium (Debian's
``chromium`` package, driven by Playwright with ``executable_path``) and checks that

* no page shows an error or a traceback in its outputs,
* every image has loaded,
* the math has been typeset by MathJax (served from the book, no CDN),
* every internal link resolves to a file of the site.

It saves a full-page screenshot of each chapter to ``_build/screenshots``. Exits 1 and
lists the problems when any check fails.
"""

from __future__ import annotations

import functools
import http.server
import shutil
import socketserver
import sys
import threading
from pathlib import Path
from urllib.parse import unquote, urljoin, urlparse

CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def find_chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    raise SystemExit("no Chromium found: install Debian's package with `apt-get install chromium`")


def serve(root: Path) -> tuple[socketserver.TCPServer, int]:
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):  # keep the report readable
            pass

    handler = functools.partial(Quiet, directory=str(root))
    server = socketserver.TCPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]


def page_problems(page, url: str, root: Path, base: str) -> list[str]:
    problems = []
    page.goto(url, wait_until="networkidle")
    if page.locator(".math, .MathJax, mjx-container").count():
        try:  # MathJax typesets asynchronously: wait until every formula is an mjx-container
            page.wait_for_function(
                "() => window.MathJax && MathJax.startup && MathJax.startup.promise"
                " && document.querySelectorAll('mjx-container').length > 0",
                timeout=20000,
            )
        except Exception:
            problems.append("math was not typeset by MathJax")
    for selector, what in [(".output.traceback, .output .ansi-red-fg, div.output.error", "an error output"),
                           (".cell_output .output.stderr:has-text('Traceback')", "a traceback")]:
        if page.locator(selector).count():
            problems.append(f"shows {what}")
    broken = page.evaluate(
        "() => Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src)"
    )
    problems += [f"image did not load: {src}" for src in broken]
    for href in page.evaluate("() => Array.from(document.querySelectorAll('a[href]')).map(a => a.href)"):
        parsed = urlparse(href)
        if not href.startswith(base) or not parsed.path:
            continue
        target = root / unquote(parsed.path).lstrip("/")
        if target.is_dir():
            target = target / "index.html"
        if not target.exists():
            problems.append(f"broken internal link: {parsed.path}")
    return problems


def main(argv: list[str]) -> int:
    from playwright.sync_api import sync_playwright

    root = Path(argv[1] if len(argv) > 1 else "_build/html").resolve()
    if not (root / "index.html").exists():
        raise SystemExit(f"{root} has no index.html: build the book first (`make book`)")
    shots = root.parent / "screenshots"
    shots.mkdir(exist_ok=True)
    pages = sorted(p for p in root.rglob("*.html") if not p.name.startswith(("genindex", "search")) and "_" not in p.parts[len(root.parts)][:1])
    server, port = serve(root)
    base = f"http://127.0.0.1:{port}/"
    report: dict[str, list[str]] = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=find_chromium(), args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        for path in pages:
            rel = path.relative_to(root).as_posix()
            errors.clear()
            problems = page_problems(page, urljoin(base, rel), root, base)
            for e in errors:  # reported, not failed: the theme itself raises some (sphinx-thebe)
                print(f"note {rel}: JavaScript error: {e}")
            if rel.startswith("notebooks/"):
                page.screenshot(path=str(shots / (path.stem + ".png")), full_page=True)
            report[rel] = problems
            print(f"{'ok  ' if not problems else 'FAIL'} {rel}" + "".join(f"\n      {p}" for p in problems))
        browser.close()
    server.shutdown()
    failed = {k: v for k, v in report.items() if v}
    print(f"{len(report)} pages checked, {len(failed)} with problems; screenshots in {shots}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
