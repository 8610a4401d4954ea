"""YuNet as the default `--faces` detector (issue 13 part 1): fetched once from OpenCV Zoo into the default-model cache,
`EXPCLIP_YUNET_MODEL` (path or URL) instead, Haar with one notice line when offline, and what it finds in real photos.

The real YuNet file (`../shared/models/face_detection_yunet_2026may.onnx`, beside the project; never committed) is
served from a local HTTP server on 127.0.0.1 in place of OpenCV Zoo.
"""

import hashlib
import json
import shutil
import socket
import sys
import threading
from functools import partial
from http.server import ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO_ROOT, CountingHandler, run_command
from PIL import Image

import expclip.faces as faces_module
from expclip.faces import Box, DetectorError, HaarFaceDetector, YuNetFaceDetector, resolve_detector

YUNET_FILE = REPO_ROOT.parent / "shared" / "models" / "face_detection_yunet_2026may.onnx"
YUNET_SHA256 = "ebafce4e3c118d6554634be5c27ab333b4c047a9a8c3faf1d7cf93101c22f0f0"  # of the served test file only
ZOO_PATH = "/models/face_detection_yunet/face_detection_yunet_2023mar.onnx"
ASTRONAUT_FACE = Box(177, 66, 95, 95)  # Eileen Collins' face in skimage's astronaut photo


@pytest.fixture(scope="module")
def yunet_file() -> Path:
    if not YUNET_FILE.is_file():
        pytest.fail(f"{YUNET_FILE} is missing: the tests need shared/models/ beside the project (see its README)")
    return YUNET_FILE


@pytest.fixture(scope="module")
def zoo(tmp_path_factory, yunet_file):
    """A stand-in for OpenCV Zoo on 127.0.0.1: the real model at Zoo's path, and a page that is not a model."""
    root = tmp_path_factory.mktemp("zoo")
    (root / ZOO_PATH.lstrip("/")).parent.mkdir(parents=True)
    shutil.copy(yunet_file, root / ZOO_PATH.lstrip("/"))
    (root / "rate-limited.onnx").write_text("<html>rate limited</html>")
    handler = type("Handler", (CountingHandler,), {"requests": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler.requests
    server.shutdown()
    thread.join(timeout=10)
    server.server_close()


@pytest.fixture
def online(tmp_path, monkeypatch):
    """A fresh Hugging Face home (so an empty default-model cache), network allowed (to 127.0.0.1 only)."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.delenv("EXPCLIP_CACHE", raising=False)
    monkeypatch.delenv("EXPCLIP_YUNET_MODEL", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    return tmp_path / "hf-home"


def closed_port() -> int:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def faces_run(photos, model, env, *options):
    return run_command(sys.executable, "-m", "expclip", "predict", *photos, "--faces", "--model", model,
                       "--format", "json", *options, env=env)


# ----- fetching, caching, the variable, the fallback ----------------------------------------------------------------


def test_first_use_downloads_opencv_zoo_model_once_into_the_default_model_cache(online, zoo, monkeypatch, capsys):
    url, requests = zoo
    monkeypatch.setattr(faces_module, "YUNET_URL", url + ZOO_PATH)
    before = len(requests)
    name, path = resolve_detector()
    assert name == "yunet" and Path(path).parent == online / "expclip" / "yunet"
    assert Path(path).name.endswith("-face_detection_yunet_2023mar.onnx")
    assert hashlib.sha256(Path(path).read_bytes()).hexdigest() == YUNET_SHA256
    assert requests[before:] == [ZOO_PATH]
    assert "first use of the YuNet face detector" in capsys.readouterr().err
    assert resolve_detector("yunet") == ("yunet", path)  # second use: the cache, no request
    assert len(requests) == before + 1
    assert not [p for p in Path(path).parent.iterdir() if p.name.startswith(".")]  # no temporary leftovers


def test_variable_with_a_url_is_fetched_and_used_by_predict(online, zoo, tiny_expclip_dir, photo_dir):
    url, requests = zoo
    before = len(requests)
    result = faces_run([photo_dir / "astronaut.jpg"], tiny_expclip_dir, {"EXPCLIP_YUNET_MODEL": url + ZOO_PATH})
    assert result.returncode == 0, result.stderr
    assert requests[before:] == [ZOO_PATH]
    first_use, summary = result.stderr.strip().splitlines()
    assert first_use.startswith(f"expclip: first use of the YuNet face detector: fetching {url}{ZOO_PATH}")
    assert summary == "expclip predict: 1 input: 1 prediction (1 face, 0 images without a face), 0 failed"
    [face] = json.loads(result.stdout)
    assert Box(*face["box"]).iou(Box(178, 63, 90, 113)) > 0.9  # YuNet's box (Haar's is square)
    assert len(list((online / "expclip" / "yunet").glob("*.onnx"))) == 1  # cached for the next run


def test_variable_with_a_local_path_is_used_without_any_request(online, zoo, yunet_file, monkeypatch):
    url, requests = zoo
    monkeypatch.setattr(faces_module, "YUNET_URL", url + ZOO_PATH)
    monkeypatch.setenv("EXPCLIP_YUNET_MODEL", str(yunet_file))
    before = len(requests)
    assert resolve_detector() == ("yunet", str(yunet_file))
    assert len(requests) == before and not (online / "expclip").exists()


def test_variable_naming_something_that_is_not_a_yunet_model_is_a_one_line_error_exit_2(
        online, zoo, tiny_expclip_dir, photo_dir):
    url, _ = zoo
    result = faces_run([photo_dir], tiny_expclip_dir, {"EXPCLIP_YUNET_MODEL": url + "/rate-limited.onnx"})
    assert result.returncode == 2 and result.stdout == ""
    [line] = [line for line in result.stderr.strip().splitlines() if not line.startswith("expclip: first use")]
    assert line.startswith(f"expclip predict: error: EXPCLIP_YUNET_MODEL={url}/rate-limited.onnx: the download is "
                           "not a YuNet ONNX model OpenCV can load")
    assert not list((online / "expclip" / "yunet").iterdir())  # nothing kept


def test_offline_without_a_cached_file_falls_back_to_haar_with_one_notice(tiny_expclip_dir, photo_dir, tmp_path):
    result = faces_run([photo_dir / "astronaut.jpg"], tiny_expclip_dir,
                       {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "empty-home")})
    assert result.returncode == 0, result.stderr
    notice, summary = result.stderr.strip().splitlines()
    assert notice.startswith("expclip: YuNet face detector unavailable (") and "offline mode" in notice
    assert "set EXPCLIP_YUNET_MODEL to" in notice and "Haar" in notice
    assert summary.endswith("(1 face, 0 images without a face), 0 failed")
    [face] = json.loads(result.stdout)
    assert face["box"][2] == face["box"][3]  # Haar's square box


def test_predictor_resolves_the_detector_only_when_faces_are_first_asked_for(tiny_expclip_dir, photo_dir, tmp_path):
    photo = photo_dir / "astronaut.jpg"
    script = f"""if True:
        import sys
        from expclip import ExpCLIPPredictor
        predictor = ExpCLIPPredictor.from_pretrained({str(tiny_expclip_dir)!r})
        print("loaded", file=sys.stderr, flush=True)
        predictor([{str(photo)!r}])
        print("whole photo", file=sys.stderr, flush=True)
        faces = predictor([{str(photo)!r}, {str(photo)!r}], faces=True)
        print("faces", len(faces), file=sys.stderr, flush=True)
    """
    result = run_command(sys.executable, "-c", script,
                         env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "home"), "EXPCLIP_YUNET_MODEL": ""})
    assert result.returncode == 0, result.stderr
    notice = "expclip: YuNet face detector unavailable ("  # once, when faces are first asked for
    err = result.stderr
    assert err.count(notice) == 1 and err.index("whole photo") < err.index(notice) < err.index("faces 2"), err


def test_unreachable_opencv_zoo_falls_back_to_haar_with_one_notice(online, monkeypatch, capsys):
    monkeypatch.setattr(faces_module, "YUNET_URL", f"http://127.0.0.1:{closed_port()}{ZOO_PATH}")
    assert resolve_detector() == ("haar", None)
    [notice] = capsys.readouterr().err.strip().splitlines()[1:]  # after the first-use line
    assert "could not download the YuNet model" in notice and "EXPCLIP_YUNET_MODEL" in notice


def test_detector_haar_keeps_haar_without_a_request_or_notice(online, zoo, monkeypatch, capsys):
    url, requests = zoo
    monkeypatch.setattr(faces_module, "YUNET_URL", url + ZOO_PATH)
    before = len(requests)
    assert resolve_detector("haar") == ("haar", None)
    assert len(requests) == before and capsys.readouterr().err == ""


def test_missing_local_file_in_the_variable_is_refused_not_replaced(monkeypatch, tmp_path):
    monkeypatch.setenv("EXPCLIP_YUNET_MODEL", str(tmp_path / "nowhere.onnx"))
    with pytest.raises(DetectorError, match=r"^EXPCLIP_YUNET_MODEL=.*nowhere.onnx: YuNet model file not found$"):
        resolve_detector()


# ----- what YuNet finds in real photos -------------------------------------------------------------------------------


def tilted_lfw_faces() -> list[np.ndarray]:
    """The first 100 LFW faces (25x25) upscaled to 100x100, tilted by +25/-25 degrees in turn, on a grey 300x300."""
    from skimage import data

    images = []
    for index, face in enumerate(data.lfw_subset()[:100]):
        face = Image.fromarray((face * 255).astype(np.uint8)).convert("RGB").resize((100, 100), Image.Resampling.BICUBIC)
        face = face.rotate(25 if index % 2 == 0 else -25, Image.Resampling.BILINEAR, expand=True,
                           fillcolor=(128, 128, 128))
        canvas = Image.new("RGB", (300, 300), (128, 128, 128))
        canvas.paste(face, ((300 - face.width) // 2, (300 - face.height) // 2))
        images.append(np.asarray(canvas))
    return images


def test_yunet_finds_the_one_astronaut_face(yunet_file):
    from skimage import data

    [box] = YuNetFaceDetector(str(yunet_file)).detect(data.astronaut())
    assert box.iou(ASTRONAUT_FACE) > 0.7 and box.score > 0.8


def test_predict_faces_with_yunet_finds_at_least_75_of_100_tilted_lfw_faces(yunet_file, tiny_expclip_dir, tmp_path):
    for index, image in enumerate(tilted_lfw_faces()):
        Image.fromarray(image).save(tmp_path / f"tilted {index:03d}.png")
    result = faces_run([tmp_path], tiny_expclip_dir, {"EXPCLIP_YUNET_MODEL": str(yunet_file)})
    assert result.returncode == 0, result.stderr
    found = {r["source"] for r in json.loads(result.stdout) if r["kind"] == "face"}
    assert len(found) >= 75, f"YuNet found faces in {len(found)} of 100 tilted photos"


def test_haar_misses_most_tilted_lfw_faces_which_is_why_yunet_is_the_default():
    detector = HaarFaceDetector()
    found = sum(bool(detector.detect(image)) for image in tilted_lfw_faces())
    assert found <= 50, f"Haar found {found} of 100"
