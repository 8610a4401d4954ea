"""`expclip export` (issue 12): an Exp-CLIP model as a stock CLIPModel folder (no custom code), as ONNX in the
transformers.js layout, and a ready text classifier, all through the real command."""

import json
import shutil
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import HIDE_EXPCLIP, run_command
from PIL import Image
from tiny_models import CLIP_EMBED_DIM
from transformers import AutoImageProcessor, CLIPModel, CLIPProcessor

from configuration_expclip import BASIC_EXPRESSIONS
from expclip.models import convert_original_head
from modeling_expclip import ExpCLIPModel, build_class_prompts

EXPCLIP = Path(sys.executable).with_name("expclip")  # the installed console command beside this interpreter
PROJECTION_DIM = 24
TYPE3 = "a photo of a face with an expression of {}."
FRAMES = ["astronaut.jpg", "lfw face.png", "coffee.jpg"]

# A fresh interpreter (-I: no cwd, no PYTHON* variables) where nothing named *expclip* can be imported: the export must
# load as a stock CLIPModel, with the pipeline, without custom code or trust_remote_code.
FRESH_PROCESS = HIDE_EXPCLIP + textwrap.dedent(
    """

    import torch
    import torch.nn.functional as F
    from PIL import Image
    from transformers import AutoProcessor, CLIPModel, pipeline

    folder, labels, template, photo, frames = sys.argv[1], sys.argv[2].split(","), sys.argv[3], sys.argv[4], sys.argv[5:]
    model = CLIPModel.from_pretrained(folder).eval()
    processor = AutoProcessor.from_pretrained(folder, backend="pil")  # the PIL resize Exp-CLIP folders keep
    classifier = pipeline("zero-shot-image-classification", model=folder)
    scores = classifier(photo, candidate_labels=labels, hypothesis_template=template)
    pixel_values = processor(images=[Image.open(f).convert("RGB") for f in frames], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        video = F.normalize(model.get_image_features(pixel_values=pixel_values).pooler_output.mean(0), dim=-1)
    print(json.dumps({
        "package_importable": package_importable,
        "model_class": type(model).__module__ + "." + type(model).__name__,
        "pipeline_model_class": type(classifier.model).__module__ + "." + type(classifier.model).__name__,
        "pipeline": {s["label"]: s["score"] for s in scores},
        "video_features": video.tolist(),
    }))
    """
)


def one_line_error(result) -> str:
    """The command failed with exactly one line on stderr and no traceback; returns that line."""
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def converted_dir(tmp_path_factory, tiny_clip_dir) -> Path:
    """A converted tiny Exp-CLIP model: the original's no-normalise square resize, provenance in its config."""
    work = tmp_path_factory.mktemp("converted")
    weight = torch.randn(PROJECTION_DIM, CLIP_EMBED_DIM, generator=torch.Generator().manual_seed(12))
    torch.save({"mlp.weight": weight}, work / "ExpCLIP_T_model.pth")
    return convert_original_head(work / "ExpCLIP_T_model.pth", tiny_clip_dir, work / "expclip-t")


@pytest.fixture(scope="module")
def expclip(converted_dir):
    """The Exp-CLIP model and processor the exports must agree with."""
    return ExpCLIPModel.from_pretrained(converted_dir).eval(), CLIPProcessor.from_pretrained(converted_dir)


@pytest.fixture(scope="module")
def clip_export(tmp_path_factory, converted_dir):
    work = tmp_path_factory.mktemp("export-clip")
    result = run_command(EXPCLIP, "export", converted_dir, "--to", "clip", "--output", work / "clip", cwd=work)
    assert result.returncode == 0, result.stderr[-3000:]
    return result, work / "clip"


@pytest.fixture(scope="module")
def onnx_export(tmp_path_factory, converted_dir):
    work = tmp_path_factory.mktemp("export-onnx")
    result = run_command(EXPCLIP, "export", converted_dir, "--to", "onnx", "--output", work / "onnx", cwd=work)
    assert result.returncode == 0, result.stderr[-3000:]
    return result, work / "onnx"


@pytest.fixture(scope="module")
def fresh_process(tmp_path_factory, clip_export, photo_dir):
    _, folder = clip_export
    cwd = tmp_path_factory.mktemp("fresh-process")
    frames = [photo_dir / name for name in FRAMES]
    result = run_command(
        sys.executable, "-I", "-c", FRESH_PROCESS, folder, ",".join(BASIC_EXPRESSIONS), TYPE3,
        photo_dir / "astronaut.jpg", *frames, cwd=cwd,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def pixel_values(processor, photo_dir, names) -> torch.Tensor:
    images = [Image.open(photo_dir / name).convert("RGB") for name in names]
    return processor(images=images, return_tensors="pt")["pixel_values"]


def stored_classifier(folder: Path, prompt_set: str):
    from safetensors.torch import load_file

    info = json.loads((folder / "text_classifier.json").read_text())
    tensors = load_file(folder / "text_classifier.safetensors")
    spec = info["prompt_sets"][prompt_set]
    return info, spec, tensors[spec["prompt_embeds"]], tensors[spec["prompt_class"]], tensors[spec["class_embeds"]]


def onnx_session(path: Path):
    import onnxruntime

    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


# ----- --to clip: a stock CLIPModel ----------------------------------------------------------------------------------


def test_clip_export_is_a_stock_clip_folder_without_custom_code(clip_export):
    result, folder = clip_export
    assert result.stdout.strip() == f"wrote {folder}"
    assert not list(folder.glob("*.py"))
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "clip" and config["architectures"] == ["CLIPModel"]
    assert config["projection_dim"] == PROJECTION_DIM
    assert "auto_map" not in config
    assert not [path for path in folder.parent.iterdir() if path.name.startswith(".")]  # temp folder renamed


def test_folded_projections_are_the_head_times_clips_projections(clip_export, expclip):
    model, _ = expclip
    folded = CLIPModel.from_pretrained(clip_export[1])
    weight = model.projection.weight.double()
    for name in ("visual_projection", "text_projection"):
        expected = weight @ getattr(model.clip, name).weight.double()
        assert torch.allclose(getattr(folded, name).weight.double(), expected, atol=1e-6)
    assert folded.logit_scale.item() == model.clip.logit_scale.item()


def test_fresh_process_cannot_import_the_package(fresh_process):
    assert fresh_process["package_importable"] is False


def test_fresh_process_loads_a_stock_clipmodel_and_pipeline_without_remote_code(fresh_process):
    assert fresh_process["model_class"] == "transformers.models.clip.modeling_clip.CLIPModel"
    assert fresh_process["pipeline_model_class"] == fresh_process["model_class"]


def test_pipeline_probabilities_equal_expclip_on_a_real_photo_type3(fresh_process, expclip, photo_dir):
    model, processor = expclip
    classifier = model.text_classifier(processor.tokenizer, BASIC_EXPRESSIONS, "type3")
    expected = model.classify(pixel_values(processor, photo_dir, ["astronaut.jpg"]), classifier).softmax(-1)[0]
    scores = fresh_process["pipeline"]
    assert set(scores) == set(BASIC_EXPRESSIONS)
    for label, probability in zip(BASIC_EXPRESSIONS, expected.tolist()):
        assert scores[label] == pytest.approx(probability, abs=1e-5)
    assert max(scores.values()) - min(scores.values()) > 1e-3  # the comparison is not between flat distributions


def test_averaged_frame_features_equal_expclip_video_features(fresh_process, expclip, photo_dir):
    model, processor = expclip
    with torch.no_grad():
        expected = model.get_video_features(pixel_values(processor, photo_dir, FRAMES)[None])[0]
    video = torch.tensor(fresh_process["video_features"])
    assert video.shape == (PROJECTION_DIM,)
    assert torch.allclose(video, expected, atol=1e-5)


def test_export_keeps_the_models_image_processor(clip_export, converted_dir):
    _, folder = clip_export
    exported = AutoImageProcessor.from_pretrained(folder)  # reads preprocessor_config.json, as transformers.js does
    assert (folder / "preprocessor_config.json").is_file()
    assert exported.do_normalize is False and exported.do_center_crop is False  # the converted head's raw pixels
    assert exported.to_dict() == CLIPProcessor.from_pretrained(converted_dir).image_processor.to_dict()


def test_model_card_names_the_method_base_prompt_and_provenance(clip_export, tiny_clip_dir):
    from huggingface_hub import ModelCard

    card = ModelCard.load(clip_export[1] / "README.md")
    assert card.data.pipeline_tag == "zero-shot-image-classification"
    assert card.data.library_name == "transformers"
    assert "exp-clip" in card.data.tags
    assert TYPE3 in card.text
    assert str(tiny_clip_dir) in card.text  # base CLIP
    assert "ExpCLIP_T_model.pth" in card.text  # provenance from the Exp-CLIP config
    assert "Salesforce/blip2-flan-t5-xxl" in card.text


def test_text_classifier_holds_the_models_prompts_for_type3_and_type5(clip_export, expclip):
    model, processor = expclip
    for prompt_set in ("type3", "type5"):
        info, spec, prompt_embeds, prompt_class, class_embeds = stored_classifier(clip_export[1], prompt_set)
        assert info["class_names"] == BASIC_EXPRESSIONS
        expected = model.text_classifier(processor.tokenizer, BASIC_EXPRESSIONS, prompt_set)
        assert spec["prompts"] == expected.prompts == build_class_prompts(BASIC_EXPRESSIONS, prompt_set)
        assert torch.equal(prompt_class, expected.prompt_class)
        assert torch.allclose(prompt_embeds, expected.prompt_embeds, atol=1e-6)
        assert torch.allclose(class_embeds, expected.class_embeds, atol=1e-6)
        assert torch.allclose(prompt_embeds.norm(dim=-1), torch.ones(len(prompt_embeds)), atol=1e-5)
    assert info["logit_scale"] == pytest.approx(model.logit_scale.item())


# ----- --to onnx -----------------------------------------------------------------------------------------------------


def test_onnx_export_uses_the_transformers_js_layout(onnx_export):
    _, folder = onnx_export
    vision, text = onnx_session(folder / "onnx" / "vision_model.onnx"), onnx_session(folder / "onnx" / "text_model.onnx")
    assert [i.name for i in vision.get_inputs()] == ["pixel_values"]
    assert [o.name for o in vision.get_outputs()] == ["image_embeds"]
    assert [i.name for i in text.get_inputs()] == ["input_ids", "attention_mask"]
    assert [o.name for o in text.get_outputs()] == ["text_embeds"]
    assert (folder / "model.safetensors").is_file() and (folder / "text_classifier.safetensors").is_file()


def test_onnx_runtime_embeds_equal_pytorch(onnx_export, photo_dir):
    _, folder = onnx_export
    clip, processor = CLIPModel.from_pretrained(folder).eval(), CLIPProcessor.from_pretrained(folder)
    pixels = pixel_values(processor, photo_dir, ["astronaut.jpg", "lfw face.png"])
    prompts = [prompt for ps in build_class_prompts(BASIC_EXPRESSIONS, "type5") for prompt in ps]
    tokens = processor.tokenizer(prompts, padding=True, return_tensors="np")
    image = onnx_session(folder / "onnx" / "vision_model.onnx").run(None, {"pixel_values": pixels.numpy()})[0]
    text = onnx_session(folder / "onnx" / "text_model.onnx").run(None, dict(tokens))[0]
    with torch.no_grad():
        expected_image = clip.get_image_features(pixel_values=pixels).pooler_output
        expected_text = clip.get_text_features(**{k: torch.from_numpy(v) for k, v in tokens.items()}).pooler_output
    assert image.shape == (2, PROJECTION_DIM) and text.shape == (len(prompts), PROJECTION_DIM)
    np.testing.assert_allclose(image, expected_image.numpy(), atol=1e-4)
    np.testing.assert_allclose(text, expected_text.numpy(), atol=1e-4)


@pytest.mark.parametrize("prompt_set", ["type3", "type5"])
def test_onnx_zero_shot_with_the_stored_classifier_equals_expclip(onnx_export, expclip, photo_dir, prompt_set):
    _, folder = onnx_export
    model, processor = expclip
    info, _, prompt_embeds, prompt_class, _ = stored_classifier(folder, prompt_set)
    pixels = pixel_values(processor, photo_dir, ["astronaut.jpg", "lfw face.png", "coffee.jpg"])
    image_embeds = onnx_session(folder / "onnx" / "vision_model.onnx").run(None, {"pixel_values": pixels.numpy()})[0]
    # What an app does with the vision model and the stored classifier: cosine per prompt, logits averaged per class.
    image_embeds = image_embeds / np.linalg.norm(image_embeds, axis=-1, keepdims=True)
    per_prompt = info["logit_scale"] * image_embeds @ prompt_embeds.numpy().T
    logits = np.stack([per_prompt[:, prompt_class.numpy() == c].mean(1) for c in range(len(info["class_names"]))], 1)
    probabilities = torch.from_numpy(logits).softmax(-1)
    expected = model.classify(pixels, model.text_classifier(processor.tokenizer, BASIC_EXPRESSIONS, prompt_set))
    assert torch.allclose(probabilities, expected.softmax(-1), atol=1e-4)


def test_python_export_to_float16_onnx_is_named_for_transformers_js_and_close(tmp_path, converted_dir, expclip,
                                                                           photo_dir):
    from expclip.export import export_model

    output = export_model(str(converted_dir), tmp_path / "onnx-fp16", to="onnx", dtype="float16", prompt_sets=["type3"])
    assert output == tmp_path / "onnx-fp16"
    assert sorted(path.name for path in (output / "onnx").iterdir()) == ["text_model_fp16.onnx", "vision_model_fp16.onnx"]
    model, processor = expclip
    pixels = pixel_values(processor, photo_dir, ["astronaut.jpg", "lfw face.png"])
    image_embeds = onnx_session(output / "onnx" / "vision_model_fp16.onnx").run(None, {"pixel_values": pixels.numpy()})[0]
    assert image_embeds.dtype == np.float32  # float32 in and out, float16 inside
    with torch.no_grad():
        expected = model.get_image_features(pixels)
    cosine = torch.nn.functional.cosine_similarity(torch.from_numpy(image_embeds), expected)
    assert cosine.min().item() > 0.999


# ----- bad inputs ----------------------------------------------------------------------------------------------------


def test_refuses_a_clip_folder_that_is_not_an_expclip_model(tmp_path, tiny_clip_dir):
    result = run_command(EXPCLIP, "export", tiny_clip_dir, "--output", tmp_path / "out", cwd=tmp_path)
    line = one_line_error(result)
    assert line == (f"expclip export: {tiny_clip_dir}: not an Exp-CLIP model (model_type 'clip' in its config.json, "
                    "expected 'expclip')")
    assert list(tmp_path.iterdir()) == []


def test_refuses_a_folder_without_a_model_or_a_missing_one(tmp_path, capsys):
    from expclip.cli import main

    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "face.jpg").write_bytes(b"not a model")
    refusals = {
        tmp_path / "photos": "not an Exp-CLIP model (no config.json in this folder)",
        tmp_path / "photos" / "face.jpg": "a file, not an Exp-CLIP model folder",
        tmp_path / "missing": "no such model folder",
    }
    for model, reason in refusals.items():
        assert main(["export", str(model), "--output", str(tmp_path / "out")]) == 1
        error = capsys.readouterr().err.strip()
        assert len(error.splitlines()) == 1 and error.startswith(f"expclip export: {model}: {reason}")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["photos"]


def test_refuses_an_existing_non_empty_output_without_overwrite(tmp_path, converted_dir):
    output = tmp_path / "out"
    output.mkdir()
    (output / "mine.txt").write_text("keep me")
    result = run_command(EXPCLIP, "export", converted_dir, "--output", output, cwd=tmp_path)
    line = one_line_error(result)
    assert line == f"expclip export: {output}: already exists and is not empty; choose another --output or pass --overwrite"
    assert [path.name for path in tmp_path.iterdir()] == ["out"]  # no temporary folder left beside it
    assert [path.name for path in output.iterdir()] == ["mine.txt"] and (output / "mine.txt").read_text() == "keep me"


def test_overwrite_never_replaces_a_folder_export_did_not_write(tmp_path, converted_dir, capsys):
    from expclip.cli import main

    output = tmp_path / "out"
    output.mkdir()
    (output / "mine.txt").write_text("keep me")
    assert main(["export", str(converted_dir), "--output", str(output), "--overwrite"]) == 1
    error = capsys.readouterr().err.strip()
    assert error == f"expclip export: {output}: not a folder written by expclip export; refusing to replace it"
    assert [path.name for path in output.iterdir()] == ["mine.txt"]


def test_onnx_without_the_onnx_packages_says_what_to_install(tmp_path, converted_dir):
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    # `sys.modules[name] = None` makes `import name` fail and importlib.util.find_spec(name) return None, as when the
    # package is not installed.
    (blocker / "sitecustomize.py").write_text(
        "import sys\nfor name in ('onnx', 'onnxruntime', 'onnxscript'):\n    sys.modules[name] = None\n"
    )
    output = tmp_path / "out"
    result = run_command(EXPCLIP, "export", converted_dir, "--to", "onnx", "--output", output, cwd=tmp_path,
                         env={"PYTHONPATH": str(blocker)})
    line = one_line_error(result)
    assert line.startswith("expclip export: --to onnx needs onnx, onnxruntime, onnxscript (not installed)")
    assert 'pip install -e ".[onnx]"' in line
    assert not output.exists()


def test_bad_labels_or_prompt_template_is_one_line_and_writes_nothing(tmp_path, converted_dir, capsys):
    from expclip.cli import main

    refusals = {
        ("--prompts", "a face without a slot.|{} face."): "must hold exactly one '{}' for the class name",
        ("--labels", "joy,,anger"): "empty label in 'joy,,anger'",
        ("--labels", "joy,joy"): "duplicate labels: joy",
    }
    for option, reason in refusals.items():
        assert main(["export", str(converted_dir), *option, "--output", str(tmp_path / "out")]) == 1
        error = capsys.readouterr().err.strip()
        assert len(error.splitlines()) == 1 and error.startswith("expclip export: ") and reason in error
    assert list(tmp_path.iterdir()) == []


# ----- options -------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def relabelled(tmp_path_factory, clip_export, converted_dir):
    """An earlier export replaced with --overwrite by one with other labels and the user's own templates."""
    work = tmp_path_factory.mktemp("relabelled")
    shutil.copytree(clip_export[1], work / "export")
    result = run_command(EXPCLIP, "export", converted_dir, "--output", work / "export", "--overwrite",
                         "--labels", "joy, boredom", "--prompts", "a face showing {}.|{}.", cwd=work)
    return result, work / "export"


def test_overwrite_replaces_an_earlier_export(relabelled):
    result, folder = relabelled
    assert result.returncode == 0, result.stderr[-3000:]
    assert [path.name for path in folder.parent.iterdir()] == ["export"]  # no temporary or replaced folder left


def test_labels_and_prompts_choose_the_stored_classifier(relabelled, expclip):
    model, processor = expclip
    info, spec, prompt_embeds, prompt_class, _ = stored_classifier(relabelled[1], "custom")
    assert info["class_names"] == ["joy", "boredom"] and list(info["prompt_sets"]) == ["custom"]
    assert spec["prompts"] == [["a face showing joy.", "joy."], ["a face showing boredom.", "boredom."]]
    expected = model.text_classifier(processor.tokenizer, ["joy", "boredom"], ["a face showing {}.", "{}."])
    assert prompt_class.tolist() == [0, 0, 1, 1]
    assert torch.allclose(prompt_embeds, expected.prompt_embeds, atol=1e-6)


# ----- the Python function -------------------------------------------------------------------------------------------


def test_export_model_raises_export_error_and_writes_nothing(tmp_path, tiny_clip_dir):
    from expclip.export import ExportError, export_model

    with pytest.raises(ExportError, match="not an Exp-CLIP model"):
        export_model(str(tiny_clip_dir), tmp_path / "out")
    with pytest.raises(ExportError, match="--dtype applies to the ONNX files only"):
        export_model(str(tiny_clip_dir), tmp_path / "out", to="clip", dtype="float16")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_check_keeps_nothing(tmp_path, converted_dir, monkeypatch):
    import expclip.export as export_expclip

    monkeypatch.setitem(export_expclip.TOLERANCE, "float32", -1.0)  # no difference can pass: the check must refuse
    with pytest.raises(export_expclip.ExportError, match="check failed: CLIPModel image_embeds differs"):
        export_expclip.export_model(str(converted_dir), tmp_path / "out")
    assert list(tmp_path.iterdir()) == []
