"""Speed of people in videos on CPU: the app's Live tab end to end, and `predict --track` against `--faces`.

    python benchmarks/bench_video.py            # tiny and B/32-sized random models, a 20-s 640x480 clip, 1 and 3 faces
    python benchmarks/bench_video.py --small    # tiny model only, a short clip (the test suite runs this)

The clips are tests/moving_faces.py's real faces (scikit-image's astronaut and LFW faces) moving on a 640x480 frame,
with the first face only or all three. Two measurements, each per model and per face count:

- Live: webcam frames per second through `ExpCLIPApp.live_frame`, the Live tab's function (decode, YuNet, one batch
  of face crops through CLIP and the head, the tracker, smoothing, drawing), with the app's default `--refresh 0.2`
  (the faces scored every 0.2 s and when someone comes or goes, boxes tracked on every frame) and with every frame
  scored (`--refresh 0`). Target: >= 10 frames/s with one face on the B/32-sized model.
- --track vs --faces on the same sampled frames: `ExpCLIPPredictor.predict(..., track=True)` on the video against
  `predict(..., faces=True)` on those same frames saved as photos. Target: --track <= 1.5x the time of --faces.

The B/32-sized model has OpenAI CLIP ViT-B/32's shapes (224 px, 12+12 layers, 512-d joint space) and random weights:
the speed is the real model's, the labels are not.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

SHARED_YUNET = ROOT.parent / "shared" / "models" / "face_detection_yunet_2026may.onnx"


def save_model(folder: Path, size: str) -> str:
    """An Exp-CLIP folder around a random CLIP: "tiny" (the tests' model) or "b32" (ViT-B/32's shapes)."""
    from tiny_models import save_tiny_clip, save_tiny_clip_tokenizer
    from transformers import AutoProcessor, CLIPConfig, CLIPImageProcessor, CLIPModel

    from modeling_expclip import ExpCLIPModel

    clip_dir = folder / f"{size}-clip"
    if size == "tiny":
        save_tiny_clip(clip_dir)
        projection_dim = 32
    else:
        tokenizer = save_tiny_clip_tokenizer(clip_dir)
        config = CLIPConfig(
            text_config=dict(vocab_size=len(tokenizer), hidden_size=512, intermediate_size=2048, num_hidden_layers=12,
                             num_attention_heads=8, max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id,
                             eos_token_id=tokenizer.eos_token_id),
            vision_config=dict(image_size=224, patch_size=32, hidden_size=768, intermediate_size=3072,
                               num_hidden_layers=12, num_attention_heads=12),
            projection_dim=512)
        torch.manual_seed(0)
        CLIPModel(config).save_pretrained(clip_dir)
        CLIPImageProcessor().save_pretrained(clip_dir)
        projection_dim = 4096
    torch.manual_seed(0)
    model_dir = folder / size
    ExpCLIPModel.from_clip(str(clip_dir), projection_dim=projection_dim).save_pretrained(model_dir)
    AutoProcessor.from_pretrained(clip_dir).save_pretrained(model_dir)
    return str(model_dir)


def write_clip(path: Path, faces: int, frames: int) -> Path:
    """The moving faces (the first `faces` of the three) as an MP4 at 10 frames/s."""
    import cv2

    import moving_faces

    patches = moving_faces.face_patches()[:faces]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), moving_faces.FPS,
                             (moving_faces.WIDTH, moving_faces.HEIGHT))
    for index in range(frames):
        writer.write(cv2.cvtColor(moving_faces.render_frame(index, patches), cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def live_fps(model: str, clip: Path, frames: int) -> tuple[float, float]:
    """Webcam frames per second through the Live tab's function, after two warm-up frames: with the app's default
    `--refresh` (faces scored every 0.2 s, boxes tracked on every frame), and with every frame scored."""
    from expclip.app import ExpCLIPApp
    from expclip.video import Clip

    app = ExpCLIPApp(model, device="cpu")
    pictures = [np.asarray(frame) for _, frame in Clip(clip).iter_frames(range(frames))]
    rates = []
    for refresh in (app.refresh, 0.0):
        app.refresh, state = refresh, None
        for picture in pictures[:2]:
            _, state, _ = app.live_frame(picture, state)
        start = time.perf_counter()
        for picture in pictures:
            _, state, _ = app.live_frame(picture, state)
        rates.append(len(pictures) / (time.perf_counter() - start))
    return rates[0], rates[1]


def track_against_faces(model: str, clip: Path, scratch: Path) -> tuple[float, float, int]:
    """Seconds of `predict(track=True)` on the clip, and of `predict(faces=True)` on the same sampled frames saved
    as photos; and how many frames that is."""
    from expclip.predictor import ExpCLIPPredictor, collect_items
    from expclip.video import Clip

    video = Clip(clip)
    indices, _ = video.tracking_indices(5.0)
    photos = scratch / f"photos-{clip.stem}"
    photos.mkdir()
    for index, frame in video.iter_frames(indices):
        frame.save(photos / f"frame {index:04d}.png")
    predictor = ExpCLIPPredictor.from_pretrained(model, device="cpu")
    predictor([str(photos / f"frame {indices[0]:04d}.png")], faces=True)  # warm-up: text classifier, first calls
    timed = []
    for items, track in ((collect_items([clip]), True), (collect_items([photos]), False)):
        start = time.perf_counter()
        for _ in predictor.predict(items, faces=True, track=track):
            pass
        timed.append(time.perf_counter() - start)
    return timed[0], timed[1], len(indices)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="tiny model only, a 2-second clip (for the tests)")
    parser.add_argument("--models", default="tiny,b32", help="comma-separated: tiny, b32 (default both)")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the clip (default 20; --small: 2)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--yunet-model", default=os.environ.get("EXPCLIP_YUNET_MODEL") or str(SHARED_YUNET),
                        help="YuNet ONNX file (default: EXPCLIP_YUNET_MODEL, else ../shared/models/)")
    args = parser.parse_args()
    os.environ["EXPCLIP_YUNET_MODEL"] = args.yunet_model  # the default detector's file: never a download here
    torch.set_num_threads(args.threads)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()

    sizes = ["tiny"] if args.small else args.models.split(",")
    frames = 20 if args.small else int(args.seconds * 10)  # 20 s: the clip record's 16 frames weigh as in real videos
    rows = []
    print(f"people in videos, 640x480, CPU, {torch.get_num_threads()} torch threads, YuNet detector")
    print()
    print("| model | faces | Live tab, frames/s | Live, every frame scored | --track, s | --faces on the same frames, s "
          "| --track / --faces |")
    print("|-------|------:|-------------------:|-------------------------:|-----------:|------------------------------:"
          "|------------------:|", flush=True)
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        for size in sizes:
            model = save_model(scratch, size)
            for faces in (1, 3):
                clip = write_clip(scratch / f"{size}-{faces}-faces.mp4", faces, frames)
                fps, every_frame = live_fps(model, clip, min(frames, 30))
                track_s, faces_s, sampled = track_against_faces(model, clip, scratch)
                rows.append((size, faces, fps, track_s, faces_s, sampled))
                print(f"| {size:<5} | {faces:>5} | {fps:>18.1f} | {every_frame:>24.1f} | {track_s:>10.2f} | "
                      f"{faces_s:>29.2f} | {track_s / faces_s:>17.2f} |", flush=True)
    print(f"(--track and --faces: {rows[0][5]} sampled frames at 5 frames/s of a {frames / 10:g}-second clip)")
    for size, faces, fps, track_s, faces_s, _ in rows:
        if size == "b32" and faces == 1:
            print(f"target >= 10 Live frames/s, one face, B/32-sized: {fps:.1f} ({'met' if fps >= 10 else 'NOT met'})")
    worst = max(track_s / faces_s for *_, track_s, faces_s, _ in rows)
    print(f"target --track <= 1.5x --faces: worst {worst:.2f}x ({'met' if worst <= 1.5 else 'NOT met'})")


if __name__ == "__main__":
    main()
