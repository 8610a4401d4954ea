"""A saved Exp-CLIP folder is a complete Hub model repository with custom code (issue 2, item 3)."""

import json
import sys
import textwrap

import pytest
import torch
from conftest import HIDE_EXPCLIP, run_command
from PIL import Image
from transformers import AutoConfig, AutoModel, AutoModelForZeroShotImageClassification, AutoProcessor, pipeline

LABELS = ["happiness", "sadness", "anger"]
TEMPLATE = "a photo of a face with an expression of {}."

# Runs in a fresh interpreter (-I: no cwd, no PYTHON* variables) where nothing of this project can be imported,
# however it was installed: the folder's own code files must carry the model.
FRESH_PROCESS = HIDE_EXPCLIP + textwrap.dedent(
    """

    import torch
    from PIL import Image
    from transformers import AutoModel, AutoProcessor, pipeline

    folder, labels, template, images = sys.argv[1], sys.argv[2].split(","), sys.argv[3], sys.argv[4:]
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    classifier = pipeline("zero-shot-image-classification", model=folder, trust_remote_code=True)
    results = []
    for image in images:
        scores = classifier(image, candidate_labels=labels, hypothesis_template=template)
        inputs = processor(
            text=[template.format(label) for label in labels], images=Image.open(image).convert("RGB"),
            return_tensors="pt", padding=True,
        )
        with torch.no_grad():
            own = model(**inputs).logits_per_image.softmax(-1)[0]
        results.append({"pipeline": {s["label"]: s["score"] for s in scores}, "model": dict(zip(labels, own.tolist()))})
    print(json.dumps({
        "package_importable": package_importable,
        "model_class": type(model).__module__ + "." + type(model).__name__,
        "pipeline_model_class": type(classifier.model).__module__ + "." + type(classifier.model).__name__,
        "results": results,
    }))
    """
)


@pytest.fixture(scope="module")
def fresh_process(tmp_path_factory, tiny_expclip_dir, photo_dir):
    """One fresh interpreter that loads the folder via AutoModel and via the pipeline, on a JPEG and a PNG."""
    cwd = tmp_path_factory.mktemp("fresh-process")
    images = [photo_dir / "astronaut.jpg", photo_dir / "lfw face.png"]
    result = run_command(
        sys.executable, "-I", "-c", FRESH_PROCESS, tiny_expclip_dir, ",".join(LABELS), TEMPLATE, *images,
        cwd=cwd, env={"HF_MODULES_CACHE": str(cwd / "modules")},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_saved_folder_has_model_code_and_auto_map(tiny_expclip_dir):
    names = {path.name for path in tiny_expclip_dir.iterdir()}
    assert {"model.safetensors", "config.json", "configuration_expclip.py", "modeling_expclip.py"} <= names
    auto_map = json.loads((tiny_expclip_dir / "config.json").read_text())["auto_map"]
    assert set(auto_map) == {"AutoConfig", "AutoModel", "AutoModelForZeroShotImageClassification"}


def test_fresh_process_cannot_import_the_package(fresh_process):
    assert fresh_process["package_importable"] is False


def test_fresh_process_loads_the_folder_code_via_automodel_and_pipeline(fresh_process):
    assert fresh_process["model_class"].startswith("transformers_modules.")
    assert fresh_process["model_class"].endswith("modeling_expclip.ExpCLIPModel")
    assert fresh_process["pipeline_model_class"] == fresh_process["model_class"]


def test_pipeline_scores_equal_softmax_of_the_models_own_logits(fresh_process):
    assert len(fresh_process["results"]) == 2  # the JPEG and the PNG
    for result in fresh_process["results"]:
        assert set(result["pipeline"]) == set(LABELS)
        for label in LABELS:
            assert result["pipeline"][label] == pytest.approx(result["model"][label], abs=1e-6)
        assert sum(result["pipeline"].values()) == pytest.approx(1.0, abs=1e-5)


def test_registered_package_loads_without_trust_remote_code(tiny_expclip_dir, photo_dir):
    from modeling_expclip import ExpCLIPConfig, ExpCLIPModel, register_expclip

    register_expclip()
    assert type(AutoConfig.from_pretrained(tiny_expclip_dir)) is ExpCLIPConfig
    assert type(AutoModel.from_pretrained(tiny_expclip_dir)) is ExpCLIPModel
    assert type(AutoModelForZeroShotImageClassification.from_pretrained(tiny_expclip_dir)) is ExpCLIPModel
    classifier = pipeline("zero-shot-image-classification", model=str(tiny_expclip_dir))
    assert type(classifier.model) is ExpCLIPModel
    image = Image.open(photo_dir / "coffee.jpg").convert("RGB")
    scores = classifier(image, candidate_labels=LABELS, hypothesis_template=TEMPLATE)
    inputs = AutoProcessor.from_pretrained(tiny_expclip_dir)(
        text=[TEMPLATE.format(label) for label in LABELS], images=image, return_tensors="pt", padding=True
    )
    with torch.no_grad():
        own = classifier.model(**inputs).logits_per_image.softmax(-1)[0]
    assert {s["label"]: s["score"] for s in scores} == pytest.approx(dict(zip(LABELS, own.tolist())), abs=1e-6)
