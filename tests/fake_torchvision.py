"""A stub `torchvision` package written to a folder: on PYTHONPATH it makes transformers see torchvision as installed,
so `AutoImageProcessor` picks its torchvision backend (torchvision itself cannot be installed beside the CPU torch
here). It implements only what transformers imports, and a resize by `torch.nn.functional.interpolate`."""

from pathlib import Path

FILES = {
    "torchvision/__init__.py": '__version__ = "0.28.0"\n',
    "torchvision/io/__init__.py": "",
    "torchvision/transforms/__init__.py": (
        "import enum\n\n\n"
        "class InterpolationMode(enum.Enum):\n"
        + "".join(f'    {name.upper().replace("-", "_")} = "{name}"\n'
                  for name in ["nearest", "nearest-exact", "bilinear", "bicubic", "box", "hamming", "lanczos"])
    ),
    "torchvision/transforms/functional.py": (
        "import numpy as np\nimport torch\n\n\n"
        "def pil_to_tensor(image):\n"
        "    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)\n"
    ),
    "torchvision/transforms/v2/__init__.py": "",
    "torchvision/transforms/v2/functional.py": (
        "import torch\nimport torch.nn.functional as F\n\nfrom torchvision.transforms import InterpolationMode  # noqa\n\n\n"
        "def resize(image, size, interpolation=None, antialias=True, **kwargs):\n"
        "    mode = getattr(interpolation, 'value', 'bilinear')\n"
        "    out = F.interpolate(image[None].float(), size=list(size), mode=mode, antialias=antialias)[0]\n"
        "    return out.round().clamp(0, 255).to(image.dtype) if image.dtype == torch.uint8 else out\n"
    ),
}


def write_fake_torchvision(folder: Path) -> Path:
    """Write the stub under `folder` (put `folder` on PYTHONPATH); returns `folder`."""
    for name, text in FILES.items():
        path = Path(folder) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return Path(folder)
