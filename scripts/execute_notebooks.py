"""Execute the book's notebooks once each, with nbmake, and keep the outputs for the book.

For every ``notebooks/<name>.md`` given:

1. ``jupytext --update --to ipynb`` makes or refreshes the paired ``notebooks/<name>.ipynb``
   from the .md, the source of truth (an .ipynb executed while its .md was being edited is
   newer than the .md, and ``--sync`` would then write the old cells back over the edit);
2. the notebook is *stale* unless a stamp in ``_build/.executed/`` records a passing run
   with the same inputs (the .md text, every ``diffnb/*.py`` and the lock file) that
   produced the .ipynb as it is now;
3. the stale notebooks run under ``pytest --nbmake --overwrite``, one pytest each, two at a
   time, the longest first by the execution record; the executed outputs are written into
   the .ipynb, which the book then renders with execution off. ``DIFFNB_MODEL_STORE`` is set to
   ``_build/models``, so that a model several chapters share (``diffnb.build_cache``) is
   trained by the first chapter that asks for it and loaded by the others;
4. each notebook that passed gets a stamp, and its wall time under nbmake (from pytest's
   JUnit report) is recorded in ``_build/.executed/times.json``, which the intro's table of
   chapters reads (``scripts/chapter_table.py``).

A failing cell makes this script exit non-zero, so ``make book`` and ``make test`` stop.
The failing .ipynb keeps its outputs and traceback for inspection.

Usage: python scripts/execute_notebooks.py [--jobs N] [--force] notebooks/*.md
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import hashlib
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STAMPS = ROOT / "_build" / ".executed"
TIMES = STAMPS / "times.json"
MODEL_STORE = ROOT / "_build" / "models"
# Each chapter's seconds in make test on a 2-core machine (December 2026): the order of a fresh
# clone's first run, longest first, until its own execution record exists.
FIRST_RUN_SECONDS = {
    "comparison": 350, "digits": 320, "sde": 310, "training": 260, "guidance": 150,
    "ncsn": 150, "sampling": 150, "ddpm": 110, "pitfalls": 40, "data": 35, "intro": 35,
}  # fmt: skip
CELL_TIMEOUT_S = 1800


def sha256(*paths: Path) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(str(path.relative_to(ROOT)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def shared_inputs() -> list[Path]:
    """Files whose change can change any notebook's outputs."""
    package = sorted((ROOT / "diffnb").rglob("*.py"))
    lock = ROOT / "requirements" / "lock.txt"
    return package + ([lock] if lock.exists() else [])


def stamp_for(ipynb: Path, shared: list[Path]) -> dict[str, str]:
    return {"inputs": sha256(ipynb.with_suffix(".md"), *shared), "ipynb": sha256(ipynb)}


def jupytext_sync(markdown: list[Path]) -> None:
    cmd = [sys.executable, "-m", "jupytext", "--update", "--to", "ipynb", "--quiet"]
    cmd += [str(path) for path in markdown]
    subprocess.run(cmd, check=True, cwd=ROOT)


def passed_notebooks(junit: Path) -> dict[str, float]:
    """The notebooks that passed and their wall times (s), read from pytest's JUnit report."""
    if not junit.exists():
        return {}
    passed = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        if any(child.tag in ("failure", "error", "skipped") for child in case):
            continue
        passed[Path(case.get("name", "").split("::")[0]).stem] = float(case.get("time", "nan"))
    return passed


def record_times(times: dict[str, float], jobs: int) -> None:
    """Add each passing notebook's wall time to the execution record."""
    record = json.loads(TIMES.read_text()) if TIMES.exists() else {}
    when = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    for name, seconds in times.items():
        record[name] = {"seconds": round(seconds, 1), "jobs": jobs, "cpus": os.cpu_count(),
                        "finished": when}  # fmt: skip
    TIMES.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("markdown", nargs="*", type=Path, help="notebooks/<name>.md files")
    parser.add_argument("--jobs", type=int, default=2, help="notebooks run at once")
    parser.add_argument("--force", action="store_true", help="run even if up to date")
    args = parser.parse_args()
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    markdown = [path.resolve() for path in args.markdown]
    if not markdown:
        print("execute_notebooks: no notebooks given")
        return 0

    jupytext_sync(markdown)
    STAMPS.mkdir(parents=True, exist_ok=True)
    shared = shared_inputs()
    stale = []
    for md in markdown:
        ipynb, stamp = md.with_suffix(".ipynb"), STAMPS / f"{md.stem}.json"
        recorded = json.loads(stamp.read_text()) if stamp.exists() else None
        if args.force or recorded != stamp_for(ipynb, shared):
            stamp.unlink(missing_ok=True)
            stale.append(ipynb)
    fresh = len(markdown) - len(stale)
    print(f"execute_notebooks: {len(stale)} to run, {fresh} up to date")
    if not stale:
        return 0

    # Longest first, so that the workers finish together; a new chapter counts as the longest.
    record = json.loads(TIMES.read_text()) if TIMES.exists() else {}
    seconds = {**FIRST_RUN_SECONDS, **{name: entry["seconds"] for name, entry in record.items()}}
    stale.sort(key=lambda path: -seconds.get(path.stem, float("inf")))
    env = dict(os.environ, DIFFNB_MODEL_STORE=str(MODEL_STORE))

    def run(ipynb: Path) -> tuple[int, Path]:
        junit = STAMPS / f"{ipynb.stem}.junit.xml"
        junit.unlink(missing_ok=True)
        cmd = [
            sys.executable, "-m", "pytest", "--nbmake", "--overwrite",
            f"--nbmake-timeout={CELL_TIMEOUT_S}",
            "-p", "no:cacheprovider", "-o", "addopts=", "-o", "filterwarnings=",
            f"--junitxml={junit}", "-q", str(ipynb.relative_to(ROOT)),
        ]  # fmt: skip
        return subprocess.run(cmd, cwd=ROOT, env=env).returncode, junit

    jobs = min(args.jobs, len(stale))
    with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
        results = list(pool.map(run, stale))
    returncode = max(code for code, _ in results)
    times = {}
    for _, junit in results:
        times.update(passed_notebooks(junit))

    # nbmake changed only the outputs, so the pair still matches and jupytext's contents
    # manager opens it in JupyterLab even though the .ipynb is now the newer file.
    passed = [path for path in stale if path.stem in times]
    for ipynb in passed:
        stamp = STAMPS / f"{ipynb.stem}.json"
        stamp.write_text(json.dumps(stamp_for(ipynb, shared)))
    record_times({path.stem: times[path.stem] for path in passed}, jobs)
    failed = sorted(path.name for path in stale if path not in passed)
    if returncode != 0 or failed:
        print(f"execute_notebooks: FAILED {', '.join(failed) or '(pytest error)'}")
        return returncode or 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
