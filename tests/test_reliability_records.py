"""Issue 17: no garbage answers and no tracebacks from the predictor. Blank images get a note instead of a label,
objects that are not images get one-line error records, a head that cannot tell classes apart is refused or noted,
YuNet's non-finite boxes are dropped, and `--workers 0 / 1 / 4` give identical records over the README's input table."""

import json
import sys

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT, one_line_error, run_command
from PIL import Image

EXPCLIP = [sys.executable, "-m", "expclip"]
YUNET_FILE = REPO_ROOT.parent / "shared" / "models" / "face_detection_yunet_2026may.onnx"


@pytest.fixture(scope="module")
def predictor(tiny_expclip_dir):
    from expclip import ExpCLIPPredictor

    return ExpCLIPPredictor.from_pretrained(str(tiny_expclip_dir), device="cpu", detector=None, workers=0)


@pytest.fixture(scope="module")
def readme_inputs(tmp_path_factory, photo_dir) -> list:
    """One file (or path) per row of the README's input table, a constant float TIFF and blank images included."""
    import cv2
    from skimage import data

    folder = tmp_path_factory.mktemp("readme inputs")
    astronaut = Image.fromarray(data.astronaut())
    astronaut.resize((96, 96)).save(folder / "photo.jpg")
    (folder / "empty folder").mkdir()
    (folder / "zero.jpg").write_bytes(b"")
    (folder / "not an image.jpg").write_text("plain text")
    (folder / "truncated.jpg").write_bytes((photo_dir / "coffee.jpg").read_bytes()[:3000])
    astronaut.resize((48, 40)).convert("CMYK").save(folder / "cmyk.jpg")
    Image.fromarray((np.arange(48 * 40).reshape(40, 48) * 30).astype(np.uint16)).save(folder / "sixteen.png")
    astronaut.resize((40, 40)).convert("RGBA").save(folder / "rgba.png")
    astronaut.resize((40, 40)).convert("P").save(folder / "palette.png")
    frames = [astronaut.resize((40, 40)), astronaut.resize((40, 40)).rotate(90)]
    frames[0].save(folder / "animated.gif", save_all=True, append_images=frames[1:])
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    astronaut.resize((60, 40)).save(folder / "rotated.jpg", exif=exif)
    Image.new("RGB", (1, 1), (200, 10, 10)).save(folder / "one pixel.png")
    astronaut.resize((40, 40)).save(folder / "名前 with spaces.png")
    Image.fromarray(np.linspace(0, 1, 40 * 40, dtype=np.float32).reshape(40, 40)).save(folder / "float.tif")
    Image.fromarray(np.linspace(-5000, 70000, 1600).astype(np.int32).reshape(40, 40)).save(folder / "int32.tif")
    nan = np.zeros((8, 8), np.float32)
    nan[2, 2] = np.nan
    Image.fromarray(nan).save(folder / "nan.tif")
    Image.fromarray(np.full((64, 64), 0.5, np.float32)).save(folder / "constant.tif")  # the float TIFF
    Image.new("RGB", (32, 32), (0, 0, 0)).save(folder / "black.png")
    Image.fromarray(np.full((20, 20, 3), 127, np.uint8) + np.eye(20, dtype=np.uint8)[..., None]).save(
        folder / "almost gray.png")
    writer = cv2.VideoWriter(str(folder / "no frames.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10, (64, 48))
    writer.release()
    return [folder / "photo.jpg", folder / "missing.jpg", folder / "empty folder", folder / "zero.jpg",
            folder / "not an image.jpg", folder / "truncated.jpg", folder / "cmyk.jpg", folder / "sixteen.png",
            folder / "rgba.png", folder / "palette.png", folder / "animated.gif", folder / "rotated.jpg",
            folder / "one pixel.png", folder / "名前 with spaces.png", folder / "float.tif", folder / "int32.tif",
            folder / "nan.tif", "https://example.com/face.jpg", folder / "constant.tif", folder / "black.png",
            folder / "almost gray.png", folder / "no frames.mp4"]


# ----- blank images -------------------------------------------------------------------------------------------------


def test_predict_gives_constant_images_a_note_and_no_label(tiny_expclip_dir, tmp_path):
    for name, value in (("black", 0), ("white", 255), ("gray", 128)):
        Image.new("RGB", (40, 30), (value,) * 3).save(tmp_path / f"{name}.png")
    result = run_command(*EXPCLIP, "predict", *(tmp_path / f"{n}.png" for n in ("black", "white", "gray")),
                         "--model", tiny_expclip_dir, "--format", "json", "--workers", "0")
    assert result.returncode == 0, result.stderr
    records = json.loads(result.stdout)
    assert [r["note"] for r in records] == ["blank image (constant pixels)"] * 3
    assert all(r["label"] is None and r["scores"] == {} for r in records)


def test_the_api_gives_an_almost_constant_image_a_note_and_a_real_photo_a_label(predictor, photo_dir):
    almost = np.full((20, 20, 3), 127, np.uint8) + np.eye(20, dtype=np.uint8)[..., None]  # values 127 and 128
    blank, photo = predictor([almost, str(photo_dir / "astronaut.jpg")])
    assert blank["label"] is None and blank["note"] == "blank image (almost constant pixels)"
    assert photo["label"] in predictor.class_names and "note" not in photo


# ----- objects that are not images --------------------------------------------------------------------------------


@pytest.mark.parametrize("source, reason", [
    (np.zeros((0, 0, 3), np.uint8), "not an image"),
    (Image.new("RGB", (0, 0)), "empty, not an image"),
    (np.arange(12, dtype=np.uint8), "not an image"),
    (None, "not an image"),
    (7, "not an image"),
    (b"\x89PNG", "not an image"),
    ({"path": "face.jpg"}, "not an image"),
])
def test_a_non_image_object_is_a_one_line_error_record(predictor, source, reason):
    record = predictor(source)
    assert set(record) == {"source", "kind", "error"} and reason in record["error"]
    assert "\n" not in record["error"] and "label" not in record


def test_bad_objects_do_not_stop_the_rest_of_a_list(predictor, photo_dir):
    records = predictor([None, np.zeros((0, 0, 3), np.uint8), str(photo_dir / "astronaut.jpg"), 3.5])
    assert [bool(r.get("error")) for r in records] == [True, True, False, True]
    assert records[2]["label"] in predictor.class_names


# ----- heads that cannot tell the classes apart ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def zero_head_dir(tmp_path_factory, tiny_expclip_dir):
    from safetensors.torch import load_file, save_file

    folder = tmp_path_factory.mktemp("zero-head")
    for path in tiny_expclip_dir.iterdir():
        if path.is_file():
            (folder / path.name).write_bytes(path.read_bytes())
    weights = load_file(folder / "model.safetensors")
    weights["projection.weight"] = torch.zeros_like(weights["projection.weight"])
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    return folder


def test_predict_refuses_an_all_zero_head_in_one_line(zero_head_dir, photo_dir):
    result = run_command(*EXPCLIP, "predict", photo_dir / "astronaut.jpg", "--model", zero_head_dir)
    assert "the projection head is all zeros; refused" in one_line_error(result)


def test_export_refuses_an_all_zero_head_in_one_line(zero_head_dir, tmp_path, capsys):
    from expclip.cli import main

    assert main(["export", str(zero_head_dir), "--output", str(tmp_path / "out")]) == 1
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "the projection head is all zeros; refused" in line and not (tmp_path / "out").exists()


def test_convert_refuses_an_all_zero_released_head(tmp_path, tiny_clip_dir, capsys):
    from tiny_models import CLIP_EMBED_DIM

    from expclip.cli import main

    torch.save({"mlp.weight": torch.zeros(24, CLIP_EMBED_DIM)}, tmp_path / "zero.pth")
    assert main(["convert", str(tmp_path / "zero.pth"), "--clip", str(tiny_clip_dir), "--output",
                 str(tmp_path / "out")]) == 1
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "'mlp.weight' is all zeros; refused" in line and not (tmp_path / "out").exists()


def test_uniform_scores_get_a_note_instead_of_the_first_label(tiny_expclip_dir, photo_dir):
    from transformers import AutoProcessor

    from expclip import ExpCLIPPredictor
    from modeling_expclip import ExpCLIPModel

    model = ExpCLIPModel.from_pretrained(str(tiny_expclip_dir))
    with torch.no_grad():
        model.projection.weight.zero_()  # built in memory, past from_pretrained's refusal
    predictor = ExpCLIPPredictor(model, AutoProcessor.from_pretrained(str(tiny_expclip_dir)), workers=0)
    record = predictor(str(photo_dir / "astronaut.jpg"))
    assert record["label"] is None and record["note"].startswith("uniform scores")
    assert max(record["scores"].values()) - min(record["scores"].values()) <= 1e-6


# ----- face detectors on degenerate images ---------------------------------------------------------------------------


def test_yunet_rows_with_non_finite_or_empty_boxes_are_dropped():
    from expclip.faces import Box, yunet_boxes

    rows = np.array([[np.inf, 5, 10, 10] + [0] * 10 + [0.9],
                     [5, np.nan, 10, 10] + [0] * 10 + [0.9],
                     [2, 3, 10, 12] + [0] * 10 + [0.8],
                     [50, 50, 10, 10] + [0] * 10 + [0.9],  # outside a 40x40 image
                     [1, 1, -np.inf, 4] + [0] * 10 + [0.9]], np.float32)
    assert yunet_boxes(rows, 40, 40) == [Box(2, 3, 10, 12, pytest.approx(0.8))]


@pytest.mark.parametrize("shape", [(1, 20000, 3), (20000, 1, 3), (64, 64, 3)])
def test_detectors_survive_strips_and_constant_images(shape):
    from expclip.faces import HaarFaceDetector, YuNetFaceDetector

    image = np.full(shape, 128, np.uint8)
    for detector in (YuNetFaceDetector(str(YUNET_FILE)), HaarFaceDetector()):
        for _ in range(3):
            boxes = detector.detect(image)
            assert all(box.w > 0 and box.h > 0 for box in boxes)


def test_annotate_with_faces_on_a_20000_by_1_image_is_one_record_not_a_traceback(tiny_expclip_dir, tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (1, 20000, 3), dtype=np.uint8)).save(tmp_path / "strip.png")
    result = run_command(*EXPCLIP, "predict", tmp_path / "strip.png", "--model", tiny_expclip_dir, "--faces",
                         "--detector-model", YUNET_FILE, "--annotate", tmp_path / "annotated", "--format", "json",
                         "--workers", "0")
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    [record] = json.loads(result.stdout)
    assert record["note"] == "no face found"


# ----- worker counts -------------------------------------------------------------------------------------------------


def test_workers_0_1_4_give_identical_records_over_the_readme_inputs_5_times(tiny_expclip_dir, readme_inputs):
    from expclip import ExpCLIPPredictor
    from expclip.faces import load_detector

    predictor = ExpCLIPPredictor.from_pretrained(str(tiny_expclip_dir), device="cpu", detector="yunet",
                                                 detector_model=str(YUNET_FILE), batch_size=4)
    sources = [str(path) for path in readme_inputs]
    runs = []
    for _ in range(5):
        for workers in (0, 1, 4):
            predictor.workers = workers
            runs.append(json.dumps(predictor(sources, faces=True), sort_keys=True))
    assert len(set(runs)) == 1
    records = {r["source"]: r for r in json.loads(runs[0])}
    assert records[str(readme_inputs[18])]["note"] == "blank image (constant pixels)"  # the constant TIFF
    assert "error" in records[str(readme_inputs[16])] and "label" not in records[str(readme_inputs[16])]  # NaN TIFF
    assert records[str(readme_inputs[0])].get("face") == 1 or records[str(readme_inputs[0])]["note"]
    assert isinstance(load_detector("yunet", str(YUNET_FILE)).detect(np.zeros((8, 8, 3), np.uint8)), list)
