"""Users' files are sacred, no confident answer from a broken model or broken pixels, no traceback: each rule through
the command a user would run (real subprocesses), plus the output checks themselves (`expclip.outputs`)."""

import hashlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import EXPCLIP, REPO_ROOT, run_command
from PIL import Image
from safetensors.torch import load_file, save_file
from tiny_models import CLIP_EMBED_DIM

from expclip.inputs import InputError, load_image
from expclip.outputs import MARKER, OutputError, check_output_file, check_output_folder, clear_output, mark_output



def checksums(*folders) -> dict:
    """sha256 of every file under the folders (links not followed)."""
    sums = {}
    for folder in folders:
        for path in sorted(Path(folder).rglob("*")):
            if path.is_file() and not path.is_symlink():
                sums[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return sums


def one_line_error(result) -> str:
    """The run failed with exactly one line on stderr and no traceback; returns that line."""
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


# ----- 1. never write over an input, never into a folder holding files the command did not write ------------------


@pytest.fixture
def workspace(tmp_path, photo_dir, tiny_clip_dir):
    """A user's current folder: notes, a photo, a folder of photos, a release, a prepared-data folder, a CLIP
    checkpoint and a head file, plus an unrelated folder."""
    work = tmp_path / "work"
    shutil.copytree(photo_dir, work / "photos")
    shutil.copy(photo_dir / "astronaut.jpg", work / "photo.jpg")
    (work / "notes.txt").write_text("my notes\n")
    (work / "unrelated").mkdir()
    (work / "unrelated" / "keep.txt").write_text("keep me\n")
    (work / "release" / "EmoLabel").mkdir(parents=True)
    (work / "release" / "EmoLabel" / "list_patition_label.txt").write_text("test_0001.jpg 1\n")
    (work / "data").mkdir()
    (work / "data" / "state.json").write_text("{}\n")
    shutil.copytree(tiny_clip_dir, work / "clip")
    torch.save({"mlp.weight": torch.randn(24, CLIP_EMBED_DIM)}, work / "head.pth")
    return work


# command -> (arguments with TARGET where the output goes, the input that TARGET replaces in the "input" case)
WRITERS = {
    "convert": (["convert", "head.pth", "--clip", "clip", "--output", "TARGET", "--overwrite"], "clip"),
    "predict --output": (["predict", "photo.jpg", "--model", "clip", "--output", "TARGET", "--overwrite"],
                         "photo.jpg"),
    "predict --annotate": (["predict", "photos", "--faces", "--model", "clip", "--annotate", "TARGET"], "photos"),
    "predict --timeline-dir": (["predict", "photos", "--model", "clip", "--timeline", "--timeline-dir", "TARGET"],
                               "photos"),
    "prepare": (["prepare", "--benchmark", "raf-db", "--source", "release", "--output", "TARGET", "--overwrite"],
                "release"),
    "evaluate": (["evaluate", "--benchmark", "raf-db", "--data", "data", "--model", "clip", "--output", "TARGET"],
                 "data"),
    "train": (["TRAIN", "--train_dir", "photos", "--output_dir", "TARGET", "--overwrite_output_dir"], "photos"),
}


@pytest.mark.parametrize("target", ["an input", "the current folder", "an unrelated folder"])
@pytest.mark.parametrize("writer", list(WRITERS))
def test_no_command_writes_over_an_input_or_a_folder_of_other_files(workspace, writer, target):
    arguments, input_path = WRITERS[writer]
    destination = {"an input": input_path, "the current folder": ".", "an unrelated folder": "unrelated"}[target]
    arguments = [destination if a == "TARGET" else a for a in arguments]
    command = [sys.executable, "-m", "train_expclip"] if arguments[0] == "TRAIN" else [EXPCLIP]
    before = checksums(workspace)
    result = run_command(*command, *arguments[arguments[0] == "TRAIN":], cwd=workspace)
    line = one_line_error(result)
    assert destination in line or str(workspace / destination) in line
    assert checksums(workspace) == before
    assert not list(workspace.rglob(MARKER))


def test_predict_refuses_an_annotate_path_that_is_an_existing_file(workspace):
    before = checksums(workspace)
    result = run_command(EXPCLIP, "predict", "photos", "--model", "clip", "--annotate", "notes.txt", cwd=workspace)
    assert one_line_error(result) == (
        "expclip predict: error: --annotate notes.txt: is a file, not a folder; choose a new or empty folder")
    assert checksums(workspace) == before


def test_the_output_check_refuses_a_folder_inside_an_input_folder_or_holding_an_input(tmp_path):
    (tmp_path / "photos").mkdir()
    with pytest.raises(OutputError, match="inside the input folder"):
        check_output_folder(tmp_path / "photos" / "annotated", "predict", [tmp_path / "photos"], reuse=True)
    with pytest.raises(OutputError, match="holds the input"):
        check_output_folder(tmp_path, "convert", [tmp_path / "photos" / "head.pth"], overwrite=True)
    with pytest.raises(OutputError, match="is an input"):
        check_output_file(tmp_path / "x.jpg", [tmp_path / "x.jpg"], overwrite=True)


def test_overwrite_replaces_only_the_commands_own_earlier_output(tmp_path):
    own = tmp_path / "out"
    (own / "sub").mkdir(parents=True)
    (own / "model.safetensors").write_bytes(b"old")
    (own / "sub" / "a.txt").write_text("old")
    mark_output(own, "convert")
    with pytest.raises(OutputError, match="pass --overwrite"):
        check_output_folder(own, "convert")
    with pytest.raises(OutputError, match="not an earlier output of expclip prepare"):
        check_output_folder(own, "prepare", overwrite=True)
    check_output_folder(own, "convert", overwrite=True)
    (own / "notes.txt").write_text("added by the user")
    with pytest.raises(OutputError, match=r"did not write \(notes.txt\)"):
        check_output_folder(own, "convert", overwrite=True)
    clear_output(own, "convert")  # deletes what the marker lists, nothing else
    assert sorted(p.name for p in own.rglob("*")) == ["notes.txt"]


def test_convert_overwrite_replaces_its_own_output_and_refuses_it_once_a_user_file_is_added(workspace, capsys):
    from expclip.cli import main

    convert = ["convert", str(workspace / "head.pth"), "--clip", str(workspace / "clip"), "--output",
               str(workspace / "model")]
    assert main(convert) == 0
    assert main(convert) == 1 and "pass --overwrite" in capsys.readouterr().err
    assert main(convert + ["--overwrite"]) == 0
    (workspace / "model" / "my-notes.txt").write_text("mine\n")
    before = checksums(workspace)
    refused = run_command(EXPCLIP, *convert, "--overwrite", cwd=workspace)
    assert "did not write (my-notes.txt)" in one_line_error(refused)
    assert checksums(workspace) == before


# ----- 2. no confident answer from a broken model or broken pixels --------------------------------------------------


def test_predict_refuses_a_plain_clip_folder_and_says_how_to_build_an_expclip_model(tiny_clip_dir, photo_dir):
    result = run_command(EXPCLIP, "predict", photo_dir / "astronaut.jpg", "--model", tiny_clip_dir)
    line = one_line_error(result)
    assert "plain CLIP checkpoint, not an Exp-CLIP model" in line and "expclip convert" in line
    assert result.returncode == 1 and result.stdout == ""


def test_loading_refuses_a_folder_missing_its_weights(tmp_path, tiny_expclip_dir):
    from modeling_expclip import ExpCLIPModel

    folder = Path(shutil.copytree(tiny_expclip_dir, tmp_path / "model"))
    (folder / "model.safetensors").unlink()
    with pytest.raises(OSError):  # transformers: no weight file at all
        ExpCLIPModel.from_pretrained(folder)
    weights = load_file(tiny_expclip_dir / "model.safetensors")
    save_file({k: v for k, v in weights.items() if k != "projection.weight"}, folder / "model.safetensors",
              metadata={"format": "pt"})
    with pytest.raises(ValueError, match="incomplete Exp-CLIP model, 1 weight"):
        ExpCLIPModel.from_pretrained(folder)


@pytest.fixture
def nan_model(tmp_path, tiny_expclip_dir):
    folder = Path(shutil.copytree(tiny_expclip_dir, tmp_path / "nan-model"))
    weights = load_file(folder / "model.safetensors")
    weights["projection.weight"][0, 0] = float("nan")
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    return folder


def test_predict_refuses_a_model_whose_head_holds_nan(nan_model, photo_dir):
    result = run_command(EXPCLIP, "predict", photo_dir / "astronaut.jpg", "--model", nan_model, "--format", "json")
    assert "NaN or infinite weights" in one_line_error(result)
    assert result.stdout == ""


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_convert_refuses_a_head_with_non_finite_weights(tmp_path, tiny_clip_dir, value):
    weight = torch.randn(24, CLIP_EMBED_DIM)
    weight[3, 1] = value
    torch.save({"mlp.weight": weight}, tmp_path / "head.pth")
    result = run_command(EXPCLIP, "convert", tmp_path / "head.pth", "--clip", tiny_clip_dir, "--output",
                         tmp_path / "out")
    assert "NaN or infinite values" in one_line_error(result)
    assert not (tmp_path / "out").exists()


def test_float_tiff_in_0_1_is_scaled_not_read_as_black(tmp_path):
    gradient = np.tile(np.linspace(0, 1, 64, dtype=np.float32), (16, 1))
    Image.fromarray(gradient).save(tmp_path / "float.tif")
    pixels = np.asarray(load_image(tmp_path / "float.tif"))[..., 0]
    assert pixels[0, 0] == 0 and pixels[0, -1] == 255 and abs(int(pixels[0, 32]) - 129) <= 1


def test_int32_tiff_with_negative_values_is_stretched_from_its_range(tmp_path):
    ramp = np.tile(np.arange(-1000, 1000, 100, dtype=np.int32), (4, 1))  # -1000 .. 900
    Image.fromarray(ramp).save(tmp_path / "int32.tif")
    pixels = np.asarray(load_image(tmp_path / "int32.tif"))[..., 0]
    assert pixels[0, 0] == 0 and pixels[0, -1] == 255 and len(np.unique(pixels)) == 20


def test_float_tiff_holding_nan_is_refused_in_one_line(tmp_path):
    Image.fromarray(np.full((8, 8), np.nan, dtype=np.float32)).save(tmp_path / "nan.tif")
    with pytest.raises(InputError, match=r"nan.tif: refused, F pixels hold NaN or infinite values"):
        load_image(tmp_path / "nan.tif")


# ----- 3 and 4. one line per problem, the rest goes on ------------------------------------------------------------


@pytest.fixture(scope="module")
def odd_inputs_run(tmp_path_factory, tiny_expclip_dir, photo_dir):
    """One predict run over odd inputs: 16/32-bit and float TIFFs, a NaN TIFF, a URL, a symlinked sub-folder and a
    link looping back up, two photos whose long names collide once annotated."""
    root = tmp_path_factory.mktemp("odd")
    odd = root / "odd"
    odd.mkdir()
    Image.fromarray(np.tile(np.linspace(0, 1, 48, dtype=np.float32), (48, 1))).save(odd / "float.tif")
    Image.fromarray(np.tile(np.arange(-2400, 2400, 100, dtype=np.int32), (48, 1))).save(odd / "int32.tif")
    Image.fromarray(np.full((8, 8), np.nan, dtype=np.float32)).save(odd / "nan.tif")
    (root / "elsewhere").mkdir()
    shutil.copy(photo_dir / "coffee.jpg", root / "elsewhere" / "linked.jpg")
    (odd / "linked").symlink_to(root / "elsewhere", target_is_directory=True)
    (odd / "loop").symlink_to(odd, target_is_directory=True)
    long_name = "x" * 250 + ".jpeg"  # 255 bytes; two of them annotated need a counter: too long unless shortened
    for sub in ("a", "b"):
        (odd / sub).mkdir()
        shutil.copy(photo_dir / "astronaut.jpg", odd / sub / long_name)
    result = run_command(EXPCLIP, "predict", odd, "https://example.com/face.jpg", "--model", tiny_expclip_dir,
                         "--format", "json", "--annotate", root / "annotated", cwd=root)
    return result, json.loads(result.stdout or "[]"), root


def test_bad_items_are_one_line_each_and_the_good_ones_are_classified(odd_inputs_run):
    result, records, _ = odd_inputs_run
    assert result.returncode == 1 and "Traceback" not in result.stderr
    skipped = [line for line in result.stderr.splitlines() if "skipped" in line]
    assert len(skipped) == 2
    assert any("face.jpg: URLs are not read" in line for line in skipped)
    assert any("nan.tif: refused, F pixels hold NaN or infinite values" in line for line in skipped)
    labelled = sorted(Path(r["source"]).name for r in records if r.get("label"))
    assert labelled == ["float.tif", "int32.tif", "linked.jpg", "x" * 250 + ".jpeg", "x" * 250 + ".jpeg"]
    assert result.stderr.strip().splitlines()[-1] == "expclip predict: 7 inputs: 5 predictions, 2 failed"


def test_json_output_has_no_nan(odd_inputs_run):
    result, _, _ = odd_inputs_run
    json.loads(result.stdout, parse_constant=lambda name: pytest.fail(f"{name} in the JSON output"))


def test_symlinked_sub_folders_are_walked_once_without_looping(odd_inputs_run):
    _, records, _ = odd_inputs_run
    sources = [r["source"] for r in records]
    assert sum(s.endswith("linked.jpg") for s in sources) == 1
    assert not any("/loop/" in s for s in sources)


def test_annotated_names_too_long_for_the_file_system_are_shortened_and_kept_apart(odd_inputs_run):
    _, records, root = odd_inputs_run
    written = [Path(r["annotated"]) for r in records if r["source"].endswith(".jpeg")]
    assert len(set(written)) == 2 and all(p.is_file() and len(p.name.encode()) <= 255 for p in written)


@pytest.mark.parametrize("prompts", ["a {} face of a {} person.", "a {name} face."])
def test_prompt_template_without_exactly_one_placeholder_is_one_line(photo_dir, prompts):
    result = run_command(EXPCLIP, "predict", photo_dir, "--model", "unused", "--prompts", prompts)
    assert "must hold exactly one '{}'" in one_line_error(result) and result.returncode == 2


def test_malformed_haar_cascade_is_one_line(tmp_path, photo_dir):
    (tmp_path / "cascade.xml").write_text("<opencv_storage><cascade>")
    result = run_command(EXPCLIP, "predict", photo_dir, "--faces", "--detector", "haar", "--detector-model",
                         tmp_path / "cascade.xml")
    assert one_line_error(result).endswith("cascade.xml: not a readable OpenCV cascade (malformed XML)")


def test_missing_local_model_folder_says_so(photo_dir):
    result = run_command(EXPCLIP, "predict", photo_dir, "--model", "./no-such-folder")
    assert one_line_error(result) == "expclip predict: error: ./no-such-folder: no such model folder"


def test_model_fetch_advice_names_the_python_argument_too(tmp_path, monkeypatch):
    from expclip.models import ModelFetchError, resolve_model

    monkeypatch.setenv("EXPCLIP_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelFetchError, match=r"--model DIR; in Python, the model argument"):
        resolve_model("expclip-b32")


def test_clip_shorter_than_its_samples_counts_distinct_frames():
    from expclip.predict import format_table

    record = {"source": "clip.mp4", "kind": "video", "label": "a", "scores": {"a": 1.0}, "frames": 12,
              "frame_indices": [0, 0, 1, 2, 3, 3, 4, 5, 6, 6, 7, 8, 9, 9, 10, 11]}
    assert "clip.mp4 [clip, 12 of 12 frames]" in format_table([record], ["a"])


def test_short_clip_with_faces_reports_its_frames_and_faces_in_the_table_and_summary(tmp_path, tiny_expclip_dir):
    from skimage import data

    (tmp_path / "clip").mkdir()
    for index in range(12):
        Image.fromarray(data.astronaut()).resize((256, 256)).save(tmp_path / "clip" / f"frame_{index:02d}.png")
    result = run_command(EXPCLIP, "predict", tmp_path / "clip", "--frames", "--faces", "--model", tiny_expclip_dir)
    assert result.returncode == 0, result.stderr
    assert "[clip, 12 of 12 frames]" in result.stdout  # 16 samples of a 12-frame clip repeat frames
    assert result.stderr.strip().splitlines()[-1] == (
        "expclip predict: 1 input: 1 prediction (a face in 16 of 16 sampled clip frames), 0 failed")


@pytest.fixture(scope="module")
def odd_rafdb(tmp_path_factory):
    """A RAF-DB release whose label list has a superscript digit, an Arabic-Indic digit, an image listed twice with
    different labels and one listed twice with the same label, prepared by a real `expclip prepare`."""
    root = tmp_path_factory.mktemp("rafdb")
    release = root / "basic"
    (release / "EmoLabel").mkdir(parents=True)
    (release / "Image" / "aligned").mkdir(parents=True)
    rows = ["test_0001.jpg 5", "test_0002.jpg \u00b2", "test_0003.jpg \u0663", "test_0004.jpg 1", "test_0004.jpg 2",
            "test_0005.jpg 4", "test_0005.jpg 4"]
    (release / "EmoLabel" / "list_patition_label.txt").write_text("\n".join(rows) + "\n", encoding="utf-8")
    for number in range(1, 6):
        Image.new("RGB", (8, 8), (40 * number, 90, 120)).save(release / "Image" / "aligned" /
                                                               f"test_000{number}_aligned.jpg")
    result = run_command(EXPCLIP, "prepare", "--benchmark", "raf-db", "--source", release, "--output", root / "out")
    return result, root / "out"


def test_benchmark_labels_must_be_plain_digits_and_conflicting_duplicates_are_excluded(odd_rafdb):
    result, prepared = odd_rafdb
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    metadata = json.loads((prepared / "expclip_prepare.json").read_text())
    assert metadata["num_items"] == 2  # test_0001 and test_0005 (listed twice, same label: kept once)
    reasons = [entry["reason"] for entry in metadata["excluded"]]
    assert any(r.endswith(":2: label '\u00b2' is outside RAF-DB's 1..7") for r in reasons)
    assert any(r.endswith(":3: label '\u0663' is outside RAF-DB's 1..7") for r in reasons)
    assert any("test_0004.jpg: listed 2 times with different labels" in r and ":4" in r and ":5" in r
               for r in reasons)


def test_evaluate_refuses_a_plain_clip_model_and_writes_no_results(odd_rafdb, tiny_clip_dir, tmp_path):
    _, prepared = odd_rafdb
    result = run_command(EXPCLIP, "evaluate", "--benchmark", "raf-db", "--data", prepared, "--model", tiny_clip_dir,
                         "--output", tmp_path / "results")
    assert "plain CLIP checkpoint, not an Exp-CLIP model" in one_line_error(result)
    assert not (tmp_path / "results").exists()


def test_training_on_images_that_are_all_unreadable_is_one_line_not_an_index_error(tmp_path, tiny_clip_dir,
                                                                                     tiny_blip2_dir):
    (tmp_path / "faces").mkdir()
    for number in range(3):
        (tmp_path / "faces" / f"broken{number}.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    result = run_command(sys.executable, REPO_ROOT / "train_expclip.py", "--train_dir", tmp_path / "faces",
                         "--clip_model_name_or_path", tiny_clip_dir, "--teacher_model_name_or_path", tiny_blip2_dir,
                         "--feature_cache_dir", tmp_path / "cache", "--shard_size", "1", "--global_batch_size", "2",
                         "--output_dir", tmp_path / "out", "--use_cpu", "--disable_tqdm", "true")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "only 0 readable images" in result.stderr.strip().splitlines()[-1]
