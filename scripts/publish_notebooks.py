"""Write the notebooks that the book's launch buttons open.

The Binder and Colab buttons of every notebook page open ``<page>.ipynb`` on the branch that
``_config.yml`` names (``repository.branch``). Git ignores the ``.ipynb`` files on main, so the
book's workflow (``.github/workflows/book.yml``, job ``notebooks``) runs this script on a
checkout of main, commits the files it writes on top of main's tree and force-pushes the
result to that branch. Binder then builds the repository's own ``environment.yml``, which
installs ``diffnb`` from the checkout; Colab has no ``diffnb``, so each notebook starts with a
cell that installs it, from the commit the notebooks were made from, only where it is missing.

For every page of ``_toc.yml`` whose ``.md`` is a jupytext notebook (it has a kernelspec), it
writes ``<page>.ipynb`` (unexecuted) into OUT and prints its path relative to OUT.

Usage: python scripts/publish_notebooks.py [--commit SHA] OUT
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jupytext
import nbformat
import yaml

ROOT = Path(__file__).resolve().parent.parent
REPOSITORY = "https://github.com/diffnb/diffnb"

INSTALL = """\
# Colab has no diffnb: install it, at the commit these notebooks were made from, where it is
# missing. On Binder and in the project's own environment it is installed and this does nothing.
import importlib.util
import subprocess
import sys

if importlib.util.find_spec("diffnb") is None:
    package = "diffnb @ git+{repository}@{commit}"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", package], check=True)
"""


def toc_files(toc: dict) -> list[str]:
    """Every ``file:`` of a jupyter-book _toc.yml, root first, in reading order."""
    files = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                files.append(entry["file"])
            walk(entry.get("sections"))
            walk(entry.get("chapters"))
            for part in entry.get("parts", []):
                walk(part.get("chapters"))

    walk(toc.get("chapters"))
    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    return files


def notebook_sources(root: Path = ROOT) -> list[Path]:
    """The .md files of _toc.yml that are jupytext notebooks (relative to root)."""
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    out = []
    for name in toc_files(toc):
        md = root / f"{Path(name).with_suffix('')}.md"
        if md.exists() and "kernelspec" in jupytext.read(md).metadata:
            out.append(md.relative_to(root))
    return out


def publish(out: Path, source_commit: str, root: Path = ROOT) -> list[Path]:
    """Write each notebook of the book, with the install cell first, under out."""
    written = []
    for md in notebook_sources(root):
        notebook = jupytext.read(root / md)
        notebook.metadata.pop("jupytext", None)
        install = nbformat.v4.new_code_cell(
            INSTALL.format(repository=REPOSITORY, commit=source_commit).rstrip("\n"),
            metadata={"tags": ["install-diffnb"]},
        )
        notebook.cells.insert(0, install)
        target = out / md.with_suffix(".ipynb")
        target.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nbformat.validator.normalize(notebook)[1], target)
        written.append(md.with_suffix(".ipynb"))
    return written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder to write into (the checkout's root)")
    parser.add_argument("--commit", default="main", help="commit diffnb is installed from")
    args = parser.parse_args()
    for path in publish(args.out, args.commit):
        print(path.as_posix())
    return 0


if __name__ == "__main__":
    sys.exit(main())
