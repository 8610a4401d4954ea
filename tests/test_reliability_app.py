"""Issue 17: `expclip app` refuses a bad port or host in one line before loading anything, exits 130 on Ctrl-C like
every command, and leaves none of the people's photos behind: a request's files go once served, the rest when the
app stops."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from conftest import REPO_ROOT

YUNET_FILE = REPO_ROOT.parent / "shared" / "models" / "face_detection_yunet_2026may.onnx"


@pytest.fixture(scope="module")
def busy_port():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield server.getsockname()[1]


@pytest.mark.parametrize("options, reason", [
    (["--port", "99999"], "--port 99999: not a port number (1 to 65535)"),
    (["--port", "-1"], "--port -1: not a port number (1 to 65535)"),
    (["--host", "999.1.1.1"], "--host 999.1.1.1: not an address of this machine"),
    (["--port", "BUSY"], "already in use on 127.0.0.1; choose another port"),
])
def test_a_bad_port_or_host_is_one_line_and_exit_2_before_the_model_loads(tmp_path, capsys, busy_port, options,
                                                                         reason):
    from expclip.cli import main

    options = [str(busy_port) if option == "BUSY" else option for option in options]
    # the model folder does not exist: a refusal about it would mean it was looked at first
    assert main(["app", "--model", str(tmp_path / "no model"), *options]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("expclip app: error: ") and reason in line


def test_a_request_leaves_no_files_and_closing_removes_the_apps_folder(tiny_expclip_dir, photo_dir, tmp_path):
    import cv2
    import numpy as np
    from PIL import Image

    from expclip.app import ExpCLIPApp

    app = ExpCLIPApp(str(tiny_expclip_dir), device="cpu", detector="yunet", detector_model=str(YUNET_FILE),
                     outputs=tmp_path / "app")
    records = app.predict_image(str(photo_dir / "astronaut.jpg"))
    annotated, _, message = app.show_image(str(photo_dir / "astronaut.jpg"), records)
    assert isinstance(annotated, Image.Image) and "face" in message
    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10, (64, 64))
    for value in range(20):
        writer.write(np.full((64, 64, 3), value * 10, np.uint8) + np.eye(64, dtype=np.uint8)[..., None] * 50)
    writer.release()
    scores, timeline, _ = app.show_video(app.predict_video(str(video)))
    assert scores and isinstance(timeline, Image.Image)
    assert [path for path in (tmp_path / "app").rglob("*") if path.is_file()] == []  # served, then gone
    app.close()
    assert not (tmp_path / "app").exists()


def test_ctrl_c_exits_130_and_removes_the_apps_temporary_folder(tiny_expclip_dir, photo_dir, tmp_path):
    from gradio_client import Client, handle_file

    temp = tmp_path / "tmp"
    temp.mkdir()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = dict(os.environ, TMPDIR=str(temp), GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1",
               EXPCLIP_YUNET_MODEL=str(YUNET_FILE))
    env.pop("GRADIO_TEMP_DIR", None)
    log = open(tmp_path / "app.log", "w+")
    process = subprocess.Popen([sys.executable, "-m", "expclip", "app", "--model", str(tiny_expclip_dir), "--port",
                                str(port)], cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        url, deadline = f"http://127.0.0.1:{port}/", time.monotonic() + 240
        while True:
            assert process.poll() is None, open(tmp_path / "app.log").read()
            assert time.monotonic() < deadline, "the app did not answer"
            try:
                with urllib.request.urlopen(url, timeout=5):
                    break
            except OSError:
                time.sleep(0.5)
        [folder] = temp.glob("expclip-app-*")
        [record] = Client(url, verbose=False).predict(handle_file(str(photo_dir / "astronaut.jpg")),
                                                      api_name="/predict_image")
        assert record["label"]
        assert [p.name for p in folder.iterdir()] == ["gradio"]  # no request folder: only Gradio's copy of the upload
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 130
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    output = open(tmp_path / "app.log").read()
    assert "Traceback" not in output and output.strip().splitlines()[-1] == "expclip app: interrupted"
    assert list(temp.glob("expclip-app-*")) == []
