"""benchmarks/bench_label.py --small: one process and two (accelerate launch, gloo on CPU) label the same photos."""

import sys

from conftest import REPO_ROOT, run_command


def test_bench_label_small_prints_its_table():
    result = run_command(sys.executable, REPO_ROOT / "benchmarks" / "bench_label.py", "--small", timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| tiny |")]
    assert [row.split(" | ")[1] for row in rows] == ["1 process, default threads", "2 processes, 1 thread each"]
    assert all(row.split(" | ")[2] == "16" and float(row.split(" | ")[4]) > 0 for row in rows)  # every image labelled
