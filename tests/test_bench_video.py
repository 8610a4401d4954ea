"""benchmarks/bench_video.py runs in its `--small` mode (tiny model, a 2-second clip) in a real subprocess and prints
its table. Its speed targets are the script's own lines, never asserted here."""

import sys

import pytest
from conftest import REPO_ROOT, run_command

YUNET = REPO_ROOT.parent / "shared" / "models" / "face_detection_yunet_2026may.onnx"


def test_bench_video_small_prints_live_and_track_rows_for_one_and_three_faces():
    if not YUNET.is_file():
        pytest.fail(f"the YuNet model the video benchmark reads is missing: {YUNET}")
    result = run_command(sys.executable, REPO_ROOT / "benchmarks" / "bench_video.py", "--small", "--yunet-model", YUNET,
                         cwd=REPO_ROOT, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert "| tiny  |     1 |" in result.stdout and "| tiny  |     3 |" in result.stdout
    assert "target --track <= 1.5x --faces" in result.stdout
