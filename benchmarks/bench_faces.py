"""Throughput of `expclip predict --faces` on a folder of photos, on CPU, and where the time goes.

    python benchmarks/bench_faces.py                 # 100 photos of 640x480, the tiny test model
    python benchmarks/bench_faces.py --model DIR     # any Exp-CLIP folder

The photos are scikit-image's sample scenes with 0-3 upscaled LFW faces pasted in (real faces, offline). The run goes
through `ExpCLIPPredictor` exactly as the command does: reading in this process (0 workers), with one worker process and
with `--workers` (default: the default worker count, at least 2); its timers split the time into decoding, face
detection, preprocessing (the image processor) and the model (`model.classify`). Worker processes overlap the first
three with the model, so stage seconds are summed over processes and can add up to more than the wall-clock total.

    python benchmarks/bench_faces.py [--images 100] [--workers N] [--no-faces]
    python benchmarks/bench_faces.py --small         # 6 photos of 320x240: the suite's run, so the script never rots

A second part times the two face detectors in the same run, on the same photos: YuNet (the default, from
`--yunet-model`, else `EXPCLIP_YUNET_MODEL`, else `../shared/models/` beside the project) against OpenCV's Haar cascade,
each alone on the decoded photos and through `predict --faces` (target: YuNet >= 3x Haar's photos/s).
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

SCENES = ["astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "retina", "cat"]


def write_photos(folder: Path, count: int, size: tuple[int, int], seed: int = 0) -> int:
    """`count` JPEG photos: a sample scene with 0-3 LFW faces (100-160 px) pasted in. Returns the faces pasted."""
    from skimage import data

    rng = np.random.default_rng(seed)
    scenes = [Image.fromarray(getattr(data, name)()).convert("RGB").resize(size) for name in SCENES]
    faces = [Image.fromarray((face * 255).astype(np.uint8)).convert("RGB") for face in data.lfw_subset()[:100]]
    pasted = 0
    for index in range(count):
        photo = scenes[index % len(scenes)].copy()
        for _ in range(int(rng.integers(0, 4))):
            side = int(rng.integers(100, 161))
            face = faces[int(rng.integers(len(faces)))].resize((side, side), Image.Resampling.BICUBIC)
            photo.paste(face, (int(rng.integers(0, size[0] - side)), int(rng.integers(0, size[1] - side))))
            pasted += 1
        photo.save(folder / f"photo {index:03d}.jpg", quality=90)
    return pasted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="Exp-CLIP folder (default: a tiny model built here)")
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--workers", type=int, default=None, help="worker processes of the third run "
                                                                  "(default: the default count, at least 2)")
    parser.add_argument("--no-faces", action="store_true", help="whole images, no face detection")
    parser.add_argument("--yunet-model", default=os.environ.get("EXPCLIP_YUNET_MODEL") or str(SHARED_YUNET),
                        help="YuNet ONNX file (default: EXPCLIP_YUNET_MODEL, else ../shared/models/)")
    parser.add_argument("--small", action="store_true", help="6 photos of 320x240 (seconds; what the test suite runs)")
    args = parser.parse_args()
    if args.small:
        args.images, args.width, args.height = 6, 320, 240
    os.environ["EXPCLIP_YUNET_MODEL"] = args.yunet_model  # the default detector's file: never a download here
    torch.set_num_threads(args.threads)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()

    from expclip.inputs import default_num_workers
    from expclip.predictor import ExpCLIPPredictor, collect_items

    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        model = args.model
        if model is None:
            from tiny_models import save_tiny_clip
            from transformers import AutoProcessor

            from modeling_expclip import ExpCLIPModel

            clip_dir = save_tiny_clip(scratch / "clip")
            torch.manual_seed(0)
            ExpCLIPModel.from_clip(str(clip_dir), projection_dim=32).save_pretrained(scratch / "model")
            AutoProcessor.from_pretrained(clip_dir).save_pretrained(scratch / "model")
            model = str(scratch / "model")
        photos = scratch / "photos"
        photos.mkdir()
        pasted = write_photos(photos, args.images, (args.width, args.height))

        faces = not args.no_faces
        items = collect_items([photos])
        runs = []
        for workers in dict.fromkeys((0, 1, args.workers or max(2, default_num_workers()))):
            predictor = ExpCLIPPredictor.from_pretrained(model, device="cpu", batch_size=args.batch_size,
                                                         workers=workers)
            predictor([str(photos / "photo 000.jpg")], faces=faces)  # warm-up: text classifier, first calls
            predictor.timings = dict.fromkeys(predictor.timings, 0.0)
            start = time.perf_counter()
            records = [r for _, rs in predictor.predict(items, faces=faces) for r in rs]
            runs.append((workers, time.perf_counter() - start, dict(predictor.timings), records))
        if faces:
            detector_rows = compare_detectors(model, items, args)

    found = sum(1 for r in records if r.get("kind") == "face")
    no_face = sum(1 for r in records if r.get("note") == "no face found")
    errors = sum(1 for r in records if r.get("error"))
    print(f"expclip predict{' --faces' if faces else ''}: {len(items)} photos of {args.width}x{args.height}, "
          f"{pasted} faces pasted, model {'tiny (built here)' if args.model is None else args.model}, CPU, "
          f"{torch.get_num_threads()} torch threads")
    if faces:
        print(f"found {found} faces, {no_face} photos without a face, {errors} errors")
    print()
    stages = [("decode", "decode (PIL, EXIF, RGB)"), ("detection", "face detection (YuNet)"),
              ("preprocess", "image processor"), ("model", "model.classify")]
    print(f"| {'ms/photo (summed over procs)':<30} | " + " | ".join(f"{w} worker(s)" for w, *_ in runs) + " |")
    print(f"| {'-' * 30} |" + "|".join("-" * 13 + ":" for _ in runs) + "|")
    for key, name in stages:
        print(f"| {name:<30} | " + " | ".join(f"{1000 * t[key] / len(items):12.2f}" for _, _, t, _ in runs) + " |")
    print(f"| {'wall clock':<30} | " + " | ".join(f"{1000 * total / len(items):12.2f}" for _, total, _, _ in runs)
          + " |")
    print()
    for workers, total, _, _ in runs:
        print(f"{workers} worker process(es): {len(items) / total:.1f} photos/s" + (f", {found / total:.1f} faces/s"
                                                                                 if faces else ""))
    if faces:
        print_detector_comparison(detector_rows, len(items))


# ----- YuNet vs Haar ---------------------------------------------------------------------------------------------------

SHARED_YUNET = ROOT.parent / "shared" / "models" / "face_detection_yunet_2026may.onnx"


def compare_detectors(model: str, items, args) -> list[tuple]:
    """Per detector, on the same photos: (name, faces found, seconds of detection alone, seconds of predict --faces)."""
    from expclip.faces import load_detector
    from expclip.inputs import load_image
    from expclip.inputs import default_num_workers
    from expclip.predictor import ExpCLIPPredictor

    photos = [np.asarray(load_image(item.source)) for item in items]
    rows = []
    for name, path in (("yunet", args.yunet_model), ("haar", None)):
        detector = load_detector(name, path)
        detector.detect(photos[0])  # warm-up
        start = time.perf_counter()
        found = sum(len(detector.detect(photo)) for photo in photos)
        alone = time.perf_counter() - start
        predictor = ExpCLIPPredictor.from_pretrained(model, device="cpu", batch_size=args.batch_size,
                                                     workers=args.workers or max(2, default_num_workers()),
                                                     detector=name,
                                                     detector_model=path)
        predictor([items[0].source], faces=True)  # warm-up
        start = time.perf_counter()
        for _ in predictor.predict(items, faces=True):
            pass
        rows.append((name, found, alone, time.perf_counter() - start))
    return rows


def print_detector_comparison(rows: list[tuple], count: int) -> None:
    print()
    print("| detector | faces found | detection alone, photos/s | predict --faces, photos/s |")
    print("|----------|------------:|--------------------------:|--------------------------:|")
    for name, found, alone, total in rows:
        print(f"| {name:<8} | {found:>11} | {count / alone:>25.1f} | {count / total:>25.1f} |")
    (_, _, yunet_alone, yunet_total), (_, _, haar_alone, haar_total) = rows
    speedup = haar_total / yunet_total
    print(f"YuNet vs Haar: {haar_alone / yunet_alone:.1f}x photos/s in detection alone, {speedup:.1f}x with "
          f"predict --faces (target >= 3x: {'met' if speedup >= 3 else 'NOT met'})")


if __name__ == "__main__":
    main()
