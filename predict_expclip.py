"""`expclip predict`: facial expressions of images, faces in photos and videos, and the same in two lines of Python.

    from predict_expclip import ExpCLIPPredictor
    ExpCLIPPredictor.from_pretrained("path/to/model")(["photo.jpg", "clip.mp4"], faces=True)

Every input is read by `inputs_expclip.load_image`; a bad one becomes a one-line `InputError` that names it, and the
rest goes on.
"""

import argparse
import csv
import io
import json
import os
import sys
import threading
import time
import traceback
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from faces_expclip import crop_face
from inputs_expclip import (
    DTYPES,
    IMAGE_EXTENSIONS,
    MIXED_PRECISION,
    VIDEO_EXTENSIONS,
    InputError,
    is_url,
    load_image,
    one_line,
    read_prompt_file,
    walk_files,
)
from outputs_expclip import OutputError, check_output_file, check_output_folder, mark_output

# ----- label sets and prompt sets -------------------------------------------------------------------------------------


def parse_labels(text: str | None) -> list[str] | None:
    """`--labels "happy, sad"` -> ["happy", "sad"]; None keeps the model's own labels. Empty entries are kept so that
    validation can refuse them."""
    return None if text is None else [name.strip() for name in text.split(",")]


def parse_prompts(text: str | None) -> str | list[str] | None:
    """`--prompts type5` (a named set) or `--prompts "a photo of {}.|a face showing {}."` (templates, `|`-separated)."""
    from configuration_expclip import PROMPT_SETS

    if text is None or text in PROMPT_SETS:
        return text
    return [template.strip() for template in text.split("|")]


def check_label_set(labels: list[str] | None, prompts: str | list[str] | None) -> None:
    """Refuse a bad label list or prompt set before any work starts: raises ValueError with a one-line message."""
    from modeling_expclip import build_class_prompts

    if labels is not None and (not labels or all(not name for name in labels)):
        raise ValueError("the label list is empty")
    if labels is not None and any(not name for name in labels):
        raise ValueError(f"empty label in {','.join(labels)!r}")
    build_class_prompts(labels or ["neutral"], prompts or "type3")


# ----- inputs ----------------------------------------------------------------------------------------------------------


@dataclass
class Item:
    """One thing to predict: an image (path, PIL image or array), a video file or a folder of frames."""

    source: object
    name: str
    kind: str  # "image", "video" (a file or a folder of frames) or "error"
    error: str | None = None


def collect_items(sources, frames: bool = False) -> list[Item]:
    """Paths, folders (walked recursively, sorted), PIL images and arrays -> items. With `frames`, each folder is one
    video whose frames are its images. Problems become "error" items so the rest still runs."""
    items = []
    for position, source in enumerate(sources):
        if isinstance(source, Image.Image):
            items.append(Item(source, f"<PIL image {position}>", "image"))
            continue
        if isinstance(source, np.ndarray):
            items.append(Item(source, f"<array {position}>", "image"))
            continue
        path = Path(source)
        if is_url(source):
            items.append(Item(source, str(source), "error", f"{source}: URLs are not read; download the file first"))
        elif not path.exists():
            items.append(Item(path, str(path), "error", f"{path}: no such file or directory"))
        elif path.is_dir() and frames:
            items.append(Item(path, str(path), "video"))
        elif path.is_dir():
            # Symlinked sub-folders are walked too, each real folder once (no loops).
            found = [p for p in walk_files(path) if p.suffix.lower() in IMAGE_EXTENSIONS | VIDEO_EXTENSIONS]
            if not found:
                items.append(Item(path, str(path), "error", f"{path}: folder holds no images or videos"))
            for file in found:
                items.append(Item(file, str(file), "video" if file.suffix.lower() in VIDEO_EXTENSIONS else "image"))
        else:
            items.append(Item(path, str(path), "video" if path.suffix.lower() in VIDEO_EXTENSIONS else "image"))
    return items


# ----- the predictor ---------------------------------------------------------------------------------------------------


class ExpCLIPPredictor:
    """Load once, predict many: images, faces in photos, videos.

        predictor = ExpCLIPPredictor.from_pretrained("path/to/expclip-folder")
        predictor(["photo.jpg", "clip.mp4"], faces=True)  # -> list of plain dicts

    Everything goes through the model's batched zero-shot API: the label prompts are encoded once
    (`model.text_classifier`), images and clips are scored `batch_size` at a time (`model.classify`). Images are
    read (decoded, faces found and cut, preprocessed) by `workers` threads, one batch ahead of the model.
    """

    def __init__(self, model, processor, labels=None, prompts=None, detector=None, batch_size: int = 32,
                 use_projection: bool = True, short_clip: str = "even", face_margin: float = 0.2,
                 workers: int | None = None, prompt_overrides: dict | None = None):
        check_label_set(labels, prompts)
        if batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {batch_size}")
        workers = default_workers() if workers is None else workers
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.model, self.processor = model.eval(), processor
        # per-class prompts: the model's own prompt_overrides, then `prompt_overrides` (e.g. --prompt-file) over them
        overrides = {**(model.config.prompt_overrides or {}), **(prompt_overrides or {})}
        self.classifier = model.text_classifier(processor.tokenizer, labels, prompts, overrides,
                                                use_projection=use_projection)
        self.class_names = list(self.classifier.class_names)
        self.detector, self.batch_size, self.use_projection = detector, batch_size, use_projection
        self.short_clip, self.face_margin = short_clip, face_margin
        self.num_segments = int(getattr(model.config, "num_segments", 16))
        self.workers = workers
        self.timings = {"decode": 0.0, "detection": 0.0, "preprocess": 0.0, "model": 0.0}  # seconds, summed over
        self._timings_lock = threading.Lock()  # threads
        self._detector_lock = threading.Lock()  # OpenCV's detectors are not thread-safe
        self._timeline_stems = set()

    @classmethod
    def from_pretrained(cls, model: str | None = None, device: str = "auto", labels=None, prompts=None,
                        detector: str | None = "yunet", detector_model: str | None = None, dtype: str = "float32",
                        **kwargs):
        """`model`: a local Exp-CLIP folder, a Hub id, or None/an alias for the authors' converted head (fetched
        and cached on first use). `dtype`: float32, or bfloat16/float16 for speed (GPUs, CPUs with AMX), or
        float16-mixed, the original's precision on a GPU (SPEC §6).
        Labels and prompts are checked before anything is loaded."""
        import torch
        from transformers import AutoProcessor

        from convert_expclip_original import resolve_model
        from faces_expclip import load_detector, resolve_detector
        from modeling_expclip import ExpCLIPModel

        check_label_set(labels, prompts)
        device = resolve_device(device)
        face_detector = load_detector(*resolve_detector(detector, detector_model)) if detector else None
        folder = resolve_model(model)
        processor = AutoProcessor.from_pretrained(folder)
        mixed = dtype == MIXED_PRECISION  # the original's GPU precision: float16 CLIP, float32 LayerNorm and head
        network = ExpCLIPModel.from_pretrained(folder, dtype=torch.float32 if mixed else getattr(torch, dtype))
        network = (network.to_original_precision() if mixed else network).to(torch.device(device))
        return cls(network, processor, labels, prompts, detector=face_detector, **kwargs)

    # ----- model calls ----------------------------------------------------------------------------------------------

    def pixel_values(self, images: list[Image.Image]):
        """RGB PIL images -> the model's (n, 3, H, W) input through the folder's own image processor."""
        # channels_last stated outright: a 1x1 or 3x3 image is otherwise taken as channels-first.
        return self.processor.image_processor(
            images=[np.asarray(image) for image in images], return_tensors="pt", input_data_format="channels_last"
        )["pixel_values"]

    def _timed(self, stage: str, start: float) -> None:
        with self._timings_lock:
            self.timings[stage] += time.perf_counter() - start

    def _preprocess(self, images: list[Image.Image]):
        start = time.perf_counter()
        pixel_values = self.pixel_values(images)
        self._timed("preprocess", start)
        return pixel_values

    def _probabilities(self, pixel_values) -> np.ndarray:
        start = time.perf_counter()
        logits = self.model.classify(pixel_values, self.classifier, self.use_projection, self.batch_size)
        probs = logits.float().softmax(-1).cpu().numpy()
        self._timed("model", start)
        return probs

    def classify_images(self, images: list[Image.Image]) -> np.ndarray:
        """(n, num_classes) probabilities for RGB images (whole images or face crops)."""
        if not images:
            return np.zeros((0, len(self.class_names)), dtype=np.float32)
        return self._probabilities(self._preprocess(images))

    def classify_clip(self, frames: list[Image.Image]) -> np.ndarray:
        """(num_classes,) probabilities of one clip from its sampled frames (`get_video_features`: frame average)."""
        return self._probabilities(self._preprocess(frames).unsqueeze(0))[0]

    def detect_faces(self, image: Image.Image):
        with self._detector_lock:  # one detection at a time; OpenCV spreads each one over the cores itself
            start = time.perf_counter()
            boxes = self.detector.detect(np.asarray(image))
        self._timed("detection", start)
        return boxes

    def _record(self, item: Item, kind: str, probs: np.ndarray, **extra) -> dict:
        if not np.isfinite(probs).all():  # never a confident label (or NaN in JSON) from a broken model
            return {"source": item.name, "kind": "error", "error": f"{item.name}: the model gave NaN scores"}
        scores = {name: float(p) for name, p in zip(self.class_names, probs)}
        return {"source": item.name, "kind": kind, "label": self.class_names[int(np.argmax(probs))],
                "scores": scores, **extra}

    # ----- images ---------------------------------------------------------------------------------------------------

    def _read_image(self, item: Item, faces: bool, keep_image: bool = True):
        """Decode one image, find its faces (all of it without `faces`), cut and preprocess them: the work of a
        reader thread. Returns (the image, or None unless `keep_image`, boxes, pixel values or None); raises on a
        bad input."""
        start = time.perf_counter()
        try:
            image = load_image(item.source)
        finally:
            self._timed("decode", start)
        boxes = self.detect_faces(image) if faces else [None]
        crops = [image if box is None else crop_face(image, box, self.face_margin) for box in boxes]
        return image if keep_image else None, boxes, (self._preprocess(crops) if crops else None)

    def _predict_images(self, items: list[Item], reads: list) -> list[tuple[Item, Image.Image | None, list[dict]]]:
        """One batch of image items and their reads -> (item, the image if kept, its records): one model call."""
        import torch

        loaded, pixel_values, owners = [], [], []
        for item, read in zip(items, reads):
            if isinstance(read, dict):  # the error record
                loaded.append((item, None, [read]))
                continue
            image, boxes, pixels = read
            if not boxes:  # a result, not an error: the photo was read, it just shows no face
                loaded.append((item, image, [{"source": item.name, "kind": "image", "label": None, "scores": {},
                                              "faces": 0, "note": "no face found"}]))
                continue
            loaded.append((item, image, [None] * len(boxes)))
            pixel_values.append(pixels)
            owners.extend((len(loaded) - 1, index, box) for index, box in enumerate(boxes))
        probs = self._probabilities(torch.cat(pixel_values)) if pixel_values else []
        for (slot, index, box), row in zip(owners, probs):
            item = loaded[slot][0]
            if box is None:
                loaded[slot][2][index] = self._record(item, "image", row)
            else:
                loaded[slot][2][index] = self._record(item, "face", row, face=index + 1, box=box.as_list())
        return loaded

    # ----- videos ---------------------------------------------------------------------------------------------------

    def _predict_video(self, item: Item, faces: bool, timeline_dir: Path | None) -> dict:
        """A clip-level prediction from `num_segments` sampled frames (SPEC §5), plus the timeline if asked for."""
        from modeling_expclip import sample_segment_indices
        from video_expclip import Clip, write_timeline

        start = time.perf_counter()
        clip = Clip(item.source)
        indices = sample_segment_indices(clip.num_frames, self.num_segments, self.short_clip)
        timeline_indices, times = clip.timeline_indices() if timeline_dir is not None else ([], None)
        frames = clip.frames(indices + timeline_indices)
        self.timings["decode"] += time.perf_counter() - start
        faces_found = None
        if faces:  # the largest face of each frame; the whole frame where none is found
            frames, faces_found = self._largest_faces(frames)
        record = self._record(item, "video", self.classify_clip([frames[i] for i in indices]),
                              frames=clip.num_frames, fps=clip.fps, frame_indices=indices)
        if faces_found is not None:
            record["frames_with_face"] = sum(faces_found[i] for i in indices)  # of the sampled frames
        if timeline_dir is not None:
            probs = self.classify_images([frames[i] for i in timeline_indices])
            name = Path(item.name).stem if Path(item.name).suffix else Path(item.name).name
            stem, counter = Path(timeline_dir) / name, 1
            while stem in self._timeline_stems:  # two clips with one name in different folders
                stem, counter = Path(timeline_dir) / f"{name}-{counter}", counter + 1
            self._timeline_stems.add(stem)
            record["timeline"] = write_timeline(stem, self.class_names, timeline_indices, times, probs, item.name)
        return record

    def _largest_faces(self, frames: dict) -> tuple[dict, dict]:
        cropped, found = {}, {}
        for index, frame in frames.items():
            boxes = self.detect_faces(frame)
            found[index] = bool(boxes)
            cropped[index] = crop_face(frame, boxes[0], self.face_margin) if boxes else frame
        return cropped, found

    # ----- everything -----------------------------------------------------------------------------------------------

    def predict(self, items: list[Item], faces: bool = False, timeline_dir=None, annotate_dir=None, progress=None,
                debug: bool = False):
        """Yield (item, records) in input order; a bad item gives one record with "error" and the rest goes on.

        Consecutive images are classified `batch_size` at a time, read by the worker threads while the model
        scores the batch before; a video is one unit."""
        if faces and self.detector is None:
            raise ValueError("faces=True needs a face detector (from_pretrained(..., detector='haar'))")
        annotated, self._timeline_stems = set(), set()
        batches, position = [], 0
        while position < len(items):
            batch = [items[position]]
            while (batch[0].kind == "image" and len(batch) < self.batch_size and position + len(batch) < len(items)
                   and items[position + len(batch)].kind == "image"):
                batch.append(items[position + len(batch)])
            batches.append(batch)
            position += len(batch)
        keep = annotate_dir is not None
        readers = ThreadPoolExecutor(self.workers, thread_name_prefix="expclip-read")

        def read(batch):  # futures of each image's read, or None for a video or an error item
            if batch[0].kind != "image":
                return None
            # Decoded photos are kept only to be annotated: two batches of 12-megapixel photos would be 2 GB.
            return [readers.submit(self._guarded, item, debug, self._read_image, item, faces, keep) for item in batch]

        try:
            ahead = read(batches[0]) if batches else None
            for number, batch in enumerate(batches):
                reads, ahead = ahead, (read(batches[number + 1]) if number + 1 < len(batches) else None)
                yield from self._finish(batch, reads, faces, timeline_dir, annotate_dir, annotated, progress, debug)
        finally:  # also on Ctrl-C or when the caller stops early: reads not yet started are dropped
            readers.shutdown(cancel_futures=True)

    def _finish(self, batch, reads, faces, timeline_dir, annotate_dir, annotated, progress, debug):
        """Classify one batch (images: their reads' results; a video; an error item) and yield (item, records)."""
        item = batch[0]
        if item.kind == "image":
            results = self._predict_images(batch, [future.result() for future in reads])
        elif item.kind == "video":
            results = [(item, None, [self._guarded(item, debug, self._predict_video, item, faces, timeline_dir)])]
        else:
            results = [(item, None, [{"source": item.name, "kind": "error", "error": item.error}])]
        for item, image, records in results:
            if annotate_dir is not None and image is not None:
                try:  # a file that cannot be written is this item's problem, not the run's
                    path = annotate(image, records, Path(annotate_dir), item.name, annotated)
                except OSError as error:
                    records = [{"source": item.name, "kind": "error",
                                "error": f"{item.name}: annotated image not written ({one_line(error)})"}] + records
                else:
                    for record in records:
                        record["annotated"] = str(path)
            if progress is not None:
                progress.update(1)
            yield item, records

    @staticmethod
    def _guarded(item: Item, debug: bool, work, *args):
        """`work(*args)`, or the item's one-line error record when it raises (the traceback too with `debug`)."""
        try:
            return work(*args)
        except Exception as error:  # noqa: BLE001 -- one bad item must not stop the rest
            if debug:
                traceback.print_exc()
            reason = str(error) if isinstance(error, InputError) else f"{item.name}: {one_line(error)}"
            return {"source": item.name, "kind": item.kind, "error": reason}

    def __call__(self, sources, faces: bool = False, frames: bool = False, timeline_dir=None, annotate_dir=None):
        """A path, PIL image or array -> one dict (a list of dicts with `faces=True`: one per face); a list -> a
        flat list of dicts in input order. Bad inputs give a dict with "error" instead of raising."""
        single = not isinstance(sources, (list, tuple))
        items = collect_items([sources] if single else list(sources), frames=frames)
        records = [r for _, rs in self.predict(items, faces, timeline_dir, annotate_dir) for r in rs]
        if single and not faces and len(records) == 1:
            return records[0]
        return records


def default_workers() -> int:
    """Reader threads by default: one per CPU core this process may use, at most 8."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(8, cores))


def resolve_device(device: str) -> str:
    """auto -> cuda when a GPU is there, else cpu; a named device that is not there is refused (ValueError)."""
    if device not in ("auto", "cpu") and not device.startswith("cuda"):
        raise ValueError(f"unknown device {device!r}; use auto, cpu or cuda")
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: no CUDA GPU is available (use --device cpu or auto)")
    return device


# ----- annotated images ------------------------------------------------------------------------------------------------


def annotate(image: Image.Image, records: list[dict], folder: Path, name: str, taken: set) -> Path:
    """Draw each face box (or the whole image's label) with its top label and probability; write a JPEG into
    `folder` under the input's stem (a counter is appended when two inputs share a stem)."""
    from PIL import ImageDraw, ImageFont

    folder.mkdir(parents=True, exist_ok=True)
    canvas = image.copy()
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=max(10, min(canvas.size) // 25))
    for record in records:
        if record.get("error") or record.get("label") is None:
            text, box = record.get("note", "no prediction"), None
        else:
            text, box = f"{record['label']} {record['scores'][record['label']]:.2f}", record.get("box")
        if box:
            x, y, w, h = box
            draw.rectangle((x, y, x + w, y + h), outline=(255, 40, 40), width=max(2, min(canvas.size) // 200))
            origin = (x, max(0, y - font.size - 4))
        else:
            origin = (4, 4)
        left, top, right, bottom = draw.textbbox(origin, text, font=font)
        draw.rectangle((left - 2, top - 2, right + 2, bottom + 2), fill=(0, 0, 0))
        draw.text(origin, text, fill=(255, 255, 255), font=font)
    stem = Path(name).stem or "image"
    while len(stem.encode("utf-8", "surrogateescape")) > 200:  # file systems allow 255 bytes per name
        stem = stem[:-1]
    path, counter = folder / f"{stem}.jpg", 1
    while path in taken:
        path, counter = folder / f"{stem}-{counter}.jpg", counter + 1
    taken.add(path)
    canvas.save(path, quality=90)
    return path


# ----- output formats --------------------------------------------------------------------------------------------------


def _item_label(record: dict) -> str:
    if record.get("kind") == "face":
        x, y, w, h = record["box"]
        return f"{record['source']} [face {record['face']} at {x},{y} {w}x{h}]"
    if record.get("kind") == "video" and "frames" in record:
        return f"{record['source']} [clip, {len(set(record['frame_indices']))} of {record['frames']} frames]"
    return record["source"]


def _display_width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(char) in "WF" else 1 for char in text)


def _pad(text: str, width: int) -> str:
    """Left-justify for a terminal, where CJK characters take two columns."""
    return text + " " * max(0, width - _display_width(text))


def format_table(records: list[dict], class_names: list[str]) -> str:
    """One row per image, face or clip: the item, its top label and every class's probability."""
    rows = [r for r in records if not r.get("error")]
    width = max([len("item")] + [_display_width(_item_label(r)) for r in rows])
    label_width = max([len("label")] + [len(n) for n in class_names])
    columns = [max(6, len(name)) for name in class_names]
    lines = ["  ".join([f"{'item':<{width}}", f"{'label':<{label_width}}"]
                       + [f"{name:>{c}}" for name, c in zip(class_names, columns)])]
    for record in rows:
        if record.get("label") is None:
            lines.append(f"{_pad(_item_label(record), width)}  {record.get('note', '')}")
            continue
        probs = [f"{record['scores'].get(name, 0.0):>{c}.3f}" for name, c in zip(class_names, columns)]
        lines.append("  ".join([_pad(_item_label(record), width), f"{record['label']:<{label_width}}"] + probs))
    return "\n".join(lines) + "\n"


def format_csv(records: list[dict], class_names: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["source", "kind", "face", "x", "y", "w", "h", "label", *class_names, "note", "error"])
    for record in records:
        box = record.get("box") or ["", "", "", ""]
        scores = record.get("scores") or {}
        writer.writerow([record["source"], record.get("kind", ""), record.get("face", ""), *box,
                         record.get("label") or "", *(f"{scores[n]:.6f}" if n in scores else "" for n in class_names),
                         record.get("note", ""), record.get("error", "")])
    return buffer.getvalue()


def format_records(records: list[dict], class_names: list[str], output_format: str) -> str:
    if output_format == "json":
        return json.dumps(records, indent=2, ensure_ascii=False) + "\n"
    if output_format == "jsonl":
        return "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
    if output_format == "csv":
        return format_csv(records, class_names)
    return format_table(records, class_names)


# ----- command line ----------------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="PATH",
                        help="images, videos, or folders of them (walked recursively)")
    parser.add_argument("--model", default=None,
                        help="local Exp-CLIP folder or Hub id; default: the authors' L/14 head (fetched once, cached); "
                             "aliases expclip-l14, expclip-b16, expclip-b32")
    parser.add_argument("--labels", default=None, help="comma-separated label set (default: the model's, the 7 basic "
                                                       "expressions)")
    parser.add_argument("--prompts", default=None, help="prompt set: type1..type5 (type4/type5: the original's per-class "
                                                        "lists), type4-templates, type5-templates, or templates with "
                                                        "{} separated by | (default: the model's, type3)")
    parser.add_argument("--prompt-file", default=None, metavar="FILE.json",
                        help='per-class prompts {"class": ["prompt", ...], ...}, replacing those classes\' prompts')
    parser.add_argument("--format", dest="output_format", choices=("table", "json", "jsonl", "csv"), default="table",
                        help="table (default, for the terminal), json, jsonl or csv")
    parser.add_argument("--output", default=None, metavar="FILE", help="write the results here instead of stdout")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output file (never an input)")
    parser.add_argument("--faces", action="store_true",
                        help="detect faces and classify each one (videos: the largest face of each sampled frame)")
    parser.add_argument("--detector", choices=("yunet", "haar"), default="yunet",
                        help="face detector: OpenCV's YuNet (default; its model is fetched once from OpenCV Zoo, or "
                             "taken from EXPCLIP_YUNET_MODEL, a path or URL; offline without it: Haar, with a notice), "
                             "or OpenCV's bundled Haar cascade")
    parser.add_argument("--detector-model", default=None, metavar="FILE",
                        help="YuNet ONNX file instead of the fetched one; for haar, another cascade (a file, or a name "
                             "in cv2.data such as haarcascade_frontalface_alt2.xml)")
    parser.add_argument("--frames", action="store_true",
                        help="treat each folder given as the frames of one video (sorted by file name)")
    parser.add_argument("--timeline", action="store_true",
                        help="videos: per-second probabilities (per frame for a folder of frames) as CSV + PNG plot")
    parser.add_argument("--timeline-dir", default=None, metavar="DIR",
                        help="where --timeline writes NAME.timeline.csv/.png (default: a folder `timelines` next "
                             "to --output, else in the current folder)")
    parser.add_argument("--annotate", default=None, metavar="DIR", help="write each image with boxes and labels here")
    parser.add_argument("--batch-size", type=int, default=32, metavar="N", help="images per model call (default 32)")
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="threads that decode images and find faces while the model runs (default: one per CPU "
                             "core, at most 8)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    parser.add_argument("--dtype", choices=DTYPES, default="float32",
                        help="model precision: float32 (default; the original on CPU), bfloat16/float16 (several "
                             "times faster on GPUs and on CPUs with AMX, probabilities within about 1e-3), or "
                             "float16-mixed (the original on a GPU: float16 CLIP, float32 LayerNorm and head)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")


def _fail(message: str, status: int) -> int:
    print(f"expclip predict: error: {message}", file=sys.stderr)
    return status


def run(args: argparse.Namespace) -> int:
    # Options first, cheapest first: a bad one is refused before any model is loaded or any file read.
    if args.batch_size < 1:
        return _fail(f"--batch-size must be at least 1, got {args.batch_size}", 2)
    if args.workers is not None and args.workers < 1:
        return _fail(f"--workers must be at least 1, got {args.workers}", 2)
    timeline_dir = None
    if args.timeline:
        timeline_dir = Path(args.timeline_dir or (Path(args.output).parent if args.output else Path()) / "timelines")
    try:  # where the run writes, before any work: never an input, never a folder holding other files
        if args.output:
            check_output_file(args.output, args.paths, args.overwrite)
        for option, folder in (("--annotate", args.annotate), ("--timeline-dir", timeline_dir)):
            if folder is not None:
                check_output_folder(folder, "predict", args.paths, reuse=True, option=option)
    except OutputError as error:
        return _fail(str(error), 2)
    try:
        device = resolve_device(args.device)
    except ValueError as error:
        return _fail(str(error), 2)
    from faces_expclip import DetectorError, load_detector, resolve_detector

    try:  # YuNet's file is fetched (or Haar chosen, with a notice) here, once, before any work starts
        detector = load_detector(*resolve_detector(args.detector, args.detector_model)) if args.faces else None
    except DetectorError as error:
        return _fail(str(error), 2)
    from transformers.utils import logging as hf_logging

    if not args.debug:  # warnings and weight-loading bars of transformers are noise to a user here
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    labels, prompts = parse_labels(args.labels), parse_prompts(args.prompts)
    try:
        check_label_set(labels, prompts)
    except ValueError as error:
        return _fail(str(error), 2)
    try:
        prompt_file = read_prompt_file(args.prompt_file, labels) if args.prompt_file else None
    except InputError as error:
        return _fail(str(error), 2)

    from convert_expclip_original import ModelFetchError, resolve_model

    try:
        folder = resolve_model(args.model)
        if prompt_file and labels is None:  # the model's own label set: read from its config, before loading it
            from configuration_expclip import ExpCLIPConfig

            read_prompt_file(args.prompt_file, ExpCLIPConfig.from_pretrained(folder).class_names)
        predictor = ExpCLIPPredictor.from_pretrained(folder, device, labels, prompts, detector=None,
                                                     dtype=args.dtype, batch_size=args.batch_size,
                                                     workers=args.workers, prompt_overrides=prompt_file)
        predictor.detector = detector
    except ModelFetchError as error:
        return _fail(str(error), 1)
    except InputError as error:  # --prompt-file names a class outside the model's label set
        return _fail(str(error), 2)
    except Exception as error:  # noqa: BLE001 -- any load failure is one line unless --debug
        if args.debug:
            raise
        return _fail(f"cannot load the model {args.model or 'expclip-l14'!r}: {one_line(error)}", 1)

    items = collect_items(args.paths, frames=args.frames)
    records, failed = [], 0
    from tqdm.auto import tqdm

    try:
        with tqdm(total=len(items), unit="item", file=sys.stderr, disable=len(items) <= 4 or None) as progress:
            for _, item_records in predictor.predict(items, args.faces, timeline_dir, args.annotate, progress,
                                                     args.debug):
                for record in item_records:
                    if record.get("error"):
                        failed += 1
                        tqdm.write(f"expclip predict: skipped {record['error']}", file=sys.stderr)
                records.extend(item_records)
        text = format_records(records, predictor.class_names, args.output_format)
        if args.output:
            Path(args.output).parent.mkdir(parents=True, exist_ok=True)
            Path(args.output).write_text(text, encoding="utf-8")
        else:
            sys.stdout.write(text)
    except Exception as error:  # noqa: BLE001 -- a failure of the run itself (model, output file): one line
        if args.debug:
            raise
        return _fail(one_line(error), 1)
    finally:  # the folders now hold only this command's files: a later run may add to them
        for folder in {Path(f) for f in (args.annotate, timeline_dir) if f is not None}:
            mark_output(folder, "predict")
    predicted = sum(1 for r in records if r.get("label"))
    faces = sum(1 for r in records if r.get("kind") == "face")
    no_face = sum(1 for r in records if r.get("note") == "no face found")
    summary = f"{_count(len(items), 'input')}: {_count(predicted, 'prediction')}"
    if args.faces:
        clips = [r for r in records if "frames_with_face" in r]
        parts = [f"{_count(faces, 'face')}, {_count(no_face, 'image')} without a face"] if faces or no_face else []
        if clips:
            sampled = sum(len(r["frame_indices"]) for r in clips)
            parts.append(f"a face in {sum(r['frames_with_face'] for r in clips)} of {sampled} sampled clip frames")
        summary += f" ({'; '.join(parts)})" if parts else ""
    summary += f", {failed} failed" + (f"; results in {args.output}" if args.output else "")
    print(f"expclip predict: {summary}", file=sys.stderr)
    return 1 if failed else 0
