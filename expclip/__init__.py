"""Exp-CLIP: zero-shot facial expression recognition by LLM knowledge transfer (Zhao et al., WACV 2025).

    import expclip
    predictor = expclip.ExpCLIPPredictor.from_pretrained()          # the authors' L/14 head, fetched once
    predictor(["photo.jpg", "clip.mp4"], faces=True)

The public names below are imported on first use (PEP 562), so `import expclip` costs nothing until one is used,
the way transformers' lazy `__init__` works. The model itself is the Hub custom-code pair
`configuration_expclip.py` / `modeling_expclip.py`, installed beside this package and copied into every model folder.
"""

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# public name -> the module that defines it
_LAZY = {
    "ExpCLIPConfig": "configuration_expclip",
    "ExpCLIPModel": "modeling_expclip",
    "ExpCLIPOutput": "modeling_expclip",
    "contrastive_loss": "modeling_expclip",
    "ExpCLIPPredictor": "expclip.predictor",
    "ExpCLIPTeacher": "expclip.teacher",
    "convert_original_head": "expclip.models",
    "load_original_head": "expclip.models",
    "resolve_model": "expclip.models",
    "DEFAULT_MODELS": "expclip.models",
    "DEFAULT_MODEL": "expclip.models",
    "ConversionError": "expclip.models",
    "ModelFetchError": "expclip.models",
    "export_model": "expclip.export",
    "ExportError": "expclip.export",
    "InputError": "expclip.inputs",
    "load_image": "expclip.inputs",
}

__all__ = sorted(_LAZY)

if TYPE_CHECKING:  # what editors and type checkers see
    from configuration_expclip import ExpCLIPConfig
    from modeling_expclip import ExpCLIPModel, ExpCLIPOutput, contrastive_loss

    from .export import ExportError, export_model
    from .inputs import InputError, load_image
    from .models import (
        DEFAULT_MODEL,
        DEFAULT_MODELS,
        ConversionError,
        ModelFetchError,
        convert_original_head,
        load_original_head,
        resolve_model,
    )
    from .predictor import ExpCLIPPredictor
    from .teacher import ExpCLIPTeacher


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'expclip' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # imported once
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
