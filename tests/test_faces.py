"""Face detection on real photos (issue 5 item 1): OpenCV's bundled Haar cascade, crops, and `--faces` end to end."""

import json
import sys

import numpy as np
import pytest
from conftest import run_command
from PIL import Image

from expclip.faces import Box, DetectorError, HaarFaceDetector, crop_face, load_detector

ASTRONAUT_FACE = Box(177, 66, 95, 95)  # Eileen Collins' face in skimage's astronaut photo


@pytest.fixture(scope="module")
def detector():
    return HaarFaceDetector()


def test_astronaut_photo_gives_one_face_overlapping_the_true_face(detector):
    from skimage import data

    boxes = detector.detect(data.astronaut())
    assert len(boxes) == 1
    assert boxes[0].iou(ASTRONAUT_FACE) > 0.7


def test_most_upscaled_lfw_faces_are_found(detector):
    from skimage import data

    faces = data.lfw_subset()[:100]  # the first 100 are faces, the last 100 are not
    found = sum(
        bool(detector.detect(np.asarray(Image.fromarray((face * 255).astype(np.uint8)).convert("RGB").resize((100, 100)))))
        for face in faces
    )
    assert found >= 80


def test_lfw_non_face_patches_give_almost_no_face(detector):
    from skimage import data

    patches = data.lfw_subset()[100:]
    found = sum(
        bool(detector.detect(np.asarray(Image.fromarray((patch * 255).astype(np.uint8)).convert("RGB").resize((100, 100)))))
        for patch in patches
    )
    assert found <= 5


@pytest.mark.parametrize("name", ["coffee", "rocket", "chelsea", "hubble_deep_field"])
def test_face_free_photos_give_no_face(detector, name):
    from skimage import data

    assert detector.detect(getattr(data, name)()) == []


def test_large_photo_is_searched_downscaled_and_the_face_box_comes_back_in_full_size(detector):
    from skimage import data

    big = np.asarray(Image.fromarray(data.astronaut()).resize((2048, 2048)))
    boxes = detector.detect(big)
    full_size_face = Box(*(4 * v for v in ASTRONAUT_FACE.as_list()))
    assert boxes[0].iou(full_size_face) > 0.6


def test_faces_come_largest_first(detector):
    from skimage import data

    astronaut = Image.fromarray(data.astronaut())
    canvas = Image.new("RGB", (1024, 512))
    canvas.paste(astronaut, (0, 0))
    canvas.paste(astronaut.resize((256, 256)), (600, 100))
    boxes = detector.detect(np.asarray(canvas))
    assert len(boxes) == 2
    assert boxes[0].w > boxes[1].w and boxes[1].x > 600


def test_crop_is_a_square_centred_on_the_face_with_margin():
    image = Image.fromarray(np.arange(200 * 300 * 3, dtype=np.uint8).reshape(200, 300, 3))
    crop = crop_face(image, Box(100, 50, 40, 60), margin=0.25)
    assert crop.size == (90, 90)
    expected = np.asarray(image)[35:125, 75:165]
    assert np.array_equal(np.asarray(crop), expected)


def test_crop_beyond_the_border_is_padded_black_keeping_the_face_centred():
    image = Image.new("RGB", (50, 50), (255, 255, 255))
    crop = np.asarray(crop_face(image, Box(0, 0, 20, 20), margin=0.5))
    assert crop.shape == (40, 40, 3)
    assert crop[:10, :10].max() == 0 and crop[10:30, 10:30].min() == 255


def test_yunet_with_a_file_that_is_not_onnx_is_refused_with_one_line(tmp_path):
    fake = tmp_path / "yunet.onnx"
    fake.write_text("not a model")
    with pytest.raises(DetectorError, match="not a YuNet ONNX model") as error:
        load_detector("yunet", str(fake))
    assert "\n" not in str(error.value)


@pytest.fixture(scope="module")
def faces_run(tmp_path_factory, tiny_expclip_dir, photo_dir):
    from skimage import data

    folder = tmp_path_factory.mktemp("faces")
    two = Image.new("RGB", (1024, 512))
    two.paste(Image.fromarray(data.astronaut()), (0, 0))
    two.paste(Image.fromarray(data.astronaut()).resize((256, 256)), (600, 100))
    two.save(folder / "two faces.png")
    annotated = folder / "annotated"
    result = run_command(sys.executable, "-m", "expclip", "predict", photo_dir, folder / "two faces.png",
                         "--faces", "--model", tiny_expclip_dir, "--format", "json", "--annotate", annotated)
    return result, json.loads(result.stdout or "[]"), annotated


def test_faces_run_succeeds_and_counts_faces_in_the_summary(faces_run):
    result, _, _ = faces_run
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "expclip predict: 4 inputs: 4 predictions (4 faces, 1 image without a face), 0 failed")


def test_faces_run_reports_the_astronaut_face_box(faces_run):
    _, records, _ = faces_run
    [astronaut] = [r for r in records if r["source"].endswith("astronaut.jpg")]
    assert astronaut["kind"] == "face" and astronaut["face"] == 1  # numbered from 1, as in the table
    assert Box(*astronaut["box"]).iou(ASTRONAUT_FACE) > 0.7
    assert astronaut["label"] == max(astronaut["scores"], key=astronaut["scores"].get)


def test_photo_without_face_is_a_no_face_found_result_not_an_error(faces_run):
    _, records, _ = faces_run
    [coffee] = [r for r in records if r["source"].endswith("coffee.jpg")]
    assert coffee["note"] == "no face found" and coffee["label"] is None and "error" not in coffee


def test_several_faces_give_several_results(faces_run):
    _, records, _ = faces_run
    two = [r for r in records if r["source"].endswith("two faces.png")]
    assert [r["face"] for r in two] == [1, 2]
    assert two[0]["box"] != two[1]["box"]


def test_annotated_images_are_written_with_boxes_drawn(faces_run, photo_dir):
    _, records, annotated = faces_run
    written = sorted(p.name for p in annotated.iterdir() if not p.name.startswith("."))  # the marker is hidden
    assert written == ["astronaut.jpg", "coffee.jpg", "lfw face.jpg", "two faces.jpg"]
    original = np.asarray(Image.open(photo_dir / "astronaut.jpg").convert("RGB"), dtype=np.int16)
    with Image.open(annotated / "astronaut.jpg") as image:
        drawn = np.asarray(image.convert("RGB"), dtype=np.int16)
    assert drawn.shape == original.shape
    x, y, w, h = next(r["box"] for r in records if r["source"].endswith("astronaut.jpg"))
    # the box's left edge is red in the annotated image, not in the photo
    edge = drawn[y + h // 2 - 5 : y + h // 2 + 5, x]
    assert (edge[:, 0] > 200).all() and (edge[:, 1] < 100).all()
    assert not ((original[y + h // 2 - 5 : y + h // 2 + 5, x, 0] > 200) & (original[y + h // 2 - 5 : y + h // 2 + 5, x, 1] < 100)).all()
