"""scripts/stages.py: make test's stages, timed, with a table at the end even when one fails."""

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parents[1] / "scripts" / "stages.py"


def _run(*stages):
    return subprocess.run(
        [sys.executable, str(SCRIPT), *stages], capture_output=True, text=True, timeout=60
    )


def test_every_stage_gets_a_row_and_the_total_adds_up():
    proc = _run("first=sleep 1", "second=true")
    assert proc.returncode == 0, proc.stderr
    rows = [line.split("|") for line in proc.stdout.splitlines() if line.startswith("| ")]
    seconds = {cells[1].strip(): cells[2].strip() for cells in rows[1:]}
    assert list(seconds) == ["first", "second", "**total**"]
    assert seconds["first"] == "1" and seconds["**total**"] == "**1**"


def test_a_failing_stage_stops_the_run_and_is_marked():
    proc = _run("broken=exit 3", "never=true")
    assert proc.returncode == 3
    assert "| broken |" in proc.stdout and "**failed**" in proc.stdout
    assert "never" not in proc.stdout


def test_a_malformed_stage_is_refused():
    proc = _run("no-equals-sign")
    assert proc.returncode == 2 and "Usage" in proc.stderr
