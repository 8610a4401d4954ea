"""The default-model library: the authors' released Exp-CLIP heads (README: released heads) as complete Hugging
Face model folders, and `resolve_model`, which every command uses to turn `--model` into a folder.

The released heads are PyTorch pickles holding one tensor, `mlp.weight` of shape [4096, CLIP width]. They were trained
on raw [0, 1] pixels resized straight to a square, so a converted folder carries that preprocessing, not CLIP's.

Default model: `resolve_model(None)` (or an alias such as `expclip-b16`) downloads the authors' head from their GitHub
release and CLIP from the Hub on first use, converts them and caches the folder under the Hugging Face home
(`$HF_HOME/expclip/<alias>`); later calls reuse it. Environment overrides, for mirrors and tests:
`EXPCLIP_CACHE` (cache folder), `EXPCLIP_HEAD_BASE_URL` (where the `.pth` files live), `EXPCLIP_CLIP_MODEL` (the CLIP
checkpoint, a Hub id or local folder, for whichever alias is resolved).
"""

import json
import os
import shutil
import sys
import tempfile
import urllib.error
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from .hub import cache_root as _cache_root
from .hub import download as _download
from .hub import offline as _offline
from .inputs import first_line, original_image_processor_settings, pin_pil_image_processor
from .outputs import OutputError, check_output_folder, mark_output

if TYPE_CHECKING:  # torch and transformers load when a head is converted: resolving a folder stays cheap
    import torch

ORIGINAL_HEAD_KEY = "mlp.weight"
ORIGINAL_HEAD_BASE_URL = "https://github.com/zengqunzhao/Exp-CLIP/raw/main/checkpoint/"
# Alias -> (CLIP checkpoint the head was trained on, file name of the authors' head in their release).
DEFAULT_MODELS = {
    "expclip-l14": ("openai/clip-vit-large-patch14", "ExpCLIP_L14_model.pth"),
    "expclip-b16": ("openai/clip-vit-base-patch16", "ExpCLIP_B16_model.pth"),
    "expclip-b32": ("openai/clip-vit-base-patch32", "ExpCLIP_B32_model.pth"),
}
DEFAULT_MODEL = "expclip-l14"


class ConversionError(ValueError):
    """A head file or CLIP checkpoint that cannot be converted; the message is one line naming it."""


class ModelFetchError(RuntimeError):
    """The default model could not be fetched; the message is one line saying what, and how to use a local folder."""


def load_original_head(pth_path, clip_embed_dim: int) -> "torch.Tensor":
    """The authors' `mlp.weight` [projection_dim, clip_embed_dim] from a `.pth`, loaded without running pickled code."""
    import torch

    path = Path(pth_path)
    expected = f"a state dict with the single key '{ORIGINAL_HEAD_KEY}' of shape [4096, {clip_embed_dim}]"
    if not path.is_file():
        raise ConversionError(f"{path}: no such file (expected the authors' .pth head, {expected})")
    try:
        with warnings.catch_warnings():  # torch's own warnings (pickle protocol, ...) are not the user's business
            warnings.simplefilter("ignore")
            state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # any unpickling failure means: not a plain tensor pickle
        if "Unsupported global" in str(error):
            reason = "it pickles Python objects, not only tensors; refused, loading it could run code"
        elif "Weights only load failed" in str(error):  # PyTorch's multi-line advice says nothing about this file
            reason = "not a PyTorch checkpoint"
        else:
            reason = f"not a PyTorch checkpoint: {type(error).__name__}: {first_line(error)}"
        raise ConversionError(f"{path}: not a PyTorch state dict torch.load(weights_only=True) can read ({reason})")
    if not isinstance(state_dict, dict) or set(state_dict) != {ORIGINAL_HEAD_KEY}:
        found = ", ".join(map(str, state_dict)) if isinstance(state_dict, dict) else type(state_dict).__name__
        raise ConversionError(f"{path}: expected {expected}, found {found or 'an empty dict'}")
    weight = state_dict[ORIGINAL_HEAD_KEY]
    if not isinstance(weight, torch.Tensor) or not weight.is_floating_point():
        found = f"a {weight.dtype} tensor" if isinstance(weight, torch.Tensor) else type(weight).__name__
        raise ConversionError(f"{path}: '{ORIGINAL_HEAD_KEY}' must be a floating-point tensor, found {found}")
    if not torch.isfinite(weight).all():
        raise ConversionError(f"{path}: '{ORIGINAL_HEAD_KEY}' holds NaN or infinite values; refused (a broken head)")
    if weight.dim() != 2 or weight.shape[1] != clip_embed_dim:
        raise ConversionError(
            f"{path}: '{ORIGINAL_HEAD_KEY}' has shape {list(weight.shape)}, but the CLIP's embedding width is "
            f"{clip_embed_dim}; expected [4096, {clip_embed_dim}] (is --clip the backbone this head was trained on?)"
        )
    if not weight.any():  # every image and prompt would map to zero: uniform scores, a meaningless first label
        raise ConversionError(f"{path}: '{ORIGINAL_HEAD_KEY}' is all zeros; refused (a broken head)")
    return weight.float()


def _write_folder_atomically(output_dir: Path, write, overwrite: bool = False) -> Path:
    """Run `write(tmp_folder)` in a temporary folder beside `output_dir`, then rename: no half-written folder stays.
    An existing `output_dir` was checked by `check_output_folder` (empty, or only this command's own files)."""
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", suffix=".partial", dir=output_dir.parent))
    try:
        write(tmp)
        mark_output(tmp, "convert")
        umask = os.umask(0)  # mkdtemp's folder is 0700 and some writers' files 0600: give the user's umask, like mkdir
        os.umask(umask)
        for path in [tmp, *tmp.rglob("*")]:
            path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)
        if output_dir.exists():
            shutil.rmtree(output_dir)
        os.replace(tmp, output_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return output_dir


def convert_original_head(
    pth_path, clip_name_or_path, output_dir, overwrite: bool = False, source: str | None = None
) -> Path:
    """The authors' head + its CLIP -> a complete Hub folder (safetensors, config, code, tokenizer, image processor).

    `source` records where the head came from (default: the file name) in the config's provenance."""
    clip_name_or_path, output_dir = str(clip_name_or_path), Path(output_dir)
    try:  # before any loading: never an input, never a folder this command did not write
        check_output_folder(output_dir, "convert", [pth_path, clip_name_or_path if Path(clip_name_or_path).exists()
                                                    else None], overwrite=overwrite)
    except OutputError as error:
        raise ConversionError(str(error))
    if not Path(clip_name_or_path).expanduser().exists() and not _looks_like_hub_id(clip_name_or_path):
        raise ConversionError(f"{clip_name_or_path}: no such folder, and not a Hub id (--clip needs a CLIP model)")
    if Path(clip_name_or_path).expanduser().is_dir() and not (Path(clip_name_or_path).expanduser() / "config.json").is_file():
        raise ConversionError(f"{clip_name_or_path}: not a CLIP checkpoint (no config.json); --clip needs a CLIP model")
    import torch  # after the output check: a refusal is instant
    from transformers import AutoImageProcessor, AutoTokenizer, CLIPConfig, CLIPProcessor

    from modeling_expclip import ExpCLIPModel

    try:
        model_type = CLIPConfig.get_config_dict(clip_name_or_path)[0].get("model_type")
        clip_config = CLIPConfig.from_pretrained(clip_name_or_path)
    except (OSError, ValueError) as error:
        raise ConversionError(f"{clip_name_or_path}: cannot load this CLIP checkpoint ({first_line(error)})")
    if model_type not in ("clip", "expclip"):  # transformers reads a folder without config.json as default CLIP
        found = f"model_type {model_type!r}" if model_type else "no config.json"
        raise ConversionError(f"{clip_name_or_path}: not a CLIP checkpoint ({found}); --clip needs a CLIP model")
    weight = load_original_head(pth_path, clip_config.projection_dim)  # before the (large) CLIP weights load
    try:
        model = ExpCLIPModel.from_clip(clip_name_or_path, projection_dim=weight.shape[0])
        tokenizer = AutoTokenizer.from_pretrained(clip_name_or_path)
        image_size = clip_config.vision_config.image_size
        image_processor = AutoImageProcessor.from_pretrained(
            clip_name_or_path, backend="pil", **original_image_processor_settings(image_size)
        )
    except (OSError, ValueError) as error:
        raise ConversionError(f"{clip_name_or_path}: cannot load this CLIP checkpoint ({first_line(error)})")
    with torch.no_grad():
        model.projection.weight.copy_(weight)
    # Provenance (README: Faithful to the paper): the released heads were trained with the teacher's dropout left on.
    model.config.teacher_dropout = True
    model.config.original_checkpoint = source or Path(pth_path).name
    model.config.image_preprocessing = "original: square bilinear resize, no crop, raw [0, 1] pixels (no mean/std)"
    processor = CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)

    def write(folder):
        model.save_pretrained(folder)
        processor.save_pretrained(folder)
        pin_pil_image_processor(folder)  # README: Reproducing the paper: PIL's resize, as the heads were trained, whatever is installed

    return _write_folder_atomically(output_dir, write, overwrite=overwrite)


# ----- the default model -------------------------------------------------------------------------------------------


def _cached_provenance(folder: Path) -> tuple | None:
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not (folder / "model.safetensors").is_file():
        return None
    return config.get("original_checkpoint"), config.get("clip_model_name_or_path")


def _looks_like_hub_id(name: str) -> bool:
    """A Hub repo id ("org/name" or "name"), not a path: "./x", "/x", "~/x", "a/b/c" are folders."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return not name.startswith((".", "~"))


def resolve_model(model: str | None = None) -> str:
    """`--model` -> a folder or Hub id `from_pretrained` can load. None or an alias (`expclip-l14`, the default,
    `expclip-b16`, `expclip-b32`) -> the authors' head converted and cached on first use; anything else passes through.

    Raises `ModelFetchError` (one line) when the head or CLIP cannot be fetched."""
    alias = DEFAULT_MODEL if model is None else str(model)
    if alias not in DEFAULT_MODELS:
        if not Path(alias).expanduser().exists() and not _looks_like_hub_id(alias):
            raise ModelFetchError(f"{alias}: no such model folder")
        if Path(alias).expanduser().is_dir() and not (Path(alias).expanduser() / "config.json").is_file():
            found = "an empty folder" if not any(Path(alias).expanduser().iterdir()) else "no config.json in it"
            raise ModelFetchError(f"{alias}: not an Exp-CLIP model folder ({found})")
        return str(Path(alias).expanduser()) if Path(alias).expanduser().exists() else alias
    clip_name_or_path, head_file = DEFAULT_MODELS[alias]
    clip_name_or_path = os.environ.get("EXPCLIP_CLIP_MODEL") or clip_name_or_path
    head_url = (os.environ.get("EXPCLIP_HEAD_BASE_URL") or ORIGINAL_HEAD_BASE_URL).rstrip("/") + "/" + head_file
    folder = _cache_root() / alias
    if _cached_provenance(folder) == (head_url, str(clip_name_or_path)):
        return str(folder)
    hint = (
        f"use a local model folder instead (--model DIR; in Python, the model argument), e.g. one written by "
        f"`expclip convert {head_file} --clip {clip_name_or_path} --output DIR`"
    )
    if _offline():
        raise ModelFetchError(f"{alias}: not in the cache ({folder}) and offline mode is on (HF_HUB_OFFLINE); {hint}")
    print(f"expclip: first use of {alias}: fetching {head_url} and {clip_name_or_path} (cached in {folder})",
          file=sys.stderr)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=".download.") as download_dir:
        head_path = Path(download_dir) / head_file
        try:
            _download(head_url, head_path)
        except (urllib.error.URLError, OSError, ValueError) as error:
            if isinstance(error, urllib.error.HTTPError):
                reason = f"HTTP {error.code} {error.reason}"
            else:
                reason = first_line(getattr(error, "reason", None) or error)
            raise ModelFetchError(f"{alias}: could not download the Exp-CLIP head {head_url} ({reason}); {hint}")
        try:
            convert_original_head(head_path, clip_name_or_path, folder, overwrite=True, source=head_url)
        except ConversionError as error:
            raise ModelFetchError(f"{alias}: could not build the model ({error}); {hint}")
    return str(folder)
