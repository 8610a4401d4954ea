"""The web app (issue 13 part 2): `python app.py` / `expclip app`, its API endpoints through `gradio_client`, and the
page itself in a real headless Chromium (Debian's chromium + chromium-driver, driven by selenium).

The app serves a tiny Exp-CLIP model on 127.0.0.1; YuNet comes from `../shared/models/` beside the project.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import cv2
import numpy as np
import pytest
from conftest import REPO_ROOT, run_command
from PIL import Image

from expclip.faces import Box

ASTRONAUT_FACE = Box(177, 66, 95, 95)  # Eileen Collins' face in skimage's astronaut photo
YUNET_FILE = REPO_ROOT.parent / "shared" / "models" / "face_detection_yunet_2026may.onnx"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
# Chromium on a closed network: no background connections, no first-run work, a fresh profile (GUIDE, python.md).
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1280,1500"]
APP_ENV = {"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "EXPCLIP_YUNET_MODEL": str(YUNET_FILE)}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_app(command: list, log_path, timeout: float = 180) -> tuple[subprocess.Popen, str]:
    """Start the app as a user would (a real subprocess) and wait until its page answers."""
    port = free_port()
    log = open(log_path, "w")
    process = subprocess.Popen([str(part) for part in command] + ["--port", str(port)], cwd=REPO_ROOT,
                               env=dict(os.environ, **APP_ENV), stdout=log, stderr=subprocess.STDOUT)
    url, deadline = f"http://127.0.0.1:{port}/", time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the app exited with {process.returncode}:\n{open(log_path).read()}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return process, url
        except OSError:
            time.sleep(0.5)
    process.kill()
    pytest.fail(f"the app did not answer on {url} within {timeout} s:\n{open(log_path).read()}")


def stop_app(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def model_labels(tiny_expclip_dir) -> list[str]:
    return json.loads((tiny_expclip_dir / "config.json").read_text())["class_names"]


@pytest.fixture(scope="module")
def app_url(tiny_expclip_dir, tmp_path_factory):
    """`python app.py --model TINY` (the Space entry point) serving on 127.0.0.1."""
    if not YUNET_FILE.is_file():
        pytest.fail(f"{YUNET_FILE} is missing: the tests need shared/models/ beside the project (see its README)")
    log = tmp_path_factory.mktemp("app") / "app.log"
    process, url = start_app([sys.executable, "app.py", "--model", tiny_expclip_dir], log)
    yield url
    stop_app(process)


@pytest.fixture(scope="module")
def client(app_url):
    from gradio_client import Client

    return Client(app_url, verbose=False)


def chromium(flags: list[str] = ()):
    """Headless Chromium with `flags` on a fresh profile, quit and removed afterwards; skipped (saying why) only
    when Chromium cannot start."""
    from selenium import webdriver
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must not look for drivers online
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.path.exists(path)]
    if missing:
        reason = f"Chromium cannot start: {', '.join(missing)} not installed (apt-get install chromium chromium-driver)"
        print(reason)
        pytest.skip(reason)
    profile = tempfile.mkdtemp(prefix="expclip-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS + list(flags) + [f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    try:
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    except WebDriverException as error:
        reason = f"Chromium cannot start: {str(error.msg or error).strip().splitlines()[0]}"
        print(reason)
        shutil.rmtree(profile, ignore_errors=True)
        pytest.skip(reason)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium through chromedriver."""
    yield from chromium()


# ----- starting it ---------------------------------------------------------------------------------------------------


def test_expclip_app_serves_the_page(tiny_expclip_dir, tmp_path):
    process, url = start_app([sys.executable, "-m", "expclip", "app", "--model", tiny_expclip_dir,
                              "--host", "127.0.0.1"], tmp_path / "app.log")
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            page = response.read().decode()
        assert "Exp-CLIP: zero-shot facial expressions" in page
    finally:
        stop_app(process)


def test_expclip_app_without_gradio_says_what_to_install_in_one_line():
    # A real subprocess in which `import gradio` fails, as it does where the extra is not installed.
    result = run_command(sys.executable, "-c", "import sys; sys.modules['gradio'] = None; from expclip import cli; "
                         "sys.exit(cli.main(['app', '--model', 'unused']))", cwd=REPO_ROOT)
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("expclip app: the app needs Gradio") and 'pip install -e ".[app]"' in line


# ----- the API (gradio_client) ---------------------------------------------------------------------------------------


def test_predict_image_endpoint_returns_one_face_record_for_the_astronaut(client, photo_dir, model_labels):
    from gradio_client import handle_file

    [record] = client.predict(handle_file(str(photo_dir / "astronaut.jpg")), api_name="/predict_image")
    assert record["source"] == "astronaut.jpg" and record["kind"] == "face" and record["face"] == 1
    assert Box(*record["box"]).iou(ASTRONAUT_FACE) > 0.7
    assert list(record["scores"]) == model_labels and record["label"] in model_labels
    assert abs(sum(record["scores"].values()) - 1) < 1e-4


def test_predict_image_endpoint_takes_other_labels_and_templates(client, photo_dir):
    from gradio_client import handle_file

    [record] = client.predict(handle_file(str(photo_dir / "astronaut.jpg")), "joy, calm", "a photo of a {} face.",
                              api_name="/predict_image")
    assert list(record["scores"]) == ["joy", "calm"]


@pytest.mark.parametrize("labels, prompts, message", [
    ("", "type3", "the label list is empty"),
    ("joy, calm", "a photo of a face", "must hold exactly one '{}' for the class name"),
])
def test_bad_labels_or_prompts_are_a_one_line_error_not_a_traceback(client, photo_dir, labels, prompts, message):
    from gradio_client import handle_file

    with pytest.raises(Exception) as error:
        client.predict(handle_file(str(photo_dir / "astronaut.jpg")), labels, prompts, api_name="/predict_image")
    assert message in str(error.value) and "Traceback" not in str(error.value)


def test_predict_video_endpoint_returns_the_clip_record_with_its_timeline(client, tmp_path, model_labels):
    from gradio_client import handle_file
    from skimage import data

    path = tmp_path / "astronaut clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (128, 128))
    frame = cv2.cvtColor(np.asarray(Image.fromarray(data.astronaut()).resize((128, 128))), cv2.COLOR_RGB2BGR)
    for _ in range(30):  # 3 seconds
        writer.write(frame)
    writer.release()
    record = client.predict(handle_file(str(path)), api_name="/predict_video")
    assert record["source"] == "astronaut clip.mp4" and record["kind"] == "video"
    assert record["frames"] == 30 and len(record["frame_indices"]) == 16
    assert record["label"] in model_labels
    with open(record["timeline"]["csv"]) as timeline:  # the app runs on this machine: its files are readable
        assert len(timeline.read().splitlines()) == 1 + 3  # header + one row per second


def test_predict_video_endpoint_gives_a_video_without_frames_as_its_one_line_error_record(client, tmp_path):
    from gradio_client import handle_file

    path = tmp_path / "empty.mp4"
    cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (64, 48)).release()
    record = client.predict(handle_file(str(path)), api_name="/predict_video")
    assert record["source"] == "empty.mp4" and "\n" not in record["error"]
    assert record["error"].startswith("empty.mp4: ")


# ----- the page, in a real browser -----------------------------------------------------------------------------------


def upload_photo(browser, app_url, path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(app_url)
    WebDriverWait(browser, 60).until(lambda b: b.find_elements(By.CSS_SELECTOR, "#photo input[type=file]"))
    browser.find_element(By.CSS_SELECTOR, "#photo input[type=file]").send_keys(str(path))
    WebDriverWait(browser, 120).until(lambda b: b.find_element(By.ID, "image-message").text.strip())
    return browser.find_element(By.ID, "image-message").text.strip()


def save_screenshot(browser, path, capsys) -> None:
    browser.save_screenshot(str(path))
    with capsys.disabled():  # the path shows in the test output even when it passes
        print(f"\nscreenshot: {path}")


def test_browser_upload_of_the_astronaut_shows_her_face_labelled_and_the_annotated_image(
        browser, app_url, photo_dir, model_labels, tmp_path, capsys):
    from selenium.webdriver.common.by import By

    message = upload_photo(browser, app_url, photo_dir / "astronaut.jpg")
    save_screenshot(browser, tmp_path / "app-astronaut.png", capsys)
    assert message.startswith("1 face — face 1: ")
    label = message.split(": ", 1)[1].rsplit(" (", 1)[0]
    assert label in model_labels
    chart = browser.find_element(By.ID, "image-chart").text.splitlines()
    assert chart[:2] == ["Largest face", label]  # the chart's heading is the top label
    [annotated] = browser.find_elements(By.CSS_SELECTOR, "#annotated img")
    width, height = browser.execute_script("return [arguments[0].naturalWidth, arguments[0].naturalHeight]", annotated)
    assert (width, height) == (512, 512)  # the annotated photo arrived and decoded in the page


def test_browser_upload_of_a_corrupt_file_shows_the_one_line_message_and_the_app_keeps_serving(
        browser, app_url, photo_dir, tmp_path, capsys):
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 4)
    message = upload_photo(browser, app_url, corrupt)
    save_screenshot(browser, tmp_path / "app-corrupt.png", capsys)
    assert message.startswith("Error: corrupt.png: corrupt or truncated image (") and "\n" not in message
    assert "Traceback" not in browser.page_source
    assert upload_photo(browser, app_url, photo_dir / "astronaut.jpg").startswith("1 face")  # still serving


def test_browser_empty_label_list_shows_the_one_line_message_in_the_page(browser, app_url, photo_dir, tmp_path,
                                                                       capsys):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    upload_photo(browser, app_url, photo_dir / "astronaut.jpg")
    labels = browser.find_element(By.CSS_SELECTOR, "#labels textarea, #labels input")
    labels.send_keys(Keys.CONTROL, "a")  # typed, as a user would: the page only sees key events
    labels.send_keys(Keys.DELETE)
    browser.find_element(By.ID, "run-image").click()
    WebDriverWait(browser, 60).until(lambda b: "the label list is empty" in b.find_element(By.TAG_NAME, "body").text)
    save_screenshot(browser, tmp_path / "app-empty-labels.png", capsys)
    assert "Traceback" not in browser.find_element(By.TAG_NAME, "body").text
