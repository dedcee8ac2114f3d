"""The intro's table of chapters, written by the book's build from the execution record.

A Sphinx extension (``_config.yml``, ``sphinx: local_extensions``): when the build starts it
writes ``_build/.executed/chapters.md``, which ``intro.md`` includes. One row per notebook page
of ``_toc.yml`` after the root, in reading order, so a new chapter appears as soon as it is in
the table of contents:

- the chapter, linked, with its title;
- what it teaches: its sections (the ``##`` headings, less Overview, Summary and Exercises);
- its run time, from ``_build/.executed/times.json``, which ``scripts/execute_notebooks.py``
  writes after each passing run (nbmake's wall time for the notebook).

Usage: python scripts/chapter_table.py   (prints the table)
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import publish_notebooks  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RECORD = ROOT / "_build" / ".executed" / "times.json"
TABLE = ROOT / "_build" / ".executed" / "chapters.md"
NOT_TAUGHT = {"overview", "summary", "exercises"}


def run_time(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


def outline(md: Path) -> tuple[str, list[str]]:
    """A chapter's title and its section headings, outside code cells."""
    title, sections, fence = md.stem, [], None
    for line in md.read_text(encoding="utf-8").splitlines():
        if match := re.match(r"^(`{3,}|~{3,})", line):
            marker = match.group(1)
            if fence is None:
                fence = marker
            elif marker.startswith(fence):
                fence = None
            continue
        if fence is not None:
            continue
        if line.startswith("# ") and title == md.stem:
            title = line[2:].strip()
        elif line.startswith("## "):
            heading = line[3:].strip()
            if heading.lower() not in NOT_TAUGHT:
                sections.append(heading)
    return title, sections


def table(root: Path = ROOT) -> str:
    record = json.loads(RECORD.read_text()) if RECORD.exists() else {}
    rows = [
        "| chapter | what it teaches | run time |",
        "|---|---|---|",
    ]
    machines = set()
    toc_root = yaml.safe_load((root / "_toc.yml").read_text())["root"]
    for md in publish_notebooks.notebook_sources(root):
        if md.with_suffix("").as_posix() == Path(toc_root).with_suffix("").as_posix():
            continue
        title, sections = outline(root / md)
        run = record.get(md.stem)
        if run:
            machines.add((run["cpus"], run["jobs"]))
        time = run_time(run["seconds"]) if run else "not executed yet"
        doc = md.with_suffix("").as_posix()
        cells = [f"{{doc}}`{title} </{doc}>`", "; ".join(sections), time]
        rows.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    note = ""
    if machines:
        where = "; ".join(
            f"{cpus} CPU cores, {jobs} notebooks at a time" for cpus, jobs in sorted(machines)
        )
        note = f"\nRun times of the last execution by `make execute` ({where}).\n"
    return "\n".join(rows) + "\n" + note


def write_table(app=None) -> None:
    TABLE.parent.mkdir(parents=True, exist_ok=True)
    text = table()
    if not TABLE.exists() or TABLE.read_text() != text:
        TABLE.write_text(text)


def setup(app):
    app.connect("builder-inited", write_table)
    return {"parallel_read_safe": True, "parallel_write_safe": True}


if __name__ == "__main__":
    print(table())
