"""The feature cache of Exp-CLIP training: per image, CLIP's image embedding and the teacher's target, computed once.

CLIP and the teacher are frozen and the recipe has no augmentation (README: Training), so both vectors are fixed per image:
the head then trains on cached vectors in seconds instead of re-running a 12B-parameter teacher every epoch.

Layout (`datasets` Arrow on disk):

    <cache_dir>/<settings fingerprint>/settings.json
    <cache_dir>/<settings fingerprint>/shard-00000-<shard key>/   # Dataset.save_to_disk + skipped.json

The settings fingerprint covers the model ids, instruction, preprocessing and dropout quirks and both models'
precisions (CLIP in bfloat16 on GPU by default, float32 one switch away); a shard's key adds
the (image name, content SHA-256) of each of its images. A changed model, instruction, flag or file therefore never
reuses a stale shard. Shards are written to a temporary folder and renamed, so a killed run leaves only complete
shards and a rerun recomputes at most the one in flight. Under `accelerate launch` rank r computes shards r, r+N, ...
and every rank then reads all shards in index order: the result does not depend on the number of processes.

Images are decoded and preprocessed for both models in `DataLoader` worker processes (`expclip.inputs.InputPipeline`)
while the main process runs CLIP and the teacher. CPU kernels sum in an order that depends on the batch, the thread
count and, for a single row, the process (BLAS gemv), so: batches are fixed groups of one shard's items (a bad item
leaves its batch one smaller), on CPU the models run on one thread per process, and a one-image batch goes through
CLIP as two identical rows. The cache is then byte-identical for any number of workers and processes.
"""

import hashlib
import io
import json
import logging
import os
import shutil
import signal
from dataclasses import asdict, dataclass
from pathlib import Path

import datasets
import pyarrow as pa
import torch
from accelerate import PartialState
from datasets import Dataset, concatenate_datasets, load_from_disk
from datasets.table import InMemoryTable
from PIL import Image
from tqdm.auto import tqdm

from configuration_expclip import INSTRUCTION
from .inputs import (
    IMAGE_EXTENSIONS,
    MIXED_PRECISION,
    ImagePreprocessing,
    InputError,
    InputPipeline,
    first_line,
    load_image,
    original_image_processor_settings,
)

logger = logging.getLogger(__name__)

# Test hook: pause (until killed) right after writing this many shards, so a test can kill extraction at a known point.
PAUSE_AFTER_SHARDS_ENV = "EXPCLIP_PAUSE_AFTER_SHARDS"


@dataclass(frozen=True)
class ImageItem:
    """One training image: a file, or row `index` of a `datasets` dataset (read lazily)."""

    name: str  # what logs and the cache call it: the file's path, or "<dataset>[<split>][<row>]"
    sha256: str  # content hash: part of the cache key
    path: str | None = None
    dataset: Dataset | None = None  # image column cast to Image(decode=False)
    index: int | None = None


@dataclass(frozen=True)
class FeatureCacheSettings:
    """Everything that changes the cached vectors; its hash names the cache folder."""

    clip_model_name_or_path: str
    teacher_model_name_or_path: str
    instruction: str = INSTRUCTION
    original_preprocessing: bool = False  # quirk (README: Training): square bilinear resize, raw [0,1] pixels for both models
    teacher_dropout: bool = False  # quirk (README: Faithful to the paper): targets computed with dropout on
    seed: int = 1  # seeds each shard's dropout masks under the dropout quirk
    target_draws: int = 1  # quirk (README: Faithful to the paper): targets per image, one per epoch (columns target_embeds, _epoch1, ...)
    shard_size: int = 4096
    clip_dtype: str = "float32"  # CLIP's precision (train_expclip.py on GPU: bfloat16; float16-mixed, --paper_recipe)
    teacher_dtype: str = "float32"  # precision of the teacher's vision encoder and T5 (bfloat16 on GPU)
    # VLM teachers (README: Beyond the paper); at these defaults the key is the BLIP-2 + T5 key of before.
    teacher_layer: int = -1  # hidden_states index of the target (0: embeddings, -1: last layer, final norm)
    target_pooling: str = "mean"  # "mean" over the prompt's non-padding tokens or its "last" one
    teacher_prompt: str | None = None  # the VLM's rendered chat-template prompt
    teacher_image_size: int | None = None  # fixed square side of the VLM's input images (None: its processor's own)

    def fingerprint(self) -> str:
        fields = asdict(self)
        for name, default in _NEWER_FIELD_DEFAULTS.items():  # caches written before these fields keep their key
            if fields[name] == default:
                del fields[name]
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


_NEWER_FIELD_DEFAULTS = {"teacher_layer": -1, "target_pooling": "mean", "teacher_prompt": None, "teacher_image_size": None}


def resolve_dtype(name: str, device: torch.device | str, paper_recipe: bool = False) -> str:
    """"auto" -> on a GPU bfloat16, or float16-mixed with `paper_recipe` (the original's CLIP: float16 weights,
    float32 LayerNorm); float32 on CPU. float16-mixed also becomes float32 on CPU, the original's CPU precision.
    Any other name from `expclip.inputs.DTYPES` is kept."""
    gpu = torch.device(device).type == "cuda"
    if name == "auto":
        return (MIXED_PRECISION if paper_recipe else "bfloat16") if gpu else "float32"
    return "float32" if name == MIXED_PRECISION and not gpu else name


# ----- the training images ----------------------------------------------------------------------------------------


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def folder_image_items(train_dir: str | Path) -> list[ImageItem]:
    """Every file under `train_dir` (recursive) with an extension PIL opens, sorted by path."""
    train_dir = Path(train_dir)
    if not train_dir.is_dir():
        raise InputError(f"{train_dir}: not a folder")
    paths = sorted(p for p in train_dir.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not paths:
        raise InputError(f"{train_dir}: no image files found (extensions PIL opens: .jpg, .png, ...)")
    return [ImageItem(name=str(p), sha256=_file_sha256(p), path=str(p)) for p in paths]


def dataset_image_items(dataset: Dataset, name: str, image_column: str = "image") -> list[ImageItem]:
    """The images of a `datasets` dataset's image column (labels and other columns are ignored)."""
    from datasets import Image as ImageFeature

    if image_column not in dataset.column_names:
        raise InputError(f"{name}: no column {image_column!r} (columns: {', '.join(dataset.column_names)})")
    dataset = dataset.select_columns([image_column]).cast_column(image_column, ImageFeature(decode=False))
    items = []
    for index, cell in enumerate(dataset[image_column]):
        data = cell.get("bytes") if cell else None
        path = cell.get("path") if cell else None
        if data:
            digest = hashlib.sha256(data).hexdigest()
        else:
            digest = _file_sha256(Path(path)) if path and Path(path).is_file() else ""
        item_name = path if path and not data else f"{name}[{index}]"  # a local file is named by its path
        items.append(ImageItem(name=item_name, sha256=digest, dataset=dataset, index=index))
    return items


def read_image(item: ImageItem) -> Image.Image:
    """The item as an RGB PIL image; raises `InputError` with a one-line reason naming it."""
    if item.path is not None:
        return load_image(item.path)
    cell = item.dataset[item.index][item.dataset.column_names[0]] or {}
    if cell.get("bytes"):
        try:
            with Image.open(io.BytesIO(cell["bytes"])) as image:
                image.load()
                return load_image(image)
        except (OSError, SyntaxError, ValueError) as error:
            raise InputError(f"{item.name}: not a readable image ({first_line(error)})")
    if cell.get("path"):
        return load_image(cell["path"])  # its message names the file
    raise InputError(f"{item.name}: no image data (empty cell)")


# ----- preprocessing ----------------------------------------------------------------------------------------------


def input_side(image_processor) -> int:
    """The square input size a CLIP or BLIP-2 image processor produces (its crop size, else its resize size)."""
    crop = getattr(image_processor, "crop_size", None)
    size = image_processor.size
    return (crop.height if crop is not None and crop.height else None) or size.height or size.shortest_edge


def pixel_values(image_processor, images: list[Image.Image], original_preprocessing: bool = False) -> torch.Tensor:
    """Each model's own image processor; `original_preprocessing` reproduces the original's quirk (README: Training):
    straight square resize to the model's input size (bilinear, no crop) and raw [0,1] pixels, no mean/std."""
    if not original_preprocessing:
        return image_processor(images, return_tensors="pt").pixel_values
    settings = original_image_processor_settings(input_side(image_processor))
    return image_processor(images, return_tensors="pt", **settings).pixel_values


# ----- the cache --------------------------------------------------------------------------------------------------


class FeatureExtractors:
    """The frozen CLIP (through `ExpCLIPModel.encode_clip_image`) and the teacher, loaded only if a shard is missing,
    in the settings' precisions; `inputs` prepares one item for both (it runs in the pipeline's workers)."""

    def __init__(self, settings: FeatureCacheSettings, device: torch.device):
        from transformers import AutoImageProcessor

        from modeling_expclip import ExpCLIPModel
        from .teacher import ExpCLIPTeacher, VLMTeacher, load_teacher_image_processor, teacher_model_type

        self.settings = settings
        self.device = device
        mixed = settings.clip_dtype == MIXED_PRECISION  # float16 CLIP with float32 LayerNorm, as the original's
        self.clip_dtype = torch.float16 if mixed else getattr(torch, settings.clip_dtype)
        teacher_dtype = getattr(torch, settings.teacher_dtype)
        if teacher_model_type(settings.teacher_model_name_or_path) == "blip-2":  # the paper's teacher
            self.teacher = ExpCLIPTeacher.from_pretrained(
                settings.teacher_model_name_or_path, settings.instruction, device=device, dtype=teacher_dtype,
                dropout=settings.teacher_dropout,
            )
            teacher_inputs = _preprocessing(load_teacher_image_processor(settings.teacher_model_name_or_path), settings)
        else:  # a VLM (README: Beyond the paper)
            self.teacher = VLMTeacher.from_pretrained(
                settings.teacher_model_name_or_path, settings.instruction, device=device, dtype=teacher_dtype,
                layer=settings.teacher_layer, pooling=settings.target_pooling, image_size=settings.teacher_image_size,
                prompt=settings.teacher_prompt,  # the prompt the cache key names, when the caller rendered it
            )
            teacher_inputs = self.teacher.inputs
        self.clip = ExpCLIPModel.from_clip(settings.clip_model_name_or_path, projection_dim=self.teacher.target_dim)
        self.clip = self.clip.to_original_precision() if mixed else self.clip.to(dtype=self.clip_dtype)
        self.clip.to(device=device)
        clip_processor = AutoImageProcessor.from_pretrained(settings.clip_model_name_or_path, backend="pil")
        self.inputs = ExtractionInputs(_preprocessing(clip_processor, settings), teacher_inputs)

    @torch.no_grad()
    def __call__(self, tensors: dict[str, torch.Tensor], values: list[dict] = ()) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """One batch of the pipeline (its tensors, and its good items' other values) -> (CLIP image embeddings,
        `target_draws` teacher targets: fresh dropout masks each, under the quirk), float32 on CPU."""
        clip_pixels = self.inputs.clip.to_device(tensors["clip_pixel_values"], self.device, self.clip_dtype)
        rows = len(clip_pixels)
        if rows == 1 and self.device.type == "cpu":  # CPU BLAS multiplies a single row by another kernel (gemv),
            clip_pixels = clip_pixels.expand(2, *clip_pixels.shape[1:])  # whose sums differ between processes: use gemm's
        clip_image_embeds = self.clip.encode_clip_image(clip_pixels)[:rows].float().cpu()
        if isinstance(self.inputs.teacher, ImagePreprocessing):
            teacher_pixels = self.inputs.teacher.to_device(tensors["teacher_pixel_values"], self.device)
            target_draws = [self.teacher(teacher_pixels).float().cpu() for _ in range(self.settings.target_draws)]
        else:  # a VLM in eval mode: one deterministic target per image
            target_embeds = self.teacher(self.teacher.collate([value["teacher_inputs"] for value in values])).cpu()
            target_draws = [target_embeds] * self.settings.target_draws
        return clip_image_embeds, target_draws


def target_column(epoch: int) -> str:
    """The cache column of epoch `epoch`'s teacher target: "target_embeds" (every run's first, or only, draw), then
    "target_embeds_epoch1", ... (one per further epoch under the dropout quirk, README: Faithful to the paper)."""
    return "target_embeds" if epoch == 0 else f"target_embeds_epoch{epoch}"


def _preprocessing(image_processor, settings: FeatureCacheSettings) -> ImagePreprocessing:
    quirk = original_image_processor_settings(input_side(image_processor)) if settings.original_preprocessing else None
    return ImagePreprocessing(image_processor, quirk)


@dataclass(frozen=True)
class ExtractionInputs:
    """Runs in a pipeline worker: one training image -> each model's inputs (exactly its processor's output): the
    backbone's pixels, BLIP-2's pixels or a VLM's whole prompt."""

    clip: ImagePreprocessing
    teacher: object  # ImagePreprocessing (BLIP-2) or teacher.VLMTeacherInputs

    def __call__(self, item: ImageItem) -> dict:
        image = read_image(item)  # InputError names the item
        clip = {"clip_pixel_values": self.clip([image])}  # SigLIP 2 NaFlex: packed with its mask and grid shapes
        if isinstance(self.teacher, ImagePreprocessing):
            return {**clip, "teacher_pixel_values": self.teacher([image])}
        return {**clip, "teacher_inputs": self.teacher(image)}  # not a tensor: kept per item, collated by the teacher


def _item_name(item: ImageItem) -> str:
    return item.name


def _shard_key(settings_fingerprint: str, items: list[ImageItem]) -> str:
    content = json.dumps([settings_fingerprint] + [[item.name, item.sha256] for item in items])
    return hashlib.sha256(content.encode()).hexdigest()[:16]


def _fixed_size_list(rows: torch.Tensor) -> pa.Array:
    return pa.FixedSizeListArray.from_arrays(pa.array(rows.numpy().reshape(-1)), rows.shape[1])


def _shard_table(items: list[ImageItem], clip_rows: list[torch.Tensor], target_rows: list[list[torch.Tensor]],
                 clip_dim: int, target_dim: int) -> pa.Table:
    clip_all = torch.cat(clip_rows) if clip_rows else torch.zeros(0, clip_dim)
    columns = {
        "image": pa.array([item.name for item in items], pa.string()),
        "sha256": pa.array([item.sha256 for item in items], pa.string()),
        "clip_image_embeds": _fixed_size_list(clip_all),
    }
    for draw, rows in enumerate(target_rows):  # draw e is epoch e's target under the dropout quirk
        columns[target_column(draw)] = _fixed_size_list(torch.cat(rows) if rows else torch.zeros(0, target_dim))
    return pa.table(columns)


def _computed_shards(shards: dict[int, list[ImageItem]], extractors: FeatureExtractors, batch_size: int,
                     num_workers: int | None, progress):
    """Yield (shard index, table, skipped reasons) for each of `shards`, in order. One pipeline over all of them, so
    the workers decode the next shard while the models finish this one; a batch never spans two shards."""
    items, batches, batch_shard = [], [], []
    for index, shard in shards.items():
        first = len(items)
        items += shard
        for start in range(first, len(items), batch_size):
            batches.append(list(range(start, min(start + batch_size, len(items)))))
            batch_shard.append(index)
    pipeline = InputPipeline(items, extractors.inputs, batches=batches, num_workers=num_workers, name=_item_name,
                             pin_memory=extractors.device.type == "cuda")
    clip_dim, target_dim = extractors.clip.config.clip_embed_dim, extractors.teacher.target_dim
    draws = extractors.settings.target_draws
    for number, batch in enumerate(pipeline):
        index = batch_shard[number]
        if number == 0 or batch_shard[number - 1] != index:  # a shard begins
            torch.manual_seed(extractors.settings.seed + index)  # the dropout quirk's masks depend on the shard only
            good, clip_rows, target_rows, skipped = [], [], [[] for _ in range(draws)], []
        skipped += [prepared.error for prepared in batch.errors]  # never die on one bad file: skip, count, list it
        if batch.tensors:
            clip_image_embeds, target_draws = extractors(batch.tensors, [prepared.value for prepared in batch.good])
            good += [items[prepared.index] for prepared in batch.good]
            clip_rows.append(clip_image_embeds)
            for rows, target_embeds in zip(target_rows, target_draws):
                rows.append(target_embeds)
        progress.update(len(batch.items))
        if number + 1 == len(batches) or batch_shard[number + 1] != index:  # the shard is complete
            yield index, _shard_table(good, clip_rows, target_rows, clip_dim, target_dim), skipped


def build_feature_cache(
    items: list[ImageItem],
    settings: FeatureCacheSettings,
    cache_dir: str | Path,
    batch_size: int = 64,
    state: PartialState | None = None,
    show_progress: bool = True,
    num_workers: int | None = None,
) -> tuple[Dataset, list[str]]:
    """Compute the missing shards (this rank's share), wait for all ranks, and return every shard concatenated in
    index order, plus the one-line reasons of the images that were skipped as unreadable. `num_workers` pipeline
    worker processes decode and preprocess (default: `expclip.inputs.default_num_workers()`; 0: this process)."""
    state = state or PartialState()
    root = Path(cache_dir) / settings.fingerprint()
    root.mkdir(parents=True, exist_ok=True)
    if state.is_main_process:
        (root / "settings.json").write_text(json.dumps(asdict(settings), indent=2, sort_keys=True))
    shards = [items[start : start + settings.shard_size] for start in range(0, len(items), settings.shard_size)]
    folders = [root / f"shard-{i:05d}-{_shard_key(settings.fingerprint(), shard)}" for i, shard in enumerate(shards)]
    mine = [i for i in range(len(shards)) if i % state.num_processes == state.process_index and not folders[i].is_dir()]
    pause_after = int(os.environ.get(PAUSE_AFTER_SHARDS_ENV, "0"))
    if mine:
        extractors = FeatureExtractors(settings, state.device)
        progress = tqdm(
            total=sum(len(shards[i]) for i in mine),
            desc=f"Extracting features (rank {state.process_index})" if state.num_processes > 1 else "Extracting features",
            unit="img",
            disable=not show_progress,
        )
        threads = torch.get_num_threads()
        if extractors.device.type == "cpu":
            torch.set_num_threads(1)  # sums in a fixed order whatever the process count (see the module's docstring)
        try:
            computed = _computed_shards({i: shards[i] for i in mine}, extractors, batch_size, num_workers, progress)
            for written, (i, table, skipped) in enumerate(computed, start=1):
                _write_shard(table, skipped, folders[i], fingerprint=folders[i].name)
                if pause_after and written >= pause_after:
                    print(f"paused after {written} shard(s)", flush=True)
                    signal.pause()  # the test kills us here
        finally:
            torch.set_num_threads(threads)
        progress.close()
    state.wait_for_everyone()
    # A shard whose every image was unreadable holds no rows (and no data file load_from_disk could read).
    loaded = [load_from_disk(str(f)) for f in folders if json.loads((f / "state.json").read_text())["_data_files"]]
    dataset = concatenate_datasets(loaded) if loaded else Dataset.from_dict({"image": [], "sha256": []})
    skipped = [reason for folder in folders for reason in json.loads((folder / "skipped.json").read_text())]
    return dataset, skipped


def _write_shard(table: pa.Table, skipped: list[str], folder: Path, fingerprint: str):
    """Write to a temporary folder, then rename: a shard folder exists only when complete."""
    for stale in folder.parent.glob(f"{folder.name[:11]}-*"):  # same index, older content or a killed write
        if stale != folder:
            shutil.rmtree(stale, ignore_errors=True)
    temporary = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    bars_were_on = not datasets.utils.are_progress_bars_disabled()
    datasets.utils.disable_progress_bars()  # one bar (extraction) is enough
    Dataset(InMemoryTable(table), fingerprint=fingerprint).save_to_disk(str(temporary))
    if bars_were_on:
        datasets.utils.enable_progress_bars()
    (temporary / "skipped.json").write_text(json.dumps(skipped, indent=0))
    try:
        os.replace(temporary, folder)
    except OSError:  # another run wrote the same shard meanwhile: same key, same content
        if not folder.is_dir():
            raise
        shutil.rmtree(temporary, ignore_errors=True)
