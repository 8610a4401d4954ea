"""Videos (issue 5 item 2): a video file and a folder of frames, 16-segment sampling (README: Reproducing the paper), the clip-level
prediction through `get_video_features`, and the `--timeline` CSV + PNG."""

import csv
import json
import sys

import cv2
import numpy as np
import pytest
import torch
from conftest import run_command
from PIL import Image

from modeling_expclip import sample_segment_indices
from expclip.video import Clip

NUM_FRAMES, FPS = 40, 10  # a 4-second clip
GRAY_STEP = 6  # frame i is a flat gray of level 6*i, so a decoded frame tells which frame it is


def write_video(path, num_frames=NUM_FRAMES, fps=FPS, picture=None):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (64, 48))
    for index in range(num_frames):
        frame = np.full((48, 64, 3), GRAY_STEP * index, np.uint8) if picture is None else picture
        writer.write(frame)
    writer.release()
    return path


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("videos")
    write_video(folder / "clip.mp4")
    frames = folder / "frames"
    frames.mkdir()
    for index in reversed(range(20)):  # written out of order: reading must sort by file name
        Image.new("RGB", (40, 30), (GRAY_STEP * index,) * 3).save(frames / f"frame_{index:03d}.png")
    return folder


@pytest.fixture(scope="module")
def video_run(videos, tiny_expclip_dir):
    timeline = videos / "timeline"
    result = run_command(sys.executable, "-m", "expclip", "predict", videos / "clip.mp4", videos / "frames",
                         "--frames", "--timeline", "--timeline-dir", timeline, "--model", tiny_expclip_dir, "--format", "json")
    records = {record["source"].rsplit("/", 1)[-1]: record for record in json.loads(result.stdout or "[]")}
    return result, records, timeline


def test_video_frame_count_and_rate_are_read_by_decoding(videos):
    clip = Clip(videos / "clip.mp4")
    assert (clip.num_frames, clip.fps) == (NUM_FRAMES, FPS)


def test_requested_frames_are_the_frames_at_those_indices(videos):
    indices = [0, 7, 39]
    frames = Clip(videos / "clip.mp4").frames(indices)
    levels = [float(np.asarray(frames[i]).mean()) for i in indices]
    assert levels == pytest.approx([GRAY_STEP * i for i in indices], abs=4)


def test_frame_folder_is_read_in_file_name_order(videos):
    clip = Clip(videos / "frames")
    frames = clip.frames([0, 5, 19])
    assert clip.num_frames == 20 and clip.fps is None
    assert [np.asarray(frames[i])[0, 0, 0] for i in (0, 5, 19)] == [0, 30, 114]


def test_video_run_succeeds(video_run):
    result, records, _ = video_run
    assert result.returncode == 0, result.stderr
    assert set(records) == {"clip.mp4", "frames"}


def test_clip_prediction_uses_the_16_segment_frames(video_run):
    _, records, _ = video_run
    expected = [1, 3, 6, 8, 11, 13, 16, 18, 21, 23, 26, 28, 31, 33, 36, 38]  # int(2.5/2 + 2.5k), README: Reproducing the paper
    assert records["clip.mp4"]["frame_indices"] == expected == sample_segment_indices(NUM_FRAMES)
    assert records["clip.mp4"]["frames"] == NUM_FRAMES
    assert records["frames"]["frame_indices"] == sample_segment_indices(20)


def test_clip_scores_equal_get_video_features_on_the_sampled_frames(video_run, videos, tiny_expclip_dir):
    from transformers import AutoProcessor

    from modeling_expclip import ExpCLIPModel

    _, records, _ = video_run
    capture, decoded = cv2.VideoCapture(str(videos / "clip.mp4")), []
    while True:
        ok, bgr = capture.read()
        if not ok:
            break
        decoded.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    model, processor = ExpCLIPModel.from_pretrained(tiny_expclip_dir), AutoProcessor.from_pretrained(tiny_expclip_dir)
    frames = [decoded[i] for i in sample_segment_indices(len(decoded))]
    pixel_values = processor.image_processor(images=frames, return_tensors="pt")["pixel_values"].unsqueeze(0)
    with torch.no_grad():
        clip_embeds = model.get_video_features(pixel_values)
        logits = model.zero_shot_logits(clip_embeds, model.text_classifier(processor.tokenizer))
    expected = dict(zip(model.config.class_names, logits.softmax(-1)[0].tolist()))
    assert records["clip.mp4"]["scores"] == pytest.approx(expected, abs=1e-5)
    assert records["clip.mp4"]["label"] == max(expected, key=expected.get)


def test_timeline_csv_has_one_row_per_second_of_video(video_run):
    _, records, timeline = video_run
    with open(records["clip.mp4"]["timeline"]["csv"], newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [float(row["time_s"]) for row in rows] == [0.5, 1.5, 2.5, 3.5]
    assert [int(row["frame"]) for row in rows] == [5, 15, 25, 35]
    for row in rows:
        probs = {name: float(row[name]) for name in records["clip.mp4"]["scores"]}
        assert sum(probs.values()) == pytest.approx(1.0, abs=1e-4)
        assert row["label"] == max(probs, key=probs.get)
    assert records["clip.mp4"]["timeline"]["csv"] == str(timeline / "clip.timeline.csv")


def test_frame_folder_timeline_has_one_row_per_frame(video_run):
    _, records, _ = video_run
    with open(records["frames"]["timeline"]["csv"], newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(row["frame"]) for row in rows] == list(range(20))
    assert {row["time_s"] for row in rows} == {""}


def test_timeline_plot_is_a_png_that_opens(video_run):
    _, records, _ = video_run
    for name in ("clip.mp4", "frames"):
        with Image.open(records[name]["timeline"]["png"]) as plot:
            plot.load()
            assert plot.format == "PNG" and plot.size == (1000, 400)


def test_video_with_faces_classifies_the_face_of_each_sampled_frame(tmp_path, tiny_expclip_dir):
    from skimage import data

    from expclip.predictor import ExpCLIPPredictor

    astronaut = cv2.cvtColor(cv2.resize(data.astronaut(), (256, 256)), cv2.COLOR_RGB2BGR)
    writer = cv2.VideoWriter(str(tmp_path / "astronaut.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 5, (256, 256))
    for _ in range(20):
        writer.write(astronaut)
    writer.release()
    predictor = ExpCLIPPredictor.from_pretrained(str(tiny_expclip_dir), device="cpu")
    with_faces = predictor(str(tmp_path / "astronaut.mp4"), faces=True)
    without = predictor(str(tmp_path / "astronaut.mp4"))
    assert with_faces[0]["frames_with_face"] == 16  # every sampled frame shows the face
    assert with_faces[0]["scores"] != pytest.approx(without["scores"], abs=1e-6)
