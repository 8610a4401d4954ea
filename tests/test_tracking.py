"""People in videos (issue 20): `expclip predict VIDEO --track`, one track per person through the real command on a
real 640x480 video of real faces on known paths (tests/moving_faces.py), per-person timelines, the annotated MP4,
and the tracker itself.

YuNet comes from `../shared/models/` beside the project, as in the app tests.
"""

import csv
import io
import json
import sys

import cv2
import numpy as np
import pytest
from conftest import REPO_ROOT, run_command
from PIL import Image

import moving_faces
from expclip.faces import Box
from expclip.tracking import FaceTracker

YUNET_FILE = REPO_ROOT.parent / "shared" / "models" / "face_detection_yunet_2026may.onnx"
ENV = {"EXPCLIP_YUNET_MODEL": str(YUNET_FILE)}


def predict(*args):
    return run_command(sys.executable, "-m", "expclip", "predict", *args, env=ENV)


@pytest.fixture(scope="module")
def people_video(tmp_path_factory):
    if not YUNET_FILE.is_file():
        pytest.fail(f"{YUNET_FILE} is missing: the tests need shared/models/ beside the project (see its README)")
    return moving_faces.write_moving_faces(tmp_path_factory.mktemp("people") / "three people.mp4")


@pytest.fixture(scope="module")
def tracked(people_video, tiny_expclip_dir, tmp_path_factory):
    """One real run: `expclip predict VIDEO --track --annotate DIR --timeline` with JSON output."""
    out = tmp_path_factory.mktemp("tracked")
    result = predict(people_video, "--track", "--model", tiny_expclip_dir, "--format", "json",
                     "--annotate", out / "annotated", "--timeline", "--timeline-dir", out / "timelines")
    assert result.returncode == 0, result.stderr
    records = json.loads(result.stdout)
    clip = [r for r in records if r["kind"] == "video"]
    tracks = {r["track"]: r for r in records if r["kind"] == "track"}
    return clip[0], tracks, result


def matches(tracks: dict, frame: int, true_box) -> list[int]:
    """The tracks whose box at `frame` overlaps the true box with IoU >= 0.5."""
    found = []
    for number, track in tracks.items():
        if frame in track["frames"]:
            box = track["boxes"][track["frames"].index(frame)]
            if Box(*box).iou(Box(*true_box)) >= 0.5:
                found.append(number)
    return found


def person_tracks(tracks: dict, person: int) -> dict[int, list[int]]:
    """For each sampled frame where `person` is wholly in view: the tracks covering them."""
    frames = sorted({f for t in tracks.values() for f in t["frames"]} | set(range(0, moving_faces.NUM_FRAMES, 2)))
    return {f: matches(tracks, f, moving_faces.true_boxes(f)[person]) for f in frames
            if moving_faces.true_boxes(f)[person] is not None}


# ----- the acceptance video: three people, two crossing, one leaving and coming back ---------------------------------


def test_three_people_give_exactly_three_tracks_numbered_from_1(tracked):
    clip, tracks, _ = tracked
    assert sorted(tracks) == [1, 2, 3] and clip["tracks"] == 3


def test_each_person_is_covered_by_one_track_in_at_least_90_percent_of_their_frames(tracked):
    _, tracks, _ = tracked
    for person in range(3):
        covered = person_tracks(tracks, person)
        best = max(tracks, key=lambda n: sum(n in found for found in covered.values()))
        coverage = sum(best in found for found in covered.values()) / len(covered)
        print(f"person {person + 1}: track {best} covers {coverage:.0%} of {len(covered)} sampled frames")
        assert coverage >= 0.9


def test_no_identity_switch_where_two_people_cross(tracked):
    _, tracks, _ = tracked
    for person in range(3):
        numbers = [found[0] for found in person_tracks(tracks, person).values() if found]
        switches = sum(a != b for a, b in zip(numbers, numbers[1:]))
        assert switches == 0, f"person {person + 1}: tracks {numbers}"
    # the crossing itself: persons 1 and 2 swap sides (left/right) between the clip's start and end
    first, last = moving_faces.true_boxes(0), moving_faces.true_boxes(moving_faces.NUM_FRAMES - 2)
    assert (first[0][0] < first[1][0]) and (last[0][0] > last[1][0])


def test_the_person_who_leaves_and_comes_back_keeps_their_track_number(tracked):
    _, tracks, _ = tracked
    covered = person_tracks(tracks, 2)
    before = {n for f, found in covered.items() if f / moving_faces.FPS < moving_faces.LEAVES for n in found}
    after = {n for f, found in covered.items() if f / moving_faces.FPS > moving_faces.RETURNS for n in found}
    assert len(before) == 1 and before == after
    [number] = before
    frames = tracks[number]["frames"]
    gap = max(b - a for a, b in zip(frames, frames[1:])) / moving_faces.FPS
    assert gap >= moving_faces.RETURNS - moving_faces.LEAVES  # one track across the absence


def test_track_record_holds_times_frames_boxes_and_scores(tracked, tiny_expclip_dir):
    labels = json.loads((tiny_expclip_dir / "config.json").read_text())["class_names"]
    clip, tracks, _ = tracked
    for track in tracks.values():
        assert track["source"] == clip["source"] and len(track["boxes"]) == len(track["frames"])
        assert track["start"] == track["frames"][0] / moving_faces.FPS
        assert track["end"] == track["frames"][-1] / moving_faces.FPS
        assert list(track["scores"]) == labels and track["label"] == max(track["scores"], key=track["scores"].get)
        assert sum(track["scores"].values()) == pytest.approx(1.0, abs=1e-4)
        assert len(track["timeline"]) == len(track["frames"])  # per-frame probabilities, with --timeline


def test_track_scores_average_its_faces_after_the_projection(tracked, people_video, tiny_expclip_dir):
    """The paper's video protocol, per person: every face through CLIP and the head, averaged, then normalised."""
    import torch
    from transformers import AutoProcessor

    from expclip.faces import crop_face
    from modeling_expclip import ExpCLIPModel

    _, tracks, _ = tracked
    track = tracks[1]
    capture, decoded = cv2.VideoCapture(str(people_video)), []
    while (frame := capture.read())[0]:
        decoded.append(Image.fromarray(cv2.cvtColor(frame[1], cv2.COLOR_BGR2RGB)))
    crops = [crop_face(decoded[f], Box(*box)) for f, box in zip(track["frames"], track["boxes"])]
    model, processor = ExpCLIPModel.from_pretrained(tiny_expclip_dir), AutoProcessor.from_pretrained(tiny_expclip_dir)
    pixel_values = processor.image_processor(images=crops, return_tensors="pt")["pixel_values"].unsqueeze(0)
    with torch.no_grad():
        logits = model.zero_shot_logits(model.get_video_features(pixel_values), model.text_classifier(processor.tokenizer))
    expected = dict(zip(model.config.class_names, logits.softmax(-1)[0].tolist()))
    assert track["scores"] == pytest.approx(expected, abs=1e-4)


def test_clip_record_is_the_faces_clip_record_plus_the_track_counts(tracked, people_video, tiny_expclip_dir):
    from expclip.faces import load_detector
    from expclip.predictor import ExpCLIPPredictor

    clip, _, _ = tracked
    predictor = ExpCLIPPredictor.from_pretrained(str(tiny_expclip_dir), device="cpu", detector=None, workers=0)
    predictor.detector = load_detector("yunet", str(YUNET_FILE))
    [faces_only] = predictor(str(people_video), faces=True)
    added = {"tracks", "track_frames", "skipped_frames", "timeline", "track_timeline", "annotated", "annotated_codec"}
    assert {k: v for k, v in clip.items() if k not in added | {"scores"}} == {
        k: v for k, v in faces_only.items() if k not in added | {"scores"}}
    assert clip["scores"] == pytest.approx(faces_only["scores"], abs=1e-6)
    assert clip["track_frames"] == moving_faces.NUM_FRAMES // 2 and clip["skipped_frames"] == 0  # 5 of 10 fps


def test_track_timeline_csv_has_a_track_column_and_a_row_per_tracked_face(tracked):
    clip, tracks, _ = tracked
    with open(clip["track_timeline"]["csv"], newline="") as handle:
        rows = list(csv.DictReader(handle))
    for number, track in tracks.items():
        mine = [row for row in rows if int(row["track"]) == number]
        assert [int(row["frame"]) for row in mine] == track["frames"]
        assert [float(mine[0][name]) for name in track["scores"]] == pytest.approx(track["timeline"][0], abs=1e-5)
    with Image.open(clip["track_timeline"]["png"]) as plot:
        plot.load()
        assert plot.format == "PNG" and plot.size[1] > 3 * 200  # a panel per person


def test_csv_output_gives_each_persons_row_its_track_number_start_and_end(tracked):
    from expclip.predict import format_csv

    clip, tracks, _ = tracked
    rows = list(csv.DictReader(io.StringIO(format_csv([clip, *tracks.values()], list(clip["scores"])))))
    assert [(row["kind"], row["track"]) for row in rows] == [("video", "")] + [("track", str(n)) for n in tracks]
    for row, track in zip(rows[1:], tracks.values()):
        assert (float(row["start"]), float(row["end"]), row["label"]) == (track["start"], track["end"], track["label"])


# ----- the annotated video --------------------------------------------------------------------------------------------


def test_annotated_mp4_has_the_source_frame_count_size_and_fps(tracked, people_video):
    clip, _, _ = tracked
    capture = cv2.VideoCapture(clip["annotated"])
    assert capture.isOpened()
    assert (capture.get(cv2.CAP_PROP_FRAME_WIDTH), capture.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (640, 480)
    assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(moving_faces.FPS)
    count = 0
    while capture.grab():
        count += 1
    assert count == moving_faces.NUM_FRAMES
    fourcc = int(capture.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little").decode().lower()  # FFmpeg's codec tag
    assert fourcc in {"h264": {"avc1", "h264"}, "mp4v": {"mp4v", "fmp4"}}[clip["annotated_codec"]]


def test_annotated_frames_show_each_box_where_the_records_say_in_the_track_colour(tracked, people_video):
    from expclip.video import track_colour

    clip, tracks, _ = tracked
    capture = cv2.VideoCapture(clip["annotated"])
    annotated = []
    while (frame := capture.read())[0]:
        annotated.append(cv2.cvtColor(frame[1], cv2.COLOR_BGR2RGB).astype(int))
    checked = 0
    for number, track in tracks.items():
        for frame, (x, y, w, h) in list(zip(track["frames"], track["boxes"]))[::7]:
            left_edge = annotated[frame][y + h // 4: y + 3 * h // 4, x]  # the box's left side, away from the label
            distance = np.abs(left_edge - np.array(track_colour(number))).sum(-1)
            assert np.median(distance) < 90, (number, frame)
            checked += 1
    assert checked >= 12


def test_annotate_never_writes_over_a_folder_it_did_not_write(people_video, tiny_expclip_dir, tmp_path):
    (tmp_path / "mine.txt").write_text("a user's file")
    result = predict(people_video, "--track", "--model", tiny_expclip_dir, "--annotate", tmp_path)
    assert result.returncode == 2 and "--annotate" in result.stderr and "is not an earlier output" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]


# ----- bad input ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory):
    """A video without faces, a folder where a face shows in one frame only, a folder with a corrupt frame, and a
    folder whose frame size changes mid-stream."""
    from skimage import data

    folder = tmp_path_factory.mktemp("bad-inputs")
    writer = cv2.VideoWriter(str(folder / "empty room.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10, (160, 120))
    for _ in range(20):
        writer.write(np.full((120, 160, 3), 90, np.uint8))
    writer.release()
    face = Image.fromarray(data.astronaut()).crop((150, 40, 300, 190)).resize((100, 100))

    def frame(with_face: bool, size=(200, 150)) -> Image.Image:
        canvas = Image.new("RGB", size, (100, 100, 100))
        if with_face:
            canvas.paste(face, (50, 25))
        return canvas

    for name, faces in (("glimpse", [False, False, True, False, False]), ("corrupt", [True] * 6),
                        ("resized", [True] * 6)):
        (folder / name).mkdir()
        for index, with_face in enumerate(faces):
            size = (220, 150) if name == "resized" and index == 3 else (200, 150)
            frame(with_face, size).save(folder / name / f"frame{index:02d}.png")
    (folder / "corrupt" / "frame02.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 4)
    return folder


@pytest.fixture(scope="module")
def bad_run(bad_inputs, tiny_expclip_dir, tmp_path_factory):
    annotated = tmp_path_factory.mktemp("bad-out") / "annotated"
    result = predict(bad_inputs / "empty room.mp4", bad_inputs / "glimpse", bad_inputs / "corrupt",
                     bad_inputs / "resized", "--frames", "--track", "--model", tiny_expclip_dir, "--format", "json",
                     "--annotate", annotated)
    records = json.loads(result.stdout)
    by_source = {}
    for record in records:
        by_source.setdefault(record["source"].rsplit("/", 1)[-1], []).append(record)
    return result, by_source, annotated


def test_video_without_faces_gives_one_clip_record_saying_so_and_no_tracks(bad_run):
    _, records, _ = bad_run
    [clip] = records["empty room.mp4"]
    assert clip["kind"] == "video" and clip["note"] == "no face found" and clip["tracks"] == 0


def test_face_seen_in_one_frame_is_a_track_of_one_frame(bad_run):
    _, records, _ = bad_run
    clip, track = records["glimpse"]
    assert clip["tracks"] == 1 and track["kind"] == "track" and track["frames"] == [2]
    assert track["start"] == track["end"] and track["label"] in track["scores"]


def test_corrupt_frame_is_skipped_and_counted_and_the_run_goes_on(bad_run):
    result, records, _ = bad_run
    clip, track = records["corrupt"]
    assert clip["skipped_frames"] == 1 and clip["track_frames"] == 6 and "error" not in clip
    assert track["frames"] == [0, 1, 3, 4, 5]


def test_frame_size_change_is_one_line_and_no_broken_video_is_left(bad_run):
    result, records, annotated = bad_run
    error, clip, track = records["resized"]
    assert error["kind"] == "error" and "\n" not in error["error"]
    assert error["error"].startswith(f"{error['source']}: frame 3 is 220x150, not 200x150")
    assert clip["kind"] == "video" and track["kind"] == "track"  # the records stand
    lines = [line for line in result.stderr.splitlines() if "resized" in line]
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert result.returncode == 1
    assert sorted(p.name for p in annotated.iterdir()) == [".expclip-output.json", "corrupt.mp4", "glimpse.mp4"]


# ----- the tracker ----------------------------------------------------------------------------------------------------


def test_tracker_follows_two_crossing_boxes_on_motion_alone():
    tracker = FaceTracker()
    for step in range(11):  # 0.2 s apart; they meet (same box) at step 5
        numbers = tracker.update(step * 0.2, [Box(20 * step, 100, 60, 60), Box(200 - 20 * step, 100, 60, 60)])
        assert numbers == [1, 2], step
    assert len(tracker.tracks) == 2


def test_tracker_reidentifies_returning_people_by_appearance_not_position(photo_dir):
    """Two people leave and come back on each other's side: only their faces tell who is who. The embeddings here
    are their face crops' pixels (a model whose embeddings are meaningful for the same picture)."""
    from skimage import data

    faces = [np.asarray(Image.fromarray(data.astronaut()).crop((177, 66, 272, 161)).resize((16, 16))),
             np.asarray(Image.fromarray((data.lfw_subset()[0] * 255).astype(np.uint8)).convert("RGB").resize((16, 16)))]
    looks = [face.astype(float).ravel() - 128 for face in faces]
    tracker = FaceTracker(memory=5.0)
    assert tracker.update(0.0, [Box(10, 10, 50, 50), Box(300, 10, 50, 50)], looks) == [1, 2]
    tracker.update(0.5, [], None)
    assert tracker.update(3.0, [Box(10, 10, 50, 50), Box(300, 10, 50, 50)], looks[::-1]) == [2, 1]


def test_tracker_forgets_a_person_gone_longer_than_its_memory():
    tracker = FaceTracker(memory=1.0)
    assert tracker.update(0.0, [Box(10, 10, 50, 50)]) == [1]
    assert tracker.update(2.0, [Box(10, 10, 50, 50)]) == [2]
