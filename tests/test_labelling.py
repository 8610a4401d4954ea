"""Labelling at scale: `accelerate launch --multi_gpu --num_processes 2 -m expclip predict ... --device cpu` (gloo on
CPU, as the trainer's tests do) on 60 real photos with 4 bad files mixed in; --dataset in, --output-dataset out; a
killed run resumed with --resume; the output lock.

Every process reads with one thread (torchrun's default for several processes), and so does the one-process run it is
compared with: CPU float sums depend on the thread count, and the records are compared bit for bit.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO_ROOT, run_command
from PIL import Image

ACCELERATE = [Path(sys.executable).parent / "accelerate", "launch", "--num_machines", "1", "--mixed_precision", "no",
              "--dynamo_backend", "no", "--multi_gpu", "--num_processes", 2, "-m", "expclip", "predict"]
PREDICT = [sys.executable, "-m", "expclip", "predict"]
YUNET_FILE = REPO_ROOT.parent / "shared" / "models" / "face_detection_yunet_2026may.onnx"
ENV = {"OMP_NUM_THREADS": "1", "EXPCLIP_YUNET_MODEL": str(YUNET_FILE)}
BAD = ("face10a-corrupt.jpg", "face30a-empty.png", "face45a-truncated.png", "face50a-text.jpg")


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """60 real photos (58 LFW faces, the coffee cup, the astronaut at 2000x2000) and 4 bad files among them."""
    from skimage import data

    folder = tmp_path_factory.mktemp("labelling-photos")
    faces = data.lfw_subset()
    for i in range(58):
        image = Image.fromarray((faces[i] * 255).astype("uint8")).resize((100, 100))
        image.save(folder / f"face{i:02d}.{'png' if i % 3 else 'jpg'}")
    # Last, and large: its shard takes a while, so a run can be killed with its first shards written, not its last.
    Image.fromarray(data.astronaut()).resize((2000, 2000)).save(folder / "face99-astronaut.jpg", quality=90)
    Image.fromarray(data.coffee()).save(folder / "face40a-coffee.jpg")
    (folder / BAD[0]).write_bytes(b"\xff\xd8\xff garbage")
    (folder / BAD[1]).write_bytes(b"")
    (folder / BAD[2]).write_bytes((folder / "face01.png").read_bytes()[:100])
    (folder / BAD[3]).write_text("not an image")
    return folder


def options(model, output, *extra):
    return ["--model", model, "--format", "jsonl", "--output", output, "--workers", 0, "--batch-size", 2,
            "--device", "cpu", *extra]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, photos, tiny_expclip_dir):
    """One process with and without --faces; two processes on the paths; two on the folder as a dataset; a two-process
    --faces run killed after its first shard, then resumed."""
    if not YUNET_FILE.is_file():
        pytest.fail(f"{YUNET_FILE} is missing: the tests need shared/models/ beside the project")
    root = tmp_path_factory.mktemp("labelling")
    done = {
        "one": run_command(*PREDICT, photos, *options(tiny_expclip_dir, root / "one.jsonl"), env=ENV),
        "one_faces": run_command(*PREDICT, photos, *options(tiny_expclip_dir, root / "one-faces.jsonl", "--faces"),
                                 env=ENV),
        "two": run_command(*ACCELERATE, photos, *options(tiny_expclip_dir, root / "two.jsonl"), env=ENV),
        "dataset": run_command(*ACCELERATE, "--dataset", photos, "--output-dataset", root / "labelled",
                               *options(tiny_expclip_dir, root / "dataset.jsonl"), env=ENV),
    }
    # Killed (the launcher and every process under it, SIGKILL) as soon as the first shard is written.
    resumed = root / "resumed.jsonl"
    args = [*ACCELERATE, photos, *options(tiny_expclip_dir, resumed, "--faces", "--shard-size", 2)]  # 32 shards
    with open(root / "killed.log", "w") as log:
        killed = subprocess.Popen([str(a) for a in args], stdout=log, stderr=subprocess.STDOUT,
                                  env=dict(os.environ, **ENV))
        shards = Path(str(resumed) + ".shards")
        deadline = time.monotonic() + 600
        while not list(shards.glob("shard-*.jsonl")) and killed.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        import psutil  # torchrun starts each rank in a session of its own: kill the launcher's whole tree

        try:
            tree = [killed.pid] + [child.pid for child in psutil.Process(killed.pid).children(recursive=True)]
        except psutil.NoSuchProcess:  # it finished first: the assertion below says so
            tree = []
        for pid in tree:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        killed.wait()
    assert not resumed.exists(), "the run finished before it could be killed"
    done["finished_before_resume"] = sorted(path.name for path in shards.glob("shard-*.jsonl"))
    done["shards_planned"] = len(json.loads((shards / "manifest.json").read_text())["shards"])
    done["resumed"] = run_command(*args, "--resume", env=ENV)
    done["root"] = root
    return done


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_runs_complete_and_count_the_bad_items(runs):
    """One process exits 1 when an item failed; under a launcher that would read as a crash, so the run exits 0."""
    for name, status in (("one", 1), ("one_faces", 1), ("two", 0), ("dataset", 0), ("resumed", 0)):
        assert runs[name].returncode == status, f"{name}: {runs[name].stderr[-3000:]}"
        assert "4 failed" in runs[name].stderr.strip().splitlines()[-1], f"{name}: {runs[name].stderr[-3000:]}"


def test_two_processes_give_the_records_of_one_process_in_input_order_bad_items_included(runs, photos):
    one, two = runs["root"] / "one.jsonl", runs["root"] / "two.jsonl"
    assert two.read_bytes() == one.read_bytes()  # every record, scores bit for bit, in input order
    got = records(two)
    assert [r["source"] for r in got] == [str(path) for path in sorted(photos.iterdir())]
    assert sorted(Path(r["source"]).name for r in got if r.get("error")) == sorted(BAD)
    assert sum(r.get("label") is not None for r in got) == 60


def test_two_processes_with_faces_killed_and_resumed_give_the_records_of_one_process(runs):
    faces = records(runs["root"] / "one-faces.jsonl")
    assert any(r["kind"] == "face" for r in faces) and sum(bool(r.get("error")) for r in faces) == 4
    assert (runs["root"] / "resumed.jsonl").read_bytes() == (runs["root"] / "one-faces.jsonl").read_bytes()


def test_resume_keeps_the_finished_shards_and_says_so(runs):
    finished, planned = runs["finished_before_resume"], runs["shards_planned"]
    assert 1 <= len(finished) < planned  # killed after the first shard, before the last
    numbers = ", ".join(str(int(name[6:11]) + 1) for name in finished)
    assert (f"resuming: {len(finished)} of {planned} shards already done (shard {numbers}), kept, not recomputed; "
            f"labelling the other {planned - len(finished)}") in runs["resumed"].stderr
    assert not Path(str(runs["root"] / "resumed.jsonl") + ".shards").exists()  # merged, then removed
    assert not Path(str(runs["root"] / "resumed.jsonl") + ".lock").exists()  # the killed run's lock was taken over


def test_output_dataset_has_every_row_new_columns_and_errors_on_the_bad_rows(runs, photos):
    import datasets

    labelled = datasets.load_from_disk(str(runs["root"] / "labelled"))
    original = datasets.load_dataset(str(photos), split="train")
    assert labelled.num_rows == original.num_rows == 64
    assert labelled.column_names == ["image", "expression", "expression_scores", "expression_error"]
    undecoded = datasets.Image(decode=False)
    saved, read = labelled.cast_column("image", undecoded)["image"], original.cast_column("image", undecoded)["image"]
    # the same images, in the same rows (save_to_disk embeds each file's bytes under its name)
    assert [(image["path"], image["bytes"]) for image in saved] == [
        (Path(image["path"]).name, Path(image["path"]).read_bytes()) for image in read]
    one = {Path(r["source"]).name: r for r in records(runs["root"] / "one.jsonl")}
    names = labelled.features["expression"].names
    for row, path in zip(labelled.cast_column("image", undecoded), original.cast_column("image", undecoded)):
        expected = one[Path(path["image"]["path"]).name]
        if "error" in expected:
            assert row["expression"] is None and row["expression_scores"] is None
            assert row["expression_error"] == expected["error"]  # the same one line, naming the file
        else:
            assert row["expression_error"] is None
            assert names[row["expression"]] == expected["label"]
            assert row["expression_scores"] == pytest.approx([expected["scores"][n] for n in names], abs=1e-7)
    assert sum(row["expression_error"] is not None for row in labelled.remove_columns("image")) == 4


def test_a_dataset_without_the_image_column_is_refused_naming_its_columns(photos, tiny_expclip_dir, tmp_path):
    result = run_command(*PREDICT, "--dataset", photos, "--image-column", "picture", "--model", tiny_expclip_dir,
                         "--output-dataset", tmp_path / "out", env=ENV)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"expclip predict: error: --dataset {photos}: no column 'picture'; its columns are image (choose one with "
        "--image-column)"]
    assert not (tmp_path / "out").exists()


def test_an_output_another_run_is_writing_is_refused_with_its_pid(photos, tiny_expclip_dir, tmp_path):
    other = subprocess.Popen(["sleep", "120"])
    try:
        (tmp_path / "out.jsonl.lock").write_text(json.dumps({"pid": other.pid, "command": "predict"}))
        result = run_command(*PREDICT, photos, *options(tiny_expclip_dir, tmp_path / "out.jsonl"), env=ENV)
    finally:
        other.kill()
        other.wait()
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"expclip predict: error: {tmp_path / 'out.jsonl'} is being written by another `expclip predict` run "
        f"(PID {other.pid}); wait for it to finish, or choose another output"]
    assert not (tmp_path / "out.jsonl").exists()
