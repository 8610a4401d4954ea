"""Train Exp-CLIP's projection (README: Training): `accelerate launch train_expclip.py --train_dir faces/ --output_dir out/`.

Read top to bottom: arguments, images, cached features (frozen CLIP + LLM teacher, computed once), model, the HF
Trainer on cached vectors, then a complete Hub model folder with its model card (and `--push_to_hub`).

The defaults reproduce the paper's run: SGD lr 1e-3, momentum 0.9, weight decay 1e-4, constant lr, global batch 512
with drop_last, 5 epochs, seed 1, InfoNCE scale 100. Under `accelerate launch --num_processes N` every rank extracts a
disjoint part of the cache, trains on `global_batch_size / N` images per step, and the InfoNCE negatives come from
all ranks, so N processes train the same head as one.
"""

import functools
import json
import logging
import math
import os
import pickle
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn
import transformers
from accelerate import PartialState
from expclip.eval.benchmarks import uar_war_results
from huggingface_hub import ModelCard, ModelCardData
from huggingface_hub.constants import HF_HOME
from transformers import (
    AutoConfig,
    AutoProcessor,
    HfArgumentParser,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    set_seed,
)

from configuration_expclip import INSTRUCTION
from expclip.features import (
    FeatureCacheSettings,
    build_feature_cache,
    dataset_image_items,
    folder_image_items,
    input_side,
    pixel_values,
    read_image,
    resolve_dtype,
    target_column,
)
from expclip.inputs import (
    DTYPES,
    MIXED_PRECISION,
    InputError,
    first_line,
    one_line,
    original_image_processor_settings,
    pin_pil_image_processor,
)
from modeling_expclip import BACKBONE_FAMILIES, ExpCLIPModel, contrastive_loss
from expclip.outputs import MARKER, OutputError, check_apart, check_output_folder, clear_output, mark_output
from expclip.teacher import (
    DEFAULT_TEACHER,
    PLAIN_PROMPT_NOTE,
    TARGET_POOLINGS,
    MissingDependencyError,
    UnsupportedTeacherError,
    has_chat_template,
    load_vlm_processor,
    render_prompt,
    teacher_model_type,
)

logger = logging.getLogger("train_expclip")


# ----- arguments --------------------------------------------------------------------------------------------------


@dataclass
class ModelArguments:
    clip_model_name_or_path: str = field(
        default="openai/clip-vit-large-patch14",
        metadata={"help": "The frozen backbone (Hub id or folder): CLIP, MetaCLIP 2, SigLIP or SigLIP 2."},
    )
    teacher_model_name_or_path: str = field(
        default=DEFAULT_TEACHER,
        metadata={"help": "The LLM teacher (Hub id or folder): a BLIP-2 + T5 checkpoint (the paper) or a VLM "
                  "(Qwen2.5-VL, Qwen3-VL, SmolVLM, Gemma 3, LLaVA-OneVision, InternVL; README: Beyond the paper)."},
    )
    teacher_layer: int = field(
        default=-1, metadata={"help": "VLM teachers: the language model's hidden_states index read as the target "
                              "(0: embeddings, -1: the last layer after the final norm)."})
    target_pooling: str = field(
        default="mean", metadata={"help": "VLM teachers: mean over the prompt's non-padding tokens (as the paper "
                                  "averages T5's input) or the last one (E5-V, VLM2Vec).", "choices": TARGET_POOLINGS})
    teacher_image_size: int | None = field(
        default=None, metadata={"help": "VLM teachers: resize every image to this square side first, so dynamic-"
                                "resolution models give one shape per batch (default: the processor's own)."})
    instruction: str = field(default=INSTRUCTION, metadata={"help": "The instruction given to the teacher (README: Faithful to the paper)."})
    original_preprocessing: bool = field(
        default=False,
        metadata={"help": "Quirk of the original: square bilinear resize and raw [0,1] pixels (no mean/std) for CLIP "
                  "and the teacher. Default: each model's own image processor."},
    )
    teacher_dropout: bool = field(
        default=False,
        metadata={"help": "Quirk of the original: teacher targets computed with dropout on (train mode), read at T5's "
                  "final_layer_norm, one fresh draw per image per epoch (cached: epoch e trains on draw e)."},
    )
    paper_recipe: bool = field(
        default=False,
        metadata={"help": "Every quirk of the original's training run: --original_preprocessing, --teacher_dropout "
                  "and, on a GPU, --clip_dtype float16-mixed (the optimiser, batch, epochs and seed defaults are "
                  "already the paper's)."},
    )
    clip_dtype: str = field(
        default="auto",
        metadata={"help": "Precision of CLIP when extracting the cached features: auto (bfloat16 on GPU, "
                  "float16-mixed under --paper_recipe; float32 on CPU) or float32 / bfloat16 / float16 / "
                  "float16-mixed (the original's: float16 weights, float32 LayerNorm; float32 on CPU). Part of the "
                  "cache key.", "choices": ("auto",) + DTYPES},
    )
    lora_r: int = field(
        default=0, metadata={"help": "If > 0, also adapt CLIP's vision tower with LoRA of this rank (on pixels, not caches)."}
    )
    lora_alpha: int = field(default=16, metadata={"help": "LoRA scaling numerator (with --lora_r)."})
    license: str = field(default="mit", metadata={"help": "License written into the model card."})


@dataclass
class DataArguments:
    train_dir: str | None = field(default=None, metadata={"help": "Folder of face images (recursive; labels ignored)."})
    dataset_name: str | None = field(
        default=None, metadata={"help": "A `datasets` dataset with an image column: Hub id, or a builder like imagefolder."}
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "The dataset's configuration name."})
    dataset_data_dir: str | None = field(default=None, metadata={"help": "data_dir for load_dataset (e.g. imagefolder)."})
    dataset_split: str = field(default="train", metadata={"help": "The split to train on."})
    image_column: str = field(default="image", metadata={"help": "The dataset's image column."})
    feature_cache_dir: str = field(
        default=os.path.join(HF_HOME, "expclip", "features"),
        metadata={"help": "Where cached CLIP embeddings and teacher targets live (reused across runs)."},
    )
    shard_size: int = field(default=4096, metadata={"help": "Images per cache shard (the unit of resumption)."})
    extraction_batch_size: int = field(default=64, metadata={"help": "Images per forward pass when extracting."})
    extraction_num_workers: int | None = field(
        default=None,
        metadata={"help": "Worker processes decoding and preprocessing images while the models run (default: one per "
                  "core less one; 0: in the main process). The cache is the same for any number."},
    )
    cache_in_memory: bool = field(
        default=True,
        metadata={"help": "Hold the cached vectors as tensors and index whole batches (fast). Off: read Arrow rows "
                  "per step from the memory-mapped cache (for caches larger than memory)."},
    )
    eval_results: str | None = field(
        default=None,
        metadata={"help": "`expclip evaluate` output (a results.json or its folder): the model card's results."},
    )


@dataclass
class ExpCLIPTrainingArguments(TrainingArguments):
    """`TrainingArguments` whose defaults are the paper's recipe (README: Training)."""

    global_batch_size: int = field(
        default=512, metadata={"help": "Images per optimiser step over all processes; per device = this / processes."}
    )
    learning_rate: float = field(default=1e-3, metadata={"help": "SGD learning rate (paper: 1e-3)."})
    weight_decay: float = field(default=1e-4, metadata={"help": "SGD weight decay (paper: 1e-4)."})
    num_train_epochs: float = field(default=5.0, metadata={"help": "Epochs (paper: 5)."})
    seed: int = field(default=1, metadata={"help": "Seed of the head's init and the shuffling (paper: 1)."})
    optim: str = field(default="sgd", metadata={"help": "Optimiser (paper: SGD)."})
    optim_args: str | None = field(default="momentum=0.9", metadata={"help": "Optimiser arguments (paper: momentum 0.9)."})
    lr_scheduler_type: str = field(default="constant", metadata={"help": "The original's step schedule never fires."})
    max_grad_norm: float = field(default=0.0, metadata={"help": "Gradient clipping norm; 0 = none (the paper clips nothing)."})
    average_tokens_across_devices: bool = field(
        default=False,
        metadata={"help": "Off: the InfoNCE loss is already global (gathered); scaling it by the number of processes "
                  "would multiply the gradient."},
    )
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Replace an earlier output of this trainer in --output_dir (nothing else)."}
    )
    dataloader_drop_last: bool = field(default=True, metadata={"help": "Drop the last incomplete batch (paper)."})
    save_strategy: str = field(default="no", metadata={"help": "The head trains in seconds: save only the final model."})
    logging_steps: float = field(default=10, metadata={"help": "Log the loss every this many steps."})
    report_to: str | None = field(default="none", metadata={"help": "Experiment trackers to report to."})
    ddp_find_unused_parameters: bool = field(
        default=False, metadata={"help": "Every trainable parameter (projection, LoRA) is used at every step."}
    )
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Keep `labels` (the teacher targets) for the global InfoNCE loss."}
    )

    def __post_init__(self):
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if self.global_batch_size % world_size:
            raise ValueError(f"--global_batch_size {self.global_batch_size} is not divisible by {world_size} processes")
        self.per_device_train_batch_size = self.global_batch_size // world_size
        super().__post_init__()


# ----- the loss over all ranks ------------------------------------------------------------------------------------


def global_contrastive_loss(outputs, labels, num_items_in_batch=None, scale: float = 100.0) -> torch.Tensor:
    """InfoNCE of README: Training over the GLOBAL batch: every rank gathers all ranks' image embeddings and targets.

    Each rank computes the same global loss L; all_gather's backward sums the ranks' gradients into each rank's
    slice (N * dL/dx_local), and DDP then averages over the N ranks, giving exactly one process's dL/dW."""
    image_embeds, target_embeds = outputs.image_embeds, labels.to(outputs.image_embeds.dtype)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        image_embeds = torch.cat(dist_nn.all_gather(image_embeds))
        target_embeds = torch.cat(dist_nn.all_gather(target_embeds))
    return contrastive_loss(image_embeds, target_embeds, scale)


class CachedPairs(torch.utils.data.Dataset):
    """The feature cache as tensors, (CLIP image embedding, teacher target) per row. The Trainer's sampler picks the
    rows and `__getitems__` returns the whole batch by one index per tensor: no per-row Arrow reads. Under the dropout
    quirk (README: Faithful to the paper) the cache holds one target per image per epoch, and epoch e trains on draw e (`set_epoch`)."""

    def __init__(self, cache: datasets.Dataset, num_draws: int = 1):
        names = ["clip_image_embeds"] + [target_column(epoch) for epoch in range(num_draws)]
        table = cache.select_columns(names).with_format("arrow")[:]

        def rows(name):  # FixedSizeList<float32> -> (rows, width) tensor, copied into memory from the mapped file
            column = table.column(name).combine_chunks()
            return torch.from_numpy(column.flatten().to_numpy().reshape(len(column), -1).copy())

        self.clip_image_embeds = rows("clip_image_embeds")
        self.targets = [rows(name) for name in names[1:]]
        self.epoch = 0

    def set_epoch(self, epoch: int):
        self.epoch = int(epoch)

    def __len__(self):
        return len(self.clip_image_embeds)

    def __getitem__(self, index):
        return self.__getitems__([index])

    def __getitems__(self, indices):  # torch's DataLoader fetches a batch with this when the dataset has it
        indices = torch.as_tensor(indices)
        target_embeds = self.targets[self.epoch % len(self.targets)]
        return {"clip_image_embeds": self.clip_image_embeds[indices], "labels": target_embeds[indices]}


def whole_batch(batch: dict) -> dict:
    """`CachedPairs.__getitems__` already returns the batch: nothing to collate."""
    return batch


class EpochTargetDataset(torch.utils.data.Dataset):
    """Quirk (README: Faithful to the paper), read row by row from the Arrow cache: one teacher target per image per epoch; epoch e trains on
    draw e. The Trainer calls `set_epoch` at the start of every epoch (draws are reused in turn if a run has more
    epochs than draws)."""

    def __init__(self, cache: datasets.Dataset, num_draws: int, inputs: str = "clip_image_embeds"):
        self.targets = [target_column(epoch) for epoch in range(num_draws)]
        self.cache = cache.select_columns([inputs, *self.targets]).with_format("torch")
        self.inputs, self.epoch = inputs, 0

    def set_epoch(self, epoch: int):
        self.epoch = int(epoch)

    def __len__(self):
        return len(self.cache)

    def __getitem__(self, index):
        row = self.cache[index]
        return {self.inputs: row[self.inputs], "labels": row[self.targets[self.epoch % len(self.targets)]]}


class EpochTargetCallback(TrainerCallback):
    """Tells an `EpochTargetDataset` which epoch begins (accelerate's `set_epoch` skips the dataset when its sampler
    takes the epoch, as under `accelerate launch`)."""

    def __init__(self, dataset: EpochTargetDataset):
        self.dataset = dataset

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.dataset.set_epoch(round(state.epoch or 0))


class PixelTargetDataset(EpochTargetDataset):
    """For --lora_r: CLIP pixels recomputed per step (CLIP changes), teacher targets from the cache."""

    def __init__(self, cache: datasets.Dataset, items_by_name: dict, image_processor, original_preprocessing: bool,
                 num_draws: int = 1):
        super().__init__(cache, num_draws, inputs="image")
        self.items_by_name, self.image_processor = items_by_name, image_processor
        self.original_preprocessing = original_preprocessing

    def __getitem__(self, index):
        row = super().__getitem__(index)
        image = read_image(self.items_by_name[row["image"]])
        return {
            "pixel_values": pixel_values(self.image_processor, [image], self.original_preprocessing)[0],
            "labels": row["labels"],
        }


# ----- the model card ---------------------------------------------------------------------------------------------


def read_eval_results(path: str | Path) -> list[dict]:
    """The Exp-CLIP rows (head on) of `expclip evaluate` results: a results.json, or its output folder of them."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(path.glob("*/results.json"))
    if not files:
        raise InputError(f"{path}: no results.json from `expclip evaluate` found")
    rows = []
    for file in files:
        results = json.loads(file.read_text(encoding="utf-8"))
        for row in results["rows"]:
            if row.get("use_projection", True):
                rows.append({"benchmark": results["benchmark"], "title": results.get("title", results["benchmark"]),
                             "split": results.get("split"), "prompts": row.get("prompts"),
                             "uar": row["uar"], "war": row["war"]})
    return rows


def build_model_card(config, model_name: str, hyperparameters: dict, dataset_ids: list[str], license: str,
                     eval_rows: list[dict], num_train_images: int, num_skipped: int) -> ModelCard:
    """A Hub model card: YAML metadata (library, pipeline, base model, hyper-parameters, model-index results when
    evaluation results exist) and a short text."""
    results = []
    for row in eval_rows:
        results += uar_war_results(row["uar"], row["war"], {"prompts": row["prompts"]}, dataset_type=row["benchmark"],
                                   dataset_name=row["title"], dataset_split=row["split"])
    card_data = ModelCardData(
        library_name="transformers",
        pipeline_tag="zero-shot-image-classification",
        base_model=config.clip_model_name_or_path,
        tags=["exp-clip", "clip", "facial-expression-recognition", "zero-shot", "knowledge-distillation"],
        license=license,
        datasets=dataset_ids or None,
        model_name=model_name,
        eval_results=results or None,
        hyperparameters=hyperparameters,
        teacher_model=config.teacher_model_name_or_path,
    )
    results_text = ""
    if eval_rows:
        table = "\n".join(f"| {r['title']} | {r['prompts']} | {r['uar']:.2f} | {r['war']:.2f} |" for r in eval_rows)
        results_text = f"\n## Results (zero-shot, %)\n\n| dataset | prompts | UAR | WAR |\n| --- | --- | --- | --- |\n{table}\n"
    hyper_text = "\n".join(f"- {key}: {value}" for key, value in hyperparameters.items())
    if config.teacher_prompt is None:  # BLIP-2 + T5 (the paper)
        teacher_states, teacher_prompt = "mean-pooled T5-encoder states", ""
    else:  # a VLM (README: Beyond the paper)
        size = f"{config.teacher_image_size} px" if config.teacher_image_size else "its processor's own size"
        teacher_states = (f"{config.target_pooling}-pooled language-model hidden_states[{config.teacher_layer}] "
                          f"(images at {size})")
        teacher_prompt = f"\n\nThe teacher's rendered prompt:\n\n```\n{config.teacher_prompt}\n```\n"
    content = f"""---
{card_data.to_yaml()}
---

# {model_name}

Exp-CLIP (Zhao et al., "Enhancing Zero-Shot Facial Expression Recognition by LLM Knowledge Transfer", WACV 2025):
the frozen CLIP model `{config.clip_model_name_or_path}` plus one bias-free linear projection
({config.clip_embed_dim} -> {config.projection_dim}), trained on unlabelled faces to map CLIP image embeddings onto
the {teacher_states} of the teacher `{config.teacher_model_name_or_path}` given the instruction
"{config.instruction}".{teacher_prompt} Zero-shot: score any label set with prompts such as "a photo of a face with an expression of
happiness.".

```python
from transformers import pipeline

classifier = pipeline("zero-shot-image-classification", model="<this repo>", trust_remote_code=True)
classifier("face.jpg", candidate_labels=["happiness", "sadness", "neutral", "anger", "surprise", "disgust", "fear"],
           hypothesis_template="a photo of a face with an expression of {{}}.")  # the paper's prompt (type3)
```

## Training

Unlabelled face images: {num_train_images} used, {num_skipped} skipped as unreadable. Teacher dropout quirk:
{config.teacher_dropout}.

{hyper_text}
{results_text}"""
    return ModelCard(content)


# ----- the run ----------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = HfArgumentParser((ModelArguments, DataArguments, ExpCLIPTrainingArguments))
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 1 and argv[0].endswith(".json"):
        model_args, data_args, training_args = parser.parse_json_file(json_file=argv[0])
    else:
        model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    if (data_args.train_dir is None) == (data_args.dataset_name is None):
        parser.error("give exactly one of --train_dir or --dataset_name")
    if model_args.paper_recipe:  # the original's run: its preprocessing and its dropout-on teacher (README: Training; Faithful to the paper)
        model_args.original_preprocessing = model_args.teacher_dropout = True
    eval_rows = read_eval_results(data_args.eval_results) if data_args.eval_results else []
    inputs = [data_args.train_dir, data_args.dataset_data_dir, data_args.eval_results,
              *(p for p in (model_args.clip_model_name_or_path, model_args.teacher_model_name_or_path)
                if Path(p).exists())]
    # Before any work: never an input, never a folder holding files this trainer did not write.
    check_output_folder(training_args.output_dir, "train", inputs, training_args.overwrite_output_dir,
                        option="--output_dir")
    # the cache writes shards where it is told: never among the images, never in the model folder the run writes
    check_apart(data_args.feature_cache_dir, "--feature_cache_dir", {
        "--train_dir": data_args.train_dir, "--dataset_data_dir": data_args.dataset_data_dir,
        "--output_dir": training_args.output_dir})
    teacher_processor = None
    try:  # supported families only, before anything is loaded (reads the two config.json files)
        backbone_type = transformers.PreTrainedConfig.get_config_dict(model_args.clip_model_name_or_path)[0].get("model_type")
        teacher_type = teacher_model_type(model_args.teacher_model_name_or_path)
    except UnsupportedTeacherError as error:
        print(f"train_expclip: error: {error}", file=sys.stderr)
        return 2
    except OSError:  # config.json unreadable here (offline, no such model): loading says so, after the images' checks
        backbone_type = teacher_type = None
    if backbone_type is not None and backbone_type not in BACKBONE_FAMILIES:
        print(f"train_expclip: error: {model_args.clip_model_name_or_path}: unsupported backbone model_type "
              f"{backbone_type!r}; supported: {', '.join(BACKBONE_FAMILIES)}", file=sys.stderr)
        return 2
    if teacher_type not in (None, "blip-2"):  # a VLM: its processor now (most need torchvision), before any weights
        try:
            teacher_processor = load_vlm_processor(model_args.teacher_model_name_or_path)
        except MissingDependencyError as error:
            print(f"train_expclip: error: {error}", file=sys.stderr)
            return 2

    training_args.device  # sets up the process group: one rank per process of `accelerate launch`
    state = PartialState()
    if state.is_main_process:
        clear_output(training_args.output_dir, "train")  # only an earlier output of this trainer, with --overwrite
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    logger.setLevel(logging.INFO if training_args.should_log else logging.WARNING)
    transformers.utils.logging.set_verbosity_warning()

    # ----- images: a folder or a `datasets` dataset; labels ignored
    if data_args.train_dir is not None:
        items = folder_image_items(data_args.train_dir)
        source = data_args.train_dir
    else:
        dataset = datasets.load_dataset(
            data_args.dataset_name, data_args.dataset_config_name, data_dir=data_args.dataset_data_dir,
            split=data_args.dataset_split,
        )
        source = f"{data_args.dataset_name}[{data_args.dataset_split}]"
        items = dataset_image_items(dataset, source, data_args.image_column)
    logger.info("%d candidate training images in %s", len(items), source)

    # ----- cached features: CLIP image embeddings and teacher targets, computed once per image (README: Training)
    clip_dtype = resolve_dtype(model_args.clip_dtype, state.device, model_args.paper_recipe)
    asked = MIXED_PRECISION if model_args.clip_dtype == "auto" and model_args.paper_recipe else model_args.clip_dtype
    if asked == MIXED_PRECISION and clip_dtype == "float32" and state.is_main_process:
        print("train_expclip: CLIP runs in float32 on CPU, the original's precision there (float16-mixed needs a GPU)",
              file=sys.stderr)
    if teacher_type is None:  # its config.json was unreadable before the images' checks: its error is now the run's
        teacher_type = teacher_model_type(model_args.teacher_model_name_or_path)
    if teacher_type != "blip-2":  # a VLM teacher (README: Beyond the paper): its prompt, rendered once for the run
        teacher_processor = teacher_processor or load_vlm_processor(model_args.teacher_model_name_or_path)
        if not has_chat_template(teacher_processor) and state.is_main_process:
            logger.warning(PLAIN_PROMPT_NOTE)
    settings = FeatureCacheSettings(
        clip_model_name_or_path=model_args.clip_model_name_or_path,
        teacher_model_name_or_path=model_args.teacher_model_name_or_path,
        instruction=model_args.instruction,
        original_preprocessing=model_args.original_preprocessing,
        teacher_dropout=model_args.teacher_dropout,
        seed=training_args.seed,
        shard_size=data_args.shard_size,
        # quirk (README: Faithful to the paper): fresh dropout masks every epoch, so one target per image per epoch
        target_draws=math.ceil(training_args.num_train_epochs) if model_args.teacher_dropout else 1,
        clip_dtype=clip_dtype,
        teacher_dtype=resolve_dtype("auto", state.device),  # the teacher's own default (README: Faithful to the paper: T5 in bf16)
        **({} if teacher_type == "blip-2" else dict(  # a VLM teacher (README: Beyond the paper)
            teacher_layer=model_args.teacher_layer, target_pooling=model_args.target_pooling,
            teacher_prompt=render_prompt(teacher_processor, model_args.instruction),
            teacher_image_size=model_args.teacher_image_size,
        )),
    )
    extraction_start = time.perf_counter()
    cache, skipped = build_feature_cache(
        items, settings, data_args.feature_cache_dir, data_args.extraction_batch_size, state,
        show_progress=not training_args.disable_tqdm, num_workers=data_args.extraction_num_workers,
    )
    if skipped:
        logger.warning("skipped %d unreadable image(s):\n%s", len(skipped), "\n".join(f"  {r}" for r in skipped))
    logger.info("feature cache: %d images, %s (%.1f s)", len(cache), Path(data_args.feature_cache_dir) /
                settings.fingerprint(), time.perf_counter() - extraction_start)
    if len(cache) < training_args.global_batch_size:
        logger.error("only %d readable images, fewer than one batch of %d", len(cache), training_args.global_batch_size)
        return 1

    # ----- model: frozen CLIP + a fresh projection to the teacher's width (PyTorch default init, seeded)
    set_seed(training_args.seed)
    teacher_dim = AutoConfig.from_pretrained(model_args.teacher_model_name_or_path).get_text_config().hidden_size
    model = ExpCLIPModel.from_clip(
        model_args.clip_model_name_or_path,
        projection_dim=teacher_dim,
        teacher_model_name_or_path=model_args.teacher_model_name_or_path,
        instruction=model_args.instruction,
        teacher_dropout=model_args.teacher_dropout,
        teacher_layer=settings.teacher_layer,
        target_pooling=settings.target_pooling,
        teacher_prompt=settings.teacher_prompt,
        teacher_image_size=settings.teacher_image_size,
    )
    processor = AutoProcessor.from_pretrained(model_args.clip_model_name_or_path, backend="pil")  # README: Reproducing the paper
    if model_args.original_preprocessing:  # the saved folder must preprocess as training did (README: released heads)
        image_processor = processor.image_processor
        for key, value in original_image_processor_settings(input_side(image_processor)).items():
            setattr(image_processor, key, value)

    if model_args.lora_r > 0:
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(r=model_args.lora_r, lora_alpha=model_args.lora_alpha,
                          target_modules=r".*vision_model.*\.(q_proj|v_proj)")
        model.clip = get_peft_model(model.clip, lora)
        train_dataset = PixelTargetDataset(
            cache, {item.name: item for item in items}, processor.image_processor, model_args.original_preprocessing,
            settings.target_draws,
        )
    elif data_args.cache_in_memory:  # the head reads cached vectors, whole batches from tensors
        train_dataset = CachedPairs(cache, settings.target_draws)
    elif settings.target_draws > 1:  # dropout quirk, row by row from the Arrow cache: epoch e's target is draw e
        train_dataset = EpochTargetDataset(cache, settings.target_draws)
    else:  # the same vectors, row by row from the Arrow cache; the target is the Trainer's "labels"
        train_dataset = cache.select_columns(["clip_image_embeds", "target_embeds"]).rename_column(
            "target_embeds", "labels"
        ).with_format("torch")

    # ----- train: the HF Trainer, SGD from TrainingArguments, InfoNCE over all ranks
    push_to_hub, training_args.push_to_hub = training_args.push_to_hub, False  # we push at the end, with our card
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        compute_loss_func=functools.partial(global_contrastive_loss, scale=model.config.loss_scale),
        data_collator=whole_batch if isinstance(train_dataset, CachedPairs) else None,
        callbacks=[EpochTargetCallback(train_dataset)] if settings.target_draws > 1 else None,
    )
    train_result = trainer.train()
    trainer.save_metrics("train", train_result.metrics)
    trainer.save_state()

    # ----- save: a complete Hub model folder and its model card
    if state.is_main_process:
        model = trainer.accelerator.unwrap_model(trainer.model)
        if model_args.lora_r > 0:
            model.clip = model.clip.merge_and_unload()  # a plain CLIPModel again, LoRA folded into its weights
        output_dir = Path(training_args.output_dir)
        model.save_pretrained(output_dir)
        processor.save_pretrained(output_dir)
        pin_pil_image_processor(output_dir)  # README: Reproducing the paper: PIL's resize whatever image backend is installed
        (output_dir / "skipped_images.txt").write_text("".join(f"{reason}\n" for reason in skipped))
        hyperparameters = {
            "optimizer": f"{getattr(training_args.optim, 'value', training_args.optim)} ({training_args.optim_args})",
            "learning_rate": training_args.learning_rate,
            "weight_decay": training_args.weight_decay,
            "lr_scheduler_type": getattr(training_args.lr_scheduler_type, "value", training_args.lr_scheduler_type),
            "global_batch_size": training_args.global_batch_size,
            "num_train_epochs": training_args.num_train_epochs,
            "seed": training_args.seed,
            "loss_scale": model.config.loss_scale,
            "original_preprocessing": model_args.original_preprocessing,
            "teacher_dropout": model_args.teacher_dropout,
            "paper_recipe": model_args.paper_recipe,
            "clip_dtype": settings.clip_dtype,  # the precision the cached CLIP features were computed in
            "lora_r": model_args.lora_r,
            "train_loss": round(train_result.training_loss, 6),
        }
        hub_dataset = data_args.dataset_name and "/" in data_args.dataset_name and not Path(data_args.dataset_name).exists()
        dataset_ids = [data_args.dataset_name] if hub_dataset else []
        model_name = training_args.hub_model_id or f"Exp-CLIP ({Path(model_args.clip_model_name_or_path).name})"
        card = build_model_card(model.config, model_name, hyperparameters, dataset_ids, model_args.license,
                                eval_rows, len(cache), len(skipped))
        card.save(output_dir / "README.md")
        mark_output(output_dir, "train")
        logger.info("saved the model and its card to %s", output_dir)
        if push_to_hub:  # pushed by us, so the Hub gets this card, not the Trainer's generic one
            from huggingface_hub import create_repo, upload_folder

            repo_id = training_args.hub_model_id or output_dir.name
            create_repo(repo_id, token=training_args.hub_token, private=training_args.hub_private_repo, exist_ok=True)
            url = upload_folder(repo_id=repo_id, folder_path=output_dir, token=training_args.hub_token,
                                commit_message="Exp-CLIP projection head", ignore_patterns=["checkpoint-*", MARKER])
            logger.info("pushed to %s", url)
    state.wait_for_everyone()
    state.destroy_process_group()  # left to exit, gloo's threads can abort the process (SIGABRT) after the work
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (InputError, OutputError, OSError, MissingDependencyError) as error:  # bad input, output or setup: one line
        print(f"train_expclip: error: {first_line(error)}", file=sys.stderr)
        sys.exit(2)
    except pickle.PicklingError as error:  # `datasets` hashes objects with dill to fingerprint them; it can fail
        print(f"train_expclip: error: datasets could not hash an object to fingerprint it ({one_line(error)})",
              file=sys.stderr)
        sys.exit(1)
