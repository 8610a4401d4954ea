"""Issue 17: where commands write. `export --overwrite` follows the marker rule of every command (the user's files
next to an earlier export are never deleted), output conflicts are refused before any work, looping symlinks among
the inputs do not stop a run, and a second run writing the same output at once is refused with the first one's PID."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import one_line_error, run_command
from PIL import Image

EXPCLIP = [sys.executable, "-m", "expclip"]


def checksums(folder: Path) -> dict:
    """Every file under `folder` (hidden ones too) -> its SHA-256."""
    return {path.relative_to(folder).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file()}


# ----- export --overwrite: the data-loss case -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def web_app(tmp_path_factory, tiny_expclip_dir):
    """`expclip export M --output .` run inside an empty folder, then the user's web app put next to the model."""
    folder = tmp_path_factory.mktemp("web app")
    result = run_command(*EXPCLIP, "export", tiny_expclip_dir, "--output", ".", cwd=folder)
    assert result.returncode == 0, result.stderr
    (folder / "index.html").write_text("<script src=app.js></script>")
    (folder / "app.js").write_text("// the user's own code")
    return folder


def test_export_into_the_current_empty_folder_works(web_app):
    assert (web_app / "config.json").is_file() and (web_app / "text_classifier.json").is_file()
    marker = json.loads((web_app / ".expclip-output.json").read_text())
    assert marker["command"] == "export" and "index.html" not in marker["files"]
    leftovers = [p.name for p in [*web_app.iterdir(), *web_app.parent.iterdir()] if "partial" in p.name
                 or p.name.endswith(".lock") and p.name != ".lock"]  # pytest's own base folder holds a ".lock"
    assert leftovers == []  # no partial folder or lock left behind


def test_export_overwrite_keeps_the_users_files_next_to_an_earlier_export(web_app, tiny_expclip_dir):
    before = checksums(web_app)
    result = run_command(*EXPCLIP, "export", tiny_expclip_dir, "--output", web_app, "--overwrite")
    line = one_line_error(result)
    assert "holds files expclip export did not write (app.js, index.html)" in line and "--overwrite" not in line
    assert checksums(web_app) == before


def test_export_into_the_input_model_folder_is_refused_before_loading(tiny_expclip_dir, capsys):
    from expclip.cli import main

    before = checksums(tiny_expclip_dir)
    assert main(["export", str(tiny_expclip_dir), "--output", str(tiny_expclip_dir), "--overwrite"]) == 1
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "is an input of this command" in line and "--overwrite" not in line
    assert checksums(tiny_expclip_dir) == before


def test_export_overwrite_of_an_earlier_export_deletes_only_its_files(tmp_path, tiny_expclip_dir):
    from expclip.export import export_model

    export_model(str(tiny_expclip_dir), tmp_path / "out", class_names=["joy", "calm"])
    marked = set(json.loads((tmp_path / "out" / ".expclip-output.json").read_text())["files"])
    (tmp_path / "out" / "README.md").write_text("edited by the user, but a file export wrote")
    export_model(str(tiny_expclip_dir), tmp_path / "out", class_names=["joy", "calm", "boredom"], overwrite=True)
    info = json.loads((tmp_path / "out" / "text_classifier.json").read_text())
    assert info["class_names"] == ["joy", "calm", "boredom"]
    assert set(checksums(tmp_path / "out")) == marked | {".expclip-output.json"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_export_option_errors_come_before_the_model_loads(tmp_path, capsys):
    from expclip.cli import main

    # the model does not exist: only the option can be what the one line is about
    assert main(["export", str(tmp_path / "no model"), "--output", str(tmp_path / "out"), "--prompts", "type9"]) == 1
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("expclip export: unknown prompt set 'type9'; known: type1")
    assert main(["export", str(tmp_path / "no model"), "--output", str(tmp_path / "out"), "--labels", "a,a"]) == 1
    assert "duplicate labels: a" in capsys.readouterr().err


# ----- predict: conflicts refused before any work --------------------------------------------------------------------


@pytest.fixture()
def inputs(tmp_path, photo_dir) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "astronaut.jpg").write_bytes((photo_dir / "astronaut.jpg").read_bytes())
    (tmp_path / "notes.txt").write_text("a file, not a folder")
    return folder


@pytest.mark.parametrize("options, reason", [
    (["--output", "notes.txt/results.csv"], "notes.txt is a file, not a folder"),
    (["--output", "out", "--annotate", "out"], "is the --annotate folder"),
    (["--output", "results.csv", "--timeline", "--timeline-dir", "results.csv"], "is the --timeline-dir folder"),
    (["--output", "photos/new results.csv"], "is a file inside an input folder"),
])
def test_predict_output_conflicts_are_refused_before_any_work(tmp_path, inputs, tiny_expclip_dir, options, reason):
    before = checksums(tmp_path)
    result = run_command(*EXPCLIP, "predict", "photos", "--model", tiny_expclip_dir, *options, cwd=tmp_path)
    line = one_line_error(result)
    assert result.returncode == 2 and reason in line
    assert checksums(tmp_path) == before and sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "photos"]


def test_a_looping_symlink_with_output_options_is_skipped_and_the_rest_predicted(tmp_path, inputs, tiny_expclip_dir):
    (tmp_path / "loop.jpg").symlink_to(tmp_path / "loop.jpg")
    result = run_command(*EXPCLIP, "predict", "loop.jpg", "photos/astronaut.jpg", "--model", tiny_expclip_dir,
                         "--output", "results.json", "--format", "json", "--annotate", "annotated", "--workers", "0",
                         cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "skipped loop.jpg: symbolic link loop" in result.stderr
    loop, photo = json.loads((tmp_path / "results.json").read_text())
    assert loop["error"] == "loop.jpg: symbolic link loop" and photo["label"] and (tmp_path / photo["annotated"]).is_file()


# ----- the lock -------------------------------------------------------------------------------------------------------


@pytest.fixture()
def other_process():
    """A live process that is not this one (its PID holds a lock in the tests)."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield process
    process.kill()
    process.wait()


def test_output_lock_refuses_a_live_holder_with_its_pid(tmp_path, other_process):
    from expclip.outputs import OutputError, output_lock

    (tmp_path / "results.csv.lock").write_text(json.dumps({"pid": other_process.pid, "command": "predict"}))
    with pytest.raises(OutputError) as error:
        with output_lock(tmp_path / "results.csv", "predict"):
            pass
    assert str(error.value).startswith(f"{tmp_path / 'results.csv'} is being written by another `expclip predict` "
                                       f"run (PID {other_process.pid}); ")
    assert json.loads((tmp_path / "results.csv.lock").read_text())["pid"] == other_process.pid  # not taken


def test_output_lock_takes_over_a_stale_lock_and_removes_it_on_exit(tmp_path):
    from expclip.outputs import output_lock

    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / "out.lock").write_text(json.dumps({"pid": int(finished.stdout), "command": "export"}))
    with output_lock(tmp_path / "out", "export") as lock:
        assert json.loads(lock.read_text()) == {"pid": os.getpid(), "command": "export"}
    assert list(tmp_path.iterdir()) == []


def test_a_second_predict_writing_the_same_output_is_refused_with_the_first_ones_pid(tmp_path, inputs,
                                                                                     tiny_expclip_dir, other_process):
    (tmp_path / "results.csv.lock").write_text(json.dumps({"pid": other_process.pid, "command": "predict"}))
    result = run_command(*EXPCLIP, "predict", "photos", "--model", tiny_expclip_dir, "--output", "results.csv",
                         cwd=tmp_path)
    line = one_line_error(result)
    assert result.returncode == 2 and f"another `expclip predict` run (PID {other_process.pid})" in line
    assert not (tmp_path / "results.csv").exists()


# ----- the trainer's feature cache ------------------------------------------------------------------------------------


@pytest.mark.parametrize("cache", ["images", "model"])
def test_feature_cache_dir_in_the_image_folder_or_output_dir_is_refused(tmp_path, cache, tiny_clip_dir):
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(images / "a.png")
    before = checksums(tmp_path)
    result = run_command(sys.executable, Path(__file__).parents[1] / "train_expclip.py", "--train_dir", images,
                         "--clip_model_name_or_path", tiny_clip_dir, "--teacher_model_name_or_path", tiny_clip_dir,
                         "--output_dir", tmp_path / "model", "--feature_cache_dir", tmp_path / cache, cwd=tmp_path)
    line = one_line_error(result)
    option = "--train_dir" if cache == "images" else "--output_dir"
    assert f"--feature_cache_dir {tmp_path / cache}: is the {option} folder" in line
    assert checksums(tmp_path) == before
