"""Face detection and cropping for `expclip predict --faces`.

A detector is anything with `detect(rgb: np.ndarray) -> list[Box]` (the `FaceDetector` protocol). Two ship here:
`HaarFaceDetector`, OpenCV's bundled frontal-face cascade (installs with opencv-python-headless < 5, no download), and
`YuNetFaceDetector`, OpenCV's stronger CNN detector (the default: it finds tilted and turned faces the cascade
misses). Its ONNX file comes from `EXPCLIP_YUNET_MODEL` (a local path or URL), else from OpenCV Zoo, downloaded once
into the default-model cache; `resolve_detector` does that before any work starts and falls back to Haar, with one
notice line, when the file cannot be had. Each face is cut out as a square around the box with a margin, the framing
of the aligned face crops the paper evaluates on (README: Reproducing the paper).
"""

import hashlib
import os
import sys
import tempfile
import urllib.error
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
from PIL import Image

from .hub import cache_root, download, offline
from .inputs import first_line

DETECTORS = ("haar", "yunet")
DEFAULT_DETECTOR = "yunet"
YUNET_URL = ("https://github.com/opencv/opencv_zoo/raw/main/models/face_detection_yunet/"
             "face_detection_yunet_2023mar.onnx")
YUNET_VARIABLE = "EXPCLIP_YUNET_MODEL"  # a local path or URL of a YuNet ONNX file, instead of OpenCV Zoo's


class DetectorError(Exception):
    """The detector cannot be built (missing cascade, unreadable ONNX file): a one-line message."""


@dataclass(frozen=True)
class Box:
    """A face box in pixel coordinates of the (EXIF-rotated) image: top-left corner, width, height."""

    x: int
    y: int
    w: int
    h: int
    score: float = 1.0

    def as_list(self) -> list[int]:
        return [self.x, self.y, self.w, self.h]

    def iou(self, other: "Box") -> float:
        """Intersection over union with another box."""
        ix = max(0, min(self.x + self.w, other.x + other.w) - max(self.x, other.x))
        iy = max(0, min(self.y + self.h, other.y + other.h) - max(self.y, other.y))
        inter = ix * iy
        return inter / float(self.w * self.h + other.w * other.h - inter)


class FaceDetector(Protocol):
    def detect(self, image: np.ndarray) -> list[Box]:
        """(H, W, 3) uint8 RGB -> the faces in it, largest first."""


def _largest_first(boxes: list[Box]) -> list[Box]:
    return sorted(boxes, key=lambda box: (-box.w * box.h, box.x, box.y))


class HaarFaceDetector:
    """OpenCV's Viola-Jones frontal-face cascade. Large photos are searched at `max_side` pixels for speed."""

    def __init__(self, cascade: str = "haarcascade_frontalface_default.xml", scale_factor: float = 1.1,
                 min_neighbors: int = 5, min_size: int = 30, max_side: int = 1024):
        data_dir = getattr(getattr(cv2, "data", None), "haarcascades", "")
        path = Path(cascade) if Path(cascade).is_file() else Path(data_dir) / cascade
        if not path.is_file() and cascade != "haarcascade_frontalface_default.xml":
            raise DetectorError(f"{cascade}: Haar cascade file not found (a path, or a file name in {data_dir})")
        if not path.is_file() or not hasattr(cv2, "CascadeClassifier"):
            # opencv-python 5.x ships no cascades and no CascadeClassifier.
            raise DetectorError(f"OpenCV {cv2.__version__} has no Haar cascade {cascade!r}; "
                                "install opencv-python-headless<5 or use --detector yunet --detector-model FILE.onnx")
        try:  # a malformed XML file raises (cv2.error, or SystemError) instead of giving an empty cascade
            self.cascade = cv2.CascadeClassifier(str(path))
        except (cv2.error, SystemError):
            raise DetectorError(f"{path}: not a readable OpenCV cascade (malformed XML)")
        if self.cascade.empty():
            raise DetectorError(f"{path}: not a readable OpenCV cascade")
        self.scale_factor, self.min_neighbors, self.min_size, self.max_side = (
            scale_factor, min_neighbors, min_size, max_side)

    def detect(self, image: np.ndarray) -> list[Box]:
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        scale = min(1.0, self.max_side / max(gray.shape))
        if min(gray.shape) * scale < self.min_size:  # no face fits (a 1x20000 strip would shrink to 0 rows: cv2 fails)
            return []
        if scale < 1.0:
            gray = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        found = self.cascade.detectMultiScale(
            gray, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
            minSize=(self.min_size, self.min_size))
        return _largest_first([Box(*(int(round(v / scale)) for v in box)) for box in found])


class YuNetFaceDetector:
    """OpenCV's YuNet CNN detector (`cv2.FaceDetectorYN`) from an ONNX file (OpenCV Zoo's
    face_detection_yunet_2023mar.onnx; `yunet_model_path` fetches it)."""

    def __init__(self, model_path: str, score_threshold: float = 0.7, nms_threshold: float = 0.3):
        path = Path(model_path)
        if not path.is_file():
            raise DetectorError(f"{path}: YuNet model file not found")
        try:
            self.detector = cv2.FaceDetectorYN.create(str(path), "", (320, 320), score_threshold, nms_threshold)
        except cv2.error as error:
            raise DetectorError(f"{path}: not a YuNet ONNX model OpenCV can load ({str(error).strip().splitlines()[-1]})")

    def detect(self, image: np.ndarray) -> list[Box]:
        height, width = image.shape[:2]
        self.detector.setInputSize((width, height))
        _, faces = self.detector.detect(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        return yunet_boxes(faces, width, height)


def yunet_boxes(faces: np.ndarray | None, width: int, height: int) -> list[Box]:
    """`cv2.FaceDetectorYN.detect`'s rows -> boxes inside the image, largest first. Rows with a non-finite value
    (YuNet gives some on constant or 20000x1 images) or no area inside the image are dropped."""
    boxes = []
    for face in faces if faces is not None else []:
        if not np.isfinite(face[:4]).all() or not np.isfinite(face[-1]):
            continue
        x, y, w, h = (int(round(float(v))) for v in face[:4])
        x, y = max(0, x), max(0, y)
        w, h = min(w, width - x), min(h, height - y)
        if w > 0 and h > 0:
            boxes.append(Box(x, y, w, h, float(face[-1])))
    return _largest_first(boxes)


def yunet_model_path() -> str:
    """The YuNet file for `--detector yunet` without `--detector-model`: `EXPCLIP_YUNET_MODEL` (a local path or URL),
    else OpenCV Zoo's model. A URL is downloaded once into `<default-model cache>/yunet/` and kept only if
    `cv2.FaceDetectorYN` loads it (no checksum: OpenCV Zoo publishes none). Raises `DetectorError` (one line)."""
    source = os.environ.get(YUNET_VARIABLE) or YUNET_URL
    if not source.startswith(("http://", "https://")):
        YuNetFaceDetector(source)  # refuse a missing or unloadable file now, with its one-line reason
        return source
    # One file per URL: a mirror set in EXPCLIP_YUNET_MODEL never reuses another URL's download.
    path = cache_root() / "yunet" / f"{hashlib.sha256(source.encode()).hexdigest()[:12]}-{Path(source).name}"
    if path.is_file():
        return str(path)
    if offline():
        raise DetectorError(f"{source}: not in the cache ({path}) and offline mode is on (HF_HUB_OFFLINE)")
    print(f"expclip: first use of the YuNet face detector: fetching {source} (cached in {path.parent})",
          file=sys.stderr)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".download.") as download_dir:
        partial = Path(download_dir) / path.name
        try:
            download(source, partial)
        except (urllib.error.URLError, OSError, ValueError) as error:
            if isinstance(error, urllib.error.HTTPError):
                reason = f"HTTP {error.code} {error.reason}"
            else:
                reason = first_line(getattr(error, "reason", None) or error)
            raise DetectorError(f"{source}: could not download the YuNet model ({reason})")
        try:
            YuNetFaceDetector(str(partial))
        except DetectorError as error:
            raise DetectorError(f"{source}: the download is {str(error).split(': ', 1)[-1]}")
        os.replace(partial, path)
    return str(path)


def resolve_detector(name: str | None = DEFAULT_DETECTOR, model_path: str | None = None) -> tuple[str, str | None]:
    """`--detector NAME [--detector-model FILE]` -> (name, model file or None) ready for `load_detector`, resolved
    once before any work starts (download, cache), so that worker processes only open a plain file.

    YuNet without a file and without `EXPCLIP_YUNET_MODEL` falls back to Haar when OpenCV Zoo's model cannot be had
    (offline, no cached copy), printing one notice line on stderr. Raises `DetectorError` (one line) otherwise."""
    name = name or DEFAULT_DETECTOR
    if name not in DETECTORS:
        raise DetectorError(f"unknown detector {name!r}; known: {', '.join(DETECTORS)}")
    if name != "yunet" or model_path:
        return name, model_path
    try:
        return name, yunet_model_path()
    except DetectorError as error:
        if os.environ.get(YUNET_VARIABLE):  # the user named a file: theirs to fix, no silent substitute
            raise DetectorError(f"{YUNET_VARIABLE}={error}")
        print(f"expclip: YuNet face detector unavailable ({error}); using the Haar cascade, which misses tilted "
              f"faces: set {YUNET_VARIABLE} to a local face_detection_yunet_2023mar.onnx or a URL "
              "(or pass --detector haar)", file=sys.stderr)
        return "haar", None


def load_detector(name: str = DEFAULT_DETECTOR, model_path: str | None = None) -> FaceDetector:
    """The detector behind `--detector NAME [--detector-model FILE]`: the one way to build one (in any process).
    Give YuNet the file `resolve_detector` returned; raises `DetectorError` (one line)."""
    if name == "haar":
        return HaarFaceDetector(model_path) if model_path else HaarFaceDetector()
    if name == "yunet":
        return YuNetFaceDetector(model_path or yunet_model_path())
    raise DetectorError(f"unknown detector {name!r}; known: {', '.join(DETECTORS)}")


def crop_face(image: Image.Image, box: Box, margin: float = 0.2) -> Image.Image:
    """The square around the box's centre, its side `max(w, h) * (1 + 2 * margin)`; beyond the border is black,
    so the face stays centred like in aligned face crops."""
    side = max(box.w, box.h) * (1 + 2 * margin)
    cx, cy = box.x + box.w / 2, box.y + box.h / 2
    left, top = int(round(cx - side / 2)), int(round(cy - side / 2))
    size = max(1, int(round(side)))
    return image.crop((left, top, left + size, top + size))
