"""Videos for `expclip predict`: decode a video file or a folder of frames, pick the frames the model sees, and
write a clip's expression timeline as CSV and PNG.

Video files are decoded by the FFmpeg bundled with opencv-python-headless (mp4, avi, webm, mov, mkv, ...), so nothing
else needs installing. A folder of frames is read in file-name order (README: Reproducing the paper).
"""

import csv
import os
from pathlib import Path

import numpy as np
from PIL import Image

from .inputs import IMAGE_EXTENSIONS, InputError, load_image

os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # FFmpeg's own log lines would break the one-line rule
import cv2  # noqa: E402

MAX_TIMELINE_POINTS = 600  # a frame folder's per-frame timeline is thinned to this many points


def frame_files(folder: Path) -> list[Path]:
    """The image files directly inside `folder`, sorted by file name (the original's frame order)."""
    return sorted((p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                   and not p.name.startswith(".")), key=lambda p: p.name)


class Clip:
    """A video file or a folder of frames: its frame count, its frame rate when known, and random frame access."""

    def __init__(self, source):
        self.path = Path(source)
        if not self.path.exists():
            raise InputError(f"{self.path}: no such file or directory")
        if self.path.is_dir():
            self.files = frame_files(self.path)
            self.num_frames, self.fps = len(self.files), None
            if not self.files:
                raise InputError(f"{self.path}: folder of frames holds no images")
            return
        self.files = None
        if self.path.stat().st_size == 0:
            raise InputError(f"{self.path}: empty file (0 bytes)")
        capture = cv2.VideoCapture(str(self.path))
        if not capture.isOpened():
            raise InputError(f"{self.path}: cannot decode video (FFmpeg could not open it)")
        # Container frame counts can be wrong: count by decoding (grab does not convert pixels).
        fps = capture.get(cv2.CAP_PROP_FPS)
        self.fps = fps if fps and np.isfinite(fps) and fps > 0 else None
        count = 0
        while capture.grab():
            count += 1
        capture.release()
        if count == 0:
            raise InputError(f"{self.path}: video has no frames")
        self.num_frames = count

    def frames(self, indices: list[int]) -> dict[int, Image.Image]:
        """The RGB frames at `indices` (duplicates allowed), decoded in one pass."""
        wanted = set(indices)
        if self.files is not None:
            return {i: load_image(self.files[i]) for i in sorted(wanted)}
        capture = cv2.VideoCapture(str(self.path))
        found = {}
        for index in range(max(wanted) + 1):
            if not capture.grab():
                break
            if index in wanted:
                ok, bgr = capture.retrieve()
                if ok:
                    found[index] = Image.fromarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        capture.release()
        missing = wanted - set(found)
        if missing:
            raise InputError(f"{self.path}: frame {min(missing)} of {self.num_frames} could not be decoded")
        return found

    def timeline_indices(self) -> tuple[list[int], list[float] | None]:
        """Frames for `--timeline`: the middle frame of every second when the frame rate is known (times in
        seconds), else every frame, thinned to `MAX_TIMELINE_POINTS` (times None)."""
        if self.fps:
            seconds = max(1, int(np.ceil(self.num_frames / self.fps)))
            times = [min(s + 0.5, self.num_frames / self.fps) for s in range(seconds)]
            indices = [min(self.num_frames - 1, int(t * self.fps)) for t in times]
            return indices, times
        step = max(1, int(np.ceil(self.num_frames / MAX_TIMELINE_POINTS)))
        return list(range(0, self.num_frames, step)), None


def write_timeline(stem: Path, class_names: list[str], indices: list[int], times: list[float] | None,
                   probs: np.ndarray, title: str) -> dict:
    """`stem.timeline.csv` (one row per point: time, frame, top label, every class's probability) and
    `stem.timeline.png` (class probabilities over time). Returns both paths."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    csv_path, png_path = Path(f"{stem}.timeline.csv"), Path(f"{stem}.timeline.png")
    with open(csv_path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["time_s", "frame", "label", *class_names])
        for row, index in enumerate(indices):
            time = "" if times is None else f"{times[row]:.3f}"
            label = class_names[int(probs[row].argmax())]
            writer.writerow([time, index, label, *(f"{p:.6f}" for p in probs[row])])
    x = times if times is not None else indices
    figure, axes = plt.subplots(figsize=(10, 4), dpi=100)
    for column, name in enumerate(class_names):
        axes.plot(x, probs[:, column], label=name, marker="." if len(x) < 60 else None)
    axes.set_xlabel("time (s)" if times is not None else "frame")
    axes.set_ylabel("probability")
    axes.set_ylim(0, 1)
    axes.set_title(title)
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    figure.tight_layout()
    figure.savefig(png_path)
    plt.close(figure)
    return {"csv": str(csv_path), "png": str(png_path)}
