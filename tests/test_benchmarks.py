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


def test_gpu_bench_small_runs_a_vlm_teacher_and_a_siglip2_backbone():
    out = run_benchmark("gpu_bench.py", "--teacher", "qwen2.5-vl-7b", "--backbone", "siglip2-so400m", "--images", 32,
                        "--photos", 4)
    assert "teacher targets, Qwen2.5-VL-7B, fp32, batch 8, prompt " in out
    assert "SigLIP 2 so400m/16 NaFlex image features" in out
    assert "% of the teacher alone" in out and "`expclip predict`, 4 photos" in out


def test_gpu_bench_real_sizes_are_the_published_checkpoints():
    """Built on the meta device (no memory): parameter counts as the model cards give them."""
    from types import SimpleNamespace

    import torch
    from transformers import Qwen2_5_VLModel, Siglip2Model

    sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
    from gpu_bench import qwen2_5_vl_7b_config, siglip2_so400m_config

    qwen_ids = dict(image_token_id=151655, video_token_id=151656, vision_start_token_id=151652,
                    vision_end_token_id=151653)  # Qwen's own; the count does not depend on them
    gemma_ids = SimpleNamespace(pad_token_id=0, bos_token_id=2, eos_token_id=1)
    with torch.device("meta"):
        qwen = Qwen2_5_VLModel(qwen2_5_vl_7b_config(qwen_ids))
        siglip = Siglip2Model(siglip2_so400m_config(gemma_ids))
    lm_head = 152064 * 3584  # Qwen2.5-VL-7B-Instruct: 8.29B parameters with its (untied) LM head, not built here
    assert round((sum(p.numel() for p in qwen.parameters()) + lm_head) / 1e9, 2) == 8.29
    assert round(sum(p.numel() for p in siglip.parameters()) / 1e9, 2) == 1.14  # siglip2-so400m-patch16-naflex
