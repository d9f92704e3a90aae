"""Browser test of the rendered book: ``make test-site`` (or ``python tests/site/check_site.py _build/html``).

Serves the built site on localhost, opens every page in headless Chromium (Debian's
``chromium`` package, driven by Playwright with ``executable_path``) and checks that

* no page shows an error or a traceback in its outputs,
* every image has loaded,
* the math has been typeset by MathJax (served from the book, no CDN),
* every internal link resolves to a file of the site,
* at a 1280 x 900 window no code cell (its code, its text outputs, its tables) and no
  code block is wider than its column: each one that would need a horizontal scroll
  bar is reported as "cell N (input|output) is W px wide in a C px column", with the
  length of its longest line and its first line, so that it can be found and shortened
  (cells folded away with hide-input/hide-output are unfolded and checked too),
* on each chapter at 800, 1280 and 1920 px the chapter list and the page's table of
  contents are either shown or reachable through a visible button, and the buttons
  open them.

It saves full-page screenshots of each chapter at 1280, 1920 and 800 px to
``_build/screenshots`` (``<chapter>_<width>.png``, beside the html folder). Exits 1 and
lists the problems when any check fails. ``--find-chromium`` only prints the browser it
would use (``make test-site`` calls it before building the book).
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

from playwright.sync_api import TimeoutError as PlaywrightTimeout

WIDTH_CHECKED = 1280  # window width at which code and outputs must fit their column
SCREENSHOT_WIDTHS = (1280, 1920, 800)
TOLERANCE_PX = 2

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

    class Server(socketserver.ThreadingTCPServer):
        daemon_threads = True

        def handle_error(self, request, client_address):  # the browser closing a connection early
            if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
                super().handle_error(request, client_address)

    handler = functools.partial(Quiet, directory=str(root))
    server = Server(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]


# Every code input and output of every cell (and every code block outside cells) whose
# content is wider than the box it is shown in; tables are compared with their output
# area. Folded cells (details, hide-input / hide-output) are unfolded first.
WIDE_CELLS_JS = """
(tolerance) => {
  document.querySelectorAll('details').forEach(d => { d.open = true; });
  const found = [];
  const article = document.querySelector('article.bd-article') || document.querySelector('.bd-article');
  const content = el => {
    const cs = getComputedStyle(el);
    return el.clientWidth - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight);
  };
  const shown = el => el.getClientRects().length > 0;
  const describe = el => {
    const lines = (el.innerText || '').split('\\n');
    const first = (lines.find(l => l.trim()) || '').trim();
    return {longest: Math.max(0, ...lines.map(l => l.length)),
            first: first.length > 60 ? first.slice(0, 57) + '...' : first};
  };
  const check = (where, kind, el) => {
    if (!shown(el)) return;
    let width, column;
    if (el.tagName === 'TABLE') {
      const box = el.closest('.output, .cell_output') || el.parentElement;
      width = Math.ceil(Math.max(el.scrollWidth, el.getBoundingClientRect().width));
      column = Math.floor(content(box));
    } else {
      width = el.scrollWidth;
      column = el.clientWidth;
    }
    if (width > column + tolerance) found.push({where, kind, width, column, ...describe(el)});
  };
  const cells = Array.from(document.querySelectorAll('div.cell'));
  cells.forEach((cell, i) => {
    const where = `cell ${i + 1}`;
    cell.querySelectorAll('.cell_input pre').forEach(el => check(where, 'input', el));
    cell.querySelectorAll('.cell_output pre, .cell_output table').forEach(el => check(where, 'output', el));
    if (article && shown(cell)) {  // anything else that makes the cell wider than the article
      const right = article.getBoundingClientRect().right - parseFloat(getComputedStyle(article).paddingRight);
      const cellRect = cell.getBoundingClientRect();
      const width = Math.max(cell.scrollWidth, Math.ceil(cellRect.width));
      if (cellRect.left + width > right + tolerance
          && !found.some(f => f.where === where))
        found.push({where, kind: 'cell', width, column: Math.floor(right - cellRect.left), longest: 0, first: ''});
    }
  });
  if (article) {
    Array.from(article.querySelectorAll('div[class*="highlight-"] pre'))
      .filter(el => !el.closest('div.cell'))
      .forEach((el, i) => check(`code block ${i + 1}`, 'block', el));
  }
  return found;
}
"""

# Whether the chapter list (primary) and the page's table of contents (secondary) are on
# screen, or else a visible button opens them.
NAVIGATION_JS = """
() => {
  const onScreen = (el, minWidth) => {
    if (!el || !el.getClientRects().length) return false;
    const r = el.getBoundingClientRect(), cs = getComputedStyle(el);
    return cs.visibility !== 'hidden' && r.width >= minWidth && r.left >= -1 && r.right <= innerWidth + 1;
  };
  const sidebar = sel => onScreen(document.querySelector(sel), 100);
  const button = sel => Array.from(document.querySelectorAll(sel)).find(b => onScreen(b, 10)) ? sel : null;
  return {
    primary: sidebar('#pst-primary-sidebar') ? 'shown' : button('button.primary-toggle'),
    secondary: !document.querySelector('#pst-secondary-sidebar .page-toc') ? 'none'
      : sidebar('#pst-secondary-sidebar') ? 'shown' : button('button.secondary-toggle'),
  };
}
"""


def navigation_problems(page, width: int) -> list[str]:
    """At the current window width: both sidebars are shown or open from a visible button."""
    problems = []
    nav = page.evaluate(NAVIGATION_JS)
    for side, dialog in (("primary", "#pst-primary-sidebar-modal"), ("secondary", "#pst-secondary-sidebar-modal")):
        what = "the chapter list" if side == "primary" else "the page's table of contents"
        state = nav[side]
        if state in ("shown", "none"):
            continue
        if state is None:
            problems.append(f"at {width} px {what} is neither shown nor reachable by a visible button")
            continue
        page.locator(state).filter(visible=True).first.click()
        try:
            page.wait_for_function(
                f"() => {{ const d = document.querySelector('{dialog}');"
                " return d && d.open && d.querySelectorAll('a[href]').length > 0"
                " && d.getBoundingClientRect().right > 100; }",
                timeout=3000,
            )
        except PlaywrightTimeout:
            problems.append(f"at {width} px the button for {what} does not open it")
        page.keyboard.press("Escape")
        page.wait_for_function(f"() => !document.querySelector('{dialog}').open", timeout=3000)
        # Leave no hover or focus behind: its tooltip would show in the next screenshot.
        page.mouse.move(1, page.viewport_size["height"] - 1)
        page.evaluate("() => document.activeElement && document.activeElement.blur()")
    return problems


def wide_cells(page) -> list[str]:
    """The cells (and code blocks) wider than their column at the current window width."""
    return [
        f"{f['where']} ({f['kind']}) is {f['width']} px wide in a {f['column']} px column"
        + (f" (longest line {f['longest']} characters: {f['first']!r})" if f["first"] else "")
        for f in page.evaluate(WIDE_CELLS_JS, TOLERANCE_PX)
    ]


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
        except PlaywrightTimeout:
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

    if argv[1:] == ["--find-chromium"]:
        print(f"chromium: {find_chromium()}")
        return 0
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
        page = browser.new_page(viewport={"width": WIDTH_CHECKED, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        for path in pages:
            rel = path.relative_to(root).as_posix()
            errors.clear()
            problems = page_problems(page, urljoin(base, rel), root, base)
            problems += [f"JavaScript error: {e}" for e in errors]
            if rel.startswith("notebooks/"):
                for width in SCREENSHOT_WIDTHS:
                    page.set_viewport_size({"width": width, "height": 900})
                    page.screenshot(path=str(shots / f"{path.stem}_{width}.png"), full_page=True)
                    problems += navigation_problems(page, width)
                page.set_viewport_size({"width": WIDTH_CHECKED, "height": 900})
            problems += wide_cells(page)  # last: it unfolds the folded cells
            report[rel] = problems
            print(f"{'ok  ' if not problems else 'FAIL'} {rel}" + "".join(f"\n      {p}" for p in problems))
        browser.close()
    server.shutdown()
    failed = {k: v for k, v in report.items() if v}
    print(f"{len(report)} pages checked, {len(failed)} with problems; screenshots in {shots}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
