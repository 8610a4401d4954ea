"""Issue 17, smaller causes: prompt files (BOM, FIFO, size, `{}`, 77 tokens), named path problems, messages that say
what is wrong, and library noise kept from users."""

import json
import os
import sys
import threading
import warnings

import numpy as np
import pytest
from conftest import run_command
from PIL import Image

EXPCLIP = [sys.executable, "-m", "expclip"]


# ----- --prompt-file ----------------------------------------------------------------------------------------------------


def test_a_prompt_file_with_a_utf8_bom_is_read(tmp_path):
    from expclip.inputs import read_prompt_file

    (tmp_path / "prompts.json").write_bytes(b"\xef\xbb\xbf" + json.dumps({"happy": ["a smiling face."]}).encode())
    assert read_prompt_file(tmp_path / "prompts.json") == {"happy": ["a smiling face."]}


def test_a_braces_pair_in_a_prompt_is_filled_with_its_class_name(tmp_path):
    from expclip.inputs import read_prompt_file

    (tmp_path / "prompts.json").write_text(json.dumps({"happy": ["a photo of a {} face.", "joy"]}))
    assert read_prompt_file(tmp_path / "prompts.json") == {"happy": ["a photo of a happy face.", "joy"]}


def test_a_fifo_as_prompt_file_is_refused_without_waiting(tmp_path):
    from expclip.inputs import InputError, read_prompt_file

    os.mkfifo(tmp_path / "prompts.json")
    outcome = []
    reader = threading.Thread(target=lambda: outcome.append(pytest.raises(InputError, read_prompt_file,
                                                                          tmp_path / "prompts.json")), daemon=True)
    reader.start()
    reader.join(10)
    if reader.is_alive():  # release the blocked open so the thread ends, then fail
        with open(tmp_path / "prompts.json", "w"):
            pass
        pytest.fail("reading a FIFO as a prompt file blocked")
    assert "not a regular file (a FIFO)" in str(outcome[0].value)


def test_a_prompt_file_over_the_size_limit_is_refused(tmp_path):
    from expclip.inputs import PROMPT_FILE_MAX_BYTES, InputError, read_prompt_file

    prompts = ["a photo of a happy face number %d." % i for i in range(PROMPT_FILE_MAX_BYTES // 30)]
    (tmp_path / "prompts.json").write_text(json.dumps({"happy": prompts}))
    with pytest.raises(InputError, match=r"prompt file of [\d,]+ bytes refused \(at most 1,000,000"):
        read_prompt_file(tmp_path / "prompts.json")


def test_a_prompt_over_77_tokens_warns_once_naming_its_class(tmp_path, tiny_expclip_dir, photo_dir):
    labels = json.loads((tiny_expclip_dir / "config.json").read_text())["class_names"]
    long = "a face " * 60
    (tmp_path / "prompts.json").write_text(json.dumps({labels[0]: [long, long + "again"], labels[1]: ["short."]}))
    result = run_command(*EXPCLIP, "predict", photo_dir / "astronaut.jpg", "--model", tiny_expclip_dir,
                         "--prompt-file", tmp_path / "prompts.json", "--workers", "0")
    assert result.returncode == 0, result.stderr
    warned = [line for line in result.stderr.splitlines() if "tokens" in line]
    assert len(warned) == 1 and f"class {labels[0]!r}" in warned[0] and "first 77" in warned[0]


def test_an_unknown_prompt_set_name_says_so_and_lists_the_known_ones(tmp_path, capsys):
    from expclip.cli import main

    assert main(["predict", str(tmp_path), "--prompts", "type9"]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("expclip predict: error: unknown prompt set 'type9'; known: type1, type2, type3")


# ----- inputs that are not regular files -----------------------------------------------------------------------------


def test_a_looping_symlink_and_a_fifo_are_named_for_what_they_are(tmp_path):
    from expclip.inputs import InputError, load_image

    (tmp_path / "loop.jpg").symlink_to(tmp_path / "loop.jpg")
    (tmp_path / "dangling.jpg").symlink_to(tmp_path / "gone.jpg")
    os.mkfifo(tmp_path / "pipe.jpg")
    expected = {"loop.jpg": "symbolic link loop", "dangling.jpg": "broken symbolic link",
                "pipe.jpg": "not a regular file (a FIFO)"}
    for name, reason in expected.items():
        with pytest.raises(InputError) as error:
            load_image(tmp_path / name)
        assert str(error.value).startswith(f"{tmp_path / name}: {reason}")


def test_a_0_byte_frame_in_a_folder_of_frames_is_skipped_and_counted_not_the_clip(tmp_path, tiny_expclip_dir):
    import hashlib

    frames = tmp_path / "frames"
    frames.mkdir()
    for index in range(6):
        Image.new("RGB", (40, 30), (40 * index,) * 3).save(frames / f"frame_{index:03d}.png")
    (frames / "frame_003.png").write_bytes(b"")  # an interrupted extraction
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in frames.iterdir()}
    result = run_command(*EXPCLIP, "predict", frames, "--frames", "--model", tiny_expclip_dir, "--format", "json")
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    [record] = json.loads(result.stdout)
    assert record["kind"] == "video" and record["label"] and "error" not in record
    assert (record["frames"], record["skipped_frames"]) == (5, 1)
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in frames.iterdir()} == before


def test_a_folder_of_frames_that_are_all_0_bytes_is_one_line_naming_it(tmp_path, tiny_expclip_dir):
    frames = tmp_path / "frames"
    frames.mkdir()
    for index in range(3):
        (frames / f"frame_{index}.jpg").write_bytes(b"")
    result = run_command(*EXPCLIP, "predict", frames, "--frames", "--model", tiny_expclip_dir, "--format", "json")
    assert result.returncode == 1 and "Traceback" not in result.stderr  # 1: an input failed
    [line] = [line for line in result.stderr.splitlines() if str(frames) in line]
    assert line.endswith("folder of frames holds no images (3 empty files)")


def test_predict_with_workers_under_a_deep_temp_folder_works_and_leaves_nothing_there(tmp_path, photo_dir,
                                                                                     tiny_expclip_dir):
    # workers hand tensors back through a Unix socket made in the temp folder: its path may be at most 107 bytes
    deep = tmp_path / ("d" * 90)
    deep.mkdir()
    result = run_command(*EXPCLIP, "predict", photo_dir / "astronaut.jpg", "--workers", "1", "--model",
                         tiny_expclip_dir, "--format", "json", env={"TMPDIR": str(deep)}, timeout=120)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert json.loads(result.stdout)[0]["label"]
    assert list(deep.iterdir()) == []


def test_a_newline_in_a_file_name_stays_on_its_table_row():
    from expclip.predict import format_table

    records = [{"source": "two\nlines.jpg", "kind": "image", "label": "joy", "scores": {"joy": 1.0}}]
    table = format_table(records, ["joy"])
    assert len(table.splitlines()) == 2 and "two\\nlines.jpg" in table


# ----- library noise --------------------------------------------------------------------------------------------------


def test_an_image_between_pils_warning_and_error_limits_is_read_without_a_warning(tmp_path, monkeypatch):
    from expclip.inputs import load_image

    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 1600 pixels: over the warning limit, under the error
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_image(tmp_path / "a.png").size == (40, 40)


def test_more_workers_than_cores_gives_no_torch_warning():
    from expclip.inputs import InputPipeline

    workers = (os.cpu_count() or 1) + 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        batches = list(InputPipeline([1, 2, 3], lambda item: {"value": item}, batch_size=2, num_workers=workers))
    assert [prepared.value for batch in batches for prepared in batch.items] == [{"value": i} for i in (1, 2, 3)]


def test_an_evil_pickle_is_refused_in_one_line_without_torch_warnings(tmp_path, tiny_clip_dir):
    import pickle

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    (tmp_path / "evil.pth").write_bytes(pickle.dumps({"mlp.weight": Evil()}, protocol=5))
    result = run_command(*EXPCLIP, "convert", tmp_path / "evil.pth", "--clip", tiny_clip_dir,
                         "--output", tmp_path / "out")
    assert result.returncode == 1 and "Traceback" not in result.stderr and "pwned" not in result.stdout
    [line] = result.stderr.strip().splitlines()
    assert "refused" in line and not (tmp_path / "out").exists()


# ----- messages that say what is wrong -------------------------------------------------------------------------------


def test_an_empty_model_folder_is_named_as_such(tmp_path, photo_dir, capsys):
    from expclip.cli import main

    (tmp_path / "model").mkdir()
    assert main(["predict", str(photo_dir / "astronaut.jpg"), "--model", str(tmp_path / "model")]) == 1
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line == f"expclip predict: error: {tmp_path / 'model'}: not an Exp-CLIP model folder (an empty folder)"


def test_convert_with_a_missing_clip_folder_names_it(tmp_path, capsys):
    import torch

    from expclip.cli import main

    torch.save({"mlp.weight": torch.ones(4, 4)}, tmp_path / "head.pth")
    assert main(["convert", str(tmp_path / "head.pth"), "--clip", "missing/", "--output", str(tmp_path / "o")]) == 1
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line == "expclip convert: missing/: no such folder, and not a Hub id (--clip needs a CLIP model)"


def test_convert_writes_with_the_users_umask(tmp_path, tiny_clip_dir):
    import torch
    from tiny_models import CLIP_EMBED_DIM

    from expclip.models import convert_original_head

    torch.save({"mlp.weight": torch.randn(24, CLIP_EMBED_DIM)}, tmp_path / "head.pth")
    previous = os.umask(0o022)
    try:
        folder = convert_original_head(tmp_path / "head.pth", tiny_clip_dir, tmp_path / "out")
    finally:
        os.umask(previous)
    assert (folder.stat().st_mode & 0o777) == 0o755
    assert (folder / "model.safetensors").stat().st_mode & 0o777 == 0o644


@pytest.fixture(scope="module")
def broken_models(tmp_path_factory, tiny_expclip_dir):
    """Copies of the tiny model: one without its head's weight, one with a NaN in a CLIP weight."""
    import torch
    from safetensors.torch import load_file, save_file

    folders = {}
    for name in ("no head", "nan clip"):
        folder = tmp_path_factory.mktemp(name.replace(" ", "-"))
        for path in tiny_expclip_dir.iterdir():
            if path.is_file():
                (folder / path.name).write_bytes(path.read_bytes())
        weights = load_file(folder / "model.safetensors")
        if name == "no head":
            weights.pop("projection.weight")
        else:
            key = next(k for k in weights if k.startswith("clip.vision_model") and k.endswith("weight"))
            weights[key] = weights[key].clone()
            weights[key].view(-1)[0] = float("nan")
        save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
        folders[name] = folder
    return folders


def test_export_of_a_model_without_its_head_is_one_line_without_transformers_load_report(broken_models, tmp_path,
                                                                                          capsys):
    from expclip.cli import main

    assert main(["export", str(broken_models["no head"]), "--output", str(tmp_path / "out")]) == 1
    captured = capsys.readouterr()
    [line] = captured.err.strip().splitlines()
    assert "1 weight(s) missing from its files (projection.weight)" in line and "LOAD REPORT" not in captured.out


def test_export_names_a_nan_in_the_clip_weights_instead_of_differs_by_nan(broken_models, tmp_path):
    from expclip.export import ExportError, export_model

    with pytest.raises(ExportError, match=r"the model's weight clip\.vision_model\..* holds NaN or infinite values"):
        export_model(str(broken_models["nan clip"]), tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_app_load_errors_carry_no_class_name(tmp_path, capsys):
    import socket

    from expclip.cli import main

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert main(["app", "--model", str(tmp_path / "missing"), "--port", str(port), "--detector", "haar"]) == 1
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line == f"expclip app: error: {tmp_path / 'missing'}: no such model folder"
