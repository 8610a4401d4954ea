"""GPU benchmark of Exp-CLIP at the real sizes, end to end through this project's own commands: prints a table.

    python benchmarks/gpu_bench.py                 # one GPU: 49,152 training JPEGs, 2,048 photos to predict
    python benchmarks/gpu_bench.py --images 8192   # fewer training images; the 49k figure is then extrapolated
    python benchmarks/gpu_bench.py --teacher qwen2.5-vl-7b --backbone siglip2-so400m   # README: Beyond the paper
    python benchmarks/gpu_bench.py --small         # the same script on CPU with tiny models (CI-size dry run)

What it does, nothing downloaded:
1. writes real JPEG files to a temporary folder (training faces 256x256, photos 640x480 to predict);
2. saves real-size checkpoints with random weights to disk, each with its config, tokenizer and processor:
   - the backbone (`--backbone`): CLIP ViT-L/14 (the paper) or SigLIP 2 so400m/16 NaFlex, float32 like the
     published checkpoints, built on the meta device and materialised on the GPU;
   - the teacher (`--teacher`): the BLIP-2 Flan-T5-XXL teacher (the paper) as a safetensors file of only the tensors
     the teacher reads (bf16, about 12 GB), or Qwen2.5-VL-7B-Instruct's base model (bf16, about 16 GB; no LM head,
     which the teacher never loads);
3. measures what the models alone allow on ready tensors (the ceilings): the teacher in bf16, the backbone in fp32 /
   TF32 / bf16, the predictor's vision tower + head in fp16, and for the paper's teacher its authors' way (LAVIS:
   ViT fp16, Q-Former fp32, T5 bf16, left in train mode);
4. runs `train_expclip.py` as a subprocess (feature extraction + 5 epochs of the head) and `expclip predict` as a
   subprocess on the trained model folder, and times both end to end.

Targets (one H100), the paper's pair: extraction >= 300 img/s, whole 49k recipe <= 4 min, head <= 5 s, predict
>= 1,000 photos/s. A VLM teacher: extraction end to end >= 50 % of the teacher alone on ready tensors.
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

from bench_train import PAPER_IMAGES, build_teacher, print_table, random_init_  # noqa: E402
from PIL import Image  # noqa: E402
from transformers import (  # noqa: E402
    Blip2Config,
    BlipImageProcessor,
    CLIPConfig,
    CLIPImageProcessor,
    AutoConfig,
    CLIPModel,
    Qwen2_5_VLConfig,
    Siglip2Config,
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


# README: Beyond the paper: the new paths at their real sizes (--teacher / --backbone)
TEACHERS = {"blip2-flan-t5-xxl": "BLIP-2 Flan-T5-XXL", "qwen2.5-vl-7b": "Qwen2.5-VL-7B"}
BACKBONES = {"clip-vit-l14": "CLIP ViT-L/14", "siglip2-so400m": "SigLIP 2 so400m/16 NaFlex"}


def qwen2_5_vl_7b_config(token_ids: dict) -> Qwen2_5_VLConfig:
    """Qwen/Qwen2.5-VL-7B-Instruct: 28-layer 3584-wide language model (GQA, 4 KV heads, M-RoPE), 32-block window-
    attention ViT; `token_ids`: the image / vision start and end token ids of the tokenizer it is saved with."""
    text = dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=128000, rms_norm_eps=1e-6,
                rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]})
    vision = dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=3584,
                  patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                  fullatt_block_indexes=[7, 15, 23, 31], tokens_per_second=2)
    return Qwen2_5_VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=False, **token_ids)


def siglip2_so400m_config(tokenizer) -> Siglip2Config:
    """google/siglip2-so400m-patch16-naflex: two 27-layer 1152-wide towers, up to 256 patches of 16 px, Gemma's
    256k vocabulary, 64 text positions."""
    tower = dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16)
    return Siglip2Config(
        text_config=dict(tower, vocab_size=256000, max_position_embeddings=64, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id),
        vision_config=dict(tower, patch_size=16, num_patches=256),
    )


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


def save_siglip2(folder: Path, device: str, small: bool = False) -> Path:
    """SigLIP 2 so400m NaFlex (`small`: the tests' tiny SigLIP 2) with random weights (meta device, then `device`),
    float32 like the published checkpoint, with SigLIP 2's tokenizer class (Gemma ids within the real vocabulary) and
    NaFlex image processor."""
    from tiny_backbones import gemma_vocab, tiny_siglip2_config
    from transformers import Siglip2ImageProcessor, Siglip2Model, Siglip2Processor, Siglip2Tokenizer

    tokenizer = Siglip2Tokenizer(vocab=gemma_vocab(), merges=[])
    with torch.device("meta"):
        model = Siglip2Model((tiny_siglip2_config if small else siglip2_so400m_config)(tokenizer))
    model.to_empty(device=device)
    random_init_(model)
    model.logit_scale.data.fill_(np.log(10.0))
    model.logit_bias.data.fill_(-10.0)
    model.save_pretrained(folder)
    image_processor = Siglip2ImageProcessor(patch_size=16, max_num_patches=256)
    Siglip2Processor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    del model
    return folder


def save_qwen2_5_vl(folder: Path, device: str, dtype: torch.dtype, small: bool = False) -> Path:
    """Qwen2.5-VL-7B's base model (`small`: the tests' tiny Qwen2.5-VL; what `AutoModel` loads: the teacher never
    builds the LM head) with random weights (meta device, then `device`) in `dtype`, with Qwen2.5-VL's processor (the published min/max pixels) and chat
    template. Its tokenizer makes each word of the prompt one token, so the prompt is about as long as with Qwen's."""
    from configuration_expclip import INSTRUCTION
    from tiny_vlms import QWEN_TEMPLATE, QWEN_TOKENS, qwen_token_ids, tiny_qwen2_5_vl_config, word_tokenizer
    from transformers import Qwen2_5_VLModel, Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    tokenizer = word_tokenizer(QWEN_TOKENS, "system You are a helpful assistant. user assistant " + INSTRUCTION,
                               pad_token="<|endoftext|>", eos_token="<|im_end|>")
    with torch.device("meta"):
        model = Qwen2_5_VLModel(tiny_qwen2_5_vl_config(tokenizer) if small else
                                qwen2_5_vl_7b_config(qwen_token_ids(tokenizer)))
    model.to(dtype)  # still on meta: the weights are allocated once, in their final dtype
    model.to_empty(device=device)
    random_init_(model)  # (the rotary inv_freq buffers too: not saved, rebuilt by from_pretrained)
    model.save_pretrained(folder)
    image_processor = Qwen2VLImageProcessor(min_pixels=3136, max_pixels=12845056)
    Qwen2_5_VLProcessor(image_processor=image_processor, tokenizer=tokenizer, video_processor=Qwen2VLVideoProcessor(),
                        chat_template=QWEN_TEMPLATE).save_pretrained(folder)
    del model
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


def ready_rate(fn, inputs, batch: int, num_batches: int, gpu: bool) -> float:
    """img/s of `fn(inputs)` on inputs already on the device (one warm-up call first)."""
    with torch.no_grad():
        fn(inputs)
        if gpu:
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(num_batches):
            fn(inputs)
        if gpu:
            torch.cuda.synchronize()
    return batch * num_batches / (time.perf_counter() - start)


def teacher_ceilings(teacher: str, teacher_config, teacher_dir: Path, face: Image.Image, device: str, batch: int,
                     num_batches: int, image_size: int | None) -> dict:
    """img/s of the teacher alone on ready tensors in its extraction precision (bf16 on GPU), its peak memory, and
    for the paper's teacher its authors' precision."""
    gpu = device == "cuda"
    dtype = torch.bfloat16 if gpu else torch.float32
    rates = {}
    if teacher == "blip2-flan-t5-xxl":
        model = build_teacher(teacher_config, device, dtype)
        side = teacher_config.vision_config.image_size
        inputs = torch.rand(batch, 3, side, side, device=device)
    else:  # a VLM, loaded as train_expclip.py loads it; one face's prompt, batched as extraction batches it
        from expclip.teacher import VLMTeacher

        model = VLMTeacher.from_pretrained(str(teacher_dir), device=device, dtype=dtype, image_size=image_size)
        one = model.inputs(face)
        inputs = {key: value.to(device=device, dtype=dtype if value.is_floating_point() else value.dtype)
                  for key, value in model.collate([one] * batch).items()}
        rates["prompt_tokens"] = one["input_ids"].shape[1]
        rates["image_tokens"] = int((one["input_ids"] == model.model.config.image_token_id).sum())
    if gpu:
        torch.cuda.reset_peak_memory_stats()
    rates["teacher"] = ready_rate(model, inputs, batch, num_batches, gpu)
    rates["teacher_peak_gib"] = torch.cuda.max_memory_allocated() / 2**30 if gpu else float("nan")
    if teacher == "blip2-flan-t5-xxl":
        if gpu:  # the authors' precision: the ViT in fp16, the rest as built (Q-Former fp32, T5 bf16), train mode
            model.vision_model.half()
            model.train()
            rates["teacher_authors"] = ready_rate(functools.partial(authors_targets, model), inputs, batch,
                                                  num_batches, gpu)
        else:  # no fp16 kernels worth timing on CPU: the same fp32 teacher, in train mode
            rates["teacher_authors"] = ready_rate(model.train(), inputs, batch, num_batches, gpu)
    del model
    if gpu:
        torch.cuda.empty_cache()
    return rates


def backbone_ceilings(backbone_dir: Path, target_dim: int, face: Image.Image, device: str, batches: dict,
                      num_batches: int) -> dict:
    """img/s of the backbone's image features in fp32 / TF32 / bf16 / fp16 and of the predictor (vision tower + head,
    fp16), on one face prepared by the backbone's own processor and repeated to a batch."""
    from transformers import AutoImageProcessor

    from expclip.inputs import ImagePreprocessing
    from modeling_expclip import ExpCLIPModel

    gpu = device == "cuda"
    rates = {}
    model = ExpCLIPModel.from_clip(str(backbone_dir), projection_dim=target_dim).to(device).eval()
    preprocessing = ImagePreprocessing(AutoImageProcessor.from_pretrained(str(backbone_dir), backend="pil"))
    for name, dtype, tf32 in (("clip_fp32", torch.float32, False), ("clip_tf32", torch.float32, True),
                              ("clip_bf16", torch.bfloat16, False), ("clip_fp16", torch.float16, False)):
        if not gpu and name != "clip_fp32":
            continue
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
        model.to(dtype)
        pixels = preprocessing.to_device(preprocessing([face] * batches["clip"]), device, dtype)
        rates[name] = ready_rate(model.encode_clip_image, pixels, batches["clip"], num_batches, gpu)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    dtype = torch.float16 if gpu else torch.float32  # the predictor: vision tower + head, what `expclip predict` runs
    model.to(dtype)
    pixels = preprocessing.to_device(preprocessing([face] * batches["predict"]), device, dtype)
    rates["predict_model"] = ready_rate(model.get_image_features, pixels, batches["predict"], num_batches, gpu)
    del model
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
    parser.add_argument("--teacher", choices=TEACHERS, default="blip2-flan-t5-xxl",
                        help="the teacher's architecture at its real size (--small: the tests' tiny model of it)")
    parser.add_argument("--backbone", choices=BACKBONES, default="clip-vit-l14",
                        help="the backbone's architecture at its real size (--small: the tests' tiny model of it)")
    parser.add_argument("--teacher_image_size", type=int, default=None,
                        help="a VLM teacher: train_expclip.py's --teacher_image_size (default: its processor's own)")
    parser.add_argument("--images", type=int, default=None, help="training images (default 49,152; --small: 256)")
    parser.add_argument("--photos", type=int, default=None, help="photos for `expclip predict` (default 2,048)")
    parser.add_argument("--extraction_batch_size", type=int, default=128)
    parser.add_argument("--predict_batch_size", type=int, default=128)
    parser.add_argument("--num_batches", type=int, default=5, help="timed batches per model ceiling")
    parser.add_argument("--workdir", default=None, help="where the temporary folder goes (needs ~15-20 GB)")
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
        teacher_dtype = torch.bfloat16 if gpu else torch.float32
        teacher_config, teacher_dir, clip_dir = None, tmp / "teacher", tmp / "clip"
        if args.teacher == "blip2-flan-t5-xxl":
            if args.small:
                from tiny_blip2 import save_tiny_t5_tokenizer, tiny_blip2_config

                teacher_config = tiny_blip2_config(len(save_tiny_t5_tokenizer(tmp / "t5-tokenizer")))
            else:
                teacher_config = real_configs()[0]
            save_teacher(teacher_config, teacher_dir, device, teacher_dtype)
        else:
            save_qwen2_5_vl(teacher_dir, device, teacher_dtype, small=args.small)
        if gpu:
            torch.cuda.empty_cache()
        if args.backbone == "clip-vit-l14":
            from tiny_models import tiny_clip_config

            save_clip(tiny_clip_config() if args.small else real_configs()[1], clip_dir, device)
        else:
            save_siglip2(clip_dir, device, small=args.small)
        checkpoint_seconds = time.perf_counter() - start
        checkpoint_gb = sum(p.stat().st_size for p in teacher_dir.iterdir()) / 1e9
        if gpu:
            torch.cuda.empty_cache()

        # 3. ceilings
        face = Image.open(faces / "000000.jpg").convert("RGB")
        rates = teacher_ceilings(args.teacher, teacher_config, teacher_dir, face, device, batches["teacher"],
                                 num_batches, args.teacher_image_size)
        target_dim = AutoConfig.from_pretrained(teacher_dir).get_text_config().hidden_size
        rates |= backbone_ceilings(clip_dir, target_dim, face, device, batches, num_batches)

        # 4a. the recipe: train_expclip.py, extraction + 5 epochs of the head
        global_batch = min(64 if args.small else 512, num_images)  # the paper's batch; one batch at least
        train_seconds = run([
            sys.executable, ROOT / "train_expclip.py", "--clip_model_name_or_path", clip_dir,
            "--teacher_model_name_or_path", teacher_dir, "--train_dir", faces, "--feature_cache_dir", tmp / "cache",
            "--output_dir", tmp / "model", "--extraction_batch_size", args.extraction_batch_size,
            "--global_batch_size", global_batch, "--disable_tqdm", "true", "--logging_steps", 1000,
        ] + ([] if gpu else ["--use_cpu"])
          + (["--teacher_image_size", args.teacher_image_size] if args.teacher_image_size else []),
            tmp / "train.log", env)
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
    paper = args.teacher == "blip2-flan-t5-xxl" and args.backbone == "clip-vit-l14"  # the targets are the paper pair's
    teacher_name, backbone_name = TEACHERS[args.teacher], BACKBONES[args.backbone]
    extraction_rate = num_images / extraction_seconds
    ceiling_now = 1 / (1 / rates["teacher"] + 1 / rates["clip_fp32"])
    ceiling_fast = 1 / (1 / rates["teacher"] + 1 / rates["clip_fast"])
    same_teacher_minutes = 5 * (PAPER_IMAGES / rates["teacher"] + PAPER_IMAGES / rates["clip_fast"]) / 60
    name = torch.cuda.get_device_name() if gpu else f"CPU, {torch.get_num_threads()} threads, tiny models"
    extrapolated = "" if num_images == PAPER_IMAGES else f" (extrapolated from {num_images:,})"
    tb, cb, pb = batches["teacher"], batches["clip"], batches["predict"]
    precision = "bf16" if gpu else "fp32"
    prompt = (f", prompt {rates['prompt_tokens']} tokens ({rates['image_tokens']} image)"
              if "prompt_tokens" in rates else "")
    rows = [(f"path ({name})", "measured", "what the models alone allow", "target (one H100)")]
    rows.append((f"teacher targets, {teacher_name}, {precision}, batch {tb}{prompt} (model only)",
                 f"{rates['teacher']:.0f} img/s, peak {rates['teacher_peak_gib']:.1f} GiB", "-",
                 ">= 330 img/s, <= 16 GB" if args.teacher == "blip2-flan-t5-xxl" else "-"))
    clip_rates = " / ".join(f"{rates[k]:.0f}" for k in ("clip_fp32", "clip_tf32", "clip_bf16") if k in rates)
    rows.append((f"{backbone_name} image features fp32 / TF32 / bf16, batch {cb} (model only)", f"{clip_rates} img/s",
                 "-", "-"))
    rows.append((f"feature extraction end to end ({num_images:,} JPEGs, batch {args.extraction_batch_size}, backbone "
                 f"{precision})", f"{extraction_rate:.0f} img/s = {100 * extraction_rate / rates['teacher']:.0f} % of "
                 "the teacher alone", f"{ceiling_now:.0f} with the fp32 backbone, {ceiling_fast:.0f} with bf16",
                 ">= 300 img/s" if paper else ">= 50 % of the teacher alone"))
    rows.append((f"head training, 5 epochs x {num_images:,} cached pairs (Trainer)",
                 f"{head_seconds:.1f} s" + (f" ({head_seconds * scale:.1f} s for 49,152)" if scale != 1 else ""),
                 "well under 1 s of compute", "<= 5 s for 49,152" if paper else "-"))
    rows.append((f"train_expclip.py end to end, {num_images:,} images", f"{train_seconds / 60:.2f} min "
                 f"(start-up and loading {other_seconds:.0f} s)", "-", "-"))
    rows.append((f"whole 49,152-image recipe{extrapolated}", f"{recipe_49k / 60:.2f} min", "-",
                 "<= 4 min" if paper else "-"))
    if "teacher_authors" in rates:
        authors_minutes = 5 * (PAPER_IMAGES / rates["teacher_authors"] + PAPER_IMAGES / rates["clip_authors"]) / 60
        rows.append(("authors' way: teacher (ViT fp16, T5 bf16, train mode) + backbone fp16 every epoch, 5 epochs",
                     f"{authors_minutes:.2f} min (teacher {rates['teacher_authors']:.0f} img/s)", "-", "-"))
        rows.append(("speed-up of the cached recipe over the authors' way", f"{authors_minutes * 60 / recipe_49k:.1f}x",
                     f"{same_teacher_minutes * 60 / recipe_49k:.1f}x if every epoch reran our teacher", "-"))
    else:
        rows.append(("speed-up of the cached recipe over rerunning the teacher every epoch, 5 epochs",
                     f"{same_teacher_minutes * 60 / recipe_49k:.1f}x", "-", "-"))
    rows.append((f"`expclip predict`, {predicted:,} photos {photo_size[0]}x{photo_size[1]}, {predict_dtype}, "
                 f"batch {pb}, incl. start-up", f"{predicted / predict_seconds:.0f} photos/s",
                 f"{rates['predict_model']:.0f} img/s (vision tower + head)", ">= 1,000 photos/s" if paper else "-"))
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
