"""Labelling at scale: `expclip predict` in one process vs `accelerate launch --num_processes N -m expclip predict`.

Real subprocesses, as a user runs them, on the same photo-sized JPEGs (640x480, smooth random content) written to a
temporary folder, with a tiny model (decoding dominates) and a CLIP ViT-B/32-sized model with the 512 -> 4096 head
(random weights; the model dominates). Every run pays for starting Python, the launcher and loading the model; to
leave only the labelling, each configuration is also run on 2 images and that time is taken off:
labelling images/s = (images - 2) / (seconds(images) - seconds(2)).

CPU: one process at the default thread count, one process with one thread, and N processes with one thread each
(torchrun's default). GPU (`--device cuda`): one process per GPU, `--num-processes` GPUs.

    python benchmarks/bench_label.py [--small] [--images 256] [--num-processes 2] [--device cpu|cuda]
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(Path(__file__).parent)]


def write_photos(folder: Path, count: int) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        low = rng.integers(0, 256, size=(12, 16, 3), dtype=np.uint8)
        Image.fromarray(low).resize((640, 480), Image.Resampling.BICUBIC).save(folder / f"{i:05d}.jpg", quality=90)
    return folder


def tiny_model(folder: Path) -> Path:
    import torch
    from transformers import AutoProcessor

    from modeling_expclip import ExpCLIPModel
    from tiny_models import save_tiny_clip

    save_tiny_clip(folder / "clip")
    torch.manual_seed(0)
    ExpCLIPModel.from_clip(str(folder / "clip"), projection_dim=32).save_pretrained(folder / "expclip")
    AutoProcessor.from_pretrained(folder / "clip").save_pretrained(folder / "expclip")
    return folder / "expclip"


def timed(command: list, env: dict) -> float:
    start = time.perf_counter()
    result = subprocess.run([str(c) for c in command], capture_output=True, text=True, env=dict(os.environ, **env))
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"failed: {' '.join(map(str, command))}\n{result.stderr[-3000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="tiny model only, 12 images, no one-thread run: a quick check")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--num-processes", type=int, default=2)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    images = 12 if args.small else args.images
    with tempfile.TemporaryDirectory(prefix="bench-label-") as tmp:
        tmp = Path(tmp)
        models = {"tiny": tiny_model(tmp / "tiny")}
        if not args.small:
            from bench_zero_shot import save_b32_sized_expclip

            models["B/32-sized"] = save_b32_sized_expclip(tmp / "b32")
        folders = {count: write_photos(tmp / f"photos-{count}", count) for count in (2, images)}
        launch = [Path(sys.executable).parent / "accelerate", "launch", "--num_machines", "1", "--mixed_precision",
                  "no", "--dynamo_backend", "no", "--multi_gpu", "--num_processes", args.num_processes, "-m",
                  "expclip", "predict"]
        one = [sys.executable, "-m", "expclip", "predict"]
        if args.device == "cuda":
            setups = {"1 process (1 GPU)": (one, {}), f"{args.num_processes} processes": (launch, {})}
        else:
            setups = {"1 process, default threads": (one, {}), "1 process, 1 thread": (one, {"OMP_NUM_THREADS": "1"}),
                      f"{args.num_processes} processes, 1 thread each": (launch, {"OMP_NUM_THREADS": "1"})}
            if args.small:  # a quick check that every kind of run works
                setups.pop("1 process, 1 thread")
        print(f"{images} JPEGs of 640x480, batch {args.batch_size}, --workers 1, device {args.device}")
        print(f"| model | setup | seconds ({images} images) | seconds (2 images) | labelling images/s | vs 1 process |")
        print("| --- | --- | --- | --- | --- | --- |")
        for name, model in models.items():
            baseline = None
            for setup, (command, env) in setups.items():
                rates = []
                for count in (2, images):
                    output = tmp / f"out-{len(os.listdir(tmp))}.jsonl"
                    rates.append(timed([*command, folders[count], "--model", model, "--format", "jsonl", "--output",
                                        output, "--batch-size", args.batch_size, "--workers", 1, "--device",
                                        args.device], env))
                rate = (images - 2) / max(1e-9, rates[1] - rates[0])
                baseline = baseline or rate
                print(f"| {name} | {setup} | {rates[1]:.1f} | {rates[0]:.1f} | {rate:.1f} | {rate / baseline:.2f}x |",
                      flush=True)


if __name__ == "__main__":
    main()
