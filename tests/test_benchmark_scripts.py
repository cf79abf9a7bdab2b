"""The issue's speed benchmark still runs, and its exact path still agrees with the reference."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_speed_benchmark_runs_and_the_exact_path_matches_the_reference(tmp_path: Path) -> None:
    command = [sys.executable, str(ROOT / "benchmarks" / "speed_vs_reference.py"), "--size", "136x128", "--iters", "2"]
    command += ["--repeats", "1", "--threads", "1", "--data", str(tmp_path)]  # no data: seeded random frames
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, check=False)
    assert done.returncode == 0, done.stderr
    rows = [line.split() for line in done.stdout.splitlines()]
    exact = [row for row in rows if row[:1] == ["exact"]]
    assert len(exact) == 2 and sum(row[:1] == ["reference"] for row in rows) == 2  # both models
    assert all(float(row[-1]) < 1e-3 for row in exact)  # mean |flow difference| in px
