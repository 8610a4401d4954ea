"""Videos for `expclip predict`: decode a video file or a folder of frames, pick the frames the model sees, write a
clip's expression timeline as CSV and PNG, and, with `--track`, each person's timeline and the annotated video.

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
    """A video file or a folder of frames: its frame count, its frame rate when known, and random frame access.
    `skipped`: the folder's 0-byte frame files, left out of `files` and `num_frames`."""

    def __init__(self, source):
        self.path = Path(source)
        if not self.path.exists():
            raise InputError(f"{self.path}: no such file or directory")
        if self.path.is_dir():
            files = frame_files(self.path)
            # a 0-byte frame (an interrupted copy or extraction) is skipped and counted, not the whole clip lost
            self.files = [f for f in files if f.stat().st_size > 0]
            self.skipped = len(files) - len(self.files)
            self.num_frames, self.fps = len(self.files), None
            if not self.files:
                raise InputError(f"{self.path}: folder of frames holds no images"
                                 + (f" ({self.skipped} empty files)" if self.skipped else ""))
            return
        self.files, self.skipped = None, 0
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

    def tracking_indices(self, track_fps: float) -> tuple[list[int], list[float]]:
        """Frames for `--track`: `track_fps` per second of video (every frame when the video has fewer), with their
        times in seconds. A folder of frames has no frame rate: every frame, taken as `track_fps` per second."""
        if not self.fps:
            return list(range(self.num_frames)), [i / track_fps for i in range(self.num_frames)]
        step = max(1.0, self.fps / track_fps)
        indices = sorted({int(round(k * step)) for k in range(int(np.ceil(self.num_frames / step)))
                          if int(round(k * step)) < self.num_frames})
        return indices, [i / self.fps for i in indices]

    def iter_frames(self, indices=None):
        """Yield (index, RGB frame) in index order, decoded in one pass; a frame that cannot be decoded gives
        (index, None) and the rest goes on. `indices`: sorted frame indices (default: every frame)."""
        indices = range(self.num_frames) if indices is None else indices
        if self.files is not None:
            for index in indices:
                try:
                    yield index, load_image(self.files[index])
                except InputError:
                    yield index, None
            return
        capture, position = cv2.VideoCapture(str(self.path)), 0
        try:
            for index in indices:
                frame = None
                while position <= index and capture.grab():
                    if position == index:
                        ok, bgr = capture.retrieve()
                        frame = Image.fromarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)) if ok else None
                    position += 1
                position = max(position, index + 1)
                yield index, frame
        finally:
            capture.release()


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


def write_track_timeline(stem: Path, class_names: list[str], tracks: list[dict], title: str) -> dict:
    """`stem.tracks.csv` (one row per tracked face: track, time, frame, top label, every class's probability) and
    `stem.tracks.png` (one panel per person: class probabilities over time). `tracks`: the track records, each with
    `frames`, `times` and per-frame `probs`. Returns both paths."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    csv_path, png_path = Path(f"{stem}.tracks.csv"), Path(f"{stem}.tracks.png")
    with open(csv_path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["track", "time_s", "frame", "label", *class_names])
        for track in tracks:
            for time, index, probs in zip(track["times"], track["frames"], track["probs"]):
                label = class_names[int(np.argmax(probs))]
                writer.writerow([track["track"], f"{time:.3f}", index, label, *(f"{p:.6f}" for p in probs)])
    panels = max(1, len(tracks))
    figure, axes = plt.subplots(panels, 1, figsize=(10, 1.0 + 2.2 * panels), dpi=100, sharex=True, squeeze=False)
    steps = [b - a for t in tracks for a, b in zip(t["times"], t["times"][1:])]
    gap = 2.5 * min(steps) if steps else np.inf  # longer than this: the person was away, the line breaks
    for axis, track in zip(axes[:, 0], tracks):
        times, probs = list(track["times"]), [np.asarray(q, dtype=float) for q in track["probs"]]
        for position in reversed(range(1, len(times))):
            if times[position] - times[position - 1] > gap:
                times.insert(position, (times[position] + times[position - 1]) / 2)
                probs.insert(position, np.full(len(class_names), np.nan))
        probs = np.asarray(probs)
        for column, name in enumerate(class_names):
            axis.plot(times, probs[:, column], label=name, marker="." if len(probs) < 60 else None)
        axis.set_ylim(0, 1)
        axis.set_ylabel("probability")
        axis.set_title(f"person {track['track']}: {track['label']}", fontsize="medium", loc="left")
    axes[-1, 0].set_xlabel("time (s)")
    axes[0, 0].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(png_path)
    plt.close(figure)
    return {"csv": str(csv_path), "png": str(png_path)}


# ----- the annotated video ----------------------------------------------------------------------------------------------

TRACK_COLOURS = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
                 (240, 50, 230), (210, 245, 60), (0, 128, 128), (170, 110, 40)]  # RGB, one per track number


def track_colour(number: int) -> tuple[int, int, int]:
    return TRACK_COLOURS[(number - 1) % len(TRACK_COLOURS)]


# (fourcc, codec name) to try, by file suffix: MP4 for files; WebM (VP8) for the app, which browsers play when
# OpenCV's FFmpeg has no H.264 encoder (pip's opencv-python-headless has none) and mp4v would not play.
VIDEO_CODECS = {".mp4": (("avc1", "h264"), ("mp4v", "mp4v")), ".webm": (("VP80", "vp8"), ("VP90", "vp9"))}


def open_video_writer(path: Path, fps: float, size: tuple[int, int]):
    """An OpenCV writer for `path`: for an MP4, H.264 when OpenCV's FFmpeg can encode it, else MPEG-4 Part 2
    (`mp4v`, which every FFmpeg build writes); for a WebM, VP8. Returns (writer, codec name)."""
    logging = cv2.utils.logging
    level = logging.getLogLevel()
    logging.setLogLevel(logging.LOG_LEVEL_SILENT)  # a missing H.264 encoder is expected, not worth a line
    try:
        for fourcc, codec in VIDEO_CODECS[Path(path).suffix.lower()]:
            writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, size)
            if writer.isOpened():
                return writer, codec
            writer.release()
    finally:
        logging.setLogLevel(level)
    raise OSError(f"OpenCV's FFmpeg cannot write a {Path(path).suffix[1:].upper()} video ({Path(path).name})")


def boxes_at(frame: int, observed: list[tuple[int, list[int], str]], step: float):
    """A track's box and label at `frame`, from its sampled observations [(frame, [x, y, w, h], label), ...] (in
    frame order): interpolated between two observations at most two sampling steps apart, else the nearest one
    within half a step; None where the track is not shown."""
    frames = [o[0] for o in observed]
    position = int(np.searchsorted(frames, frame))
    after = observed[position] if position < len(observed) else None
    before = observed[position - 1] if position > 0 else None
    if after is not None and after[0] == frame:
        return after[1], after[2]
    if before is not None and after is not None and after[0] - before[0] <= 2 * step:
        s = (frame - before[0]) / (after[0] - before[0])
        box = [int(round(a + (b - a) * s)) for a, b in zip(before[1], after[1])]
        return box, (before if s < 0.5 else after)[2]
    near = min((o for o in (before, after) if o is not None), key=lambda o: abs(o[0] - frame), default=None)
    if near is not None and abs(near[0] - frame) <= step / 2:
        return near[1], near[2]
    return None


def draw_tracks(rgb: np.ndarray, shown: list[tuple[int, list[int], str]]) -> np.ndarray:
    """Each (track number, box, label) drawn on a copy of the frame: the box in the track's colour, and
    "number label" above it."""
    canvas = np.ascontiguousarray(rgb.copy())
    thickness = max(2, min(canvas.shape[:2]) // 200)
    scale = max(0.4, min(canvas.shape[:2]) / 900)
    for number, (x, y, w, h), label in shown:
        colour = track_colour(number)
        cv2.rectangle(canvas, (x, y), (x + w, y + h), colour, thickness)
        text = f"{number} {label}"
        (tw, th), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        top = max(0, y - th - baseline - 4)
        cv2.rectangle(canvas, (x, top), (x + tw + 4, top + th + baseline + 4), colour, -1)
        cv2.putText(canvas, text, (x + 2, top + th + 2), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1,
                    cv2.LINE_AA)
    return canvas


def write_annotated_video(source, path: Path, tracks: list[dict], fps: float, step: float) -> str:
    """Every frame of `source` (a video file or folder of frames) with each tracked face boxed, numbered and
    labelled, as an MP4 at `path` with the source's size and frame rate (no audio). `tracks`: the track records with
    per-frame `labels`; `step`: frames between sampled ones. Written to a hidden partial file and renamed at the
    end: a failure (a frame whose size changes mid-stream) leaves nothing behind. Returns the codec name."""
    clip = Clip(source)
    observed = {t["track"]: list(zip(t["frames"], t["boxes"], t["labels"])) for t in tracks}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.stem}.partial{path.suffix}")
    writer, codec, size, previous = None, None, None, None
    try:
        for index, frame in clip.iter_frames():
            rgb = np.asarray(frame) if frame is not None else previous
            if rgb is None:  # the first frames cannot be decoded: nothing to show yet
                continue
            if size is None:
                size = (rgb.shape[1], rgb.shape[0])
                writer, codec = open_video_writer(partial, fps, size)
            elif (rgb.shape[1], rgb.shape[0]) != size:
                raise InputError(f"{clip.path}: frame {index} is {rgb.shape[1]}x{rgb.shape[0]}, not {size[0]}x{size[1]} "
                                 f"like the frames before; the annotated video is not written")
            previous = rgb
            shown = [(number, *found) for number, obs in observed.items()
                     if (found := boxes_at(index, obs, step)) is not None]
            writer.write(cv2.cvtColor(draw_tracks(rgb, shown), cv2.COLOR_RGB2BGR))
        if writer is None:
            raise InputError(f"{clip.path}: no frame could be decoded; the annotated video is not written")
        writer.release()
        writer = None
        os.replace(partial, path)
    finally:
        if writer is not None:
            writer.release()
        partial.unlink(missing_ok=True)
    return codec
