"""A real 640x480 video of real faces on known paths, for the tracking tests: scikit-image's astronaut (her face) and
two faces of `lfw_subset`, upscaled and moved. Every frame's true face boxes are known.

- person 1 (the astronaut) walks left to right along the top;
- person 2 (an LFW face) walks right to left a little lower: the two cross in the middle of the clip;
- person 3 (another LFW face) walks right along the bottom, leaves the frame, and comes back 2 s later, walking left.
"""

from pathlib import Path

import cv2
import numpy as np
from PIL import Image

WIDTH, HEIGHT, FPS, SECONDS = 640, 480, 10, 8
NUM_FRAMES = FPS * SECONDS
FACE = 120  # side of each pasted face, pixels
ASTRONAUT_FACE = (177, 66, 95, 95)  # her face in skimage's astronaut photo (x, y, w, h)
LFW_FACES = (0, 3)  # which lfw_subset faces play persons 2 and 3
LEAVES, RETURNS = 2.5, 4.5  # person 3 is wholly out of the frame from LEAVES to RETURNS seconds


def face_patches() -> list[np.ndarray]:
    """Three FACE x FACE RGB face pictures, each filling its patch (a tight crop around the face)."""
    from skimage import data

    x, y, w, h = ASTRONAUT_FACE
    astronaut = Image.fromarray(data.astronaut()).crop((x, y, x + w, y + h))
    lfw = data.lfw_subset()
    patches = [astronaut] + [Image.fromarray((lfw[i] * 255).astype(np.uint8)).convert("RGB") for i in LFW_FACES]
    return [np.asarray(p.resize((FACE, FACE), Image.BICUBIC)) for p in patches]


def _lerp(a, b, s):
    return a + (b - a) * s


def true_boxes(frame: int) -> list[tuple[int, int, int, int] | None]:
    """Persons 1..3's face boxes (x, y, w, h) at `frame`; None where a person is not wholly inside the frame."""
    t = frame / FPS
    s = t / SECONDS
    first = (int(_lerp(20, WIDTH - FACE - 20, s)), 40)
    second = (int(_lerp(WIDTH - FACE - 20, 20, s)), 150)
    # person 3: from x=40 out past the right edge by LEAVES, back in from the right edge at RETURNS, walking left
    speed = (WIDTH + 20 - 40) / LEAVES  # pixels per second, so that it is out of the frame at LEAVES
    if t < LEAVES:
        x3 = 40 + speed * t
    elif t < RETURNS:
        x3 = WIDTH + 20.0
    else:
        x3 = WIDTH - FACE - (t - RETURNS) * 60.0 - 1
    third = (int(x3), 330)
    boxes = []
    for x, y in (first, second, third):
        inside = 0 <= x and x + FACE <= WIDTH
        boxes.append((x, y, FACE, FACE) if inside else None)
    return boxes


def positions(frame: int) -> list[tuple[int, int]]:
    """Top-left corners of the three patches at `frame`, partly or wholly outside the frame included."""
    t = frame / FPS
    s = t / SECONDS
    speed = (WIDTH + 20 - 40) / LEAVES
    if t < LEAVES:
        x3 = 40 + speed * t
    elif t < RETURNS:
        x3 = WIDTH + 20.0
    else:
        x3 = WIDTH - FACE - (t - RETURNS) * 60.0 - 1
    return [(int(_lerp(20, WIDTH - FACE - 20, s)), 40), (int(_lerp(WIDTH - FACE - 20, 20, s)), 150), (int(x3), 330)]


def render_frame(frame: int, patches: list[np.ndarray]) -> np.ndarray:
    """One RGB frame: a soft gray background and the three faces (person 2 drawn over person 1 where they cross)."""
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    canvas = (110 + 30 * np.sin(xx / 97.0) * np.cos(yy / 71.0))[..., None].repeat(3, 2).astype(np.uint8)
    for (x, y), patch in zip(positions(frame), patches):
        left, right = max(0, x), min(WIDTH, x + FACE)
        if right > left:
            canvas[y:y + FACE, left:right] = patch[:, left - x:right - x]
    return canvas


def write_moving_faces(path: Path, codec: str = "mp4v") -> Path:
    """The clip as a video file (OpenCV's FFmpeg, `codec` fourcc)."""
    patches = face_patches()
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), FPS, (WIDTH, HEIGHT))
    for frame in range(NUM_FRAMES):
        writer.write(cv2.cvtColor(render_frame(frame, patches), cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def write_y4m(path: Path, frames: int = NUM_FRAMES) -> Path:
    """The clip as a raw YUV4MPEG2 file (4:2:0), the format Chromium's fake webcam plays."""
    patches = face_patches()
    with open(path, "wb") as handle:
        handle.write(f"YUV4MPEG2 W{WIDTH} H{HEIGHT} F{FPS}:1 Ip A1:1 C420jpeg\n".encode())
        for frame in range(frames):
            yuv = cv2.cvtColor(render_frame(frame, patches), cv2.COLOR_RGB2YUV_I420)
            handle.write(b"FRAME\n" + yuv.tobytes())
    return path
