"""Inputs: the bottom of the import graph. Decoding any image (and naming what is wrong with a bad one), the file
extensions that count as images and videos, the one-line error text every command prints, and the original's
preprocessing settings.

Every input is read by `load_image` (any PIL mode -> RGB, EXIF rotation applied); a bad one becomes a one-line
`InputError` that names it, and the rest goes on. Nothing here imports another module of this project.
"""

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Every extension PIL can open counts as an image when walking folders.
IMAGE_EXTENSIONS = {ext.lower() for ext in Image.registered_extensions()}
# The model precisions a user can pick (predict, evaluate). "float16-mixed" is the original's on a GPU (SPEC §6): CLIP
# in float16 with LayerNorm computed in float32, the head in float32 (`ExpCLIPModel.to_original_precision`).
MIXED_PRECISION = "float16-mixed"
DTYPES = ("float32", "bfloat16", "float16", MIXED_PRECISION)
VIDEO_EXTENSIONS = {".mp4", ".m4v", ".avi", ".webm", ".mov", ".mkv", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp", ".ts"}


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


def read_prompt_file(path, class_names: list[str] | None = None) -> dict[str, list[str]]:
    """`--prompt-file FILE.json`: `{"class": ["prompt", ...], ...}`, each class's full prompt list. Raises
    `InputError` (one line) for an unreadable file, a non-object, an empty or non-string list, or a class outside
    `class_names` (when given)."""
    import json

    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
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
    return {name: list(prompts) for name, prompts in data.items()}


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
    the torchvision backend it would pick for "CLIPImageProcessor" whenever torchvision is installed (SPEC §6)."""
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


def load_image(source) -> Image.Image:
    """A path, PIL image or HxWx3 array -> RGB PIL image; raises `InputError` with a one-line reason.

    PIL's decompression-bomb limit stays on. Animated images give their first frame."""
    if isinstance(source, Image.Image):
        return to_rgb(source)
    if isinstance(source, np.ndarray):
        try:
            return to_rgb(Image.fromarray(source))
        except (TypeError, ValueError) as error:
            raise InputError(f"array of shape {source.shape} and dtype {source.dtype}: not an image ({error})")
    if is_url(source):
        raise InputError(f"{source}: URLs are not read; download the file and give its path")
    path = Path(source)
    if not path.exists():
        raise InputError(f"{path}: no such file or directory")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not an image")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: empty file (0 bytes)")
    try:
        with Image.open(path) as image:
            image.seek(0)
            image.load()
            try:
                return to_rgb(image)
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
