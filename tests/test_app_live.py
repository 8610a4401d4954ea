"""The app with people in videos (issue 20): the Live tab in a real headless Chromium whose fake webcam plays the
moving faces of tests/moving_faces.py, and `/predict_video` track records through `gradio_client`.

The app serves a tiny Exp-CLIP model on 127.0.0.1, as in tests/test_app.py (whose helpers this reuses).
"""

import os
import sys
import time

import numpy as np
import pytest
from PIL import Image
from test_app import YUNET_FILE, chromium, start_app, stop_app

import moving_faces
from expclip.video import TRACK_COLOURS

# Chromium's fake camera: frames from a Y4M file instead of a device, and the permission prompt answered yes.
FAKE_WEBCAM_FLAGS = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]


@pytest.fixture(scope="module")
def live_app(tiny_expclip_dir, tmp_path_factory):
    if not YUNET_FILE.is_file():
        pytest.fail(f"{YUNET_FILE} is missing: the tests need shared/models/ beside the project (see its README)")
    log = tmp_path_factory.mktemp("live-app") / "app.log"
    process, url = start_app([sys.executable, "app.py", "--model", tiny_expclip_dir, "--smooth", "0.5"], log)
    yield url
    stop_app(process)


@pytest.fixture(scope="module")
def webcam_browser(tmp_path_factory):
    """Chromium whose webcam plays the moving faces, the permission prompt answered yes."""
    y4m = moving_faces.write_y4m(tmp_path_factory.mktemp("webcam") / "people.y4m", frames=40)
    yield from chromium(FAKE_WEBCAM_FLAGS + [f"--use-file-for-fake-video-capture={y4m}"])


@pytest.fixture
def camera_denied_browser():
    """Chromium with a camera whose permission prompt is answered no."""
    yield from chromium(["--use-fake-device-for-media-stream", "--deny-permission-prompts"])


def live_picture(browser, previous: str | None = None) -> tuple[str, np.ndarray]:
    """The Live tab's output image once one (other than `previous`) has loaded: its address and its pixels (decoded
    by the page, read back from a canvas in the same script, so a newer frame cannot slip in between)."""
    from selenium.webdriver.support.ui import WebDriverWait

    read = """const img = document.querySelector('#live img');
        if (!img || !img.complete || !img.naturalWidth || img.src === arguments[0]) return null;
        const canvas = document.createElement('canvas');
        canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
        const context = canvas.getContext('2d'); context.drawImage(img, 0, 0);
        return [img.src, canvas.width, canvas.height,
                Array.from(context.getImageData(0, 0, canvas.width, canvas.height).data)];"""
    src, width, height, data = WebDriverWait(browser, 60).until(lambda b: b.execute_script(read, previous))
    return src, np.array(data, np.uint8).reshape(height, width, 4)[..., :3]


def open_live_tab_webcam(browser, url: str) -> None:
    """Open the page, its Live tab, and click the webcam (which asks the browser for the camera)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(url)
    WebDriverWait(browser, 60).until(lambda b: b.find_elements(By.CSS_SELECTOR, "button[role=tab]"))
    [tab] = [t for t in browser.find_elements(By.CSS_SELECTOR, "button[role=tab]") if t.text == "Live"]
    tab.click()
    WebDriverWait(browser, 30).until(lambda b: b.find_elements(
        By.XPATH, "//*[@id='webcam']//button[contains(., 'Click to Access Webcam')]"))[0].click()


def track_colours(picture: np.ndarray) -> list[tuple[int, int, int]]:
    """The track colours drawn in `picture`: those with over 200 pixels within 40 (summed over RGB) of them."""
    return [colour for colour in TRACK_COLOURS
            if (np.abs(picture.astype(int) - np.array(colour)).sum(-1) < 40).sum() > 200]


def test_live_tab_shows_the_fake_webcams_faces_boxed_and_labelled_and_updating(
        live_app, webcam_browser, tiny_expclip_dir, tmp_path, capsys):
    import json

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    labels = json.loads((tiny_expclip_dir / "config.json").read_text())["class_names"]
    browser = webcam_browser
    open_live_tab_webcam(browser, live_app)
    WebDriverWait(browser, 30).until(lambda b: [x for x in b.find_elements(
        By.CSS_SELECTOR, "#webcam button[aria-label='capture photo']") if x.is_displayed()])[0].click()  # start streaming
    message = WebDriverWait(browser, 120).until(
        lambda b: (text := b.find_element(By.ID, "live-message").text.strip()).startswith(("2 faces", "3 faces"))
        and text)
    first_src, first = live_picture(browser)
    time.sleep(1.0)
    # new frames keep coming, each face boxed in its track's colour. A slow machine processes few frames a second, so
    # a person may be renumbered (a new colour) between two of them: wait for a frame with two tracks' colours.
    src, later, deadline = first_src, None, time.monotonic() + 60
    while later is None or (len(track_colours(later)) < 2 and time.monotonic() < deadline):
        src, later = live_picture(browser, previous=src)
    screenshot = tmp_path / "app-live.png"
    browser.save_screenshot(str(screenshot))
    with capsys.disabled():  # the path shows in the test output even when it passes
        print(f"\nscreenshot: {screenshot}")
    assert "Error" not in message and any(f"**{label}**" in message or label in message for label in labels)
    assert message.split(" — ")[1].startswith("person ")
    assert first.shape == (moving_faces.HEIGHT, moving_faces.WIDTH, 3)
    assert len(track_colours(later)) >= 2, track_colours(later)
    assert np.abs(later.astype(int) - first.astype(int)).mean() > 0.5  # the faces moved: the picture changed


def test_live_tab_says_in_one_line_when_the_camera_is_refused_and_the_app_keeps_serving(
        live_app, camera_denied_browser):
    import urllib.request

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser = camera_denied_browser
    open_live_tab_webcam(browser, live_app)
    line = WebDriverWait(browser, 30).until(lambda b: b.find_elements(By.ID, "camera-error"))[0].text
    assert line == "Camera: permission denied. Allow the camera for this page, then click the webcam again."
    with urllib.request.urlopen(live_app, timeout=30) as page:  # the app goes on serving
        assert page.status == 200


def test_predict_video_with_track_returns_the_clip_and_one_track_record_per_person(live_app, tmp_path):
    from gradio_client import Client, handle_file

    video = moving_faces.write_moving_faces(tmp_path / "people.mp4")
    client = Client(live_app, verbose=False)
    records = client.predict(handle_file(str(video)), track=True, api_name="/predict_video")
    clip, *tracks = records
    assert clip["kind"] == "video" and clip["source"] == "people.mp4" and clip["tracks"] == 3
    assert [t["track"] for t in tracks] == [1, 2, 3] and all(t["kind"] == "track" for t in tracks)
    assert clip["annotated"].endswith("people.webm") and clip["annotated_codec"] in ("vp8", "vp9")
    with Image.open(clip["track_timeline"]["png"]) as plot:  # the app runs on this machine: its files are readable
        assert plot.format == "PNG"


# ----- the Live tab's function, in this process ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def live(tiny_expclip_dir):
    from expclip.app import ExpCLIPApp

    os.environ.setdefault("EXPCLIP_YUNET_MODEL", str(YUNET_FILE))
    return ExpCLIPApp(str(tiny_expclip_dir), device="cpu", smooth=0.5)


def test_live_frames_keep_each_persons_number_as_they_move(live):
    patches, state = moving_faces.face_patches(), None
    for frame in range(0, 20, 2):
        picture, state, line = live.live_frame(moving_faces.render_frame(frame, patches), state)
        assert line.startswith("3 faces — person 1: ") and picture.shape == (480, 640, 3)
    tracks = state["tracker"].tracks
    assert len(tracks) == 3 and all(len(track.boxes) == 10 for track in tracks)
    for track in tracks:  # each track stayed on one person: its boxes move steadily, never jump between people
        xs = [box.x for box in track.boxes]
        assert max(abs(b - a) for a, b in zip(xs, xs[1:])) < 60


def test_live_frame_that_fails_is_a_one_line_user_error(live):
    from expclip.app import UserError

    with pytest.raises(UserError) as error:
        live.live_frame(None, None)
    assert "\n" not in str(error.value) and "webcam" in str(error.value)


def scored_frames(live, pictures, refresh: float) -> tuple[list[bool], dict, list[str]]:
    """Run `pictures` through the Live tab's function with `refresh`: on which frames the model ran (its time in the
    predictor's timings grew), the last state, and each frame's line."""
    predictor, previous = live.predictor(None, None), live.refresh
    live.refresh, state, ran, lines = refresh, None, [], []
    try:
        for picture in pictures:
            before = predictor.timings["model"]
            _, state, line = live.live_frame(picture, state)
            ran.append(predictor.timings["model"] > before)
            lines.append(line)
    finally:
        live.refresh = previous
    return ran, state, lines


def test_live_faces_are_scored_once_per_refresh_and_tracked_on_every_frame_between(live):
    patches = moving_faces.face_patches()
    ran, state, lines = scored_frames(live, [moving_faces.render_frame(f, patches) for f in range(0, 12, 2)], 60.0)
    assert ran == [True] + [False] * 5  # the same three faces throughout: scored on the first frame only
    assert all(len(track.boxes) == 6 for track in state["tracker"].tracks)  # yet every frame moved their boxes
    assert all(line.startswith("3 faces — person 1: **") for line in lines)


def test_live_faces_are_scored_again_as_soon_as_someone_comes_in(live):
    patches = moving_faces.face_patches()
    pictures = [moving_faces.render_frame(f, patches[:2]) for f in (0, 2)]
    pictures += [moving_faces.render_frame(f, patches) for f in (4, 6)]
    ran, state, lines = scored_frames(live, pictures, 60.0)
    assert ran == [True, False, True, False]
    assert lines[2].startswith("3 faces") and len(state["tracker"].tracks) == 3


def test_live_refresh_0_scores_every_frame(live):
    patches = moving_faces.face_patches()
    ran, _, _ = scored_frames(live, [moving_faces.render_frame(f, patches) for f in range(0, 8, 2)], 0.0)
    assert ran == [True] * 4
