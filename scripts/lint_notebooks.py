"""Run ruff on the code of the book's notebooks (MyST markdown), with the package's settings.

Each ``<name>.md`` given is converted by jupytext into ``<name>.ipynb`` in a temporary copy of
its folder, and ``ruff check`` and ``ruff format --check`` run on those notebooks with this
repository's ``pyproject.toml`` (line length 100, the rules of the package). Ruff's notebook
mode lints each code cell as a cell: an import at the top of a later cell, or a cell ending in
an expression whose value the notebook shows, is not a finding. Markdown cells are not linted.

Reports name ``<name>.ipynb:cell N:line:col``: N counts the code and markdown cells of the
notebook, from 1. Exits non-zero if ruff finds anything in any notebook.

With ``--fix`` (``make format``), ruff's safe fixes and its formatter are applied to those
notebooks instead, and each code cell's new source is written back into its ``.md`` (the
markdown cells and cell metadata are kept as they are).

Usage: python scripts/lint_notebooks.py [--fix] intro.md notebooks/*.md
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import jupytext

ROOT = Path(__file__).resolve().parent.parent


def write_back(path: Path, fixed: Path) -> bool:
    """Copy the code cells of the fixed notebook into ``path`` (.md); True if it changed."""
    notebook, new = jupytext.read(path), jupytext.read(fixed)
    for cell, fixed_cell in zip(notebook.cells, new.cells, strict=True):
        if cell.cell_type == "code":
            cell.source = fixed_cell.source.rstrip("\n")
    text = jupytext.writes(notebook, fmt="md:myst")
    text = re.sub(r"\n +jupytext_version: [^\n]*", "", text, count=1)  # jupytext.toml's filter
    if text == path.read_text():
        return False
    path.write_text(text)
    return True


def main(paths: list[str]) -> int:
    fix = "--fix" in paths
    paths = [p for p in paths if p != "--fix"]
    if not paths:
        print("lint_notebooks: no notebooks given")
        return 0
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    config = ROOT / "pyproject.toml"
    with tempfile.TemporaryDirectory(prefix="lint-notebooks-") as tmp:
        names = []
        for path in map(Path, paths):
            rel = path.resolve().relative_to(ROOT).with_suffix(".ipynb")
            target = Path(tmp) / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            jupytext.write(jupytext.read(path), target, fmt="ipynb")
            names.append(rel.as_posix())
        status = 0
        if fix:
            for command in (["check", "--fix"], ["format"]):
                cmd = [ruff, *command, "--config", str(config), "--no-cache", *names]
                subprocess.run(cmd, cwd=tmp)
            for path, name in zip(map(Path, paths), names, strict=True):
                if write_back(path, Path(tmp) / name):
                    print(f"lint_notebooks: rewrote the code cells of {path}")
            return 0
        for command in (["check"], ["format", "--check", "--diff"]):
            cmd = [ruff, *command, "--config", str(config), "--no-cache", *names]
            result = subprocess.run(cmd, cwd=tmp)
            status |= result.returncode
    if status:
        print("lint_notebooks: ruff found problems in the notebooks' code (above)")
    return 1 if status else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
