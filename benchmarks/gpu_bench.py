"""GPU benchmark of Exp-CLIP at the real sizes, end to end through this project's own commands: prints a table.

    python benchmarks/gpu_bench.py                 # one GPU: 49,152 training JPEGs, 2,048 photos to predict
    python benchmarks/gpu_bench.py --images 8192   # fewer training images; the 49k figure is then extrapolated
    python benchmarks/gpu_bench.py --small         # the same script on CPU with tiny models (CI-size dry run)

What it does, nothing downloaded:
1. writes real JPEG files to a temporary folder (training faces 256x256, photos 640x480 to predict);
2. saves real-size checkpoints with random weights to disk: CLIP ViT-L/14 (built on the meta device, materialised on
   the GPU) and the BLIP-2 Flan-T5-XXL teacher as a safetensors file of only the tensors the teacher reads (bf16,
   about 12 GB), each with its config, tokenizer and image processor;
3. measures what the models alone allow on ready tensors (the ceilings): teacher bf16, CLIP fp32 / TF32 / bf16, the
   predictor's vision tower + head in fp16, and the teacher the authors' way (LAVIS: ViT fp16, Q-Former fp32, T5 bf16,
   left in train mode);
4. runs `train_expclip.py` as a subprocess (feature extraction + 5 epochs of the head) and `expclip predict` as a
   subprocess on the trained model folder, and times both end to end.

Targets (one H100): extraction >= 300 img/s, whole 49k recipe <= 4 min, head <= 5 s, predict >= 1,000 photos/s.
"""

import argparse
import functools
import json
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_train import PAPER_IMAGES, build_teacher, images_per_second, print_table, random_init_  # noqa: E402
from PIL import Image  # noqa: E402
from transformers import (  # noqa: E402
    Blip2Config,
    BlipImageProcessor,
    CLIPConfig,
    CLIPImageProcessor,
    CLIPModel,
    T5Config,
)

OPENAI_MEAN, OPENAI_STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]
TIED_EMBEDDINGS = "language_model.encoder.embed_tokens.weight"  # T5 ties it to `shared`; saved once


def real_configs() -> tuple[Blip2Config, CLIPConfig]:
    """Salesforce/blip2-flan-t5-xxl (EVA ViT-g/14, Q-Former, Flan-T5-XXL) and openai/clip-vit-large-patch14."""
    teacher = Blip2Config(
        vision_config=dict(image_size=224, patch_size=14, hidden_size=1408, intermediate_size=6144,
                           num_hidden_layers=39, num_attention_heads=16, qkv_bias=True, layer_norm_eps=1e-6),
        qformer_config=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                            encoder_hidden_size=1408, cross_attention_frequency=2, vocab_size=30522),
        text_config=T5Config(vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
                             feed_forward_proj="gated-gelu", tie_word_embeddings=False).to_dict(),
        num_query_tokens=32,
    )
    clip = CLIPConfig(
        text_config=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12),
        vision_config=dict(image_size=224, patch_size=14, hidden_size=1024, intermediate_size=4096,
                           num_hidden_layers=24, num_attention_heads=16),
        projection_dim=768,
    )
    return teacher, clip


def tiny_configs(t5_vocab_size: int) -> tuple[Blip2Config, CLIPConfig]:
    """The tests' tiny models of the same architectures (--small)."""
    from tiny_blip2 import tiny_blip2_config
    from tiny_models import tiny_clip_config

    return tiny_blip2_config(t5_vocab_size), tiny_clip_config()


# ----- 1. real JPEG files ------------------------------------------------------------------------------------------


def _write_jpeg(job):
    """A photo-like image (smooth random colour field + grain) of `size`, saved as JPEG quality 90."""
    path, size, seed = job
    rng = np.random.default_rng(seed)
    base = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize(size, Image.BICUBIC)
    pixels = np.asarray(base, dtype=np.int16) + rng.integers(-12, 13, (size[1], size[0], 3), dtype=np.int16)
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=90)


def write_jpegs(folder: Path, count: int, size: tuple[int, int], seed: int) -> Path:
    folder.mkdir(parents=True)
    jobs = [(folder / f"{i:06d}.jpg", size, seed + i) for i in range(count)]
    with multiprocessing.get_context("fork").Pool(os.cpu_count()) as pool:
        pool.map(_write_jpeg, jobs, chunksize=64)
    return folder


# ----- 2. real-size checkpoints with random weights ----------------------------------------------------------------


def save_clip(config: CLIPConfig, folder: Path, device: str) -> Path:
    """CLIP with random weights (meta device, then materialised on `device`), saved as a complete checkpoint folder:
    float32 safetensors like openai/clip-vit-large-patch14, tokenizer, image processor."""
    from tiny_models import save_tiny_clip_tokenizer

    tokenizer = save_tiny_clip_tokenizer(folder)  # byte-level CLIP BPE without merges: ids within CLIP's vocabulary
    config.text_config.bos_token_id, config.text_config.eos_token_id = tokenizer.bos_token_id, tokenizer.eos_token_id
    with torch.device("meta"):
        clip = CLIPModel(config)
    clip.to_empty(device=device)
    random_init_(clip)
    clip.logit_scale.data.fill_(np.log(100.0))
    clip.save_pretrained(folder)
    side = config.vision_config.image_size
    CLIPImageProcessor(size={"shortest_edge": side}, crop_size={"height": side, "width": side},
                       image_mean=OPENAI_MEAN, image_std=OPENAI_STD).save_pretrained(folder)
    del clip
    return folder


def save_teacher(config: Blip2Config, folder: Path, device: str, dtype: torch.dtype) -> Path:
    """The teacher's tensors only (no T5 decoder, no LM head) with random weights, as one safetensors file, plus the
    BLIP-2 config, a T5 tokenizer and BLIP-2's image processor: what `ExpCLIPTeacher.from_pretrained` reads."""
    from safetensors.torch import save_file
    from tiny_blip2 import save_tiny_t5_tokenizer

    folder.mkdir(parents=True, exist_ok=True)
    save_tiny_t5_tokenizer(folder)  # T5 Unigram over characters: ids within Flan-T5's vocabulary
    config.save_pretrained(folder)
    teacher = build_teacher(config, device, dtype)
    tensors = {key: value.contiguous() for key, value in teacher.state_dict().items() if key != TIED_EMBEDDINGS}
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    side = config.vision_config.image_size
    BlipImageProcessor(size={"height": side, "width": side}, image_mean=OPENAI_MEAN,
                       image_std=OPENAI_STD).save_pretrained(folder)
    del teacher, tensors
    return folder


# ----- 3. the models alone, on ready tensors (the ceilings) --------------------------------------------------------


@torch.no_grad()
def authors_targets(teacher, pixel_values: torch.Tensor) -> torch.Tensor:
    """The original's precision (LAVIS BLIP-2 T5): EVA ViT fp16, Q-Former fp32, T5 bf16, the module in train mode, so
    dropout is on (README: Faithful to the paper). Same steps as `ExpCLIPTeacher.forward`: the original's speed, not its exact target."""
    image_embeds = teacher.vision_model(pixel_values=pixel_values.half()).last_hidden_state
    query_tokens = teacher.query_tokens.expand(image_embeds.shape[0], -1, -1)
    query_output = teacher.qformer(
        query_embeds=query_tokens, encoder_hidden_states=image_embeds.float(),
        encoder_attention_mask=torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=image_embeds.device),
    ).last_hidden_state
    visual_tokens = teacher.language_projection(query_output.to(torch.bfloat16))
    instruction_embeds = teacher.language_model.get_input_embeddings()(teacher.instruction_ids)
    inputs_embeds = torch.cat([visual_tokens, instruction_embeds.expand(visual_tokens.shape[0], -1, -1)], dim=1)
    encoder = teacher.language_model.encoder
    hidden_states = encoder(inputs_embeds=inputs_embeds).last_hidden_state
    return F.normalize(hidden_states.float().mean(dim=1), dim=-1)


def _cast_call(model_fn, dtype: torch.dtype, pixel_values: torch.Tensor) -> torch.Tensor:
    return model_fn(pixel_values.to(dtype))


def model_ceilings(teacher_config, clip_config, device, batches: dict, num_batches: int) -> dict:
    """img/s of each model on ready tensors, and the teacher's peak memory."""
    from configuration_expclip import ExpCLIPConfig
    from modeling_expclip import ExpCLIPModel

    gpu = device == "cuda"
    rates = {}
    teacher_dtype = torch.bfloat16 if gpu else torch.float32
    teacher = build_teacher(teacher_config, device, teacher_dtype)
    side = teacher_config.vision_config.image_size
    if gpu:
        torch.cuda.reset_peak_memory_stats()
    rates["teacher"] = images_per_second(teacher, batches["teacher"], num_batches, side, device)
    rates["teacher_peak_gib"] = torch.cuda.max_memory_allocated() / 2**30 if gpu else float("nan")
    if gpu:  # the authors' precision: the ViT in fp16, the rest as built (Q-Former fp32, T5 bf16), train mode
        teacher.vision_model.half()
        teacher.train()
        rates["teacher_authors"] = images_per_second(functools.partial(authors_targets, teacher), batches["teacher"],
                                                     num_batches, side, device)
    else:  # no fp16 kernels worth timing on CPU: the same fp32 teacher, in train mode
        rates["teacher_authors"] = images_per_second(teacher.train(), batches["teacher"], num_batches, side, device)
    del teacher
    if gpu:
        torch.cuda.empty_cache()

    with torch.device("meta"):
        clip = ExpCLIPModel(ExpCLIPConfig(clip_config=clip_config.to_dict(),
                                          projection_dim=teacher_config.text_config.d_model), clip=CLIPModel(clip_config))
    clip.to_empty(device=device)
    random_init_(clip)
    clip.eval()
    side = clip_config.vision_config.image_size
    for name, dtype, tf32 in (("clip_fp32", torch.float32, False), ("clip_tf32", torch.float32, True),
                              ("clip_bf16", torch.bfloat16, False), ("clip_fp16", torch.float16, False)):
        if not gpu and name != "clip_fp32":
            continue
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
        clip.to(dtype)
        rates[name] = images_per_second(functools.partial(_cast_call, clip.encode_clip_image, dtype), batches["clip"],
                                        num_batches, side, device)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    dtype = torch.float16 if gpu else torch.float32  # the predictor: vision tower + head, what `expclip predict` runs
    clip.to(dtype)
    rates["predict_model"] = images_per_second(functools.partial(_cast_call, clip.get_image_features, dtype), batches["predict"],
                                               num_batches, side, device)
    del clip
    if gpu:
        torch.cuda.empty_cache()
    rates["clip_fast"] = rates.get("clip_bf16", rates["clip_fp32"])
    rates["clip_authors"] = rates.get("clip_fp16", rates["clip_fp32"])  # OpenAI clip.load runs CLIP in fp16
    return rates


# ----- 4. the commands, end to end ---------------------------------------------------------------------------------


def run(command: list, log: Path, env: dict) -> float:
    """Run a command as a user would; its output goes to `log`. Returns wall seconds; exits on failure."""
    start = time.perf_counter()
    with open(log, "w") as out:
        result = subprocess.run([str(c) for c in command], stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"gpu_bench: {' '.join(map(str, command[:3]))} ... failed (exit {result.returncode}); "
                 f"last lines of {log}:\n" + "\n".join(log.read_text().splitlines()[-15:]))
    return seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="tiny models on CPU: a CI-size dry run of this script")
    parser.add_argument("--images", type=int, default=None, help="training images (default 49,152; --small: 256)")
    parser.add_argument("--photos", type=int, default=None, help="photos for `expclip predict` (default 2,048)")
    parser.add_argument("--extraction_batch_size", type=int, default=128)
    parser.add_argument("--predict_batch_size", type=int, default=128)
    parser.add_argument("--num_batches", type=int, default=5, help="timed batches per model ceiling")
    parser.add_argument("--workdir", default=None, help="where the temporary folder goes (needs ~15 GB)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    wall_start = time.perf_counter()
    device = "cpu" if args.small or not torch.cuda.is_available() else "cuda"
    gpu = device == "cuda"
    num_images = args.images or (256 if args.small else PAPER_IMAGES)
    num_photos = args.photos or (32 if args.small else 2048)
    num_batches = 2 if args.small else args.num_batches
    batches = ({"teacher": 8, "clip": 16, "predict": 16} if args.small else
               {"teacher": 128, "clip": 256, "predict": args.predict_batch_size})
    tmp = Path(tempfile.mkdtemp(prefix="expclip-gpu-bench-", dir=args.workdir))
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_VERBOSITY="error",
               HF_HOME=str(tmp / "hf"), PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    if not gpu:
        env["CUDA_VISIBLE_DEVICES"] = ""
    try:
        # 1. files
        start = time.perf_counter()
        face_size, photo_size = ((64, 64), (160, 120)) if args.small else ((256, 256), (640, 480))
        faces = write_jpegs(tmp / "faces", num_images, face_size, seed=0)
        photos = write_jpegs(tmp / "photos", num_photos, photo_size, seed=10**7)
        jpeg_seconds = time.perf_counter() - start

        # 2. checkpoints
        start = time.perf_counter()
        if args.small:
            from tiny_blip2 import save_tiny_t5_tokenizer

            teacher_config, clip_config = tiny_configs(len(save_tiny_t5_tokenizer(tmp / "t5-tokenizer")))
        else:
            teacher_config, clip_config = real_configs()
        clip_dir = save_clip(clip_config, tmp / "clip", device)
        teacher_dir = save_teacher(teacher_config, tmp / "teacher", device, torch.bfloat16 if gpu else torch.float32)
        checkpoint_seconds = time.perf_counter() - start
        checkpoint_gb = sum(p.stat().st_size for p in (tmp / "teacher").iterdir()) / 1e9
        if gpu:
            torch.cuda.empty_cache()

        # 3. ceilings
        rates = model_ceilings(teacher_config, clip_config, device, batches, num_batches)
        if gpu:
            torch.cuda.empty_cache()

        # 4a. the recipe: train_expclip.py, extraction + 5 epochs of the head
        global_batch = 64 if args.small else 512
        train_seconds = run([
            sys.executable, ROOT / "train_expclip.py", "--clip_model_name_or_path", clip_dir,
            "--teacher_model_name_or_path", teacher_dir, "--train_dir", faces, "--feature_cache_dir", tmp / "cache",
            "--output_dir", tmp / "model", "--extraction_batch_size", args.extraction_batch_size,
            "--global_batch_size", global_batch, "--disable_tqdm", "true", "--logging_steps", 1000,
        ] + ([] if gpu else ["--use_cpu"]), tmp / "train.log", env)
        log = (tmp / "train.log").read_text()
        extraction_seconds = float(re.search(r"feature cache: \d+ images, .* \(([\d.]+) s\)", log).group(1))
        head_seconds = json.loads((tmp / "model" / "train_results.json").read_text())["train_runtime"]
        other_seconds = train_seconds - extraction_seconds - head_seconds  # start-up, model loading, saving
        scale = PAPER_IMAGES / num_images
        recipe_49k = other_seconds + (extraction_seconds + head_seconds) * scale

        # 4b. expclip predict on the trained model folder
        predict_dtype = "float16" if gpu else "float32"
        predict_seconds = run([
            sys.executable, "-m", "expclip", "predict", photos, "--model", tmp / "model", "--format", "jsonl",
            "--output", tmp / "predictions.jsonl", "--batch-size", batches["predict"], "--dtype", predict_dtype,
        ], tmp / "predict.log", env)
        predicted = len((tmp / "predictions.jsonl").read_text().splitlines())
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)

    # ----- the table
    extraction_rate = num_images / extraction_seconds
    ceiling_now = 1 / (1 / rates["teacher"] + 1 / rates["clip_fp32"])
    ceiling_fast = 1 / (1 / rates["teacher"] + 1 / rates["clip_fast"])
    per_epoch_authors = PAPER_IMAGES / rates["teacher_authors"] + PAPER_IMAGES / rates["clip_authors"]
    authors_minutes = 5 * per_epoch_authors / 60
    same_teacher_minutes = 5 * (PAPER_IMAGES / rates["teacher"] + PAPER_IMAGES / rates["clip_fast"]) / 60
    name = torch.cuda.get_device_name() if gpu else f"CPU, {torch.get_num_threads()} threads, tiny models"
    extrapolated = "" if num_images == PAPER_IMAGES else f" (extrapolated from {num_images:,})"
    tb, cb, pb = batches["teacher"], batches["clip"], batches["predict"]
    rows = [(f"path ({name})", "measured", "what the models alone allow", "target (one H100)")]
    rows.append((f"teacher targets, {'bf16' if gpu else 'fp32'}, batch {tb} (model only)",
                 f"{rates['teacher']:.0f} img/s, peak {rates['teacher_peak_gib']:.1f} GiB", "-",
                 ">= 330 img/s, <= 16 GB"))
    clip_rates = " / ".join(f"{rates[k]:.0f}" for k in ("clip_fp32", "clip_tf32", "clip_bf16") if k in rates)
    rows.append((f"CLIP image features fp32 / TF32 / bf16, batch {cb} (model only)", f"{clip_rates} img/s", "-", "-"))
    rows.append((f"feature extraction end to end ({num_images:,} JPEGs, batch {args.extraction_batch_size}, CLIP "
                 f"{'bf16' if gpu else 'fp32'})", f"{extraction_rate:.0f} img/s",
                 f"{ceiling_now:.0f} with fp32 CLIP, {ceiling_fast:.0f} with bf16 CLIP", ">= 300 img/s"))
    rows.append((f"head training, 5 epochs x {num_images:,} cached pairs (Trainer)",
                 f"{head_seconds:.1f} s" + (f" ({head_seconds * scale:.1f} s for 49,152)" if scale != 1 else ""),
                 "well under 1 s of compute", "<= 5 s for 49,152"))
    rows.append((f"train_expclip.py end to end, {num_images:,} images", f"{train_seconds / 60:.2f} min "
                 f"(start-up and loading {other_seconds:.0f} s)", "-", "-"))
    rows.append((f"whole 49,152-image recipe{extrapolated}", f"{recipe_49k / 60:.2f} min", "-", "<= 4 min"))
    rows.append(("authors' way: teacher (ViT fp16, T5 bf16, train mode) + CLIP fp16 every epoch, 5 epochs",
                 f"{authors_minutes:.2f} min (teacher {rates['teacher_authors']:.0f} img/s)", "-", "-"))
    rows.append(("speed-up of the cached recipe over the authors' way", f"{authors_minutes * 60 / recipe_49k:.1f}x",
                 f"{same_teacher_minutes * 60 / recipe_49k:.1f}x if every epoch reran our teacher", "-"))
    rows.append((f"`expclip predict`, {predicted:,} photos {photo_size[0]}x{photo_size[1]}, {predict_dtype}, "
                 f"batch {pb}, incl. start-up", f"{predicted / predict_seconds:.0f} photos/s",
                 f"{rates['predict_model']:.0f} img/s (vision tower + head)", ">= 1,000 photos/s"))
    rows.append(("set-up (not timed above): JPEGs written / checkpoints saved",
                 f"{jpeg_seconds:.0f} s / {checkpoint_seconds:.0f} s (teacher {checkpoint_gb:.1f} GB)", "-", "-"))
    print()
    print_table(rows)
    print("\nAt equal teacher speed, caching can save about 5x over 5 epochs (the teacher runs once instead of five "
          "times);\nany factor beyond that comes from the teacher's precision or speed, not from caching.")
    if scale != 1:
        print(f"The 49,152-image figures scale extraction and head time linearly from {num_images:,} images.")
    print(f"\n(total {time.perf_counter() - wall_start:.0f} s)")


if __name__ == "__main__":
    main()
