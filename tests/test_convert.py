"""`expclip convert`: the authors' `.pth` head (README: released heads) -> a complete Hub folder with the original preprocessing."""

import json
import os
import sys

import numpy as np
import pytest
import torch
from conftest import EXPCLIP, run_command
from PIL import Image
from tiny_models import CLIP_EMBED_DIM, IMAGE_SIZE
from transformers import AutoModel, AutoProcessor, CLIPModel, CLIPTokenizer

PROJECTION_DIM = 24
PROMPTS = ["a photo of a face with an expression of happiness.", "a photo of a face with an expression of anger."]


def save_original_head(path, weight):
    """A head in the authors' release format: a pickled state dict with the single key `mlp.weight`."""
    torch.save({"mlp.weight": weight}, path)
    return path


@pytest.fixture(scope="module")
def head_weight():
    return torch.randn(PROJECTION_DIM, CLIP_EMBED_DIM, generator=torch.Generator().manual_seed(7))


@pytest.fixture(scope="module")
def converted(tmp_path_factory, tiny_clip_dir, head_weight):
    """One real `expclip convert` run shared by the tests below."""
    work = tmp_path_factory.mktemp("convert")
    head = save_original_head(work / "ExpCLIP_T_model.pth", head_weight)
    result = run_command(EXPCLIP, "convert", head, "--clip", tiny_clip_dir, "--output", work / "expclip-t", cwd=work)
    return result, work / "expclip-t"


def test_convert_writes_a_complete_hub_folder(converted):
    result, folder = converted
    assert result.returncode == 0, result.stderr
    names = {path.name for path in folder.iterdir()}
    assert {"model.safetensors", "config.json", "configuration_expclip.py", "modeling_expclip.py"} <= names
    assert {"tokenizer_config.json", "processor_config.json"} <= names
    assert not [path for path in folder.parent.iterdir() if path.name.startswith(".expclip-t")]  # temp dir renamed


def test_converted_config_records_provenance(converted, tiny_clip_dir):
    _, folder = converted
    config = json.loads((folder / "config.json").read_text())
    assert config["projection_dim"] == PROJECTION_DIM
    assert config["original_checkpoint"] == "ExpCLIP_T_model.pth"
    assert config["teacher_dropout"] is True  # the released heads were trained with dropout-on targets
    assert config["clip_model_name_or_path"] == str(tiny_clip_dir)


def test_converted_image_processor_is_the_original_raw_pixel_square_resize(converted):
    _, folder = converted
    image_processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True).image_processor
    assert image_processor.do_normalize is False
    assert image_processor.do_center_crop is False
    assert dict(image_processor.size) == {"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    assert int(image_processor.resample) == Image.Resampling.BILINEAR


def test_converted_predictions_equal_scaled_cosine_of_the_head_by_hand(converted, tiny_clip_dir, head_weight, photo_dir):
    _, folder = converted
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    images = [Image.open(photo_dir / name).convert("RGB") for name in ("astronaut.jpg", "lfw face.png")]
    inputs = processor(text=PROMPTS, images=images, return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = model(**inputs).logits_per_image

    # By hand: the original's preprocessing (square bilinear resize, [0, 1], no mean/std) and plain CLIP.
    clip = CLIPModel.from_pretrained(tiny_clip_dir).eval()
    pixels = torch.stack(
        [
            torch.from_numpy(np.asarray(im.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)) / 255.0)
            .permute(2, 0, 1)
            .float()
            for im in images
        ]
    )
    assert torch.allclose(inputs["pixel_values"], pixels, atol=1e-6)
    tokens = CLIPTokenizer.from_pretrained(tiny_clip_dir)(PROMPTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        x_img = clip.get_image_features(pixel_values=pixels).pooler_output
        x_txt = clip.get_text_features(**tokens).pooler_output
        w_img, w_txt = x_img @ head_weight.t(), x_txt @ head_weight.t()
        cosine = (w_img / w_img.norm(dim=-1, keepdim=True)) @ (w_txt / w_txt.norm(dim=-1, keepdim=True)).t()
        expected = clip.logit_scale.exp() * cosine
    assert torch.allclose(logits, expected, atol=1e-5)
    assert torch.equal(model.projection.weight, head_weight)


@pytest.mark.parametrize(
    "content, message",
    [
        (lambda: {"mlp.weight": torch.zeros(PROJECTION_DIM, CLIP_EMBED_DIM + 1)}, "has shape [24, 17]"),
        (lambda: {"projection_head.weight": torch.zeros(PROJECTION_DIM, CLIP_EMBED_DIM)}, "single key 'mlp.weight'"),
    ],
    ids=["wrong-shape", "wrong-key"],
)
def test_convert_rejects_a_bad_head_with_one_line_and_writes_nothing(tmp_path, tiny_clip_dir, content, message):
    head = tmp_path / "head.pth"
    torch.save(content(), head)
    result = run_command(EXPCLIP, "convert", head, "--clip", tiny_clip_dir, "--output", tmp_path / "out", cwd=tmp_path)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert str(head) in lines[0] and message in lines[0]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["head.pth"]


def test_convert_rejects_a_file_that_is_not_a_tensor_pickle(tmp_path, tiny_clip_dir, capsys):
    from expclip.cli import main

    not_a_pickle = tmp_path / "notes.pth"
    not_a_pickle.write_text("these are not weights\n")
    code_pickle = tmp_path / "module.pth"
    torch.save(torch.nn.Linear(CLIP_EMBED_DIM, 4), code_pickle)  # a pickled object: refused by weights_only
    reasons = {
        not_a_pickle: "not a PyTorch checkpoint",
        code_pickle: "pickles Python objects",
        tmp_path / "missing.pth": "no such file",
    }
    for path, reason in reasons.items():
        assert main(["convert", str(path), "--clip", str(tiny_clip_dir), "--output", str(tmp_path / "out")]) == 1
        error = capsys.readouterr().err.strip()
        assert len(error.splitlines()) == 1 and error.startswith(f"expclip convert: {path}: ")
        assert reason in error
    assert not (tmp_path / "out").exists()


def test_convert_refuses_to_overwrite_an_existing_folder(tmp_path, tiny_clip_dir, head_weight, capsys):
    from expclip.cli import main

    head = save_original_head(tmp_path / "head.pth", head_weight)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("keep me")
    assert main(["convert", str(head), "--clip", str(tiny_clip_dir), "--output", str(tmp_path / "out")]) == 1
    assert "is not empty and is not an earlier output of expclip convert" in capsys.readouterr().err
    assert [path.name for path in (tmp_path / "out").iterdir()] == ["mine.txt"]


def test_convert_rejects_a_clip_argument_that_is_not_a_clip_checkpoint(tmp_path, head_weight, capsys):
    from expclip.cli import main

    head = save_original_head(tmp_path / "head.pth", head_weight)
    (tmp_path / "not-clip").mkdir()
    assert main(["convert", str(head), "--clip", str(tmp_path / "not-clip"), "--output", str(tmp_path / "out")]) == 1
    error = capsys.readouterr().err.strip()
    assert error == f"expclip convert: {tmp_path / 'not-clip'}: not a CLIP checkpoint (no config.json); --clip needs a CLIP model"
    assert not (tmp_path / "out").exists()


# README: Reproducing the paper: the released heads were tested with PIL's bilinear resize; a converted folder keeps it even where
# torchvision is installed (transformers would otherwise pick its torchvision backend, whose resize differs).
LOAD_WITH_TORCHVISION = """
import json, sys
import numpy as np
from PIL import Image
from transformers import AutoImageProcessor, AutoProcessor
from transformers.utils import is_torchvision_available

folder, clip_folder, photo, pixels_file, how = sys.argv[1:]
if how == "project":  # the project's own commands: the package is imported, no remote code
    import modeling_expclip  # noqa: F401
kwargs = {"trust_remote_code": True} if how == "hub" else {}
processor = AutoProcessor.from_pretrained(folder, **kwargs).image_processor
image_processor = AutoImageProcessor.from_pretrained(folder, **kwargs)
np.save(pixels_file, processor(Image.open(photo), return_tensors="pt").pixel_values[0].numpy())
print(json.dumps({"torchvision": is_torchvision_available(), "processor": type(processor).__name__,
                  "image_processor": type(image_processor).__name__,
                  "plain_clip": type(AutoImageProcessor.from_pretrained(clip_folder)).__name__}))
"""


@pytest.mark.parametrize("how", ["hub", "project"])
def test_converted_folder_loads_a_pil_processor_even_with_torchvision_installed(converted, tiny_clip_dir, photo_dir,
                                                                                tmp_path, how):
    from fake_torchvision import write_fake_torchvision

    _, folder = converted
    stub = write_fake_torchvision(tmp_path / "stub")
    pythonpath = os.pathsep.join([str(stub), os.environ.get("PYTHONPATH", "")])
    photo = photo_dir / "coffee.jpg"  # 600x400: a non-square photo
    result = run_command(sys.executable, "-c", LOAD_WITH_TORCHVISION, folder, tiny_clip_dir, photo,
                         tmp_path / "pixels.npy", how, env={"PYTHONPATH": pythonpath}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout)
    assert loaded["torchvision"] is True and loaded["plain_clip"] == "CLIPImageProcessor"  # the stub is in effect
    assert loaded["processor"] == loaded["image_processor"] == "CLIPImageProcessorPil"
    resized = Image.open(photo).convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)
    expected = np.asarray(resized, dtype=np.float32).transpose(2, 0, 1) / 255
    assert np.array_equal(np.load(tmp_path / "pixels.npy"), expected)
