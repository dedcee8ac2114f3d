"""Run ``make test`` stage by stage and end with a table of each stage's wall seconds.

Each argument is ``name=command``; the stages run in order, and the first that fails stops
the run (its table is printed all the same). The notebook stage's line lists each chapter
that ran in it, with its seconds from the execution record (``_build/.executed/times.json``,
written by ``scripts/execute_notebooks.py``). Standard library only: it runs before setup.

Usage: python3 scripts/stages.py "setup=make setup" "unit=make test-unit" ...
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TIMES = ROOT / "_build" / ".executed" / "times.json"


def execution_record() -> dict[str, dict]:
    return json.loads(TIMES.read_text()) if TIMES.exists() else {}


def chapters_run(before: dict[str, dict]) -> dict[str, float]:
    """The chapters whose entry in the execution record changed since ``before``: their seconds."""
    return {
        name: entry["seconds"]
        for name, entry in execution_record().items()
        if before.get(name) != entry
    }


def table(rows: list[tuple[str, float, str]]) -> str:
    lines = ["", "| stage | wall s | |", "|---|---:|---|"]
    lines += [f"| {name} | {seconds:,.0f} | {note} |" for name, seconds, note in rows]
    lines.append(f"| **total** | **{sum(s for _, s, _ in rows):,.0f}** | |")
    return "\n".join(lines)


def main() -> int:
    stages = [arg.split("=", 1) for arg in sys.argv[1:]]
    if not stages or any(len(stage) != 2 for stage in stages):
        print(__doc__.splitlines()[-1], file=sys.stderr)
        return 2
    rows, status = [], 0
    for stage, command in stages:
        before = execution_record()
        tic = time.perf_counter()
        status = subprocess.run(command, shell=True, cwd=ROOT).returncode
        chapters = chapters_run(before)
        ranked = sorted(chapters.items(), key=lambda kv: -kv[1])
        note = ", ".join(f"{name} {seconds:.0f}" for name, seconds in ranked)
        if chapters:
            note = f"{len(chapters)} chapters, {sum(chapters.values()):,.0f} s: {note}"
        rows.append((stage, time.perf_counter() - tic, note + (" **failed**" if status else "")))
        if status:
            break
    print(table(rows))
    return status


if __name__ == "__main__":
    sys.exit(main())
