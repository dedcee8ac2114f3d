"""The digits chapter's network comparison at longer conv-net budgets, a side experiment.

    python benchmarks/digits_conv_budget.py            # about 13 minutes on 2 cores
    python benchmarks/digits_conv_budget.py 2000 4000  # the conv net's step counts

notebooks/digits.md trains its MLP for 7,000 steps and its conv net for 500, the 90 s each
buys on two CPU cores, and compares them by the Frechet distance of class-conditional samples.
This script runs that chapter itself, unchanged except for the conv net's step count, up to the
comparison, once per count, and prints the ``SIDE_RUNS`` table that the chapter's side
experiment stores, with the date and machine. Running the chapter rather than a copy of it
keeps the protocol (split, keys, loss, sampler, score) the chapter's own; the chapter checks
the stored MLP values against its own run.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import time
from pathlib import Path

import jupytext
import nbclient
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
CHAPTER = ROOT / "notebooks" / "digits.md"
BUDGET_LINE = 'TRAIN_STEPS = {"MLP": 7_000, "conv net": 500}'
LAST_CELL = "comparison = pd.DataFrame(comparison).T"


def comparison_at(conv_steps: int) -> pd.DataFrame:
    """The chapter's comparison table with the conv net trained for ``conv_steps`` steps."""
    notebook = jupytext.read(CHAPTER)
    cells = []
    for cell in notebook.cells:
        if BUDGET_LINE in cell.source:
            cell.source = cell.source.replace(
                BUDGET_LINE, f'TRAIN_STEPS = {{"MLP": 7_000, "conv net": {conv_steps}}}'
            )
        cells.append(cell)
        if LAST_CELL in cell.source:
            break
    else:
        raise RuntimeError(f"{CHAPTER} has no cell with {LAST_CELL!r}: update this script")
    if not any(f'"conv net": {conv_steps}}}' in c.source for c in cells):
        raise RuntimeError(f"{CHAPTER} has no line {BUDGET_LINE!r}: update this script")
    cells.append(jupytext.reads("print(comparison.to_json())", fmt="py:percent").cells[0])
    notebook.cells = cells
    resources = {"metadata": {"path": str(CHAPTER.parent)}}
    nbclient.NotebookClient(notebook, timeout=3600, resources=resources).execute()
    text = "".join(out.get("text", "") for out in notebook.cells[-1].outputs)
    return pd.read_json(io.StringIO(text))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("steps", nargs="*", type=int, default=[2000, 4000])
    args = parser.parse_args()
    rows = []
    for steps in args.steps:
        start = time.perf_counter()
        table = comparison_at(steps)
        rows.append((steps, table.loc["conv net"], table.loc["MLP"]))
        print(table.to_string(), f"\n({time.perf_counter() - start:.0f} s)", flush=True)
    machine = f"{os.cpu_count()} cores, {platform.machine()}, {time.strftime('%Y-%m-%d')}"
    command = " ".join(["python benchmarks/digits_conv_budget.py", *map(str, args.steps)])
    print(f"# Measured by `{command}` ({machine}).")
    print("SIDE_RUNS = {  # conv net steps: (training s, Fréchet distance of the conv net, MLP)")
    for steps, conv, mlp in rows:
        print(f"    {steps}: ({conv['training s']:.1f}, {conv['Fréchet distance']:.4f}, "
              f"{mlp['Fréchet distance']:.4f}),")  # fmt: skip
    print("}")


if __name__ == "__main__":
    main()
