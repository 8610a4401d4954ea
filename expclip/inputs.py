"""Inputs: the bottom of the import graph. Decoding any image (and naming what is wrong with a bad one), the file
extensions that count as images and videos, the one-line error text every command prints, the original's
preprocessing settings, and the ONE input pipeline that feeds every model (feature extraction, predict, evaluate).

Every input is read by `load_image` (any PIL mode -> RGB, EXIF rotation applied); a bad one becomes a one-line
`InputError` that names it, and the rest goes on. Nothing here imports another module of this project.

The input pipeline (`InputPipeline`) turns a list of items into batches of tensors in torch `DataLoader` worker
processes, so decoding and each model's preprocessing overlap the model in the main process:

    preprocess = ImagePreprocessing(clip_processor)               # one per model: its own image processor
    def prepare(path):                                            # runs in a worker process, one item at a time
        image = load_image(path)                                  # a bad item raises; its line is carried along
        return {"clip_pixel_values": preprocess([image])}         # tensors: (rows, ...) per item, cat per batch
    for batch in InputPipeline(paths, prepare, batch_size=64, num_workers=4):
        for prepared in batch.errors:                             # bad items of this batch, in input order
            print("skipped", prepared.error)
        pixels = preprocess.to_device(batch.tensors["clip_pixel_values"], device, dtype)
        ...                                                       # batch.items: every item, in input order

Pixels are exactly what each model's image processor makes (the released heads were trained on PIL resizing; README:
Reproducing the paper). `ImagePreprocessing(..., normalize_on_device=True)` sends uint8 pixels (resized and cropped by the same
processor call) and rescales/normalises the batch on the model's device: equal within float rounding, 4x less data.
"""

from __future__ import annotations  # annotations name torch types without importing torch

import errno
import functools
import logging
import os
import stat
import tempfile
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

if TYPE_CHECKING:  # torch is imported where the pipeline runs: reading and checking inputs stays cheap
    import torch

# Every extension PIL can open counts as an image when walking folders.
IMAGE_EXTENSIONS = {ext.lower() for ext in Image.registered_extensions()}
# The model precisions a user can pick (predict, evaluate). "float16-mixed" is the original's on a GPU (README): CLIP
# in float16 with LayerNorm computed in float32, the head in float32 (`ExpCLIPModel.to_original_precision`).
MIXED_PRECISION = "float16-mixed"
DTYPES = ("float32", "bfloat16", "float16", MIXED_PRECISION)
VIDEO_EXTENSIONS = {".mp4", ".m4v", ".avi", ".webm", ".mov", ".mkv", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp", ".ts"}


class _QuietBackendFallback(logging.Filter):
    """Drops transformers' "Requested torchvision backend is not available. Falling back to pil backend." that
    `AutoImageProcessor` prints for an Exp-CLIP folder when torchvision is installed: the folder registers only CLIP's
    PIL processor, on purpose (README: Reproducing the paper), so the fallback is the plan, not news for the user."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Requested torchvision backend is not available")


logging.getLogger("transformers.models.auto.image_processing_auto").addFilter(_QuietBackendFallback())


class InputError(Exception):
    """A bad input item: the message is one line that names the item and says what is wrong."""


def first_line(error: BaseException) -> str:
    """The first line of an error's message, or its type's name when the message is empty."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def one_line(error: BaseException) -> str:
    """`Type: first line` (just the type's name when the message is empty): an unexpected error as one line."""
    text = first_line(error)
    return text if text == type(error).__name__ else f"{type(error).__name__}: {text}"


PROMPT_FILE_MAX_BYTES = 1_000_000  # a larger --prompt-file is refused: 1 MB is ~25k prompts, minutes of text encoding
CLIP_MAX_TOKENS = 77  # CLIP's text context; longer prompts are cut off by the tokenizer


def path_problem(path: Path) -> str | None:
    """Why `path` cannot be read as an input file, as the end of a one-line message ("no such file or directory",
    "symbolic link loop", "not a regular file (a FIFO)", ...); None for a regular file or a folder."""
    try:
        mode = os.stat(path).st_mode
    except OSError as error:
        if error.errno == errno.ELOOP:
            return "symbolic link loop"
        if error.errno == errno.ENOENT and os.path.islink(path):
            return "broken symbolic link (its target does not exist)"
        if error.errno == errno.ENOENT:
            return "no such file or directory"
        return f"cannot be read ({error.strerror or first_line(error)})"
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    kind = {stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a character device",
            stat.S_IFBLK: "a block device"}.get(stat.S_IFMT(mode), "a special file")
    return f"not a regular file ({kind})"


def read_prompt_file(path, class_names: list[str] | None = None) -> dict[str, list[str]]:
    """`--prompt-file FILE.json`: `{"class": ["prompt", ...], ...}`, each class's full prompt list (UTF-8, a BOM
    allowed, at most 1 MB). A `{}` in a prompt is filled with its class name, as in `--prompts` templates. Raises
    `InputError` (one line) for an unreadable, non-regular or too large file, a non-object, an empty or non-string
    list, or a class outside `class_names` (when given)."""
    import json

    path = Path(path)
    problem = path_problem(path) or ("is a directory, not a JSON file" if path.is_dir() else None)
    if problem:  # a FIFO would block the read forever
        raise InputError(f"{path}: cannot read the prompt file ({problem})")
    if path.stat().st_size > PROMPT_FILE_MAX_BYTES:
        raise InputError(f"{path}: prompt file of {path.stat().st_size:,} bytes refused (at most "
                         f"{PROMPT_FILE_MAX_BYTES:,}: every prompt is encoded by CLIP's text model)")
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))  # utf-8-sig: a BOM (Windows editors) is dropped
    except OSError as error:
        raise InputError(f"{path}: cannot read the prompt file ({first_line(error)})")
    except (UnicodeDecodeError, ValueError) as error:
        raise InputError(f"{path}: not a JSON prompt file ({first_line(error)})")
    if not isinstance(data, dict) or not data:
        raise InputError(f'{path}: a prompt file is a non-empty JSON object {{"class": ["prompt", ...], ...}}')
    for name, prompts in data.items():
        if not isinstance(prompts, list) or not prompts:
            raise InputError(f"{path}: class {name!r} needs a non-empty list of prompts")
        if not all(isinstance(prompt, str) and prompt.strip() for prompt in prompts):
            raise InputError(f"{path}: class {name!r} has a prompt that is not a non-empty string")
    unknown = [name for name in data if class_names is not None and name not in class_names]
    if unknown:
        raise InputError(f"{path}: class(es) {', '.join(map(repr, unknown))} not in the label set "
                         f"({', '.join(class_names)})")
    return {name: [prompt.replace("{}", name) for prompt in prompts] for name, prompts in data.items()}


def long_prompts(prompts: dict[str, list[str]], tokenizer) -> dict[str, int]:
    """Class -> token count of its longest prompt, for the classes with a prompt longer than CLIP's 77 tokens."""
    found = {}
    for name, texts in prompts.items():
        longest = max(len(ids) for ids in tokenizer(list(texts))["input_ids"])
        if longest > CLIP_MAX_TOKENS:
            found[name] = longest
    return found


def original_image_processor_settings(image_size: int) -> dict:
    """Image-processor settings of the original (paper §4; its released heads expect exactly these inputs)."""
    return dict(
        do_resize=True,
        size={"height": image_size, "width": image_size},  # straight to a square, aspect ratio not kept
        resample=2,  # PIL bilinear, as torchvision's Resize((224, 224)) in the original
        do_center_crop=False,
        do_rescale=True,  # to [0, 1]
        do_normalize=False,  # quirk of the original: no CLIP mean/std normalisation
        do_convert_rgb=True,
    )


def _to_8bit(image: Image.Image) -> Image.Image:
    """A one-channel image of 16/32-bit integers or floats -> 8-bit grey, scaled from its value range: floats in
    [0, 1] and integers up to 255 or 65535 as such, any other range (negative values) stretched to 0..255.
    Raises ValueError for values no scale can show (NaN, infinity, one constant value out of range)."""
    array = np.asarray(image, dtype=np.float64)
    if array.size and not np.isfinite(array).all():
        raise ValueError(f"{image.mode} pixels hold NaN or infinite values")
    low, high = (float(array.min()), float(array.max())) if array.size else (0.0, 0.0)
    if image.mode == "F" and 0.0 <= low and high <= 1.0:
        scaled = array * 255.0  # float images in [0, 1]
    elif 0.0 <= low and high <= 255.0:
        scaled = array
    elif 0.0 <= low and high <= 65535.0:
        scaled = array / 65535.0 * 255.0  # 16-bit
    elif high > low:  # any other range: stretched, never clipped to black
        scaled = (array - low) / (high - low) * 255.0
    else:
        raise ValueError(f"{image.mode} pixels are all {low:g}, outside any 8/16-bit or [0, 1] range")
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8))


def pin_pil_image_processor(folder) -> None:
    """Drop the image-processor class name from a saved Exp-CLIP folder's processor configs, so that
    `AutoImageProcessor` takes the PIL-backend class registered for ExpCLIPConfig (configuration_expclip) instead of
    the torchvision backend it would pick for "CLIPImageProcessor" whenever torchvision is installed (README: Reproducing the paper)."""
    import json

    for name in ("processor_config.json", "preprocessor_config.json"):
        path = Path(folder) / name
        if not path.is_file():
            continue
        config = json.loads(path.read_text(encoding="utf-8"))
        for section in (config, config.get("image_processor")):
            if isinstance(section, dict):
                section.pop("image_processor_type", None)
        path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB: EXIF rotation applied, alpha composited on white, 16/32-bit and float images
    scaled from their value range (ValueError when no scale can show them)."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        image = _to_8bit(image)
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image.convert("RGBA"), mask=image.convert("RGBA").getchannel("A"))
        return background
    return image.convert("RGB")


def _convert(image: Image.Image, box: tuple | None, original: bool) -> Image.Image:
    if box is not None:
        image = image.crop(box)  # keeps the EXIF data: to_rgb then turns the cut face upright
    return image.convert("RGB") if original else to_rgb(image)


def load_image(source, box: tuple | None = None, original: bool = False) -> Image.Image:
    """A path, PIL image, HxWx3 array or undecoded `datasets` image ({"bytes", "path"}) -> RGB PIL image; raises
    `InputError` with a one-line reason.

    `box` (left, top, right, bottom) is cut first, in the stored pixels' coordinates (a benchmark's face box), before
    any EXIF rotation. `original=True` reads as the original's benchmark code did: a plain `.convert("RGB")`, no EXIF
    rotation, no alpha compositing (README: Reproducing the paper). PIL's decompression-bomb limit stays on. Animated
    images give their first frame."""
    convert = functools.partial(_convert, box=box, original=original)
    if isinstance(source, Image.Image):
        if 0 in source.size:
            raise InputError(f"PIL image of size {source.size[0]}x{source.size[1]}: empty, not an image")
        return convert(source)
    if isinstance(source, np.ndarray):
        if source.ndim not in (2, 3) or 0 in source.shape or (source.ndim == 3 and source.shape[2] not in (1, 3, 4)):
            raise InputError(f"array of shape {source.shape}: not an image (expected HxW, HxWx3 or HxWx4, not empty)")
        try:
            return convert(Image.fromarray(source[:, :, 0] if source.ndim == 3 and source.shape[2] == 1 else source))
        except (TypeError, ValueError) as error:
            raise InputError(f"array of shape {source.shape} and dtype {source.dtype}: not an image ({error})")
    if isinstance(source, dict):  # a `datasets` Image value read undecoded: {"bytes": ..., "path": ...}
        if source.get("bytes") is None:
            if not source.get("path"):
                raise InputError("<dataset image>: no bytes and no path")
            return load_image(source["path"], box, original)
        name = source.get("path") or "<image bytes>"
        if not source["bytes"]:
            raise InputError(f"{name}: empty image (0 bytes)")
        import io

        return _decode(io.BytesIO(source["bytes"]), name, convert)
    if not isinstance(source, (str, os.PathLike)):
        raise InputError(f"{type(source).__name__} {repr(source)[:40]}: not an image (give a path, a PIL image or "
                         "an array)")
    if is_url(source):
        raise InputError(f"{source}: URLs are not read; download the file and give its path")
    path = Path(source)
    problem = path_problem(path)
    if problem:
        raise InputError(f"{path}: {problem}")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not an image")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: empty file (0 bytes)")
    return _decode(path, path, convert)


def _decode(file, path, convert) -> Image.Image:
    """Open, load and `convert` to RGB a file (a path or a file object named `path`), the reasons named in one
    line."""
    try:
        with warnings.catch_warnings():
            # between PIL's warning and error limits: read, without PIL's two-line warning reaching the user
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(file) as image:
                image.seek(0)
                image.load()
                try:
                    return convert(image)
                except ValueError as error:  # the file was read; its pixels cannot be shown as an image
                    raise InputError(f"{path}: refused, {first_line(error)}")
    except Image.DecompressionBombError as error:
        raise InputError(f"{path}: refused, image too large ({first_line(error)})")
    except UnidentifiedImageError:
        raise InputError(f"{path}: not an image PIL can read")
    except (OSError, SyntaxError, ValueError) as error:
        raise InputError(f"{path}: corrupt or truncated image ({first_line(error)})")


def is_url(text) -> bool:
    """"https://...", "s3://...": a URL, which no command reads (a path would silently become "https:/...")."""
    return isinstance(text, str) and "://" in text and text.split("://", 1)[0].replace("+", "").isalpha()


def walk_files(folder) -> list[Path]:
    """Every file under `folder`, sorted, hidden names left out. Symlinked folders are followed, each real folder
    once, so a link back up the tree cannot loop."""
    files, seen = [], set()
    for root, dirs, names in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:  # a link to a folder already walked
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        files += [Path(root, name) for name in names if not name.startswith(".")]
    return sorted(files)


# ----- the input pipeline: items -> each model's preprocessing -> batches of (pinned) tensors ----------------------


def default_num_workers() -> int:
    """DataLoader worker processes by default: one per CPU core this process may use, less one for the main process
    (it runs the model), at least 1 and at most 16."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(16, cores - 1))


class ImagePreprocessing:
    """One model's image processor, split between the pipeline's workers and the model's device.

    `__call__(images)` runs in a worker: RGB PIL images -> (n, 3, H, W). By default float32, exactly the processor's
    output (`settings` override its settings, e.g. `original_image_processor_settings`). With
    `normalize_on_device=True` it is uint8: the same processor call resizes and crops (PIL, on uint8), and
    `to_device` rescales and normalises the whole batch on the model's device, equal to the processor's output
    within float rounding (the processor rescales in float64 before casting to float32).

    `to_device(pixel_values, device, dtype)` runs in the main process on a batch: moved (non-blocking from pinned
    memory), finished if uint8, cast to the model's dtype."""

    def __init__(self, image_processor, settings: dict | None = None, normalize_on_device: bool = False):
        self.image_processor = image_processor
        self.settings = dict(settings or {})
        self.normalize_on_device = normalize_on_device
        merged = {name: getattr(image_processor, name, None) for name in
                  ("do_rescale", "rescale_factor", "do_normalize", "image_mean", "image_std")}
        merged.update({k: v for k, v in self.settings.items() if k in merged})
        self.rescale_factor = merged["rescale_factor"] if merged["do_rescale"] else None
        self.mean = merged["image_mean"] if merged["do_normalize"] else None
        self.std = merged["image_std"] if merged["do_normalize"] else None

    def __call__(self, images: Sequence[Image.Image]) -> torch.Tensor:
        settings = dict(self.settings)
        if self.normalize_on_device:
            settings.update(do_rescale=False, do_normalize=False)
        import torch

        # channels_last stated outright: a 1x1 or 3x3 image is otherwise taken as channels-first.
        outputs = self.image_processor(images=[np.asarray(image) for image in images], return_tensors="pt",
                                       input_data_format="channels_last", **settings)
        if "spatial_shapes" in outputs:  # SigLIP 2 NaFlex: its patch mask and grid shapes travel inside the tensor
            from modeling_expclip import pack_image_inputs

            return pack_image_inputs(outputs["pixel_values"], outputs["pixel_attention_mask"], outputs["spatial_shapes"])
        pixel_values = outputs["pixel_values"]
        return pixel_values.round().clamp(0, 255).to(torch.uint8) if self.normalize_on_device else pixel_values

    def to_device(self, pixel_values: torch.Tensor, device=None, dtype: torch.dtype | None = None) -> torch.Tensor:
        import torch

        pixel_values = pixel_values.to(device, non_blocking=True)
        if pixel_values.dtype == torch.uint8:
            pixel_values = pixel_values.float()
            if self.rescale_factor is not None:
                pixel_values = pixel_values * self.rescale_factor
            if self.mean is not None:
                shape = (-1, 1, 1)
                mean = torch.tensor(self.mean, dtype=torch.float32, device=pixel_values.device).view(shape)
                std = torch.tensor(self.std, dtype=torch.float32, device=pixel_values.device).view(shape)
                pixel_values = (pixel_values - mean) / std
        return pixel_values if dtype is None else pixel_values.to(dtype)


@dataclass
class Prepared:
    """One item after `prepare`, in a worker: `value` (what `prepare` returned, tensors moved to the batch) or, for a
    bad item, `error` (one line naming it) and `traceback` (text, for `--debug`)."""

    index: int  # position in the pipeline's item list
    value: dict | None = None  # prepare's dict without its tensors (boxes, timings, a decoded image, ...)
    error: str | None = None
    traceback: str | None = None
    spans: dict = field(default_factory=dict)  # tensor key -> slice of this item's rows in `InputBatch.tensors`


@dataclass
class InputBatch:
    """One batch: `items` every item of the batch in input order (bad ones included); `tensors` per key, the good
    items' tensors concatenated along dim 0 (each item's rows: `prepared.spans[key]`)."""

    items: list[Prepared]
    tensors: dict[str, torch.Tensor]

    @property
    def errors(self) -> list[Prepared]:
        return [prepared for prepared in self.items if prepared.error is not None]

    @property
    def good(self) -> list[Prepared]:
        return [prepared for prepared in self.items if prepared.error is None]

    def pin_memory(self) -> "InputBatch":  # DataLoader(pin_memory=True) calls this in its pinning thread
        return InputBatch(self.items, {key: tensor.pin_memory() for key, tensor in self.tensors.items()})


class _PreparedItems:
    """index -> `Prepared`: `prepare(item)`, any exception caught and turned into the item's one-line error (a
    map-style dataset for the DataLoader)."""

    def __init__(self, items, prepare, name):
        self.items, self.prepare, self.name = items, prepare, name

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index: int) -> Prepared:
        item = self.items[index]
        try:
            return Prepared(index, self.prepare(item))
        except Exception as error:  # noqa: BLE001 -- one bad item must not stop the rest
            reason = first_line(error) if isinstance(error, InputError) else f"{self.name(item)}: {one_line(error)}"
            return Prepared(index, error=reason, traceback=traceback.format_exc())


def collate_prepared(prepared: list[Prepared]) -> InputBatch:
    """`Prepared` items -> `InputBatch`: every tensor of a good item's dict is concatenated per key (dim 0)."""
    import torch

    parts, offsets = {}, {}
    for one in prepared:
        if one.error is not None:
            continue
        value = one.value if isinstance(one.value, dict) else {"value": one.value}
        for key, tensor in [(k, v) for k, v in value.items() if isinstance(v, torch.Tensor)]:
            start = offsets.get(key, 0)
            one.spans[key] = slice(start, start + tensor.shape[0])
            offsets[key] = start + tensor.shape[0]
            parts.setdefault(key, []).append(tensor)
        one.value = {k: v for k, v in value.items() if not isinstance(v, torch.Tensor)}
    return InputBatch(prepared, {key: torch.cat(tensors) for key, tensors in parts.items()})


# torch's advice when workers outnumber the cores: the user asked for them (--workers N); their run is not wrong.
# A Unix socket's path holds at most 107 bytes; multiprocessing makes its sockets in `pymp-XXXXXXXX/listener-XXXXXXXX`
# inside the temp folder, so a temp folder longer than this is given a short one.
MAX_SOCKET_FOLDER = 80


def _init_worker(worker_init_fn: Callable[[int], None] | None, worker_id: int) -> None:
    """In each worker: a short folder for multiprocessing's sockets when the temp folder is deep (a test's or a batch
    job's TMPDIR). Workers hand tensors back as file descriptors through such a socket, which otherwise fails with
    "AF_UNIX path too long". Then the caller's `worker_init_fn`."""
    import multiprocessing.process
    import multiprocessing.util
    import shutil

    if len(multiprocessing.util.get_temp_dir()) > MAX_SOCKET_FOLDER and os.access("/tmp", os.W_OK):
        short = tempfile.mkdtemp(prefix="expclip-pymp-", dir="/tmp")
        # where get_temp_dir() keeps its folder (this process only), removed at exit as its own folder is
        multiprocessing.process.current_process()._config["tempdir"] = short
        multiprocessing.util.Finalize(None, shutil.rmtree, args=[short], exitpriority=-100)
    if worker_init_fn is not None:
        worker_init_fn(worker_id)


TOO_MANY_WORKERS = "This DataLoader will create"


class InputPipeline:
    """Items -> `prepare` in DataLoader worker processes -> `InputBatch`es in input order, bad items included.

    - `items`: anything `prepare` takes (paths, dataclasses, dataset rows...), a list.
    - `prepare(item) -> dict`: runs in a worker (in this process with `num_workers=0`), one item at a time: decode,
      crop, each model's `ImagePreprocessing`. Tensor values must have a leading rows dimension ((1, 3, H, W) for one
      image, (k, 3, H, W) for k faces or frames); other values (boxes, timings, the decoded image) ride along in
      `Prepared.value`. An exception marks the item bad: an `InputError`'s first line is its message (it names the
      item); any other error becomes `"{name(item)}: Type: first line"`. The rest goes on.
    - `batch_size` items per batch, or `batches`: explicit lists of indices (consecutive groups, in order).
    - `num_workers`: worker processes (default `default_num_workers()`); 0 runs everything in this process, with
      identical results. `prepare` (and what it holds: image processors, a face detector) reaches the workers by
      fork on Linux (each worker its own copy), by pickling where processes are spawned.
    - `pin_memory`: page-locked batches for fast, non-blocking copies (default: when CUDA is available).
    - `worker_init_fn(worker_id)`: runs once in each worker (e.g. limit a library's threads there).
    """

    def __init__(self, items: Sequence, prepare: Callable[[object], dict], batch_size: int = 32,
                 batches: Sequence[Sequence[int]] | None = None, num_workers: int | None = None,
                 pin_memory: bool | None = None, prefetch_factor: int = 2, name: Callable[[object], str] = str,
                 worker_init_fn: Callable[[int], None] | None = None):
        import torch

        if batches is None and batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {batch_size}")
        self.num_workers = default_num_workers() if num_workers is None else num_workers
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be at least 0, got {self.num_workers}")
        self.items = list(items)
        self.batches = ([list(b) for b in batches] if batches is not None else
                        [list(range(s, min(s + batch_size, len(self.items)))) for s in range(0, len(self.items),
                                                                                             batch_size)])
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=TOO_MANY_WORKERS)
            self.loader = torch.utils.data.DataLoader(
                _PreparedItems(self.items, prepare, name),
                batch_sampler=self.batches,
                num_workers=self.num_workers,
                collate_fn=collate_prepared,
                pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
                prefetch_factor=prefetch_factor if self.num_workers else None,
                worker_init_fn=functools.partial(_init_worker, worker_init_fn),
            )

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        """Yield `InputBatch`es in input order. Stopping early (break, Ctrl-C) shuts the workers down."""
        iterator = _start_workers(self.loader)
        try:
            yield from iterator
        finally:
            shutdown = getattr(iterator, "_shutdown_workers", None)
            if shutdown is not None:
                shutdown()


def _start_workers(loader):
    """`iter(loader)` with Ctrl-C held back until the worker processes have started, then delivered: torch's
    half-built iterator cannot shut itself down, and its `__del__` would print a traceback."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread() or not loader.num_workers:
        return iter(loader)
    pending = []
    previous = signal.signal(signal.SIGINT, lambda *args: pending.append(args))
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=TOO_MANY_WORKERS)
            iterator = iter(loader)
    finally:
        signal.signal(signal.SIGINT, previous)
    if pending and callable(previous):
        iterator._shutdown_workers()
        previous(*pending[0])  # Python's own handler raises KeyboardInterrupt here
    return iterator
