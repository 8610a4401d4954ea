"""`expclip predict` and `ExpCLIPPredictor`: results per image, output formats, label and prompt sets, bad options."""

import csv
import fcntl
import io
import itertools
import json
import os
import pty
import select
import shutil
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_command
from PIL import Image

from expclip.inputs import first_line, load_image
from expclip.predictor import ExpCLIPPredictor, collect_items, parse_prompts


def predict(*args, env=None):
    return run_command(sys.executable, "-m", "expclip", "predict", *args, env=env)


@pytest.fixture(scope="module")
def predictor(tiny_expclip_dir):
    return ExpCLIPPredictor.from_pretrained(str(tiny_expclip_dir), device="cpu", batch_size=2)


# ----- Python API ------------------------------------------------------------------------------------------------------


def test_api_predicts_a_path_as_one_plain_dict(predictor, photo_dir):
    result = predictor(str(photo_dir / "astronaut.jpg"))
    assert set(result) == {"source", "kind", "label", "scores"}
    assert result["source"] == str(photo_dir / "astronaut.jpg") and result["kind"] == "image"
    assert list(result["scores"]) == predictor.class_names
    assert result["label"] == max(result["scores"], key=result["scores"].get)
    json.dumps(result)  # plain types only


def test_api_accepts_a_list_of_path_pil_image_and_array(predictor, photo_dir):
    image = Image.open(photo_dir / "coffee.jpg")
    results = predictor([str(photo_dir / "astronaut.jpg"), image, np.asarray(image)])
    assert [r["source"] for r in results] == [str(photo_dir / "astronaut.jpg"), "<PIL image 1>", "<array 2>"]
    assert results[1]["scores"] == pytest.approx(results[2]["scores"], abs=1e-6)


def test_api_scores_are_the_batched_zero_shot_api_softmax(predictor, photo_dir, tiny_expclip_dir):
    from transformers import AutoProcessor

    from modeling_expclip import ExpCLIPModel

    model, processor = ExpCLIPModel.from_pretrained(tiny_expclip_dir), AutoProcessor.from_pretrained(tiny_expclip_dir)
    paths = sorted(photo_dir.iterdir())
    pixel_values = processor.image_processor(images=[load_image(p) for p in paths], return_tensors="pt")["pixel_values"]
    expected = model.classify(pixel_values, model.text_classifier(processor.tokenizer)).softmax(-1)
    got = torch.tensor([[r["scores"][n] for n in predictor.class_names] for r in predictor([str(p) for p in paths])])
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)


def test_api_bfloat16_runs_the_model_in_bfloat16_with_scores_close_to_float32(predictor, photo_dir,
                                                                              tiny_expclip_dir):
    half = ExpCLIPPredictor.from_pretrained(str(tiny_expclip_dir), device="cpu", dtype="bfloat16", batch_size=2)
    assert half.model.dtype == torch.bfloat16 and half.classifier.prompt_embeds.dtype == torch.bfloat16
    paths = [str(p) for p in sorted(photo_dir.iterdir())]
    for full, low in zip(predictor(paths), half(paths)):
        assert sum(low["scores"].values()) == pytest.approx(1, abs=1e-5)
        assert low["scores"] == pytest.approx(full["scores"], abs=2e-2)


def test_api_bad_input_gives_an_error_dict_not_an_exception(predictor, tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    results = predictor([str(tmp_path / "broken.jpg"), str(tmp_path / "absent.png")])
    assert results == [
        {"source": str(tmp_path / "broken.jpg"), "kind": "image", "error": f"{tmp_path / 'broken.jpg'}: not an image PIL can read"},
        {"source": str(tmp_path / "absent.png"), "kind": "error", "error": f"{tmp_path / 'absent.png'}: no such file or directory"},
    ]


class PidRecordingDetector:
    """The real Haar detector, noting (as a file, from whichever process runs it) the process id of each detection."""

    def __init__(self, folder, delay=0.0):
        from expclip.faces import HaarFaceDetector

        self.haar, self.folder, self.delay = HaarFaceDetector(), folder, delay

    def detect(self, image):
        time.sleep(self.delay)
        (self.folder / f"{os.getpid()}-{time.perf_counter_ns()}").touch()
        return self.haar.detect(image)


@pytest.mark.parametrize("faces", [False, True])
def test_worker_processes_give_the_records_of_in_process_reading_in_input_order(tiny_expclip_dir, photo_dir, tmp_path,
                                                                                faces):
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    photos = [str(p) for p in sorted(photo_dir.iterdir())]
    sources = (photos + [str(tmp_path / "broken.jpg"), str(tmp_path / "absent.png")]) * 3  # 15 items, 8 batches
    runs = {}
    for workers in (0, 2):
        predictor = ExpCLIPPredictor.from_pretrained(str(tiny_expclip_dir), device="cpu", batch_size=2,
                                                     workers=workers)
        runs[workers] = predictor(sources, faces=faces)
    assert runs[2] == runs[0]  # every field, scores bit for bit, in input order
    assert [source for source, _ in itertools.groupby(r["source"] for r in runs[2])] == sources
    assert sum("error" in r for r in runs[2]) == 6 and sum(r.get("label") is not None for r in runs[2]) >= 6


def test_faces_are_detected_in_the_worker_processes_not_the_main_one(tiny_expclip_dir, photo_dir, tmp_path):
    (tmp_path / "pids").mkdir()
    predictor = ExpCLIPPredictor.from_pretrained(str(tiny_expclip_dir), device="cpu", batch_size=2, workers=2)
    predictor.detector = PidRecordingDetector(tmp_path / "pids")
    predictor([str(p) for p in sorted(photo_dir.iterdir())] * 4, faces=True)  # 12 photos, 6 batches
    pids = {int(path.name.split("-")[0]) for path in (tmp_path / "pids").iterdir()}
    assert len(list((tmp_path / "pids").iterdir())) == 12
    assert len(pids) == 2 and os.getpid() not in pids


def test_stopping_early_stops_the_worker_processes_before_they_read_everything(tiny_expclip_dir, photo_dir,
                                                                              tmp_path):
    (tmp_path / "pids").mkdir()
    predictor = ExpCLIPPredictor.from_pretrained(str(tiny_expclip_dir), device="cpu", batch_size=2, workers=2)
    predictor.detector = PidRecordingDetector(tmp_path / "pids", delay=0.2)
    results = predictor.predict(collect_items([str(photo_dir / "astronaut.jpg")] * 64), faces=True)
    next(results)
    results.close()  # batch 1 is done, a few batches are read ahead (2 per worker): the rest is never read
    reads = len(list((tmp_path / "pids").iterdir()))
    time.sleep(1.0)
    assert 2 <= reads < 32 and len(list((tmp_path / "pids").iterdir())) == reads
    pids = {int(path.name.split("-")[0]) for path in (tmp_path / "pids").iterdir()}
    assert not any(os.path.exists(f"/proc/{pid}") and open(f"/proc/{pid}/stat").read().split()[2] != "Z"
                   for pid in pids)


def test_api_feeds_the_model_the_exif_rotated_image(predictor, tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (24, 40, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 8  # orientation: rotate 90 degrees counter-clockwise to display
    Image.fromarray(pixels).save(tmp_path / "rotated.png", exif=exif)
    fed = predictor.pixel_values([load_image(tmp_path / "rotated.png")])
    upright = predictor.pixel_values([Image.fromarray(np.ascontiguousarray(np.rot90(pixels, k=1)))])
    sideways = predictor.pixel_values([Image.fromarray(pixels)])
    torch.testing.assert_close(fed, upright)
    assert not torch.allclose(fed, sideways)


def test_api_custom_labels_and_templates_change_the_label_set(tiny_expclip_dir, photo_dir):
    custom = ExpCLIPPredictor.from_pretrained(
        str(tiny_expclip_dir), device="cpu", labels=["joy", "calm"], prompts=["a face full of {}.", "{}"])
    result = custom(str(photo_dir / "astronaut.jpg"))
    assert list(result["scores"]) == ["joy", "calm"]
    assert custom.classifier.prompts == [["a face full of joy.", "joy"], ["a face full of calm.", "calm"]]


def test_api_refuses_bad_labels_before_loading_anything():
    with pytest.raises(ValueError, match="duplicate labels: joy"):
        ExpCLIPPredictor.from_pretrained("/nonexistent/model", labels=["joy", "calm", "joy"])


@pytest.mark.parametrize("error, expected", [
    (OSError("cannot identify\n  at line 3"), "cannot identify"),
    (OSError(), "OSError"),
    (ValueError("   "), "ValueError"),
])
def test_error_messages_are_cut_to_their_first_line_or_named_by_type(error, expected):
    assert first_line(error) == expected


def test_prompts_option_names_a_set_or_lists_templates():
    assert parse_prompts("type5-templates") == "type5-templates"
    assert parse_prompts("a photo of {}. | {} face") == ["a photo of {}.", "{} face"]


# ----- command line (issue 2 acceptance) -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def folder_run(photo_dir, tiny_expclip_dir):
    return predict(photo_dir, "--model", tiny_expclip_dir)


def test_folder_of_three_photos_gives_three_table_rows_and_exit_0(folder_run, photo_dir):
    assert folder_run.returncode == 0, folder_run.stderr
    lines = folder_run.stdout.splitlines()
    assert lines[0].split()[:3] == ["item", "label", "happiness"]
    assert [line.split("  ")[0].strip() for line in lines[1:]] == [
        str(photo_dir / name) for name in ("astronaut.jpg", "coffee.jpg", "lfw face.png")]
    assert folder_run.stderr.strip().splitlines()[-1] == "expclip predict: 3 inputs: 3 predictions, 0 failed"


@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory, photo_dir, tiny_expclip_dir):
    folder = tmp_path_factory.mktemp("mixed")
    (folder / "notes.txt").write_text("not an image")
    jpeg = (photo_dir / "astronaut.jpg").read_bytes()
    (folder / "corrupt.jpg").write_bytes(jpeg[: len(jpeg) // 3])
    output = folder / "results.csv"
    result = predict(photo_dir, folder / "missing.jpg", folder / "notes.txt", folder / "corrupt.jpg",
                     "--model", tiny_expclip_dir, "--format", "csv", "--output", output)
    return result, list(csv.DictReader(io.StringIO(output.read_text(encoding="utf-8"))))


def test_bad_items_are_reported_by_name_in_one_line_each(mixed_run):
    result, _ = mixed_run
    skipped = [line for line in result.stderr.splitlines() if line.startswith("expclip predict: skipped")]
    assert len(skipped) == 3
    assert "missing.jpg: no such file or directory" in skipped[0]
    assert "notes.txt: not an image PIL can read" in skipped[1]
    assert "corrupt.jpg: corrupt or truncated image" in skipped[2]


def test_bad_items_do_not_stop_the_good_ones_and_exit_is_non_zero(mixed_run):
    result, rows = mixed_run
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert [row["label"] != "" for row in rows] == [True, True, True, False, False, False]
    assert result.stderr.strip().splitlines()[-1].startswith("expclip predict: 6 inputs: 3 predictions, 3 failed")


def test_csv_output_has_one_column_per_class_the_error_column_and_the_track_columns(mixed_run):
    _, rows = mixed_run
    assert list(rows[0])[:8] == ["source", "kind", "face", "x", "y", "w", "h", "label"]
    assert list(rows[0])[8:] == ["happiness", "sadness", "neutral", "anger", "surprise", "disgust", "fear", "note",
                                 "error", "track", "start", "end"]
    assert sum(float(rows[0][name]) for name in list(rows[0])[8:15]) == pytest.approx(1.0, abs=1e-5)
    assert rows[3]["error"].endswith("missing.jpg: no such file or directory")


def test_jsonl_with_custom_labels_and_prompt_set(photo_dir, tiny_expclip_dir):
    result = predict(photo_dir / "astronaut.jpg", photo_dir / "coffee.jpg", "--model", tiny_expclip_dir,
                     "--labels", "joy, calm ,anger", "--prompts", "type5", "--format", "jsonl")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(records) == 2 and all(list(r["scores"]) == ["joy", "calm", "anger"] for r in records)


@pytest.mark.parametrize("options, message", [
    (["--labels", ""], "the label list is empty"),
    (["--labels", "joy,calm,joy"], "duplicate labels: joy"),
    (["--prompts", "a photo of a face"], "must hold exactly one '{}' for the class name"),
    (["--faces", "--detector-model", "no-such.onnx"], "no-such.onnx: YuNet model file not found"),
    (["--batch-size", "0"], "--batch-size must be at least 1"),
    (["--workers", "-1"], "--workers must be at least 0"),
])
def test_invalid_option_is_refused_before_any_work_with_exit_2(tmp_path, photo_dir, options, message):
    # The model folder does not exist: refusing the option first proves nothing was loaded.
    result = predict(photo_dir, "--model", tmp_path / "no-model", "--output", tmp_path / "out.json", *options)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("expclip predict: error: ") and message in line
    assert not (tmp_path / "out.json").exists()


def test_unloadable_model_is_one_line_and_exit_1(tmp_path, photo_dir):
    (tmp_path / "not-a-model").mkdir()
    result = predict(photo_dir, "--model", tmp_path / "not-a-model")
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1
    # an empty folder is named for what it is (issue 17), not a loader's "Unrecognized processing class"
    assert result.stderr == f"expclip predict: error: {tmp_path / 'not-a-model'}: not an Exp-CLIP model folder (an empty folder)\n"


def test_dtype_option_runs_in_bfloat16_and_refuses_an_unknown_precision(tmp_path, photo_dir, tiny_expclip_dir):
    result = predict(photo_dir, "--model", tiny_expclip_dir, "--dtype", "bfloat16", "--format", "json")
    assert result.returncode == 0, result.stderr
    assert [r["label"] is not None for r in json.loads(result.stdout)] == [True] * 3
    refused = predict(photo_dir, "--model", tmp_path / "no-model", "--dtype", "float8")
    assert refused.returncode == 2 and "invalid choice: 'float8'" in refused.stderr


def read_terminal(master: int, until: bytes | None, seconds: float) -> bytes:
    """What a command wrote to the pseudo-terminal `master`, up to `until` (or to its end) or `seconds`."""
    seen, deadline = b"", time.monotonic() + seconds
    while time.monotonic() < deadline and (until is None or until not in seen):
        if select.select([master], [], [], 0.1)[0]:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # the command closed the terminal
                break
            if not chunk:
                break
            seen += chunk
    return seen


def test_ctrl_c_at_the_progress_bar_stops_with_one_line_and_status_130(tmp_path, tiny_expclip_dir):
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(3000):
        Image.fromarray(np.full((8, 8, 3), i % 256, np.uint8)).save(folder / f"{i:04d}.png")
    master, terminal = pty.openpty()  # stderr on an 80-column terminal, as for a user: the progress bar shows
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    command = [sys.executable, "-m", "expclip", "predict", str(folder), "--model", str(tiny_expclip_dir)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=terminal)
    os.close(terminal)
    assert b"/3000" in read_terminal(master, b"/3000", 120)  # predicting has begun
    process.send_signal(signal.SIGINT)
    rest = read_terminal(master, None, 60).decode(errors="replace")
    # 130, or death by SIGINT (a shell's $? is 130 for both): CPython exits that way when Ctrl-C lands inside an
    # exec() of generated code (a dataclass being built), even though the command caught the KeyboardInterrupt.
    assert process.wait(timeout=60) in (130, -signal.SIGINT)
    os.close(master)
    assert rest.strip().splitlines()[-1] == "expclip predict: interrupted" and "Traceback" not in rest


def test_unknown_device_is_refused_with_exit_2(tmp_path, photo_dir):
    result = predict(photo_dir, "--model", tmp_path / "no-model", "--device", "tpu")
    assert result.returncode == 2
    assert result.stderr.strip() == "expclip predict: error: unknown device 'tpu'; use auto, cpu or cuda"


def test_default_model_offline_says_what_could_not_be_fetched_in_one_line(tmp_path, photo_dir):
    result = predict(photo_dir, env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")})
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("expclip predict: error: expclip-l14: not in the cache") and "--model" in line


def test_debug_shows_the_traceback_of_a_bad_item(tmp_path, tiny_expclip_dir):
    (tmp_path / "broken.png").write_text("not a png")
    result = predict(tmp_path / "broken.png", "--model", tiny_expclip_dir, "--debug")
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "UnidentifiedImageError" in result.stderr
    assert "expclip predict: skipped " in result.stderr


def test_prompt_file_replaces_a_class_prompts(tmp_path, photo_dir, tiny_expclip_dir):
    """'joy' given happiness's type3 prompt scores exactly as the label 'happiness' with the type3 template."""
    prompt_file = tmp_path / "prompts.json"
    prompt_file.write_text(json.dumps({"joy": ["a photo of a face with an expression of happiness."]}))
    by_file = predict(photo_dir, "--model", tiny_expclip_dir, "--labels", "joy,sadness", "--prompts", "type3",
                      "--prompt-file", prompt_file, "--format", "json")
    by_name = predict(photo_dir, "--model", tiny_expclip_dir, "--labels", "happiness,sadness", "--prompts", "type3",
                      "--format", "json")
    without = predict(photo_dir, "--model", tiny_expclip_dir, "--labels", "joy,sadness", "--prompts", "type3",
                      "--format", "json")
    assert by_file.returncode == by_name.returncode == without.returncode == 0, by_file.stderr
    file_scores = [r["scores"]["joy"] for r in json.loads(by_file.stdout)]
    assert file_scores == pytest.approx([r["scores"]["happiness"] for r in json.loads(by_name.stdout)], abs=1e-6)
    assert file_scores != pytest.approx([r["scores"]["joy"] for r in json.loads(without.stdout)], abs=1e-6)


def test_model_prompt_overrides_are_honoured(tmp_path, photo_dir, tiny_expclip_dir):
    model = Path(shutil.copytree(tiny_expclip_dir, tmp_path / "model"))
    config = json.loads((model / "config.json").read_text())
    config["prompt_overrides"] = {"joy": ["a photo of a face with an expression of happiness."]}
    (model / "config.json").write_text(json.dumps(config))
    by_config = predict(photo_dir, "--model", model, "--labels", "joy,sadness", "--format", "json")
    by_name = predict(photo_dir, "--model", tiny_expclip_dir, "--labels", "happiness,sadness", "--format", "json")
    assert by_config.returncode == by_name.returncode == 0, by_config.stderr
    assert [r["scores"]["joy"] for r in json.loads(by_config.stdout)] == pytest.approx(
        [r["scores"]["happiness"] for r in json.loads(by_name.stdout)], abs=1e-6)


@pytest.mark.parametrize("labels, content, message", [
    (["--labels", "joy,calm"], '{"anger": ["an angry face."]}', "'anger' not in the label set"),
    ([], '{"boredom": ["a bored face."]}', "'boredom' not in the label set"),  # the model's own 7 labels
    (["--labels", "joy,calm"], '{"joy": []}', "class 'joy' needs a non-empty list of prompts"),
    (["--labels", "joy,calm"], "{oops", "not a JSON prompt file"),
])
def test_bad_prompt_file_is_one_line_and_exit_2(tmp_path, photo_dir, tiny_expclip_dir, labels, content, message):
    prompt_file = tmp_path / "prompts.json"
    prompt_file.write_text(content)
    result = predict(photo_dir, "--model", tiny_expclip_dir, *labels, "--prompt-file", prompt_file,
                     "--output", tmp_path / "out.json")
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"expclip predict: error: {prompt_file}: ") and message in line
    assert not (tmp_path / "out.json").exists()


def test_original_mixed_precision_scores_are_within_1e_2_of_float32(photo_dir, tiny_expclip_dir):
    mixed = predict(photo_dir, "--model", tiny_expclip_dir, "--dtype", "float16-mixed", "--format", "json")
    full = predict(photo_dir, "--model", tiny_expclip_dir, "--format", "json")
    assert mixed.returncode == full.returncode == 0, mixed.stderr
    for a, b in zip(json.loads(mixed.stdout), json.loads(full.stdout)):
        assert a["source"] == b["source"]
        assert max(abs(a["scores"][k] - b["scores"][k]) for k in b["scores"]) < 1e-2
