"""The Python predictor: facial expressions of images, faces in photos and videos, in two lines.

    from expclip import ExpCLIPPredictor
    ExpCLIPPredictor.from_pretrained("path/to/model")(["photo.jpg", "clip.mp4"], faces=True)

Every input is read by `expclip.inputs.load_image`; a bad one becomes a one-line `InputError` that names it, and the
rest goes on. `expclip predict` and the app are built on it.
"""

import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .faces import crop_face
from .inputs import (
    IMAGE_EXTENSIONS,
    MIXED_PRECISION,
    VIDEO_EXTENSIONS,
    ImagePreprocessing,
    InputError,
    InputPipeline,
    default_num_workers,
    is_url,
    load_image,
    one_line,
    path_problem,
    walk_files,
)

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
        if not isinstance(source, (str, Path)) and not hasattr(source, "__fspath__"):  # None, a number, bytes, a dict
            name = f"<{type(source).__name__} {position}>"
            items.append(Item(source, name, "error", f"{name}: not an image (give a path, a PIL image or an array)"))
            continue
        path = Path(source)
        if is_url(source):
            items.append(Item(source, str(source), "error", f"{source}: URLs are not read; download the file first"))
        elif path_problem(path):  # missing, a broken or looping link, a FIFO
            items.append(Item(path, str(path), "error", f"{path}: {path_problem(path)}"))
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


# ----- reading: decode, find faces, cut and preprocess, in the input pipeline's worker processes ------------------

STAGES = ("decode", "detection", "preprocess", "model")  # the predictor's timers, in seconds summed over processes
# An image whose pixel values span at most this many of 255 levels shows nothing (a blank, a lens cap, a test
# card's flat field): no face to find, no expression to read, and the model's scores for it would be noise.
BLANK_RANGE = 2
UNIFORM_SCORES = 1e-6  # every class within this of the others: the model cannot tell them apart (e.g. a zero head)


def blank_note(image: Image.Image) -> str | None:
    """The record's note for a blank image (constant, or almost constant, pixels); None for any other image."""
    extrema = image.getextrema()  # per band: a solid colour is constant in each band, not across them
    spread = max(high - low for low, high in ([extrema] if image.mode == "L" else extrema))
    if spread > BLANK_RANGE:
        return None
    return "blank image (constant pixels)" if spread == 0 else "blank image (almost constant pixels)"


def _item_name(item: Item) -> str:
    return item.name


class ItemReader:
    """What a worker process does with one item (the input pipeline's `prepare`): decode it, find its faces (each
    worker process its own detector, no lock), cut them, and run the model's image processor; a video: sample its
    `num_segments` frames (README: Reproducing the paper) plus its timeline frames, the largest face of each with `faces`. Returns tensors
    with the seconds spent per stage; raises on a bad item (an `InputError` names it)."""

    def __init__(self, preprocess: ImagePreprocessing, detector=None, faces: bool = False, face_margin: float = 0.2,
                 keep_image: bool = False, num_segments: int = 16, short_clip: str = "even", timeline: bool = False,
                 track_fps: float | None = None):
        self.preprocess, self.detector, self.faces, self.face_margin = preprocess, detector, faces, face_margin
        self.keep_image, self.num_segments, self.short_clip = keep_image, num_segments, short_clip
        self.timeline = timeline
        self.track_fps = track_fps  # with faces: every face of `track_fps` frames per second, for the tracker

    def __call__(self, item: Item) -> dict:
        if item.kind == "error":  # found when collecting the items
            raise InputError(item.error)
        timings = dict.fromkeys(STAGES, 0.0)
        if item.kind == "video" and self.faces and self.track_fps:
            return self.read_tracked_video(item, timings)
        return self.read_video(item, timings) if item.kind == "video" else self.read_image(item, timings)

    @staticmethod
    def _timed(timings: dict, stage: str, start: float) -> None:
        timings[stage] += time.perf_counter() - start

    def _pixel_values(self, images: list[Image.Image], timings: dict):
        start = time.perf_counter()
        pixel_values = self.preprocess(images)
        self._timed(timings, "preprocess", start)
        return pixel_values

    def _detect(self, image: Image.Image, timings: dict) -> list:
        start = time.perf_counter()
        boxes = self.detector.detect(np.asarray(image))
        self._timed(timings, "detection", start)
        return boxes

    def read_image(self, item: Item, timings: dict) -> dict:
        """Decoded photos travel back only to be annotated: two batches of 12-megapixel photos would be 2 GB."""
        start = time.perf_counter()
        try:
            image = load_image(item.source)
        finally:
            self._timed(timings, "decode", start)
        blank = blank_note(image)
        if blank:  # nothing to find or classify: a note, no label (and no detector run on it)
            return {"boxes": [], "blank": blank, "image": image if self.keep_image else None, "timings": timings}
        boxes = self._detect(image, timings) if self.faces else [None]
        read = {"boxes": boxes, "image": image if self.keep_image else None, "timings": timings}
        if boxes:  # a photo without a face is a result, not an error: no pixels, no rows
            crops = [image if box is None else crop_face(image, box, self.face_margin) for box in boxes]
            read["pixel_values"] = self._pixel_values(crops, timings)
        return read

    def read_video(self, item: Item, timings: dict) -> dict:
        from modeling_expclip import sample_segment_indices
        from .video import Clip

        start = time.perf_counter()
        clip = Clip(item.source)
        indices = sample_segment_indices(clip.num_frames, self.num_segments, self.short_clip)
        timeline_indices, times = clip.timeline_indices() if self.timeline else ([], None)
        frames = clip.frames(indices + timeline_indices)
        self._timed(timings, "decode", start)
        read = {"frames": clip.num_frames, "fps": clip.fps, "frame_indices": indices,
                "timeline_indices": timeline_indices, "times": times, "timings": timings}
        if clip.skipped:  # a folder's 0-byte frames
            read["skipped_frames"] = clip.skipped
        if self.faces:  # the largest face of each frame; the whole frame where none is found
            found = {}
            for index, frame in frames.items():
                boxes = self._detect(frame, timings)
                found[index] = bool(boxes)
                frames[index] = crop_face(frame, boxes[0], self.face_margin) if boxes else frame
            read["frames_with_face"] = sum(found[i] for i in indices)  # of the sampled frames
        read["pixel_values"] = self._pixel_values([frames[i] for i in indices], timings)
        if timeline_indices:
            read["timeline_pixel_values"] = self._pixel_values([frames[i] for i in timeline_indices], timings)
        return read

    def read_tracked_video(self, item: Item, timings: dict) -> dict:
        """`read_video` with faces, plus every face of the frames sampled at `track_fps` (cut and preprocessed as
        one tensor, `track_pixel_values`, with `track_faces`: (frame index, box) per row), all in one decoding pass.
        A frame that cannot be decoded is skipped and counted; a clip frame among them is replaced by the nearest
        frame that could be."""
        from modeling_expclip import sample_segment_indices
        from .video import Clip

        start = time.perf_counter()
        clip = Clip(item.source)
        indices = sample_segment_indices(clip.num_frames, self.num_segments, self.short_clip)
        timeline_indices, times = clip.timeline_indices() if self.timeline else ([], None)
        track_indices, track_times = clip.tracking_indices(self.track_fps)
        kept_indices = set(indices + timeline_indices)
        tracked, frames, detected, skipped, faces, crops = set(track_indices), {}, {}, [], [], []
        self._timed(timings, "decode", start)
        start = time.perf_counter()
        for index, frame in clip.iter_frames(sorted(kept_indices | tracked)):
            self._timed(timings, "decode", start)
            if frame is None:
                skipped.append(index)
            else:
                if index in kept_indices:
                    frames[index] = frame
                if index in tracked:
                    detected[index] = boxes = self._detect(frame, timings)
                    faces += [(index, box) for box in boxes]
                    crops += [crop_face(frame, box, self.face_margin) for box in boxes]
            start = time.perf_counter()
        if not frames:
            raise InputError(f"{item.name}: no frame could be decoded")
        for index in kept_indices - set(frames):  # a frame that cannot be decoded: its nearest neighbour stands in
            frames[index] = frames[min(frames, key=lambda i: (abs(i - index), i))]
        read = {"frames": clip.num_frames, "fps": clip.fps, "frame_indices": indices,
                "timeline_indices": timeline_indices, "times": times, "timings": timings, "track_faces": faces,
                "track_times": dict(zip(track_indices, track_times)), "track_frames": len(track_indices),
                "skipped_frames": len(skipped) + clip.skipped}
        found = {}
        for index in set(indices + timeline_indices):  # as read_video: the largest face, else the whole frame
            boxes = detected[index] if index in detected else self._detect(frames[index], timings)
            found[index] = bool(boxes)
            frames[index] = crop_face(frames[index], boxes[0], self.face_margin) if boxes else frames[index]
        read["frames_with_face"] = sum(found[i] for i in indices)
        read["pixel_values"] = self._pixel_values([frames[i] for i in indices], timings)
        if timeline_indices:
            read["timeline_pixel_values"] = self._pixel_values([frames[i] for i in timeline_indices], timings)
        if crops:  # uint8 (a quarter of float32's memory: a long clip holds many faces), normalised per batch
            start = time.perf_counter()
            read["track_pixel_values"] = ImagePreprocessing(
                self.preprocess.image_processor, self.preprocess.settings, normalize_on_device=True)(crops)
            self._timed(timings, "preprocess", start)
        return read


def plan_batches(items: list[Item], batch_size: int) -> list[list[int]]:
    """The model calls: runs of up to `batch_size` consecutive images, each video or error item alone. Planned from
    a batch's first item onwards only, so any part of `items` that starts at a batch gets the same batches (the
    labelling shards of `expclip.labelling` rely on it: same batches, same scores bit for bit)."""
    batches, position = [], 0
    while position < len(items):
        batch = [position]
        while (items[batch[0]].kind == "image" and len(batch) < batch_size
               and position + len(batch) < len(items) and items[position + len(batch)].kind == "image"):
            batch.append(position + len(batch))
        batches.append(batch)
        position += len(batch)
    return batches


# ----- the predictor ---------------------------------------------------------------------------------------------------


class ExpCLIPPredictor:
    """Load once, predict many: images, faces in photos, videos.

        predictor = ExpCLIPPredictor.from_pretrained("path/to/expclip-folder")
        predictor(["photo.jpg", "clip.mp4"], faces=True)  # -> list of plain dicts

    Everything goes through the model's batched zero-shot API: the label prompts are encoded once
    (`model.text_classifier`), images and clips are scored `batch_size` at a time (`model.classify`). Items are
    read (decoded, faces found and cut, preprocessed by the folder's own image processor) by `workers` processes
    of the input pipeline (`expclip.inputs.InputPipeline`), batches ahead of the model; `workers=0` reads in this
    process, with identical records. `normalize_on_device` sends uint8 pixels and rescales/normalises them on the
    model's device (equal to the processor's within float rounding). `detector`: a face detector, or a
    `(name, model file)` pair (`from_pretrained`'s) that is resolved and loaded the first time faces are asked for.
    """

    def __init__(self, model, processor, labels=None, prompts=None, detector=None, batch_size: int = 32,
                 use_projection: bool = True, short_clip: str = "even", face_margin: float = 0.2,
                 workers: int | None = None, normalize_on_device: bool = False,
                 prompt_overrides: dict | None = None):
        check_label_set(labels, prompts)
        if batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {batch_size}")
        workers = default_num_workers() if workers is None else workers
        if workers < 0:
            raise ValueError(f"workers must be at least 0, got {workers}")
        self.model, self.processor = model.eval(), processor
        # per-class prompts: the model's own prompt_overrides, then `prompt_overrides` (e.g. --prompt-file) over them
        overrides = {**(model.config.prompt_overrides or {}), **(prompt_overrides or {})}
        self.classifier = model.text_classifier(processor.tokenizer, labels, prompts, overrides,
                                                use_projection=use_projection)
        self.class_names = list(self.classifier.class_names)
        self.batch_size, self.use_projection = batch_size, use_projection
        # a FaceDetector, or (name, model file) loaded on first use: a predictor that never looks for faces never
        # downloads YuNet nor prints its fallback notice
        self._detector, self._detector_choice = (None, detector) if isinstance(detector, tuple) else (detector, None)
        self.short_clip, self.face_margin = short_clip, face_margin
        self.num_segments = int(getattr(model.config, "num_segments", 16))
        self.workers = workers
        self.preprocess = ImagePreprocessing(processor.image_processor, normalize_on_device=normalize_on_device)
        self.timings = dict.fromkeys(STAGES, 0.0)  # seconds, summed over the reading processes
        self._timeline_stems = set()
        self.annotated_video_suffix = ".mp4"  # annotated videos with --track: MP4; the app's: WebM, for the browser

    @classmethod
    def from_pretrained(cls, model: str | None = None, device: str = "auto", labels=None, prompts=None,
                        detector: str | None = "yunet", detector_model: str | None = None, dtype: str = "float32",
                        **kwargs):
        """`model`: a local Exp-CLIP folder, a Hub id, or None/an alias for the authors' converted head (fetched
        and cached on first use). `dtype`: float32, or bfloat16/float16 for speed (GPUs, CPUs with AMX), or
        float16-mixed, the original's precision on a GPU (README: Reproducing the paper).
        Labels and prompts are checked before anything is loaded."""
        import torch
        from transformers import AutoProcessor

        from .models import resolve_model
        from .faces import DETECTORS, DetectorError
        from modeling_expclip import ExpCLIPModel

        check_label_set(labels, prompts)
        device = resolve_device(device)
        if detector and detector not in DETECTORS:  # a wrong name fails now; the detector itself loads on first use
            raise DetectorError(f"unknown detector {detector!r}; known: {', '.join(DETECTORS)}")
        folder = resolve_model(model)
        # PIL's resize even for a folder saved before the pin, whose config names CLIPImageProcessor (README: Reproducing the paper)
        processor = AutoProcessor.from_pretrained(folder, backend="pil")
        mixed = dtype == MIXED_PRECISION  # the original's GPU precision: float16 CLIP, float32 LayerNorm and head
        network = ExpCLIPModel.from_pretrained(folder, dtype=torch.float32 if mixed else getattr(torch, dtype))
        network = (network.to_original_precision() if mixed else network).to(torch.device(device))
        return cls(network, processor, labels, prompts, detector=(detector, detector_model) if detector else None,
                   **kwargs)

    @property
    def detector(self):
        """The face detector (None without one), resolved and loaded the first time it is asked for."""
        if self._detector is None and self._detector_choice is not None:
            from .faces import load_detector, resolve_detector

            self._detector = load_detector(*resolve_detector(*self._detector_choice))
            self._detector_choice = None
        return self._detector

    @detector.setter
    def detector(self, detector) -> None:
        self._detector, self._detector_choice = detector, None

    # ----- model calls ----------------------------------------------------------------------------------------------

    def pixel_values(self, images: list[Image.Image]):
        """RGB PIL images -> the model's (n, 3, H, W) input through the folder's own image processor."""
        return ImagePreprocessing(self.processor.image_processor)(images)

    def _probabilities(self, pixel_values) -> np.ndarray:
        start = time.perf_counter()
        pixel_values = self.preprocess.to_device(pixel_values, self.model.projection.weight.device)
        logits = self.model.classify(pixel_values, self.classifier, self.use_projection, self.batch_size)
        probs = self.model.zero_shot_probabilities(logits, self.classifier).cpu().numpy()
        self.timings["model"] += time.perf_counter() - start
        return probs

    def _record(self, item: Item, kind: str, probs: np.ndarray, **extra) -> dict:
        if not np.isfinite(probs).all():  # never a confident label (or NaN in JSON) from a broken model
            return {"source": item.name, "kind": "error", "error": f"{item.name}: the model gave NaN scores"}
        scores = {name: float(p) for name, p in zip(self.class_names, probs)}
        if len(probs) > 1 and float(probs.max() - probs.min()) <= UNIFORM_SCORES:  # argmax would pick the first class
            return {"source": item.name, "kind": kind, "label": None, "scores": scores,
                    "note": "uniform scores (the model cannot tell the classes apart)", **extra}
        return {"source": item.name, "kind": kind, "label": self.class_names[int(np.argmax(probs))],
                "scores": scores, **extra}

    def _image_records(self, item: Item, read: dict, probs: np.ndarray) -> list[dict]:
        if read.get("blank"):
            return [{"source": item.name, "kind": "image", "label": None, "scores": {}, "note": read["blank"]}]
        if not read["boxes"]:  # a result, not an error: the photo was read, it just shows no face
            return [{"source": item.name, "kind": "image", "label": None, "scores": {}, "faces": 0,
                     "note": "no face found"}]
        return [self._record(item, "image", row) if box is None else
                self._record(item, "face", row, face=index + 1, box=box.as_list())
                for index, (box, row) in enumerate(zip(read["boxes"], probs))]

    def _video_record(self, item: Item, read: dict, pixel_values, timeline_pixel_values, timeline_dir) -> dict:
        """The clip-level prediction from its sampled frames (`get_video_features`: frame average), plus the
        timeline if asked for."""
        from .video import write_timeline

        record = self._record(item, "video", self._probabilities(pixel_values.unsqueeze(0))[0],
                              frames=read["frames"], fps=read["fps"], frame_indices=read["frame_indices"])
        for key in ("frames_with_face", "skipped_frames"):
            if key in read:
                record[key] = read[key]
        if timeline_dir is not None:
            probs = self._probabilities(timeline_pixel_values)
            name = Path(item.name).stem if Path(item.name).suffix else Path(item.name).name
            stem, counter = Path(timeline_dir) / name, 1
            while stem in self._timeline_stems:  # two clips with one name in different folders
                stem, counter = Path(timeline_dir) / f"{name}-{counter}", counter + 1
            self._timeline_stems.add(stem)
            record["timeline"] = write_timeline(stem, self.class_names, read["timeline_indices"], read["times"],
                                                probs, item.name)
        return record

    # ----- people in videos: tracks ----------------------------------------------------------------------------------

    def _face_features(self, pixel_values):
        """Faces (n, 3, H, W) -> (CLIP image embeddings, L2-normalised: the tracker's appearance; embeddings after
        the projection, not normalised: averaged per track; each face's probabilities), `batch_size` per call."""
        import torch
        import torch.nn.functional as F

        start = time.perf_counter()
        device, dtype = self.model.projection.weight.device, self.model.clip.dtype
        appearance, projected, probs = [], [], []
        with torch.inference_mode():
            for batch in pixel_values.split(self.batch_size):
                clip_embeds = self.model.encode_clip_image(self.preprocess.to_device(batch, device, dtype))
                embeds = self.model.project(clip_embeds, self.use_projection, normalize=False)
                logits = self.model.zero_shot_logits(F.normalize(embeds, dim=-1), self.classifier)
                appearance.append(F.normalize(clip_embeds.float(), dim=-1).cpu())
                projected.append(embeds)
                probs.append(logits.float().softmax(-1).cpu())
        self.timings["model"] += time.perf_counter() - start
        return torch.cat(appearance).numpy(), torch.cat(projected), torch.cat(probs).numpy()

    def _track_probabilities(self, projected) -> np.ndarray:
        """A track's faces (projected, not normalised) -> its probabilities: averaged over its frames after the
        projection, then L2-normalised, as the paper's video protocol does (`get_video_features`)."""
        import torch
        import torch.nn.functional as F

        with torch.inference_mode():
            embeds = F.normalize(projected.mean(0, keepdim=True), dim=-1)
            return self.model.zero_shot_logits(embeds, self.classifier).float().softmax(-1).cpu().numpy()[0]

    def _guarded_tracks(self, item, debug, clip_record, read, pixel_values, timeline_dir, annotate_dir, annotated):
        """The clip record, then one "track" record per person; a failure is one error record placed first, and the
        clip record stays."""
        try:
            return self._track_records(item, clip_record, read, pixel_values, timeline_dir, annotate_dir, annotated)
        except Exception as error:  # noqa: BLE001 -- one bad item must not stop the rest
            if debug:
                traceback.print_exc()
            reason = str(error) if isinstance(error, InputError) else f"{item.name}: {one_line(error)}"
            return [{"source": item.name, "kind": "error", "error": reason}, clip_record]

    def _track_records(self, item, clip_record, read, pixel_values, timeline_dir, annotate_dir, annotated):
        """Score every tracked face in one batch, link the faces frame by frame (`FaceTracker`), and give the clip
        record (with the track counts) followed by one "track" record per person; write the per-person timeline
        and the annotated video when asked."""
        from .tracking import FaceTracker
        from .video import write_annotated_video, write_track_timeline

        memory, track_fps = self._tracking
        faces, times = read["track_faces"], read["track_times"]
        clip_record.update(track_frames=read["track_frames"], skipped_frames=read["skipped_frames"],
                           tracks=0)
        if not faces:
            clip_record["note"] = "no face found"
            return [clip_record]
        appearance, projected, probs = self._face_features(pixel_values)
        tracker = FaceTracker(memory=memory)
        rows_by_frame = {}
        for row, (index, _) in enumerate(faces):
            rows_by_frame.setdefault(index, []).append(row)
        for index in sorted(times):  # every sampled frame, with or without faces, in time order
            rows = rows_by_frame.get(index, [])
            tracker.update(times[index], [faces[r][1] for r in rows], appearance[rows] if rows else None)
        order = [r for index in sorted(rows_by_frame) for r in rows_by_frame[index]]  # the tracker's face order
        tracks = []
        for track in tracker.tracks:
            rows = [order[d] for d in track.detections]
            record = self._record(item, "track", self._track_probabilities(projected[rows]), track=track.number,
                                  start=round(track.times[0], 3), end=round(track.times[-1], 3),
                                  frames=[faces[r][0] for r in rows], boxes=[faces[r][1].as_list() for r in rows])
            tracks.append((record, [round(t, 3) for t in track.times], probs[rows]))
        records = [record for record, _, _ in tracks]
        clip_record["tracks"] = len(records)
        details = [{"track": r["track"], "label": r.get("label"), "frames": r["frames"], "boxes": r["boxes"],
                    "times": t, "probs": p, "labels": [self.class_names[int(np.argmax(q))] for q in p]}
                   for r, t, p in tracks]
        if timeline_dir is not None:
            for record, _, p in tracks:
                record["timeline"] = [[round(float(v), 6) for v in q] for q in p]
            if clip_record.get("timeline"):
                stem = Path(clip_record["timeline"]["csv"][: -len(".timeline.csv")])
                clip_record["track_timeline"] = write_track_timeline(stem, self.class_names, details, item.name)
        if annotate_dir is not None:
            stem = Path(item.name).stem if Path(item.name).suffix else Path(item.name).name
            suffix = self.annotated_video_suffix
            path, counter = Path(annotate_dir) / f"{stem or 'video'}{suffix}", 1
            while path in annotated:
                path, counter = Path(annotate_dir) / f"{stem}-{counter}{suffix}", counter + 1
            annotated.add(path)
            fps = read["fps"] or track_fps  # a folder of frames plays at the tracking rate
            step = max(1.0, read["fps"] / track_fps) if read["fps"] else 1.0
            try:
                codec = write_annotated_video(item.source, path, details, fps, step)
            except (InputError, OSError) as error:  # the records stand; only the video is missing
                reason = str(error) if isinstance(error, InputError) else (
                    f"{item.name}: annotated video not written ({one_line(error)})")
                return [{"source": item.name, "kind": "error", "error": reason}, clip_record] + records
            clip_record.update(annotated=str(path), annotated_codec=codec)
        return [clip_record] + records

    # ----- everything -----------------------------------------------------------------------------------------------

    def predict(self, items: list[Item], faces: bool = False, timeline_dir=None, annotate_dir=None, progress=None,
                debug: bool = False, track: bool = False, track_fps: float = 5.0, track_memory: float = 5.0):
        """Yield (item, records) in input order; a bad item gives one record with "error" and the rest goes on.

        Consecutive images are classified `batch_size` at a time (one model call), read by the pipeline's worker
        processes while the model scores the batches before; a video is one batch. `track` (with `faces`): every
        face of `track_fps` frames per second of each video, linked into one "track" record per person
        (`expclip.tracking`); `track_memory` seconds: how long a person may be gone and keep their number."""
        if track and track_fps <= 0:
            raise ValueError(f"track fps must be above 0, got {track_fps}")
        if track and track_memory < 0:
            raise ValueError(f"track memory must be at least 0 seconds, got {track_memory}")
        self._tracking = (track_memory, track_fps) if track and faces else None
        if faces and self.detector is None:
            raise ValueError("faces=True needs a face detector (from_pretrained(..., detector='haar'))")
        annotated, self._timeline_stems = set(), set()
        batches = plan_batches(items, self.batch_size)
        reader = ItemReader(self.preprocess, self.detector if faces else None, faces, self.face_margin,
                            keep_image=annotate_dir is not None, num_segments=self.num_segments,
                            short_clip=self.short_clip, timeline=timeline_dir is not None,
                            track_fps=track_fps if track and faces else None)
        pipeline = InputPipeline(items, reader, batches=batches, num_workers=self.workers, name=_item_name,
                                 pin_memory=self.model.projection.weight.device.type == "cuda")
        reads = iter(pipeline)
        try:  # closed also on Ctrl-C or when the caller stops early: the worker processes stop
            for batch in reads:
                yield from self._finish(items, batch, timeline_dir, annotate_dir, annotated, progress, debug)
        finally:
            reads.close()

    def _finish(self, items, batch, timeline_dir, annotate_dir, annotated, progress, debug):
        """Classify one batch of reads (images: one model call; a video; an error item) and yield (item, records)."""
        for prepared in batch.good:
            for stage, seconds in prepared.value["timings"].items():
                self.timings[stage] += seconds
        first = items[batch.items[0].index]
        probs = None
        if first.kind == "image" and "pixel_values" in batch.tensors:
            probs = self._probabilities(batch.tensors["pixel_values"])
        for prepared in batch.items:
            item, read = items[prepared.index], prepared.value
            if prepared.error is not None:
                if debug and item.kind != "error":
                    print(prepared.traceback, end="", file=sys.stderr)
                records = [{"source": item.name, "kind": item.kind, "error": prepared.error}]
            elif item.kind == "video":
                records = [self._guarded(item, debug, self._video_record, item, read,
                                         batch.tensors["pixel_values"][prepared.spans["pixel_values"]],
                                         batch.tensors.get("timeline_pixel_values"), timeline_dir)]
                if "track_faces" in read and not records[0].get("error"):
                    span = prepared.spans.get("track_pixel_values")
                    track_pixels = None if span is None else batch.tensors["track_pixel_values"][span]
                    records = self._guarded_tracks(item, debug, records[0], read, track_pixels, timeline_dir,
                                                   annotate_dir, annotated)
            else:
                rows = probs[prepared.spans["pixel_values"]] if "pixel_values" in prepared.spans else []
                records = self._image_records(item, read, rows)
            image = read.get("image") if read else None
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

    def __call__(self, sources, faces: bool = False, frames: bool = False, timeline_dir=None, annotate_dir=None,
                 track: bool = False, track_fps: float = 5.0, track_memory: float = 5.0):
        """A path, PIL image or array -> one dict (a list of dicts with `faces=True`: one per face); a list -> a
        flat list of dicts in input order. Bad inputs give a dict with "error" instead of raising. `track` (with
        `faces`): a video gives its clip record, then one "track" record per person."""
        single = not isinstance(sources, (list, tuple))
        items = collect_items([sources] if single else list(sources), frames=frames)
        records = [r for _, rs in self.predict(items, faces, timeline_dir, annotate_dir, track=track,
                                               track_fps=track_fps, track_memory=track_memory) for r in rs]
        if single and not faces and len(records) == 1:
            return records[0]
        return records


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
