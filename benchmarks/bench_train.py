"""Training speed of Exp-CLIP: prints a table (a benchmark script, not a test).

    python benchmarks/bench_train.py            # CPU: real-size head training + small-size teacher/CLIP/recipe
    python benchmarks/bench_train.py --quick    # fewer pairs, for a smoke run
    python benchmarks/bench_train.py --small    # 1,024 pairs, 2 batches of teacher/CLIP: the suite's run (seconds)

Rows:
- head training: 5 epochs over 49,152 cached (CLIP 768-d, target 4096-d) pairs, global batch 512, through the same
  path as `train_expclip.py` (Arrow cache on disk held as tensors, HF Trainer, SGD, global InfoNCE). Target on CPU:
  <= 2 min.
- teacher targets img/s and CLIP image features img/s: models of the real architectures with random weights, at
  small size on CPU (real size, end to end: `gpu_bench.py`).
- the recipe for 49,152 images: cached (teacher + CLIP once, then the head) vs the authors' way (teacher + CLIP
  recomputed every epoch), from the measured rates.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from transformers import Blip2Config, CLIPConfig, CLIPModel, T5Config  # noqa: E402

INSTRUCTION_TOKENS = 28  # the paper's instruction is 27 Flan-T5 tokens + </s>
PAPER_IMAGES = 49_152  # 96 batches of 512: CAER-S train size with drop_last (README: Training)


def random_init_(module: torch.nn.Module, std: float = 0.02) -> torch.nn.Module:
    """Random weights for a module materialised with `to_empty` (no CPU init of real-size models)."""
    with torch.no_grad():
        for name, param in list(module.named_parameters()) + list(module.named_buffers()):
            if name.endswith("position_ids"):  # CLIP's non-persistent index buffer
                param.copy_(torch.arange(param.shape[-1]).expand_as(param))
                continue
            if not param.is_floating_point():
                continue
            if "norm" in name.lower() and param.dim() == 1:
                param.fill_(1.0)
            elif param.dim() == 1:
                param.zero_()
            else:
                param.normal_(0.0, std)
    return module


def build_teacher(config: Blip2Config, device: str, dtype: torch.dtype):
    """ExpCLIPTeacher of the given size with random weights, built on the meta device then materialised on `device`."""
    from expclip.teacher import ExpCLIPTeacher

    for sub_config in (config.vision_config, config.qformer_config, config.text_config):
        sub_config._attn_implementation = "sdpa"
    with torch.device("meta"):
        teacher = ExpCLIPTeacher(config, torch.zeros(1, INSTRUCTION_TOKENS, dtype=torch.long))
    teacher.to(dtype)  # still on meta: the weights are allocated once, in their final dtype
    teacher.qformer.float()  # float32, as transformers' BLIP-2 keeps it
    teacher.query_tokens.data = teacher.query_tokens.data.float()
    teacher.to_empty(device=device)
    random_init_(teacher)
    teacher.instruction_ids = torch.randint(2, config.text_config.vocab_size, (1, INSTRUCTION_TOKENS), device=device)
    return teacher.requires_grad_(False).eval()


def build_clip(config: CLIPConfig, device: str, dtype: torch.dtype = torch.float32):
    from configuration_expclip import ExpCLIPConfig
    from modeling_expclip import ExpCLIPModel

    with torch.device("meta"):
        model = ExpCLIPModel(ExpCLIPConfig(clip_config=config.to_dict()), clip=CLIPModel(config))
    model.to(dtype).to_empty(device=device)
    random_init_(model)
    return model.eval()


def images_per_second(fn, batch: int, num_batches: int, image_size: int, device: str) -> float:
    pixels = torch.rand(batch, 3, image_size, image_size, device=device)
    with torch.no_grad():
        fn(pixels)  # warm-up
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(num_batches):
            fn(pixels)
        if device == "cuda":
            torch.cuda.synchronize()
    return batch * num_batches / (time.perf_counter() - start)


def bench_head_training(num_pairs: int, clip_dim: int = 768, target_dim: int = 4096, batch: int = 512,
                        epochs: int = 5, use_cpu: bool = True) -> tuple[float, float, float]:
    """Seconds for `epochs` of the paper's head training on `num_pairs` cached pairs, through train_expclip's path.

    Returns (seconds, first logged loss, last logged loss)."""
    import functools

    import datasets
    from datasets import Dataset, load_from_disk
    from datasets.table import InMemoryTable
    from tiny_models import tiny_clip_config
    from transformers import Trainer

    from configuration_expclip import ExpCLIPConfig
    from modeling_expclip import ExpCLIPModel
    from train_expclip import CachedPairs, ExpCLIPTrainingArguments, global_contrastive_loss, whole_batch

    rng = np.random.default_rng(0)
    targets = rng.standard_normal((num_pairs, target_dim), dtype=np.float32)
    targets /= np.linalg.norm(targets, axis=1, keepdims=True)
    mixing = rng.standard_normal((target_dim, clip_dim), dtype=np.float32) / np.sqrt(target_dim)
    clip_embeds = targets @ mixing + 0.1 * rng.standard_normal((num_pairs, clip_dim), dtype=np.float32)

    def column(rows):
        return pa.FixedSizeListArray.from_arrays(pa.array(rows.reshape(-1)), rows.shape[1])

    with tempfile.TemporaryDirectory() as tmp:
        table = pa.table({"clip_image_embeds": column(clip_embeds), "target_embeds": column(targets)})
        datasets.disable_progress_bars()
        # A fingerprint given: `datasets` would otherwise hash the whole table (slow, and it failed on one H100)
        Dataset(InMemoryTable(table), fingerprint=f"bench-{num_pairs}").save_to_disk(f"{tmp}/cache")
        del table, targets, clip_embeds
        cache = load_from_disk(f"{tmp}/cache")  # memory-mapped Arrow, as train_expclip.py reads its cache
        train_dataset = CachedPairs(cache)  # held as tensors, whole batches by index, as train_expclip.py
        torch.manual_seed(1)
        model = ExpCLIPModel(ExpCLIPConfig(clip_config=tiny_clip_config(projection_dim=clip_dim).to_dict(),
                                           projection_dim=target_dim))
        args = ExpCLIPTrainingArguments(output_dir=f"{tmp}/out", global_batch_size=batch, num_train_epochs=epochs,
                                        use_cpu=use_cpu, disable_tqdm=True,
                                        logging_steps=num_pairs // batch)  # once per epoch
        trainer = Trainer(model=model, args=args, train_dataset=train_dataset, data_collator=whole_batch,
                          compute_loss_func=functools.partial(global_contrastive_loss, scale=100.0))
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
        losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return seconds, losses[0], losses[-1]


def small_configs() -> tuple[Blip2Config, CLIPConfig]:
    """Real architectures, small widths and depths (CPU-sized)."""
    teacher = Blip2Config(
        vision_config=dict(image_size=224, patch_size=14, hidden_size=256, intermediate_size=1024,
                           num_hidden_layers=4, num_attention_heads=4),
        qformer_config=dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=2, num_attention_heads=4,
                            encoder_hidden_size=256),
        text_config=T5Config(vocab_size=32128, d_model=512, d_kv=64, d_ff=1024, num_layers=4, num_heads=8,
                             feed_forward_proj="gated-gelu").to_dict(),
        num_query_tokens=32,
    )
    clip = CLIPConfig(
        text_config=dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=2, num_attention_heads=4),
        vision_config=dict(image_size=224, patch_size=32, hidden_size=256, intermediate_size=1024,
                           num_hidden_layers=4, num_attention_heads=4),
        projection_dim=256,
    )
    return teacher, clip


def recipe_minutes(num_images: int, teacher_rate: float, clip_rate: float, head_seconds: float, epochs: int = 5):
    """(cached, authors' way) minutes: the cache runs teacher + CLIP once; the authors re-ran them every epoch."""
    extraction = num_images / teacher_rate + num_images / clip_rate
    return (extraction + head_seconds) / 60, (epochs * extraction + head_seconds) / 60


def print_table(rows: list[tuple[str, str, str]]):
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for k, row in enumerate(rows):
        print(" | ".join(cell.ljust(width) for cell, width in zip(row, widths)))
        if k == 0:
            print("-+-".join("-" * width for width in widths))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="4,096 pairs instead of 49,152 (smoke run)")
    parser.add_argument("--small", action="store_true",
                        help="1,024 pairs and 2 small batches of images (seconds; what the test suite runs)")
    args = parser.parse_args()
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    rows = [("measure (CPU, %d threads)" % threads, "value", "target")]

    num_pairs = 1024 if args.small else 4096 if args.quick else PAPER_IMAGES
    batch, num_batches = (2, 1) if args.small else (None, 3)
    seconds, first_loss, last_loss = bench_head_training(num_pairs)
    rows.append((f"head training, 5 epochs x {num_pairs:,} pairs 768->4096, batch 512", f"{seconds:.1f} s "
                 f"(loss {first_loss:.2f} -> {last_loss:.2f})", "<= 120 s" if num_pairs == PAPER_IMAGES else "-"))

    teacher_config, clip_config = small_configs()
    teacher = build_teacher(teacher_config, "cpu", torch.float32)
    teacher_rate = images_per_second(teacher, batch or 16, num_batches, 224, "cpu")
    params = sum(p.numel() for p in teacher.parameters()) / 1e6
    rows.append((f"teacher targets, small BLIP-2-T5 ({params:.0f}M params, fp32)", f"{teacher_rate:.1f} img/s", "-"))
    clip = build_clip(clip_config, "cpu")
    clip_rate = images_per_second(clip.encode_clip_image, batch or 32, num_batches, 224, "cpu")
    params = sum(p.numel() for p in clip.clip.vision_model.parameters()) / 1e6
    rows.append((f"CLIP image features, small ViT/32 ({params:.0f}M vision params)", f"{clip_rate:.1f} img/s", "-"))

    head_seconds = seconds * PAPER_IMAGES / num_pairs
    cached, authors = recipe_minutes(PAPER_IMAGES, teacher_rate, clip_rate, head_seconds)
    rows.append(("recipe on 49,152 images, cached (small models)", f"{cached:.1f} min", "-"))
    rows.append(("recipe on 49,152 images, authors' way (small models)", f"{authors:.1f} min", "-"))
    rows.append(("speed-up of the cached recipe", f"{authors / cached:.1f}x", "-"))
    print()
    print_table(rows)


if __name__ == "__main__":
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    main()
