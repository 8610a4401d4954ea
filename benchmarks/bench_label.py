"""Labelling at scale: one process vs `accelerate launch --num_processes N`, the labelling engine of `expclip predict`.

Each configuration runs this script as a worker in real subprocesses (`python bench_label.py --worker ...`, or under
`accelerate launch --multi_gpu --num_processes N`): every process loads the model, then, between two barriers, labels
its share of the shards (`expclip.labelling.label_shards`, writing them as `expclip predict` does); rank 0 then reads
them back in input order (the merge). The clock starts at the first barrier, so starting Python and loading the model
are left out: on a shared machine they take longer than the labelling and vary more. Inputs: photo-sized JPEGs
(640x480, smooth random content) on disk; a tiny model (decoding dominates) and a CLIP ViT-B/32-sized model with the
512 -> 4096 head (random weights; the model dominates).

CPU: one process at the default thread count, one process with one thread, and N processes with one thread each
(torchrun's default). GPU (`--device cuda`): one process, then N processes, one GPU each.

    python benchmarks/bench_label.py [--small] [--images 128] [--num-processes 2] [--device cpu|cuda]
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


def worker(model: str, photos: str, batch_size: int, device: str, shards_dir: str) -> None:
    """One process of a configuration: label this process's shards between two barriers; rank 0 prints the time."""
    from accelerate import PartialState

    from expclip.labelling import PathInputs, ShardFolder, label_shards, plan_shards
    from expclip.predictor import ExpCLIPPredictor, collect_items

    state = PartialState(cpu=device == "cpu")
    device = "cpu" if device == "cpu" else str(state.device)
    predictor = ExpCLIPPredictor.from_pretrained(model, device, detector=None, batch_size=batch_size, workers=1)
    inputs = PathInputs(collect_items([photos]))
    shards = plan_shards(inputs.kinds(), batch_size, 1000, state.num_processes)
    folder = ShardFolder(shards_dir)
    if state.is_main_process:
        folder.prepare("bench", shards, resume=False, overwrite=True)
    predictor(str(inputs.all[0].source))  # first call: lazy initialisation, not timed
    state.wait_for_everyone()
    start = time.perf_counter()
    with state.split_between_processes(shards) as mine:
        label_shards(predictor, inputs, mine, folder, len(shards), state.process_index, faces=False)
    state.wait_for_everyone()
    if state.is_main_process:
        count = sum(len(records) for records in folder.read(shards))
        print(f"LABELLED {count} {time.perf_counter() - start:.3f}", flush=True)
        folder.remove()


def timed(command: list, env: dict) -> tuple[int, float]:
    result = subprocess.run([str(c) for c in command], capture_output=True, text=True, env=dict(os.environ, **env))
    lines = [line.split() for line in result.stdout.splitlines() if line.startswith("LABELLED ")]
    if result.returncode != 0 or not lines:
        sys.exit(f"failed: {' '.join(map(str, command))}\n{result.stderr[-3000:]}")
    return int(lines[0][1]), float(lines[0][2])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="tiny model only, 16 images, no one-thread run: a check")
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--num-processes", type=int, default=2)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--worker", nargs=3, metavar=("MODEL", "PHOTOS", "SHARDS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker[0], args.worker[1], args.batch_size, args.device, args.worker[2])
    images = 16 if args.small else args.images
    with tempfile.TemporaryDirectory(prefix="bench-label-") as tmp:
        tmp = Path(tmp)
        models = {"tiny": tiny_model(tmp / "tiny")}
        if not args.small:
            from bench_zero_shot import save_b32_sized_expclip

            models["B/32-sized"] = save_b32_sized_expclip(tmp / "b32")
        photos = write_photos(tmp / "photos", images)
        script = [Path(__file__).resolve()]
        launch = [Path(sys.executable).parent / "accelerate", "launch", "--num_machines", "1", "--mixed_precision",
                  "no", "--dynamo_backend", "no", "--multi_gpu", "--num_processes", args.num_processes, *script]
        one = [sys.executable, *script]
        many = f"{args.num_processes} processes"
        if args.device == "cuda":
            setups = {"1 process (1 GPU)": (one, {}), f"{many} (1 GPU each)": (launch, {})}
        else:
            setups = {"1 process, default threads": (one, {}), "1 process, 1 thread": (one, {"OMP_NUM_THREADS": "1"}),
                      f"{many}, 1 thread each": (launch, {"OMP_NUM_THREADS": "1"})}
            if args.small:  # a quick check that both kinds of run work
                setups.pop("1 process, 1 thread")
        print(f"{images} JPEGs of 640x480, batch {args.batch_size}, 1 reader worker per process, device {args.device}")
        print("| model | setup | labelled | seconds | images/s | vs the first row |")
        print("| --- | --- | --- | --- | --- | --- |")
        for name, model in models.items():
            baseline = None
            for setup, (command, env) in setups.items():
                count, seconds = timed([*command, "--worker", model, photos, tmp / f"shards-{len(os.listdir(tmp))}",
                                        "--batch-size", args.batch_size, "--device", args.device], env)
                rate = count / seconds
                baseline = baseline or rate
                print(f"| {name} | {setup} | {count} | {seconds:.2f} | {rate:.1f} | {rate / baseline:.2f}x |",
                      flush=True)


if __name__ == "__main__":
    main()
