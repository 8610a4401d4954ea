"""Every benchmark script runs in its `--small` mode (tiny models, seconds) in a real subprocess, so an import or an
interface change breaks the suite, not a user's benchmark run. Speed targets are the scripts' own tables, never
asserted here: these tests check that each script runs to the end and prints its table."""

import sys

import pytest
from conftest import REPO_ROOT, run_command

YUNET = REPO_ROOT.parent / "shared" / "models" / "face_detection_yunet_2026may.onnx"


def run_benchmark(script: str, *args):
    result = run_command(sys.executable, REPO_ROOT / "benchmarks" / script, "--small", *args, cwd=REPO_ROOT,
                         timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    return result.stdout


def test_bench_zero_shot_small_prints_both_workloads():
    out = run_benchmark("bench_zero_shot.py")
    assert "tiny (--small)" in out
    for row in ("HF pipeline, one image per call", "Exp-CLIP batched API", "ExpCLIPPredictor"):
        assert out.count(row) == 2, out  # type3 and type5


def test_bench_train_small_prints_the_recipe_rows():
    out = run_benchmark("bench_train.py")
    assert "head training, 5 epochs x 1,024 pairs" in out
    assert "speed-up of the cached recipe" in out


def test_bench_faces_small_times_every_worker_count_and_both_detectors():
    if not YUNET.is_file():
        pytest.fail(f"the YuNet model the face benchmark reads is missing: {YUNET}")
    out = run_benchmark("bench_faces.py", "--yunet-model", YUNET)
    assert "6 photos of 320x240" in out
    assert "0 worker process(es)" in out and "1 worker process(es)" in out
    assert "| yunet    |" in out and "| haar     |" in out


def test_gpu_bench_small_runs_train_and_predict_end_to_end():
    out = run_benchmark("gpu_bench.py")
    assert "train_expclip.py" in out and "expclip predict" in out
