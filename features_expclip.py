"""The feature cache of Exp-CLIP training: per image, CLIP's image embedding and the teacher's target, computed once.

CLIP and the teacher are frozen and the recipe has no augmentation (SPEC §4), so both vectors are fixed per image:
the head then trains on cached vectors in seconds instead of re-running a 12B-parameter teacher every epoch.

Layout (`datasets` Arrow on disk):

    <cache_dir>/<settings fingerprint>/settings.json
    <cache_dir>/<settings fingerprint>/shard-00000-<shard key>/   # Dataset.save_to_disk + skipped.json

The settings fingerprint covers the model ids, instruction, preprocessing and dropout quirks; a shard's key adds
the (image name, content SHA-256) of each of its images. A changed model, instruction, flag or file therefore never
reuses a stale shard. Shards are written to a temporary folder and renamed, so a killed run leaves only complete
shards and a rerun recomputes at most the one in flight. Under `accelerate launch` rank r computes shards r, r+N, ...
and every rank then reads all shards in index order: the result does not depend on the number of processes.
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
from inputs_expclip import IMAGE_EXTENSIONS, InputError, first_line, load_image, original_image_processor_settings

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
    original_preprocessing: bool = False  # quirk (SPEC §4): square bilinear resize, raw [0,1] pixels for both models
    teacher_dropout: bool = False  # quirk (SPEC §3): targets computed with dropout on
    seed: int = 1  # seeds each shard's dropout masks under the dropout quirk
    target_draws: int = 1  # quirk (SPEC §3): targets per image, one per epoch (columns target_embeds, _epoch1, ...)
    shard_size: int = 4096

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


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
    """Each model's own image processor; `original_preprocessing` reproduces the original's quirk (SPEC §4):
    straight square resize to the model's input size (bilinear, no crop) and raw [0,1] pixels, no mean/std."""
    if not original_preprocessing:
        return image_processor(images, return_tensors="pt").pixel_values
    settings = original_image_processor_settings(input_side(image_processor))
    return image_processor(images, return_tensors="pt", **settings).pixel_values


# ----- the cache --------------------------------------------------------------------------------------------------


class FeatureExtractors:
    """The frozen CLIP (through `ExpCLIPModel.encode_clip_image`) and the teacher, loaded only if a shard is missing."""

    def __init__(self, settings: FeatureCacheSettings, device: torch.device):
        from transformers import AutoImageProcessor

        from modeling_expclip import ExpCLIPModel
        from teacher_expclip import ExpCLIPTeacher, load_teacher_image_processor

        self.settings = settings
        self.device = device
        self.teacher = ExpCLIPTeacher.from_pretrained(
            settings.teacher_model_name_or_path, settings.instruction, device=device, dropout=settings.teacher_dropout
        )
        self.teacher_processor = load_teacher_image_processor(settings.teacher_model_name_or_path)
        self.clip = ExpCLIPModel.from_clip(settings.clip_model_name_or_path, projection_dim=self.teacher.target_dim)
        self.clip.to(device)
        self.clip_processor = AutoImageProcessor.from_pretrained(settings.clip_model_name_or_path, backend="pil")

    @torch.no_grad()
    def __call__(self, images: list[Image.Image]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """CLIP's image embeddings and `target_draws` teacher targets (fresh dropout masks each, under the quirk)."""
        quirk = self.settings.original_preprocessing
        clip_pixels = pixel_values(self.clip_processor, images, quirk).to(self.device)
        teacher_pixels = pixel_values(self.teacher_processor, images, quirk).to(self.device)
        clip_image_embeds = self.clip.encode_clip_image(clip_pixels).float().cpu()
        target_draws = [self.teacher(teacher_pixels).float().cpu() for _ in range(self.settings.target_draws)]
        return clip_image_embeds, target_draws


def target_column(epoch: int) -> str:
    """The cache column of epoch `epoch`'s teacher target: "target_embeds" (every run's first, or only, draw), then
    "target_embeds_epoch1", ... (one per further epoch under the dropout quirk, SPEC §3)."""
    return "target_embeds" if epoch == 0 else f"target_embeds_epoch{epoch}"


def _shard_key(settings_fingerprint: str, items: list[ImageItem]) -> str:
    content = json.dumps([settings_fingerprint] + [[item.name, item.sha256] for item in items])
    return hashlib.sha256(content.encode()).hexdigest()[:16]


def _fixed_size_list(rows: torch.Tensor) -> pa.Array:
    return pa.FixedSizeListArray.from_arrays(pa.array(rows.numpy().reshape(-1)), rows.shape[1])


def _compute_shard(items, extractors, shard_index, batch_size, progress) -> tuple[pa.Table, list[str]]:
    torch.manual_seed(extractors.settings.seed + shard_index)  # the dropout quirk's masks depend on the shard only
    draws = extractors.settings.target_draws
    names, hashes, clip_rows, target_rows, skipped = [], [], [], [[] for _ in range(draws)], []
    batch_items, batch_images = [], []

    def flush():
        if batch_images:
            clip_image_embeds, target_draws = extractors(batch_images)
            names.extend(i.name for i in batch_items)
            hashes.extend(i.sha256 for i in batch_items)
            clip_rows.append(clip_image_embeds)
            for rows, target_embeds in zip(target_rows, target_draws):
                rows.append(target_embeds)
            progress.update(len(batch_images))
        batch_items.clear()
        batch_images.clear()

    for item in items:
        try:
            image = read_image(item)
        except InputError as error:  # never die on one bad file: skip it, count it, list it
            skipped.append(str(error))
            progress.update(1)
            continue
        batch_items.append(item)
        batch_images.append(image)
        if len(batch_images) == batch_size:
            flush()
    flush()
    clip_dim = extractors.clip.config.clip_embed_dim
    target_dim = extractors.teacher.target_dim
    clip_all = torch.cat(clip_rows) if clip_rows else torch.zeros(0, clip_dim)
    columns = {
        "image": pa.array(names, pa.string()),
        "sha256": pa.array(hashes, pa.string()),
        "clip_image_embeds": _fixed_size_list(clip_all),
    }
    for draw, rows in enumerate(target_rows):  # draw e is epoch e's target under the dropout quirk
        columns[target_column(draw)] = _fixed_size_list(torch.cat(rows) if rows else torch.zeros(0, target_dim))
    table = pa.table(columns)
    return table, skipped


def build_feature_cache(
    items: list[ImageItem],
    settings: FeatureCacheSettings,
    cache_dir: str | Path,
    batch_size: int = 64,
    state: PartialState | None = None,
    show_progress: bool = True,
) -> tuple[Dataset, list[str]]:
    """Compute the missing shards (this rank's share), wait for all ranks, and return every shard concatenated in
    index order, plus the one-line reasons of the images that were skipped as unreadable."""
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
        for written, i in enumerate(mine, start=1):
            table, skipped = _compute_shard(shards[i], extractors, i, batch_size, progress)
            _write_shard(table, skipped, folders[i], fingerprint=folders[i].name)
            if pause_after and written >= pause_after:
                print(f"paused after {written} shard(s)", flush=True)
                signal.pause()  # the test kills us here
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
