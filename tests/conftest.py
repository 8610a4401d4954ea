"""Shared fixtures: tiny real-architecture models saved to folders, real photos from scikit-image."""

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from http.server import SimpleHTTPRequestHandler
from pathlib import Path

import pytest
import torch
from PIL import Image

# Tests never touch the user's real caches: Hugging Face, the default-model cache, matplotlib and XDG caches all
# live in one temporary folder for this run (subprocesses inherit it through the environment).
_CACHE_ROOT = Path(tempfile.mkdtemp(prefix="expclip-tests-cache-"))
atexit.register(shutil.rmtree, _CACHE_ROOT, True)
for _name in ("HF_HOME", "XDG_CACHE_HOME", "MPLCONFIGDIR", "TORCH_HOME"):
    os.environ[_name] = str(_CACHE_ROOT / _name.lower())
os.environ.pop("HF_HUB_CACHE", None)
os.environ.pop("HF_DATASETS_CACHE", None)
os.environ.pop("EXPCLIP_CACHE", None)
# Nothing may be fetched from the network in tests.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

sys.path.insert(0, str(Path(__file__).parent))
from tiny_models import save_tiny_clip  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
EXPCLIP = Path(sys.executable).with_name("expclip")  # the installed console command beside this interpreter
PROJECTION_DIM = 24  # the converted test model's head width

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory) -> Path:
    """A tiny CLIP checkpoint folder (weights, config, tokenizer, image processor)."""
    return save_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


@pytest.fixture(scope="session")
def tiny_expclip_dir(tmp_path_factory, tiny_clip_dir) -> Path:
    """A complete Exp-CLIP Hub folder around the tiny CLIP: safetensors, config with auto_map, code, processor."""
    from transformers import AutoProcessor

    from expclip.inputs import pin_pil_image_processor
    from modeling_expclip import ExpCLIPModel

    folder = tmp_path_factory.mktemp("tiny-expclip")
    torch.manual_seed(0)
    model = ExpCLIPModel.from_clip(str(tiny_clip_dir), projection_dim=32)
    model.save_pretrained(folder)
    AutoProcessor.from_pretrained(tiny_clip_dir).save_pretrained(folder)
    pin_pil_image_processor(folder)  # as train_expclip.py and convert save one: PIL resizing with torchvision installed
    return folder


@pytest.fixture(scope="session")
def photo_dir(tmp_path_factory) -> Path:
    """Three real photos from scikit-image as JPEG and PNG: the astronaut, a LFW face, the coffee cup."""
    from skimage import data

    folder = tmp_path_factory.mktemp("photos")
    Image.fromarray(data.astronaut()).save(folder / "astronaut.jpg", quality=92)
    face = (data.lfw_subset()[0] * 255).astype("uint8")
    Image.fromarray(face).resize((100, 100)).save(folder / "lfw face.png")
    Image.fromarray(data.coffee()).save(folder / "coffee.jpg")
    return folder


class CountingHandler(SimpleHTTPRequestHandler):
    """A static file server (on 127.0.0.1, in a test's own thread) that records the paths asked for: subclass it
    with a fresh `requests` list per server."""

    requests = []

    def do_GET(self):
        self.requests.append(self.path)
        super().do_GET()

    def log_message(self, *args):  # keep test output clean
        pass


# The preamble of a fresh interpreter (-I) in which nothing named *expclip* can be imported, however it was installed.
HIDE_EXPCLIP = textwrap.dedent(
    """
    import importlib.abc, json, sys

    class HideExpCLIP(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if "expclip" in name.split(".")[0]:
                raise ModuleNotFoundError(f"{name} is hidden in this test", name=name)

    sys.meta_path.insert(0, HideExpCLIP())
    try:
        import modeling_expclip
        package_importable = True
    except ImportError:
        package_importable = False
    """
)


def original_rule(num_frames, num_segments=16):
    """The original's test sampling, written out: frame int(tick/2 + tick*k) of segment k, tick = num_frames/16, and
    frame 0 sixteen times for clips of 16 frames or fewer (its test is `num_frames > 16`)."""
    if num_frames <= num_segments:
        return [0] * num_segments
    tick = num_frames / num_segments
    return [int(tick / 2 + tick * k) for k in range(num_segments)]


def one_line_error(result) -> str:
    """The command failed with exactly one line on stderr and no traceback; returns that line."""
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


# Prepended to a `python -c` script: that process finds no torchvision, as where it is not installed.
HIDE_TORCHVISION = textwrap.dedent(
    """
    import importlib.machinery, sys

    class HideTorchvision(importlib.machinery.PathFinder):
        @classmethod
        def find_spec(cls, name, path=None, target=None):
            return None if name.split(".")[0] == "torchvision" else super().find_spec(name, path, target)

    sys.meta_path = [HideTorchvision if f is importlib.machinery.PathFinder else f for f in sys.meta_path]
    """
)


def run_command(*args, cwd=None, env=None, timeout=300) -> subprocess.CompletedProcess:
    """Run a command the way a user would: a real subprocess, text output captured."""
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, cwd=cwd, env=full_env, timeout=timeout
    )


@pytest.fixture(scope="session")
def tiny_blip2_dir(tmp_path_factory) -> Path:
    """A tiny BLIP-2 + T5 checkpoint folder (sharded safetensors with index, T5 tokenizer, BLIP image processor)."""
    from tiny_blip2 import save_tiny_blip2

    return save_tiny_blip2(tmp_path_factory.mktemp("tiny-blip2"))


@pytest.fixture(scope="session")
def face_images_dir(tmp_path_factory) -> Path:
    """64 generated face-sized images (PNG and JPEG, in a nested folder) plus one zero-byte and one corrupt file."""
    import numpy as np

    folder = tmp_path_factory.mktemp("faces")
    (folder / "nested").mkdir()
    rng = np.random.default_rng(0)
    for i in range(64):
        pixels = rng.integers(0, 256, (36 + i % 5, 44, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / ("nested" if i % 2 else ".") / f"face{i:03d}.{'png' if i % 3 else 'jpg'}")
    (folder / "zero.jpg").write_bytes(b"")
    (folder / "nested" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 4)
    return folder


# ----- one converted and one exported model for the whole run ------------------------------------------------------


@pytest.fixture(scope="session")
def converted_dir(tmp_path_factory, tiny_clip_dir) -> Path:
    """A converted tiny Exp-CLIP model: the original's no-normalise square resize, provenance in its config."""
    from expclip.models import convert_original_head
    from tiny_models import CLIP_EMBED_DIM

    work = tmp_path_factory.mktemp("converted")
    weight = torch.randn(PROJECTION_DIM, CLIP_EMBED_DIM, generator=torch.Generator().manual_seed(12))
    torch.save({"mlp.weight": weight}, work / "ExpCLIP_T_model.pth")
    return convert_original_head(work / "ExpCLIP_T_model.pth", tiny_clip_dir, work / "expclip-t")


@pytest.fixture(scope="session")
def clip_export(tmp_path_factory, converted_dir):
    """`expclip export --to clip` of the converted model, through the real command: (result, folder)."""
    work = tmp_path_factory.mktemp("export-clip")
    result = run_command(EXPCLIP, "export", converted_dir, "--to", "clip", "--output", work / "clip", cwd=work)
    assert result.returncode == 0, result.stderr[-3000:]
    return result, work / "clip"


@pytest.fixture(scope="session")
def onnx_export(tmp_path_factory, converted_dir):
    """`expclip export --to onnx` of the converted model, through the real command: (result, folder)."""
    work = tmp_path_factory.mktemp("export-onnx")
    result = run_command(EXPCLIP, "export", converted_dir, "--to", "onnx", "--output", work / "onnx", cwd=work)
    assert result.returncode == 0, result.stderr[-3000:]
    return result, work / "onnx"
