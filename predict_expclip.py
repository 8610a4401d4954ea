"""`expclip predict`: facial expressions of images and folders, and the same in two lines of Python.

(Work in progress: the prediction API and the command are being written; `load_image` is the shared contract for
reading one image with a one-line reason on failure.)
"""

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Every extension PIL can open counts as an image when walking folders.
IMAGE_EXTENSIONS = {ext.lower() for ext in Image.registered_extensions()}


class InputError(Exception):
    """A bad input item: the message is one line that names the item and says what is wrong."""


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB: EXIF rotation applied, alpha composited on white, 16-bit scaled down."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if array.max() > 255 else 255.0
        image = Image.fromarray(np.clip(array / peak * 255.0, 0, 255).astype(np.uint8))
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
            return to_rgb(image)
    except Image.DecompressionBombError as error:
        raise InputError(f"{path}: refused, image too large ({error})".splitlines()[0])
    except UnidentifiedImageError:
        raise InputError(f"{path}: not an image PIL can read")
    except (OSError, SyntaxError, ValueError) as error:
        raise InputError(f"{path}: corrupt or truncated image ({str(error).splitlines()[0] if str(error) else type(error).__name__})")
