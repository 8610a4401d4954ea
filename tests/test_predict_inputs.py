"""`expclip predict` on every kind of bad and unusual input (issue 5 item 5), through ONE real CLI run.

The module fixture writes all inputs into one folder (plus a few given on the command line), runs
`expclip predict ... --format json` once, and each test checks the record and the stderr line of its own input.
"""

import json
import struct
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import run_command
from PIL import Image

BAD = {
    "missing.jpg": "no such file or directory",
    "no images": "holds no images or videos",
    "zero bytes.jpg": "empty file (0 bytes)",
    "text.png": "not an image PIL can read",
    "truncated.jpg": "corrupt or truncated image",
    "corrupt.jpg": "not an image PIL can read",
    "bomb.png": "refused, image too large",
    "broken.mp4": "cannot decode video",
    "empty.avi": "video has no frames",
    "notes.txt": "not an image PIL can read",
}
UNUSUAL = ["cmyk.jpg", "sixteen bit.png", "rgba.png", "la.png", "palette.png", "animated.gif", "exif rotated.jpg",
           "visage souriant é.png", "笑顔.jpg"]


def png_claiming_size(width: int, height: int) -> bytes:
    """A tiny PNG file whose header claims `width x height` pixels: a decompression bomb as PIL sees it."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def write_inputs(folder: Path, photo: np.ndarray) -> list[Path]:
    """Every bad and unusual input of issue 5; returns the paths to put on the command line."""
    inputs = folder / "inputs"
    inputs.mkdir()
    rgb = Image.fromarray(photo)
    rgb.save(inputs / "photo.jpg", quality=92)
    jpeg = (inputs / "photo.jpg").read_bytes()
    # invalid
    (inputs / "zero bytes.jpg").write_bytes(b"")
    (inputs / "text.png").write_text("this is not a PNG\n")
    (inputs / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    noise = np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes()
    (inputs / "corrupt.jpg").write_bytes(jpeg[:300] + noise)
    (inputs / "bomb.png").write_bytes(png_claiming_size(30000, 30000))
    (inputs / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + noise)
    writer = cv2.VideoWriter(str(inputs / "empty.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 64))
    writer.release()  # a valid container without a single frame
    writer = cv2.VideoWriter(str(inputs / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for level in range(0, 200, 10):  # a good 20-frame clip among the bad items
        writer.write(np.full((48, 64, 3), level, np.uint8))
    writer.release()
    (folder / "no images").mkdir()
    (folder / "no images" / "readme.md").write_text("nothing to see\n")
    (folder / "notes.txt").write_text("a text file given on the command line\n")
    # unusual but valid
    small = rgb.resize((64, 48))
    small.convert("CMYK").save(inputs / "cmyk.jpg")
    sixteen = (np.asarray(small.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    Image.fromarray(sixteen).save(inputs / "sixteen bit.png")  # mode I;16
    small.convert("RGBA").save(inputs / "rgba.png")
    small.convert("LA").save(inputs / "la.png")
    small.convert("P").save(inputs / "palette.png")
    frames = [small, small.transpose(Image.Transpose.FLIP_LEFT_RIGHT), small.rotate(90)]
    frames[0].save(inputs / "animated.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    with Image.open(inputs / "animated.gif") as gif:
        gif.convert("RGB").save(inputs / "gif first frame.png")  # what the first frame decodes to
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    small.save(inputs / "exif rotated.jpg", exif=exif, quality=95)
    with Image.open(inputs / "exif rotated.jpg") as stored:
        raw = np.asarray(stored.convert("RGB"))  # the pixels as stored, before the rotation
    Image.fromarray(np.ascontiguousarray(np.rot90(raw, k=-1))).save(inputs / "upright by hand.png")
    Image.fromarray(raw).save(inputs / "stored unrotated.png")
    Image.new("RGB", (1, 1), (200, 120, 90)).save(inputs / "one pixel.png")
    small.save(inputs / "visage souriant é.png")
    small.save(inputs / "笑顔.jpg")
    return [inputs, folder / "missing.jpg", folder / "no images", folder / "notes.txt"]


@pytest.fixture(scope="module")
def inputs_run(tmp_path_factory, tiny_expclip_dir):
    from skimage import data

    folder = tmp_path_factory.mktemp("inputs")
    arguments = write_inputs(folder, data.astronaut())
    result = run_command(sys.executable, "-m", "expclip", "predict", *arguments, "--model", tiny_expclip_dir,
                         "--format", "json", "--batch-size", "4", "--workers", "2")
    records = {Path(record["source"]).name: record for record in json.loads(result.stdout)}
    return result, records, arguments


def test_zero_and_two_worker_processes_give_identical_records_and_lines_in_input_order(inputs_run,
                                                                                      tiny_expclip_dir):
    result, _, arguments = inputs_run
    in_process = run_command(sys.executable, "-m", "expclip", "predict", *arguments, "--model", tiny_expclip_dir,
                             "--format", "json", "--batch-size", "4", "--workers", "0")
    assert in_process.returncode == result.returncode == 1
    records = json.loads(result.stdout)
    assert json.loads(in_process.stdout) == records  # every record, every score, in input order
    assert [r["kind"] for r in records if Path(r["source"]).name == "clip.avi"] == ["video"]
    assert in_process.stderr.splitlines() == result.stderr.splitlines()  # one line per bad item, same order


def stderr_line(result, name: str) -> str:
    lines = [line for line in result.stderr.splitlines() if name in line]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_run_exits_non_zero_without_traceback(inputs_run):
    result, _, _ = inputs_run
    assert result.returncode == 1
    assert "Traceback" not in result.stderr


def test_summary_line_counts_inputs_predictions_and_failures(inputs_run):
    result, records, _ = inputs_run
    summary = result.stderr.strip().splitlines()[-1]
    predicted = sum(1 for r in records.values() if r.get("label"))
    assert summary == f"expclip predict: {len(records)} inputs: {predicted} predictions, {len(BAD)} failed"


@pytest.mark.parametrize("name", list(BAD))
def test_bad_input_is_reported_by_name_with_one_line_reason(inputs_run, name):
    result, records, _ = inputs_run
    assert BAD[name] in records[name]["error"]
    assert "label" not in records[name]
    line = stderr_line(result, name)
    assert line.startswith("expclip predict: skipped ") and BAD[name] in line


@pytest.mark.parametrize("name", UNUSUAL + ["photo.jpg"])
def test_unusual_but_valid_input_is_predicted(inputs_run, name):
    _, records, _ = inputs_run
    record = records[name]
    assert "error" not in record
    assert record["label"] in record["scores"]
    assert sum(record["scores"].values()) == pytest.approx(1.0, abs=1e-5)


def test_one_pixel_image_is_a_blank_image_note_not_an_error(inputs_run):
    _, records, _ = inputs_run
    record = records["one pixel.png"]  # one pixel is constant: no face, no expression (issue 17)
    assert "error" not in record and record["label"] is None and record["note"] == "blank image (constant pixels)"


def test_exif_rotated_photo_is_predicted_upright(inputs_run):
    _, records, _ = inputs_run
    rotated, upright = records["exif rotated.jpg"]["scores"], records["upright by hand.png"]["scores"]
    assert rotated == pytest.approx(upright, abs=1e-6)
    assert rotated != pytest.approx(records["stored unrotated.png"]["scores"], abs=1e-6)


def test_animated_gif_is_predicted_from_its_first_frame(inputs_run):
    _, records, _ = inputs_run
    assert records["animated.gif"]["scores"] == pytest.approx(records["gif first frame.png"]["scores"], abs=1e-6)
