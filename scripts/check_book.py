"""Check the built book in headless Chromium: maths typeset, images loaded, links resolved.

Serves the HTML folder on 127.0.0.1 and loads every page in Debian's chromium through
Debian's chromedriver (selenium). For each page it asserts that

- on a page with maths, MathJax has typeset it (``mjx-container`` elements, at least one per
  ``.math`` element Sphinx wrote) and no raw TeX delimiter (``\\(``, ``\\[``, ``$$``,
  ``\\begin{``) is left in the visible text outside code;
- every ``<img>`` has loaded (``naturalWidth > 0``), and every image a code cell output is
  in a ``<figure>`` with a caption;
- every internal link points at an existing file and, when it has a ``#fragment``, at an
  existing ``id`` (or ``name``) in that file;
- the browser could load every local resource (no missing script, style or image).

It prints what it checked and exits non-zero on any failure.

Usage: python scripts/check_book.py [_build/html]
"""

from __future__ import annotations

import functools
import http.server
import re
import sys
import tempfile
import threading
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urldefrag, urljoin, urlsplit

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SKIP_DIRS = {"_static", "_sources", "_images", "jupyter_execute"}
RAW_TEX = ("\\(", "\\[", "$$", "\\begin{")
# Console errors that fail the check: a local resource that did not load. (The theme's own
# script errors, such as sphinx-thebe declaring THEBE_JS_URL twice, are not the book's.)
LOAD_FAILED = "Failed to load resource"
FAVICON = "/favicon.ico"  # the browser asks for one; the book has none

# Resolves with the page's maths counts once MathJax (if any) has finished typesetting.
WAIT_FOR_MATHJAX = """
const done = arguments[arguments.length - 1];
const report = (ok) => done({
  mathjax: ok,
  math: document.querySelectorAll('.math').length,
  typeset: document.querySelectorAll('mjx-container').length,
});
if (!window.MathJax || !MathJax.startup || !MathJax.startup.promise) { report(false); }
else { MathJax.startup.promise.then(() => report(true), () => report(false)); }
"""

# Visible text outside code blocks, where raw TeX would mean MathJax missed it.
PROSE_TEXT = """
const body = document.body.cloneNode(true);
body.querySelectorAll('pre, code, script, style, mjx-container, .highlight')
    .forEach((el) => el.remove());
return body.innerText;
"""

# Waits for every image to finish loading, then reports the broken ones.
IMAGES = """
const done = arguments[arguments.length - 1];
const imgs = Array.from(document.images);
imgs.forEach((img) => { img.loading = 'eager'; });
Promise.allSettled(imgs.map((img) => img.decode())).then(() => done(
  imgs.map((img) => [img.getAttribute('src'), img.complete && img.naturalWidth > 0])));
"""

# Output images of code cells that are not in a captioned <figure> (mystnb: figure: caption).
UNCAPTIONED = """
return Array.from(document.querySelectorAll('.cell_output img'))
  .filter((img) => !img.closest('figure')?.querySelector('figcaption'))
  .map((img) => img.getAttribute('src'));
"""

REFRESH = re.compile(r'<meta[^>]+http-equiv="refresh"[^>]+url=([^"\']+)', re.IGNORECASE)
LINKS = "return Array.from(document.querySelectorAll('a[href]'), (a) => a.href);"


class _Anchors(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.anchors: set[str] = set()

    def handle_starttag(self, tag, attrs) -> None:
        for name, value in attrs:
            if name == "id" or (tag == "a" and name == "name"):
                self.anchors.add(value)


@functools.cache
def anchors(path: Path) -> frozenset[str]:
    parser = _Anchors()
    parser.feed(path.read_text(encoding="utf-8", errors="replace"))
    return frozenset(parser.anchors)


def serve(root: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_port}/"


def browser(profile: str) -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", f"--user-data-dir={profile}"):  # fmt: skip
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "SEVERE"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_script_timeout(60)
    driver.set_page_load_timeout(60)
    return driver


def check_link(root: Path, base: str, href: str) -> str | None:
    """None if the internal link resolves, else what is wrong with it."""
    url, fragment = urldefrag(href)
    path = unquote(urlsplit(url).path)
    target = root / path.removeprefix(urlsplit(base).path)
    if target.is_dir():
        target = target / "index.html"
    if not target.is_file():
        return f"missing file {target.relative_to(root)}"
    if fragment and target.suffix == ".html" and unquote(fragment) not in anchors(target):
        return f"missing anchor #{fragment} in {target.relative_to(root)}"
    return None


def main() -> int:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "_build/html").resolve()
    pages = sorted(
        page.relative_to(root) for page in root.rglob("*.html")
        if not SKIP_DIRS.intersection(page.relative_to(root).parts)
    )  # fmt: skip
    if not pages:
        print(f"check_book: no HTML pages under {root}; run `make book` first")
        return 1
    server, base = serve(root)
    failures: list[str] = []
    totals = {"equations": 0, "images": 0, "links": 0, "external": 0}
    with tempfile.TemporaryDirectory(prefix="check-book-") as profile:
        driver = browser(profile)
        try:
            for page in pages:
                url = base + page.as_posix()
                if redirect := REFRESH.search((root / page).read_text(encoding="utf-8")):
                    # A redirect stub (index.html): only its target has to exist.
                    totals["links"] += 1
                    target = urljoin(url, redirect.group(1))
                    if problem := check_link(root, base, target):
                        failures.append(f"{page}: redirect to {redirect.group(1)}: {problem}")
                    continue
                driver.get(url)
                maths = driver.execute_async_script(WAIT_FOR_MATHJAX)
                if maths["math"]:
                    if not maths["mathjax"]:
                        failures.append(f"{page}: MathJax did not load")
                    elif maths["typeset"] < maths["math"]:
                        failures.append(f"{page}: {maths['typeset']} of {maths['math']} "
                                        "maths elements typeset")  # fmt: skip
                totals["equations"] += maths["typeset"]
                text = driver.execute_script(PROSE_TEXT)
                for delimiter in RAW_TEX:
                    if delimiter in text:
                        at = text.index(delimiter)
                        snippet = " ".join(text[max(0, at - 30) : at + 30].split())
                        failures.append(f"{page}: raw TeX {delimiter!r} visible: ...{snippet}...")
                for src, loaded in driver.execute_async_script(IMAGES):
                    totals["images"] += 1
                    if not loaded:
                        failures.append(f"{page}: image did not load: {src}")
                for src in driver.execute_script(UNCAPTIONED):
                    failures.append(f"{page}: figure without a caption: {src}")
                for href in driver.execute_script(LINKS):
                    if not href.startswith(base):
                        totals["external"] += 1
                        continue
                    totals["links"] += 1
                    if problem := check_link(root, base, href):
                        failures.append(f"{page}: link {href.removeprefix(base)}: {problem}")
                for entry in driver.get_log("browser"):
                    message = entry.get("message", "")
                    if LOAD_FAILED in message and base in message and FAVICON not in message:
                        failures.append(f"{page}: {message}")
        finally:
            driver.quit()
            server.shutdown()
    print(
        f"check_book: {len(pages)} pages, {totals['equations']} equations typeset by MathJax, "
        f"{totals['images']} images loaded, {totals['links']} internal links resolved "
        f"({totals['external']} external links not followed)"
    )
    for failure in failures:
        print(f"FAIL {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
