"""`expclip evaluate --paper` and the benchmark readers (README: Reproducing the paper): the original's frame sampling
for short clips, face boxes cut in the stored pixels' coordinates, the original's plain `.convert("RGB")`, and no
transformers backend chatter on stderr."""

import json
import os
import shutil
import sys
from pathlib import Path

import datasets
import fake_releases as fake
import numpy as np
import pytest
import torch
from conftest import original_rule, run_command
from expclip.eval.prepare import prepare
from PIL import Image, ImageOps
from transformers import AutoProcessor

EXIF_ORIENTATION = 0x0112


@pytest.fixture(scope="module")
def dfew(tmp_path_factory):
    """A prepared fake DFEW whose every frame outside the original's sampling is corrupt: a run that reads any other
    frame excludes the clip."""
    root = tmp_path_factory.mktemp("dfew-paper")
    source, _, _ = fake.make_dfew(root, frame_counts=(5, 16, 17, 9, 12, 20, 6))
    for clip in sorted((source / "Clip" / "clip_224x224").iterdir()):
        frames = sorted(clip.iterdir())
        for index, frame in enumerate(frames):
            if index not in original_rule(len(frames)):
                frame.write_bytes(b"not a jpeg")
    prepare("dfew", source, root / "prepared")
    return root / "prepared"


@pytest.fixture(scope="module")
def paper_run(dfew, tiny_expclip_dir, tmp_path_factory):
    """`--paper` on CPU, as a user with torchvision installed (a stub here) and transformers' warnings on, with a
    model folder as `expclip convert` and training write it (its processor pinned to the PIL class)."""
    from expclip.inputs import pin_pil_image_processor
    from fake_torchvision import write_fake_torchvision

    model = Path(shutil.copytree(tiny_expclip_dir, tmp_path_factory.mktemp("model") / "tiny-expclip"))
    pin_pil_image_processor(model)
    output = tmp_path_factory.mktemp("paper-results")
    stub = write_fake_torchvision(tmp_path_factory.mktemp("stub"))
    env = {"PYTHONPATH": os.pathsep.join([str(stub), os.environ.get("PYTHONPATH", "")]),
           "TRANSFORMERS_VERBOSITY": "warning"}
    result = run_command(sys.executable, "-m", "expclip", "evaluate", "--model", model, "--benchmark",
                         "dfew", "--data", dfew, "--paper", "--device", "cpu", "--num-workers", "0", "--output",
                         output, env=env)
    assert result.returncode == 0, result.stderr
    return result, json.loads((output / "tiny-expclip" / "dfew" / "results.json").read_text())


def test_paper_reads_exactly_the_originals_frames_first_frame_for_short_clips(paper_run, dfew):
    _, results = paper_run
    assert results["num_excluded"] == 0 and results["num_evaluated"] == 35
    assert results["short_clip"] == "first_frame"
    # the same clips sampled evenly (the default) read the corrupt frames of the short clips
    from expclip.eval.evaluate import BenchmarkPixels
    from expclip.inputs import InputError

    rows = datasets.load_from_disk(str(dfew))
    even = BenchmarkPixels(rows, None, 7, video=True, short_clip="even")
    failing = set()
    for index in range(len(rows)):
        try:
            even.load_clip(rows[index])
        except InputError:
            failing.add(rows[index]["num_frames"])
    assert failing == {5, 16, 9, 12, 6}


def test_paper_on_cpu_runs_float32_says_so_in_one_line_and_records_its_settings(paper_run):
    result, results = paper_run
    assert (results["paper"], results["dtype"], results["image_reading"]) == (True, "float32", "original")
    lines = [line for line in result.stderr.splitlines() if "--paper" in line]
    assert lines == ["expclip evaluate: --paper on CPU: float32, the original's precision on CPU (float16-mixed "
                     "needs a GPU)"]


def test_no_torchvision_backend_fallback_line_reaches_the_user(paper_run):
    result, _ = paper_run
    # the stub makes transformers try its torchvision backend first; the folder registers only the PIL class
    assert "Requested torchvision backend" not in result.stderr and "[transformers]" not in result.stderr


@pytest.fixture(scope="module")
def affectnet(tmp_path_factory):
    """A fake AffectNet whose first image is stored 48x32 with EXIF orientation 6 (shown rotated, 32x48)."""
    root = tmp_path_factory.mktemp("affectnet-exif")
    source, _ = fake.make_affectnet_csv(root, per_class=1)
    photo = source / "Manually_Annotated_Images" / "2/0001abc.jpg"
    stored = Image.fromarray(np.random.default_rng(7).integers(0, 256, (32, 48, 3), dtype=np.uint8))
    exif = stored.getexif()
    exif[EXIF_ORIENTATION] = 6
    stored.save(photo, exif=exif, quality=95)
    prepare("affectnet-7", source, root / "prepared")
    rows = datasets.load_from_disk(str(root / "prepared"))
    return photo, rows, [rows[i]["id"] for i in range(len(rows))].index(photo.name)


@pytest.mark.parametrize("original_reading", [True, False])
def test_affectnet_box_is_cut_in_the_stored_pixels(affectnet, tiny_expclip_dir, original_reading):
    from expclip.eval.evaluate import BenchmarkPixels

    photo, rows, index = affectnet
    x, y, width, height = rows[index]["box"]
    assert (x, y, width, height) == (2, 3, 20, 24)  # the fake CSV's box
    processor = AutoProcessor.from_pretrained(tiny_expclip_dir).image_processor
    pixels = BenchmarkPixels(rows, processor, 7, video=False, original_reading=original_reading)(index)["pixel_values"]
    with Image.open(photo) as image:
        assert image.getexif()[EXIF_ORIENTATION] == 6 and image.size == (48, 32)
        stored_box = image.crop((x, y, x + width, y + height))
        upright_first = ImageOps.exif_transpose(image).crop((x, y, x + width, y + height))
    face = stored_box.convert("RGB") if original_reading else ImageOps.exif_transpose(stored_box).convert("RGB")
    expected = processor(images=[face], return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(pixels, expected, atol=0, rtol=0)
    wrong_face = processor(images=[upright_first.convert("RGB")], return_tensors="pt")["pixel_values"]
    assert not torch.allclose(pixels, wrong_face, atol=0.1)  # the box cut from the rotated photo: another place


@pytest.mark.parametrize("original_reading, background", [(True, (10, 20, 30)), (False, (255, 255, 255))])
def test_paper_reading_is_a_plain_convert_without_alpha_compositing(tmp_path, original_reading, background):
    from expclip.eval.evaluate import BenchmarkPixels

    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[..., :3] = (10, 20, 30)  # fully transparent
    Image.fromarray(rgba).save(tmp_path / "face.png")
    row = {"id": "face.png", "path": str(tmp_path / "face.png"), "label": 0, "box": []}
    image = BenchmarkPixels([row], None, 7, video=False, original_reading=original_reading).load_face(row)
    assert image.mode == "RGB" and image.getpixel((3, 3)) == background
