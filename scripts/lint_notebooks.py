"""Run ruff on the code of the book's notebooks (MyST markdown), with the package's settings.

Each ``<name>.md`` given is converted by jupytext into ``<name>.ipynb`` in a temporary copy of
its folder, and ``ruff check`` and ``ruff format --check`` run on those notebooks with this
repository's ``pyproject.toml`` (line length 100, the rules of the package). Ruff's notebook
mode lints each code cell as a cell: an import at the top of a later cell, or a cell ending in
an expression whose value the notebook shows, is not a finding. Markdown cells are not linted.

Reports name ``<name>.ipynb:cell N:line:col``: N counts the code and markdown cells of the
notebook, from 1. Exits non-zero if ruff finds anything in any notebook.

Usage: python scripts/lint_notebooks.py intro.md notebooks/*.md
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import jupytext

ROOT = Path(__file__).resolve().parent.parent


def main(paths: list[str]) -> int:
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
        for command in (["check"], ["format", "--check", "--diff"]):
            cmd = [ruff, *command, "--config", str(config), "--no-cache", *names]
            result = subprocess.run(cmd, cwd=tmp)
            status |= result.returncode
    if status:
        print("lint_notebooks: ruff found problems in the notebooks' code (above)")
    return 1 if status else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
