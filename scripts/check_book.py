"""Check the built book in headless Chromium at a 1280-px window, as a reader sees it.

Serves the HTML folder on 127.0.0.1 and loads every page in Debian's chromium through
Debian's chromedriver (selenium), with the viewport set to 1280 x 900 CSS pixels. Each page
fails on any of these defects, counted in these units:

- ``maths``: a display equation (``mjx-container[display]``) whose content is wider than its
  box (the reader would see part of it behind a scrollbar);
- ``inputs`` / ``outputs`` / ``source``: a code block whose ``scrollWidth`` exceeds its
  ``clientWidth``: a cell's input (``.cell_input pre``), a cell's output (``.cell_output pre``),
  or shown source outside cells (``literalinclude`` and other code blocks);
- ``columns``: a code box (input, output or source) that shows fewer than 100 columns of its
  own font; 100 is ruff's line length for the package and the chapters;
- ``markup``: raw markup in the visible text outside code and maths: a TeX command
  (``\\frac``), a MyST role that did not render ({eq} and the like), ``$...$`` or ``$$``,
  ``\\(``, ``\\[``, "ERRATA", a raw label ("eq. data-score", "fig-..."), or ASCII maths
  such as ``sigma_t^2`` (matches less than 30 characters apart count as one piece; the HTML
  tables that cells output are data and are not searched, their figure captions are);
- ``tables``: an output that prints a table as plain text: 3 or more lines with 3 or more runs
  of two or more spaces;
- ``long``: an output block of more than 30 lines;

and on the older checks: MathJax typeset every ``.math`` element; every ``<img>`` loaded, and
every image a cell outputs sits in a ``<figure>`` with a caption; every internal link and
``#fragment`` resolves; the browser loaded every local resource; and every launch button
(Binder, Colab) names the repository of ``_config.yml``, the branch that the book's workflow
publishes the notebooks to, and a notebook that ``scripts/publish_notebooks.py`` writes there.

Collapsed content (``hide-input`` cells, dropdown solutions) is opened before the widths are
measured, because a reader opens it; the page height is measured before, as the page loads.
It prints one line per page (its height and the counts) and one line per failure, and exits
non-zero on any failure.

Usage:
  python scripts/check_book.py [_build/html]   check the built book
  python scripts/check_book.py --self-test     check the checker on tests/book_check/
"""

from __future__ import annotations

import argparse
import functools
import http.server
import json
import re
import shutil
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import parse_qs, unquote, urldefrag, urljoin, urlsplit

import yaml
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import publish_notebooks  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WIDTH, HEIGHT = 1280, 900
MIN_COLUMNS = 100  # ruff's line-length in pyproject.toml
MAX_OUTPUT_LINES = 30
MERGE_GAP = 30  # characters between two raw-markup matches that make them one piece
SKIP_DIRS = {"_static", "_sources", "_images", "jupyter_execute"}
FIXTURES = ROOT / "tests" / "book_check"
WORKFLOW = ROOT / ".github" / "workflows" / "book.yml"
# Console errors that fail the check: a local resource that did not load. (The theme's own
# script errors, such as sphinx-thebe declaring THEBE_JS_URL twice, are not the book's.)
LOAD_FAILED = "Failed to load resource"
FAVICON = "/favicon.ico"  # the browser asks for one; the book has none

# The defect classes of the per-page summary, in the order they are printed.
DEFECTS = ("maths", "inputs", "outputs", "source", "columns", "markup", "tables", "long")

# Raw markup in prose (outside code and maths), each with a name for the report.
RAW_MARKUP = [
    ("TeX command", re.compile(r"\\[A-Za-z]{2,}")),
    ("TeX delimiter", re.compile(r"\\[()\[\]]|\$\$")),
    ("MyST role", re.compile(r"\{[a-z][a-z0-9_:-]*\}")),
    ("dollar maths", re.compile(r"\$[^$\n]{1,200}\$")),
    ("ERRATA", re.compile(r"ERRATA")),
    ("raw label", re.compile(r"\beqs?\.\s*\(?[a-z][a-z0-9]*-[a-z0-9-]+|\bfig-[a-z0-9-]+")),
    ("ASCII maths", re.compile(r"\b[A-Za-z]{1,8}_(?:\{|[A-Za-z0-9]{1,3}\b)|\w\^[\w{(-]")),
]

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

# The page as it loads: its height and viewport. Then open every collapsed block (a reader
# can) and measure every code box and display equation in the article.
MEASURE = """
const height = document.documentElement.scrollHeight;
const viewport = document.documentElement.clientWidth;
document.querySelectorAll('details').forEach((d) => { d.open = true; });
document.querySelectorAll('.toggle-hidden').forEach((e) => e.classList.remove('toggle-hidden'));
document.querySelectorAll('.toggle-details__container, .toggle')
  .forEach((e) => { e.style.display = ''; });
const article = document.querySelector('article.bd-article') || document.querySelector('main')
  || document.body;
const label = (el) => (el.innerText || el.textContent || '').trim().split('\\n')[0].slice(0, 70);
const cut = (el) => el.scrollWidth > el.clientWidth + 1;
const columns = (pre) => {
  // Columns of the box's own font that fit inside its padding.
  const probe = document.createElement('span');
  probe.textContent = '0'.repeat(100);
  probe.style.whiteSpace = 'pre';
  pre.appendChild(probe);
  const char = probe.getBoundingClientRect().width / 100;
  probe.remove();
  const style = getComputedStyle(pre);
  const inner = pre.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
  return char > 0 ? Math.floor(inner / char + 1e-6) : null;
};
const boxes = (pres) => pres.filter((p) => p.clientWidth > 0).map((p) => ({
  cut: cut(p), columns: columns(p), lines: p.textContent.replace(/\\n$/, '').split('\\n'),
  label: label(p), font: getComputedStyle(p).fontSize,
}));
const pres = Array.from(article.querySelectorAll('pre'));
const maths = Array.from(article.querySelectorAll('mjx-container[display]')).map((m) => {
  const inner = m.querySelector('mjx-math');
  const wide = inner ? inner.getBoundingClientRect().width > m.getBoundingClientRect().width + 1
                     : false;
  const mathml = m.querySelector('mjx-assistive-mml annotation, math');
  return { cut: cut(m) || wide || cut(m.parentElement),
           label: (m.getAttribute('aria-label') || (mathml && mathml.textContent) ||
                   m.textContent || '').slice(0, 70) };
});
const prose = article.cloneNode(true);
// Left out: code, maths, and the HTML tables that cells output (data, labelled by the code).
prose.querySelectorAll('pre, code, kbd, samp, script, style, mjx-container, .highlight, ' +
                       'mjx-assistive-mml, .MathJax, .headerlink, .cell_output table')
  .forEach((el) => el.remove());
return {
  height: height, viewport: viewport, maths: maths,
  inputs: boxes(pres.filter((p) => p.closest('.cell_input'))),
  outputs: boxes(pres.filter((p) => p.closest('.cell_output'))),
  source: boxes(pres.filter((p) => !p.closest('.cell_input, .cell_output'))),
  prose: prose.textContent,
  launch: Array.from(document.querySelectorAll('a[href]'))
    .filter((a) => !a.closest('article'))  // the header's buttons, not links in the text
    .map((a) => a.href)
    .filter((h) => /mybinder\\.org|colab\\.research\\.google\\.com/.test(h)),
};
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
TABLE_RUNS = re.compile(r" {2,}")


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
                 "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
                 f"--window-size={WIDTH},{HEIGHT}"):  # fmt: skip
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "SEVERE"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_script_timeout(60)
    driver.set_page_load_timeout(60)
    # The layout viewport itself is WIDTH CSS pixels wide, whatever the window decorations.
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False},
    )
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


def raw_markup(text: str) -> list[str]:
    """Each piece of raw markup in prose text, as 'kinds: ...context...'.

    Matches less than MERGE_GAP characters apart are one piece (a formula that did not render
    is one defect, however many TeX commands it has).
    """
    spans = sorted(
        (match.start(), match.end(), kind)
        for kind, pattern in RAW_MARKUP
        for match in pattern.finditer(text)
    )
    pieces: list[list] = []
    for start, end, kind in spans:
        if pieces and start - pieces[-1][1] < MERGE_GAP:
            pieces[-1][1] = max(pieces[-1][1], end)
            pieces[-1][2].add(kind)
        else:
            pieces.append([start, end, {kind}])
    found = []
    for start, end, kinds in pieces:
        snippet = " ".join(text[max(0, start - 25) : min(end, start + 60) + 25].split())
        found.append(f"{', '.join(sorted(kinds))}: ...{snippet}...")
    return found


def text_table(lines: list[str]) -> bool:
    """An output printed as a plain-text table: 3+ lines with 3+ runs of 2+ spaces."""
    return sum(len(TABLE_RUNS.findall(line.rstrip())) >= 3 for line in lines) >= 3


# ---------------------------------------------------------------- launch buttons
@dataclass
class LaunchTarget:
    """Where the launch buttons must point: repository, branch and notebook paths."""

    org: str
    repo: str
    branch: str
    notebooks: frozenset[str] = field(default_factory=frozenset)


def published_branch(workflow: Path = WORKFLOW) -> str:
    """The branch the book's workflow publishes the generated notebooks to.

    The workflow must have a job that runs scripts/publish_notebooks.py and pushes to the
    branch named in that job's NOTEBOOKS_BRANCH.
    """
    spec = yaml.safe_load(workflow.read_text())
    for name, job in spec.get("jobs", {}).items():
        branch = job.get("env", {}).get("NOTEBOOKS_BRANCH")
        runs = "\n".join(step.get("run", "") for step in job.get("steps", []))
        if branch and "scripts/publish_notebooks.py" in runs and "git push" in runs:
            if "NOTEBOOKS_BRANCH" not in runs.split("git push", 1)[1]:
                raise ValueError(f"{workflow.name}: job {name} does not push NOTEBOOKS_BRANCH")
            return branch
    raise ValueError(f"{workflow.name}: no job runs scripts/publish_notebooks.py and pushes")


def launch_target() -> LaunchTarget:
    """The repository and branch of _config.yml, checked against the workflow, and the
    notebooks that scripts/publish_notebooks.py actually writes (generated into a temp dir)."""
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    parts = urlsplit(config["repository"]["url"]).path.strip("/").split("/")
    branch = config["repository"]["branch"]
    workflow_branch = published_branch()
    if branch != workflow_branch:
        raise ValueError(
            f"_config.yml repository.branch is {branch!r}, but {WORKFLOW.name} publishes the "
            f"notebooks to {workflow_branch!r}"
        )
    with tempfile.TemporaryDirectory(prefix="publish-") as out:
        written = publish_notebooks.publish(Path(out), source_commit="check")
    return LaunchTarget(parts[0], parts[1], branch, frozenset(p.as_posix() for p in written))


def check_launch_url(url: str, target: LaunchTarget) -> str | None:
    """None if a Binder or Colab URL opens a published notebook, else what is wrong."""
    parts = urlsplit(url)
    segments = parts.path.strip("/").split("/")
    if "mybinder.org" in parts.netloc:
        # /v2/gh/<org>/<repo>/<branch>?urlpath=lab/tree/<path>
        if segments[:2] != ["v2", "gh"] or len(segments) != 5:
            return "not a GitHub Binder URL"
        org, repo, branch = segments[2:5]
        urlpath = parse_qs(parts.query).get("urlpath", [""])[0]
        path = re.sub(r"^(lab/tree|tree|notebooks)/", "", urlpath)
    elif "colab.research.google.com" in parts.netloc:
        # /github/<org>/<repo>/blob/<branch>/<path>
        if segments[0] != "github" or len(segments) < 6 or segments[3] != "blob":
            return "not a Colab GitHub URL"
        org, repo, branch, path = segments[1], segments[2], segments[4], "/".join(segments[5:])
    else:
        return "not a Binder or Colab URL"
    if (org, repo) != (target.org, target.repo):
        return f"repository {org}/{repo}, expected {target.org}/{target.repo}"
    if branch != target.branch:
        return f"branch {branch!r}, but the notebooks are published to {target.branch!r}"
    if path not in target.notebooks:
        return f"{path} is not among the published notebooks"
    return None


# ---------------------------------------------------------------- one page
@dataclass
class PageReport:
    page: str
    height: int = 0
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DEFECTS, 0))
    totals: dict[str, int] = field(default_factory=dict)
    columns: int | None = None
    failures: list[tuple[str, str]] = field(default_factory=list)

    def fail(self, kind: str, message: str) -> None:
        if kind in self.counts:
            self.counts[kind] += 1
        self.failures.append((kind, message))

    def summary(self) -> str:
        tot = self.totals
        return (
            f"{self.page}: height {self.height:,} px; maths clipped {self.counts['maths']}/"
            f"{tot.get('maths', 0)}, inputs cut {self.counts['inputs']}/{tot.get('inputs', 0)}, "
            f"outputs cut {self.counts['outputs']}/{tot.get('outputs', 0)}, source cut "
            f"{self.counts['source']}/{tot.get('source', 0)}, raw markup {self.counts['markup']}, "
            f"text tables {self.counts['tables']}, outputs over {MAX_OUTPUT_LINES} lines "
            f"{self.counts['long']}, code box "
            f"{'-' if self.columns is None else self.columns} columns"
        )


def check_page(driver, root: Path, base: str, page: Path, launch: LaunchTarget | None):
    """Load one page and return its PageReport (None for a redirect stub)."""
    report = PageReport(page.as_posix())
    url = base + page.as_posix()
    if redirect := REFRESH.search((root / page).read_text(encoding="utf-8")):
        # A redirect stub (index.html): only its target has to exist.
        if problem := check_link(root, base, urljoin(url, redirect.group(1))):
            report.fail("link", f"redirect to {redirect.group(1)}: {problem}")
        return report
    driver.get(url)
    maths = driver.execute_async_script(WAIT_FOR_MATHJAX)
    if maths["math"]:
        if not maths["mathjax"]:
            report.fail("mathjax", "MathJax did not load")
        elif maths["typeset"] < maths["math"]:
            report.fail("mathjax", f"{maths['typeset']} of {maths['math']} maths typeset")
    for src, loaded in driver.execute_async_script(IMAGES):
        if not loaded:
            report.fail("image", f"image did not load: {src}")
    for src in driver.execute_script(UNCAPTIONED):
        report.fail("caption", f"figure without a caption: {src}")
    for href in driver.execute_script(LINKS):
        if href.startswith(base) and (problem := check_link(root, base, href)):
            report.fail("link", f"link {href.removeprefix(base)}: {problem}")

    m = driver.execute_script(MEASURE)
    report.height = m["height"]
    if m["viewport"] > WIDTH:
        report.fail("viewport", f"viewport {m['viewport']} px, expected at most {WIDTH}")
    report.totals = {kind: len(m[kind]) for kind in ("maths", "inputs", "outputs", "source")}
    for eq in m["maths"]:
        if eq["cut"]:
            report.fail("maths", f"display maths wider than its box: {eq['label']}")
    shown = []
    for kind in ("inputs", "outputs", "source"):
        for box in m[kind]:
            if box["cut"]:
                report.fail(kind, f"{kind[:-1] if kind != 'source' else kind} cut: {box['label']}")
            if box["columns"] is not None:
                shown.append(box["columns"])
                if box["columns"] < MIN_COLUMNS:
                    report.fail(
                        "columns",
                        f"{kind} box shows {box['columns']} < {MIN_COLUMNS} columns "
                        f"(font {box['font']}): {box['label']}",
                    )
    report.columns = min(shown) if shown else None
    for box in m["outputs"]:
        if text_table(box["lines"]):
            report.fail("tables", f"output prints a text table: {box['label']}")
        if len(box["lines"]) > MAX_OUTPUT_LINES:
            report.fail("long", f"output of {len(box['lines'])} lines: {box['label']}")
    for found in raw_markup(m["prose"]):
        report.fail("markup", f"raw markup, {found}")

    notebook_page = (root / "_sources" / page).with_suffix(".ipynb").exists()
    if launch is not None and notebook_page:
        report.totals["launch"] = len(m["launch"])
        hosts = {urlsplit(u).netloc for u in m["launch"]}
        for host in ("mybinder.org", "colab.research.google.com"):
            if host not in hosts:
                report.fail("launch", f"no {host} launch button")
        for href in m["launch"]:
            if problem := check_launch_url(href, launch):
                report.fail("launch", f"launch button {href}: {problem}")
    for entry in driver.get_log("browser"):
        message = entry.get("message", "")
        if LOAD_FAILED in message and base in message and FAVICON not in message:
            report.fail("resource", message)
    return report


def check_site(root: Path, launch: LaunchTarget | None, driver=None) -> list[PageReport]:
    pages = sorted(
        page.relative_to(root) for page in root.rglob("*.html")
        if not SKIP_DIRS.intersection(page.relative_to(root).parts)
    )  # fmt: skip
    server, base = serve(root)
    reports = []
    with tempfile.TemporaryDirectory(prefix="check-book-") as profile:
        own = driver is None
        driver = browser(profile) if own else driver
        try:
            reports = [check_page(driver, root, base, page, launch) for page in pages]
        finally:
            if own:
                driver.quit()
            server.shutdown()
    return reports


def print_reports(reports: list[PageReport]) -> int:
    failures = 0
    for report in reports:
        if report.height:
            print(report.summary())
    heights = sum(r.height for r in reports)
    totals = {kind: sum(r.counts[kind] for r in reports) for kind in DEFECTS}
    launch = sum(r.totals.get("launch", 0) for r in reports)
    print(
        f"check_book: {len(reports)} pages, {heights:,} px in all, {launch} launch buttons; "
        + ", ".join(f"{kind} {count}" for kind, count in totals.items())
    )
    for report in reports:
        for kind, message in report.failures:
            failures += 1
            print(f"FAIL [{kind}] {report.page}: {message}")
    return failures


# ---------------------------------------------------------------- self-test
def self_test() -> int:
    """The checker passes on tests/book_check/clean.html and fails on each defect.

    Each tests/book_check/defects/<kind>[.<variant>].html is a fragment put into the clean
    page; the page must then fail with exactly the defect class <kind> (and only it).
    """
    template = (FIXTURES / "clean.html").read_text(encoding="utf-8")
    marker = "<!-- defect -->"
    assert marker in template, f"{FIXTURES / 'clean.html'} has no {marker}"
    fragments = sorted((FIXTURES / "defects").glob("*.html"))
    kinds = {f.name.split(".")[0] for f in fragments}
    missing = set(DEFECTS) - kinds
    problems = [f"no fixture for defect class {kind}" for kind in sorted(missing)]
    with tempfile.TemporaryDirectory(prefix="check-book-self-") as tmp:
        site = Path(tmp)
        (site / "clean.html").write_text(template, encoding="utf-8")
        for fragment in fragments:
            page = template.replace(marker, fragment.read_text(encoding="utf-8"))
            (site / fragment.name).write_text(page, encoding="utf-8")
        reports = {r.page: r for r in check_site(site, launch=None)}
    clean = reports.pop("clean.html")
    if clean.failures:
        problems += [f"clean.html fails: [{k}] {m}" for k, m in clean.failures]
    for page, report in sorted(reports.items()):
        kind = page.split(".")[0]
        got = {k for k, _ in report.failures}
        if got != {kind}:
            problems.append(f"{page}: expected exactly [{kind}] failures, got {sorted(got)}")
        else:
            print(f"check_book self-test: {page} fails as {kind} ({report.failures[0][1]})")
    # The launch-button checks on URLs built as sphinx-book-theme builds them.
    target = LaunchTarget("o", "r", "nb", frozenset({"notebooks/a.ipynb"}))
    cases = {
        "https://mybinder.org/v2/gh/o/r/nb?urlpath=lab/tree/notebooks/a.ipynb": True,
        "https://colab.research.google.com/github/o/r/blob/nb/notebooks/a.ipynb": True,
        "https://mybinder.org/v2/gh/o/r/main?urlpath=lab/tree/notebooks/a.ipynb": False,
        "https://colab.research.google.com/github/o/r/blob/nb/notebooks/b.ipynb": False,
        "https://colab.research.google.com/github/x/r/blob/nb/notebooks/a.ipynb": False,
    }
    for url, ok in cases.items():
        if (check_launch_url(url, target) is None) != ok:
            problems.append(f"launch URL {url} should {'pass' if ok else 'fail'}")
    for problem in problems:
        print(f"FAIL self-test: {problem}")
    if not problems:
        print(f"check_book self-test: clean page passes, {len(reports)} defect pages fail as meant")
    return 1 if problems else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("html", nargs="?", default="_build/html", type=Path)
    parser.add_argument("--self-test", action="store_true", help="check the checker")
    parser.add_argument("--json", type=Path, help="write the per-page counts here")
    args = parser.parse_args()
    if args.self_test:
        return self_test()
    root = args.html.resolve()
    if not any(root.glob("*.html")):
        print(f"check_book: no HTML pages under {root}; run `make book` first")
        return 1
    try:
        launch, launch_problem = launch_target(), None
    except ValueError as error:
        launch, launch_problem = None, str(error)
    reports = check_site(root, launch)
    if args.json:
        args.json.write_text(
            json.dumps(
                {r.page: {"height": r.height, "columns": r.columns, **r.counts} for r in reports},
                indent=1,
            )
        )
    failures = print_reports(reports)
    if launch_problem:
        print(f"FAIL [launch] {launch_problem}")
    return 1 if failures or launch_problem else 0


if __name__ == "__main__":
    if not shutil.which(CHROMIUM) or not shutil.which(CHROMEDRIVER):
        sys.exit(f"check_book: needs {CHROMIUM} and {CHROMEDRIVER} (`make browser`)")
    sys.exit(main())
