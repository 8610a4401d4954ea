"""The feature cache: CLIP embeddings and teacher targets per image, computed once, keyed, sharded, resumable."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT, run_command
from datasets import load_dataset
from PIL import Image
from transformers import AutoImageProcessor

import expclip.features as features_module
from expclip.features import (
    PAUSE_AFTER_SHARDS_ENV,
    FeatureCacheSettings,
    build_feature_cache,
    dataset_image_items,
    folder_image_items,
    pixel_values,
    resolve_dtype,
)
from expclip.inputs import load_image
from modeling_expclip import ExpCLIPModel
from expclip.teacher import ExpCLIPTeacher

SHARD_SIZE = 16


@pytest.fixture
def settings(tiny_clip_dir, tiny_blip2_dir):
    return FeatureCacheSettings(str(tiny_clip_dir), str(tiny_blip2_dir), shard_size=SHARD_SIZE)


@pytest.fixture
def small_dir(tmp_path):
    """20 generated images: two shards of 16."""
    folder = tmp_path / "small"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(20):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(folder / f"{i:02d}.png")
    return folder


def shard_folders(cache_dir: Path) -> list[Path]:
    return sorted(p for p in cache_dir.glob("*/shard-*") if p.is_dir())


def arrow_bytes(cache_dir: Path) -> list[bytes]:
    return [p.read_bytes() for p in sorted(cache_dir.glob("*/shard-*/*.arrow"))]


def test_rows_hold_each_images_clip_embedding_and_teacher_target(small_dir, settings, tmp_path, tiny_clip_dir,
                                                                   tiny_blip2_dir):
    cache, skipped = build_feature_cache(folder_image_items(small_dir), settings, tmp_path / "cache", batch_size=8)
    assert skipped == [] and len(cache) == 20
    row = cache.with_format("torch")[5]
    image = load_image(small_dir / "05.png")
    assert row["image"] == str(small_dir / "05.png")
    clip = ExpCLIPModel.from_clip(str(tiny_clip_dir), projection_dim=24)
    clip_pixels = AutoImageProcessor.from_pretrained(tiny_clip_dir, backend="pil")([image], return_tensors="pt").pixel_values
    teacher = ExpCLIPTeacher.from_pretrained(str(tiny_blip2_dir), device="cpu")
    teacher_pixels = AutoImageProcessor.from_pretrained(tiny_blip2_dir, backend="pil")([image], return_tensors="pt").pixel_values
    with torch.no_grad():
        torch.testing.assert_close(row["clip_image_embeds"], clip.encode_clip_image(clip_pixels)[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(row["target_embeds"], teacher(teacher_pixels)[0], atol=1e-5, rtol=1e-4)


def test_dropout_quirk_caches_one_fresh_target_per_image_per_epoch(small_dir, settings, tmp_path, tiny_clip_dir,
                                                                   tiny_blip2_dir):
    """README: Faithful to the paper: under the quirk the original drew fresh dropout masks every epoch: draw e is epoch e's target."""
    quirk = FeatureCacheSettings(str(tiny_clip_dir), str(tiny_blip2_dir), teacher_dropout=True, target_draws=3,
                                 shard_size=SHARD_SIZE)
    items = folder_image_items(small_dir)
    cache, _ = build_feature_cache(items, quirk, tmp_path / "cache", batch_size=8)
    plain, _ = build_feature_cache(items, settings, tmp_path / "cache", batch_size=8)
    assert cache.column_names == ["image", "sha256", "clip_image_embeds", "target_embeds", "target_embeds_epoch1",
                                  "target_embeds_epoch2"]
    assert plain.column_names == ["image", "sha256", "clip_image_embeds", "target_embeds"]  # eval mode: one target
    draws = [torch.tensor(cache[column]) for column in cache.column_names[3:]]
    eval_targets = torch.tensor(plain["target_embeds"])
    for k, draw in enumerate(draws):
        torch.testing.assert_close(draw.norm(dim=-1), torch.ones(20))
        assert not torch.allclose(draw, eval_targets, atol=1e-4)  # dropout was on
        assert all(not torch.allclose(draw, other, atol=1e-4) for other in draws[k + 1:])  # a fresh draw per epoch
    assert cache["clip_image_embeds"] == plain["clip_image_embeds"]  # CLIP is not affected by the quirk


def test_a_rerun_reuses_the_cache_without_loading_any_model(small_dir, settings, tmp_path, monkeypatch):
    first, _ = build_feature_cache(folder_image_items(small_dir), settings, tmp_path / "cache", batch_size=8)
    monkeypatch.setattr(features_module, "FeatureExtractors", None)  # any model load would now fail
    again, _ = build_feature_cache(folder_image_items(small_dir), settings, tmp_path / "cache", batch_size=8)
    assert again["target_embeds"] == first["target_embeds"]


def test_a_changed_instruction_is_not_served_from_the_stale_cache(small_dir, settings, tmp_path):
    first, _ = build_feature_cache(folder_image_items(small_dir), settings, tmp_path / "cache", batch_size=8)
    other = FeatureCacheSettings(**{**settings.__dict__, "instruction": "Describe the face."})
    second, _ = build_feature_cache(folder_image_items(small_dir), other, tmp_path / "cache", batch_size=8)
    assert len(list((tmp_path / "cache").iterdir())) == 2
    assert second["clip_image_embeds"] == first["clip_image_embeds"]
    assert not np.allclose(second["target_embeds"], first["target_embeds"])


def test_a_changed_file_recomputes_its_shard_only(small_dir, settings, tmp_path):
    first, _ = build_feature_cache(folder_image_items(small_dir), settings, tmp_path / "cache", batch_size=8)
    before = shard_folders(tmp_path / "cache")
    Image.fromarray(np.full((40, 40, 3), 200, np.uint8)).save(small_dir / "17.png")  # in the second shard
    second, _ = build_feature_cache(folder_image_items(small_dir), settings, tmp_path / "cache", batch_size=8)
    after = shard_folders(tmp_path / "cache")
    assert after[0] == before[0] and after[1] != before[1] and len(after) == 2
    assert second["target_embeds"][:17] == first["target_embeds"][:17]
    assert not np.allclose(second["target_embeds"][17], first["target_embeds"][17])


def test_unreadable_images_are_skipped_and_named(face_images_dir, settings, tmp_path):
    cache, skipped = build_feature_cache(folder_image_items(face_images_dir), settings, tmp_path / "cache")
    assert len(cache) == 64
    assert len(skipped) == 2
    assert any("zero.jpg" in reason and "empty" in reason for reason in skipped)
    assert any("corrupt.png" in reason for reason in skipped)


def test_a_datasets_imagefolder_gives_the_same_vectors_as_the_folder(small_dir, settings, tmp_path):
    from_folder, _ = build_feature_cache(folder_image_items(small_dir), settings, tmp_path / "a", batch_size=8)
    dataset = load_dataset("imagefolder", data_dir=str(small_dir), split="train")
    from_dataset, _ = build_feature_cache(
        dataset_image_items(dataset, "imagefolder[train]"), settings, tmp_path / "b", batch_size=8
    )
    assert from_dataset["sha256"] == from_folder["sha256"]
    np.testing.assert_allclose(from_dataset["target_embeds"], from_folder["target_embeds"], atol=1e-6)


def test_original_preprocessing_is_a_square_bilinear_resize_to_raw_pixels(tiny_clip_dir, photo_dir):
    image = load_image(photo_dir / "astronaut.jpg")
    processor = AutoImageProcessor.from_pretrained(tiny_clip_dir, backend="pil")
    quirk = pixel_values(processor, [image], original_preprocessing=True)[0]
    expected = np.asarray(image.resize((32, 32), Image.BILINEAR), dtype=np.float32) / 255.0
    np.testing.assert_allclose(quirk.permute(1, 2, 0).numpy(), expected, atol=1e-6)
    assert not torch.allclose(pixel_values(processor, [image])[0], quirk)


def test_extraction_killed_after_a_shard_resumes_to_an_identical_cache(
    face_images_dir, settings, tiny_clip_dir, tiny_blip2_dir, tmp_path
):
    reference_dir = tmp_path / "reference"
    build_feature_cache(folder_image_items(face_images_dir), settings, reference_dir, batch_size=8)
    cache_dir = tmp_path / "cache"
    command = [
        sys.executable, REPO_ROOT / "train_expclip.py",
        "--clip_model_name_or_path", tiny_clip_dir, "--teacher_model_name_or_path", tiny_blip2_dir,
        "--train_dir", face_images_dir, "--feature_cache_dir", cache_dir, "--output_dir", tmp_path / "out",
        "--shard_size", SHARD_SIZE, "--extraction_batch_size", 8, "--global_batch_size", 16, "--num_train_epochs", 1,
    ]
    process = subprocess.Popen(
        [str(c) for c in command], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ, PAUSE_AFTER_SHARDS_ENV: "1"},
    )
    try:
        assert "paused after 1 shard" in process.stdout.readline()
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    [first_shard] = shard_folders(cache_dir)
    written = (first_shard / "data-00000-of-00001.arrow").stat().st_mtime_ns
    resumed = run_command(*command, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert len(shard_folders(cache_dir)) == 5
    assert (first_shard / "data-00000-of-00001.arrow").stat().st_mtime_ns == written  # not recomputed
    assert arrow_bytes(cache_dir) == arrow_bytes(reference_dir)


# ----- precision and determinism ----------------------------------------------------------------------------------


def test_clip_precision_is_part_of_the_cache_key_and_bf16_stays_close_to_fp32(small_dir, settings, tmp_path):
    fp32, _ = build_feature_cache(folder_image_items(small_dir), settings, tmp_path / "cache", batch_size=8)
    bf16_settings = FeatureCacheSettings(**{**settings.__dict__, "clip_dtype": "bfloat16"})
    assert bf16_settings.fingerprint() != settings.fingerprint()
    bf16, _ = build_feature_cache(folder_image_items(small_dir), bf16_settings, tmp_path / "cache", batch_size=8)
    assert len(list((tmp_path / "cache").iterdir())) == 2  # two caches side by side, neither served for the other
    a, b = np.array(fp32["clip_image_embeds"]), np.array(bf16["clip_image_embeds"])
    assert not np.array_equal(a, b)  # really computed in bfloat16
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cosine.min() > 0.99
    assert bf16["target_embeds"] == fp32["target_embeds"]  # the switch is CLIP's only


def test_clip_precision_defaults_to_bfloat16_on_gpu_and_float32_on_cpu():
    assert resolve_dtype("auto", "cuda") == "bfloat16"
    assert resolve_dtype("auto", "cpu") == "float32"
    assert resolve_dtype("float32", "cuda") == "float32"


@pytest.fixture(scope="module")
def real_jpegs_dir(tmp_path_factory) -> Path:
    """40 real photos as JPEG files: 30 LFW faces of scikit-image (upscaled) and 10 crops of its photos."""
    from skimage import data

    folder = tmp_path_factory.mktemp("jpegs")
    for i, face in enumerate(data.lfw_subset()[:30]):
        Image.fromarray((face * 255).astype(np.uint8)).convert("RGB").resize((64, 64)).save(folder / f"lfw{i:03d}.jpg")
    photos = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    for i in range(10):
        photo = photos[i % 4]
        top, left = (i * 37) % (photo.shape[0] - 96), (i * 53) % (photo.shape[1] - 80)
        Image.fromarray(photo[top : top + 96, left : left + 80]).save(folder / f"crop{i:03d}.jpg", quality=90)
    return folder


def test_the_cache_of_train_expclip_is_byte_identical_with_0_and_2_workers(real_jpegs_dir, tiny_clip_dir,
                                                                           tiny_blip2_dir, tmp_path):
    for workers in (0, 2):
        result = run_command(
            sys.executable, REPO_ROOT / "train_expclip.py", "--clip_model_name_or_path", tiny_clip_dir,
            "--teacher_model_name_or_path", tiny_blip2_dir, "--train_dir", real_jpegs_dir,
            "--feature_cache_dir", tmp_path / f"cache-{workers}", "--output_dir", tmp_path / f"out-{workers}",
            "--extraction_num_workers", workers, "--shard_size", 16, "--extraction_batch_size", 8,
            "--global_batch_size", 16, "--max_steps", 1,
        )
        assert result.returncode == 0, result.stderr[-2000:]
    zero, two = arrow_bytes(tmp_path / "cache-0"), arrow_bytes(tmp_path / "cache-2")
    assert len(zero) == 3 and zero == two  # 40 images in shards of 16: three Arrow files, batches across them
