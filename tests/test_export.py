"""`expclip export` (issue 12): an Exp-CLIP model as a stock CLIPModel folder (no custom code), as ONNX in the
transformers.js layout, and a ready text classifier, all through the real command; transformers.js itself runs the ONNX
export in Node (issue 22)."""

import json
import re
import shutil
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import EXPCLIP, HIDE_EXPCLIP, PROJECTION_DIM, REPO_ROOT, one_line_error, run_command
from PIL import Image
from transformers import AutoImageProcessor, CLIPModel, CLIPProcessor

from configuration_expclip import BASIC_EXPRESSIONS
from modeling_expclip import ExpCLIPModel, build_class_prompts

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


@pytest.fixture(scope="module")
def expclip(converted_dir):
    """The Exp-CLIP model and processor the exports must agree with."""
    return ExpCLIPModel.from_pretrained(converted_dir).eval(), CLIPProcessor.from_pretrained(converted_dir)


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


def test_text_classifier_json_holds_the_same_tensors_as_plain_arrays(clip_export):
    for prompt_set in ("type3", "type5"):
        _, spec, prompt_embeds, prompt_class, class_embeds = stored_classifier(clip_export[1], prompt_set)
        arrays = spec["arrays"]
        assert arrays["prompt_class"] == prompt_class.tolist()
        # float32 values as decimals that read back as the same float32s
        assert torch.equal(torch.tensor(arrays["prompt_embeds"], dtype=torch.float32), prompt_embeds)
        assert torch.equal(torch.tensor(arrays["class_embeds"], dtype=torch.float32), class_embeds)


# ----- --to onnx -----------------------------------------------------------------------------------------------------


def test_onnx_export_uses_the_transformers_js_layout(onnx_export):
    _, folder = onnx_export
    vision, text = onnx_session(folder / "onnx" / "vision_model.onnx"), onnx_session(folder / "onnx" / "text_model.onnx")
    assert [i.name for i in vision.get_inputs()] == ["pixel_values"]
    assert [o.name for o in vision.get_outputs()] == ["image_embeds"]
    assert [i.name for i in text.get_inputs()] == ["input_ids", "attention_mask"]
    assert [o.name for o in text.get_outputs()] == ["text_embeds"]
    assert (folder / "model.safetensors").is_file() and (folder / "text_classifier.safetensors").is_file()


def test_onnx_model_is_the_whole_clip_that_the_transformers_js_pipeline_loads(onnx_export):
    _, folder = onnx_export
    model = onnx_session(folder / "onnx" / "model.onnx")
    assert [i.name for i in model.get_inputs()] == ["input_ids", "attention_mask", "pixel_values"]
    assert [o.name for o in model.get_outputs()] == ["logits_per_image", "logits_per_text", "text_embeds",
                                                     "image_embeds"]


def test_onnx_model_logits_per_image_equal_expclip(onnx_export, expclip, photo_dir):
    _, folder = onnx_export
    model, processor = expclip
    pixels = pixel_values(processor, photo_dir, ["astronaut.jpg", "lfw face.png", "coffee.jpg"])
    prompts = [TYPE3.format(name) for name in ("happiness", "sadness")]  # two images' batch is not the texts' one
    tokens = processor.tokenizer(prompts, padding=True, return_tensors="np")
    logits_per_image, logits_per_text = onnx_session(folder / "onnx" / "model.onnx").run(
        ["logits_per_image", "logits_per_text"], {**tokens, "pixel_values": pixels.numpy()})
    with torch.no_grad():
        expected = model(input_ids=torch.from_numpy(tokens["input_ids"]),
                         attention_mask=torch.from_numpy(tokens["attention_mask"]), pixel_values=pixels)
    assert logits_per_image.shape == (3, 2)
    np.testing.assert_allclose(logits_per_image, expected.logits_per_image.numpy(), atol=1e-4)
    np.testing.assert_allclose(logits_per_text, expected.logits_per_image.numpy().T, atol=1e-4)
    assert np.ptp(logits_per_image) > 1e-2  # the logits differ between images and prompts


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


@pytest.fixture(scope="module")
def onnx_fp16_export(tmp_path_factory, converted_dir):
    from expclip.export import export_model

    work = tmp_path_factory.mktemp("export-onnx-fp16")
    output = export_model(str(converted_dir), work / "onnx-fp16", to="onnx", dtype="float16", prompt_sets=["type3"])
    assert output == work / "onnx-fp16"
    return output


def test_python_export_to_float16_onnx_is_named_for_transformers_js_and_close(onnx_fp16_export, expclip, photo_dir):
    output = onnx_fp16_export
    assert sorted(path.name for path in (output / "onnx").iterdir()) == [
        "model_fp16.onnx", "text_model_fp16.onnx", "vision_model_fp16.onnx"]
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
        tmp_path / "photos": "not an Exp-CLIP model folder (no config.json in it)",
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
    # the rule of every command: a folder export did not write is never offered to --overwrite
    assert line == (f"expclip export: --output {output}: is not empty and is not an earlier output of expclip export; "
                    "choose a new or empty folder")
    assert [path.name for path in tmp_path.iterdir()] == ["out"]  # no temporary folder left beside it
    assert [path.name for path in output.iterdir()] == ["mine.txt"] and (output / "mine.txt").read_text() == "keep me"


def test_overwrite_never_replaces_a_folder_export_did_not_write(tmp_path, converted_dir, capsys):
    from expclip.cli import main

    output = tmp_path / "out"
    output.mkdir()
    (output / "mine.txt").write_text("keep me")
    assert main(["export", str(converted_dir), "--output", str(output), "--overwrite"]) == 1
    error = capsys.readouterr().err.strip()
    assert error == (f"expclip export: --output {output}: is not empty and is not an earlier output of expclip export; "
                     "choose a new or empty folder")
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


def test_prompts_over_77_tokens_get_one_warning_line_and_are_kept_truncated(tmp_path, converted_dir, expclip, capsys):
    from expclip.cli import main

    model, processor = expclip
    template = "a photo of a face, " + "seen from very close, " * 3 + "with an expression of {}."  # a token a byte here
    long_prompt = template.format("joy")
    assert len(processor.tokenizer(long_prompt)["input_ids"]) > 77
    output = tmp_path / "out"
    assert main(["export", str(converted_dir), "--labels", "joy,anger", "--prompts", f"{template}|{{}}.",
                 "--output", str(output)]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == f"wrote {output}"
    assert err.strip() == (
        f"expclip export: warning: 2 prompt(s) over CLIP's 77 tokens, e.g. {long_prompt!r} "
        f"({len(processor.tokenizer(long_prompt)['input_ids'])} tokens): the stored classifier truncates them as CLIP "
        "does, but transformers.js's truncation drops the end-of-text token and scores them wrongly; shorten them for "
        "the transformers.js pipeline"
    )
    _, _, prompt_embeds, _, _ = stored_classifier(output, "custom")
    expected = model.text_classifier(processor.tokenizer, ["joy", "anger"], [template, "{}."])
    assert torch.allclose(prompt_embeds, expected.prompt_embeds, atol=1e-6)


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


# ----- transformers.js in Node on the ONNX export (issue 22) ---------------------------------------------------------

JS_DIR = Path(__file__).parent / "js"  # package.json + package-lock.json pinning @huggingface/transformers
NPM_INSTALL = "ONNXRUNTIME_NODE_INSTALL=skip npm ci --prefix tests/js"
JS_LABELS = ["happiness", "sadness", "anger"]
JS_TOLERANCE = {"fp32": 1e-5, "fp16": 1e-3}


def find_node(path: str | None = None, js_dir: Path = JS_DIR) -> str:
    """node, or a skip with the reason when Node.js is missing; a failure saying what to run when node is there but the
    npm package is not (a missing install must not pass as a skip)."""
    node = shutil.which("node", path=path)
    if node is None:
        pytest.skip("node is not installed (not on PATH): the transformers.js tests need Node.js 18 or newer")
    if not (js_dir / "node_modules" / "@huggingface" / "transformers" / "package.json").is_file():
        pytest.fail(f"@huggingface/transformers is not installed in {js_dir}: run `{NPM_INSTALL}` in the project root",
                    pytrace=False)
    return node


def test_without_node_the_transformers_js_tests_are_skipped_with_the_reason(tmp_path):
    with pytest.raises(pytest.skip.Exception, match="node is not installed"):
        find_node(path=str(tmp_path))


def test_with_node_but_without_the_npm_package_they_fail_saying_what_to_run(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "node").write_text("#!/bin/sh\n")
    (bin_dir / "node").chmod(0o755)
    with pytest.raises(pytest.fail.Exception, match=re.escape(NPM_INSTALL)):
        find_node(path=str(bin_dir), js_dir=tmp_path / "js")


@pytest.fixture(scope="module")
def node():
    return find_node()


@pytest.fixture(scope="module")
def resized_photo(tmp_path_factory, photo_dir, expclip) -> Path:
    """The astronaut at the processor's size: transformers.js's resize is not PIL's, so both get the same pixels."""
    _, processor = expclip
    image_processor = processor.image_processor
    assert image_processor.do_center_crop is False  # the converted head's square resize: size is height x width
    size = (image_processor.size["width"], image_processor.size["height"])
    photo = tmp_path_factory.mktemp("resized") / "astronaut.png"
    Image.open(photo_dir / "astronaut.jpg").convert("RGB").resize(size).save(photo)
    return photo


@pytest.fixture(scope="module")
def predicted(tmp_path_factory, converted_dir, resized_photo) -> dict:
    """`expclip predict`'s type3 probabilities of the 7 basic expressions on the resized photo."""
    result = run_command(EXPCLIP, "predict", resized_photo, "--model", converted_dir, "--prompts", "type3",
                         "--format", "json", "--workers", "0", cwd=tmp_path_factory.mktemp("predict"))
    assert result.returncode == 0, result.stderr[-3000:]
    [prediction] = json.loads(result.stdout)
    scores = prediction["scores"]
    assert list(scores) == BASIC_EXPRESSIONS
    assert max(scores.values()) - min(scores.values()) > 1e-2  # not a flat distribution
    return scores


def run_node(node: str, script: Path, *args, cwd: Path) -> dict:
    result = run_command(node, script, *args, cwd=cwd, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
def test_transformers_js_pipeline_probabilities_equal_expclip_predict(node, request, predicted, resized_photo, dtype):
    folder = request.getfixturevalue("onnx_export")[1] if dtype == "fp32" else request.getfixturevalue("onnx_fp16_export")
    # The README's one-liner: the folder named relative to the current one, the type3 template, 3 labels.
    scores = run_node(node, JS_DIR / "zero_shot.mjs", folder.name, resized_photo, ",".join(JS_LABELS), TYPE3, dtype,
                      cwd=folder.parent)
    assert sorted(scores) == sorted(JS_LABELS)
    # predict scored 7 labels: the probabilities over 3 of them are those renormalised (softmax restricted to them).
    total = sum(predicted[label] for label in JS_LABELS)
    for label in JS_LABELS:
        assert scores[label] == pytest.approx(predicted[label] / total, abs=JS_TOLERANCE[dtype])


def readme_score_example() -> str:
    """The README's JavaScript scoring example, as printed there."""
    blocks = re.findall(r"```js\n(.*?)```", (REPO_ROOT / "README.md").read_text(encoding="utf-8"), re.S)
    [example] = [block for block in blocks if block.startswith("// score.mjs")]
    return example


def test_readme_score_example_is_15_lines_of_code():
    code = [line for line in readme_score_example().splitlines() if line.strip() and not line.startswith("//")]
    assert len(code) <= 15


@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
def test_readme_score_example_gives_expclip_predicts_probabilities(node, request, tmp_path, predicted, resized_photo,
                                                                   dtype):
    folder = request.getfixturevalue("onnx_export")[1] if dtype == "fp32" else request.getfixturevalue("onnx_fp16_export")
    script = tmp_path / "score.mjs"
    script.write_text(readme_score_example(), encoding="utf-8")
    (tmp_path / "node_modules").symlink_to(JS_DIR / "node_modules")  # where `npm install` would put it
    args = [folder.name, resized_photo] + (["fp16"] if dtype == "fp16" else [])
    scores = run_node(node, script, *args, cwd=folder.parent)  # `node score.mjs expclip-l14-onnx face.jpg`, as there
    assert list(scores) == BASIC_EXPRESSIONS
    for label in BASIC_EXPRESSIONS:
        assert scores[label] == pytest.approx(predicted[label], abs=JS_TOLERANCE[dtype])


def test_onnx_model_card_shows_the_transformers_js_pipeline(onnx_export):
    from huggingface_hub import ModelCard

    card = ModelCard.load(onnx_export[1] / "README.md")
    assert "transformers.js" in card.data.tags
    assert "`onnx/model.onnx` (the whole CLIP" in card.text
    assert 'await pipeline("zero-shot-image-classification", "path/to/this/folder");' in card.text
    assert f'{{ hypothesis_template: "{TYPE3}" }}' in card.text
