"""Exp-CLIP on today's dual encoders (README: Beyond the paper): CLIP, MetaCLIP 2, SigLIP and SigLIP 2 (NaFlex) through
`AutoModel`, each scored as its own pipeline scores it, with folders of the paper's CLIP layout still loading."""

import json
import shutil
import sys
import textwrap

import pytest
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModel, AutoProcessor, pipeline

from conftest import HIDE_TORCHVISION, REPO_ROOT, one_line_error, run_command
from tiny_backbones import BACKBONE_BUILDERS

from expclip.inputs import pin_pil_image_processor
from modeling_expclip import ExpCLIPModel

LABELS = ["happiness", "sadness", "anger"]
TEMPLATE = "a photo of a face with an expression of {}."


@pytest.fixture(scope="session")
def backbone_dirs(tmp_path_factory, tiny_clip_dir) -> dict:
    """family -> a tiny stock checkpoint folder of that family (CLIP's is the shared fixture)."""
    dirs = {"clip": tiny_clip_dir}
    for family, build in BACKBONE_BUILDERS.items():
        dirs[family] = build(tmp_path_factory.mktemp(f"tiny-{family}"))
    return dirs


@pytest.fixture(scope="session")
def expclip_dirs(tmp_path_factory, backbone_dirs) -> dict:
    """family -> an Exp-CLIP folder around that backbone (random 8-wide head), saved as train_expclip.py saves one."""
    dirs = {}
    for family, source in backbone_dirs.items():
        folder = tmp_path_factory.mktemp(f"expclip-{family}")
        torch.manual_seed(0)
        ExpCLIPModel.from_clip(str(source), projection_dim=8).save_pretrained(folder)
        AutoProcessor.from_pretrained(source).save_pretrained(folder)
        pin_pil_image_processor(folder)
        dirs[family] = folder
    return dirs


def _probabilities(model, processor, image, use_projection=True):
    classifier = model.text_classifier(processor.tokenizer, LABELS, [TEMPLATE], use_projection=use_projection)
    inputs = processor(images=[image], return_tensors="pt")
    logits = model.classify(inputs.pop("pixel_values"), classifier, use_projection, **inputs)
    return model.zero_shot_probabilities(logits, classifier)[0]


@pytest.mark.parametrize("family", ["clip", "metaclip_2", "siglip", "siglip2"])
def test_pipeline_equals_classify_for_every_backbone(family, expclip_dirs, photo_dir):
    folder = expclip_dirs[family]
    image = Image.open(photo_dir / "astronaut.jpg")
    classifier = pipeline("zero-shot-image-classification", model=str(folder))
    scores = {r["label"]: r["score"] for r in classifier(image, candidate_labels=LABELS, hypothesis_template=TEMPLATE)}
    model = AutoModel.from_pretrained(folder).eval()
    assert type(model) is ExpCLIPModel and model.config.backbone_type == family
    expected = _probabilities(model, AutoProcessor.from_pretrained(folder), image)
    assert torch.allclose(torch.tensor([scores[label] for label in LABELS]), expected, atol=1e-6)


@pytest.mark.parametrize("family", ["siglip", "siglip2"])
def test_siglip_without_projection_equals_the_stock_pipeline(family, backbone_dirs, expclip_dirs, photo_dir):
    """The baseline row scores SigLIP as SigLIP's own pipeline does: prompts padded to 64, sigmoid with logit_bias."""
    stock_dir, image = backbone_dirs[family], Image.open(photo_dir / "lfw face.png").convert("RGB")
    stock = pipeline("zero-shot-image-classification", model=str(stock_dir),
                     image_processor=AutoImageProcessor.from_pretrained(stock_dir, backend="pil"))
    scores = {r["label"]: r["score"] for r in stock(image, candidate_labels=LABELS, hypothesis_template=TEMPLATE)}
    model = ExpCLIPModel.from_pretrained(expclip_dirs[family]).eval()
    ours = _probabilities(model, AutoProcessor.from_pretrained(expclip_dirs[family]), image, use_projection=False)
    assert torch.allclose(torch.tensor([scores[label] for label in LABELS]), ours, atol=1e-6)
    assert abs(sum(scores.values()) - 1) > 1e-3  # independent sigmoids, not a softmax


@pytest.mark.parametrize("family", ["siglip", "siglip2"])
def test_siglip_prompts_are_padded_to_64_by_the_model(family, expclip_dirs):
    """Tokens padded only to the longest prompt (the pipeline's padding=True) embed as the backbone's own 64 do."""
    model = ExpCLIPModel.from_pretrained(expclip_dirs[family]).eval()
    tokenizer = AutoProcessor.from_pretrained(expclip_dirs[family]).tokenizer
    prompts = [TEMPLATE.format(label) for label in LABELS]
    short = tokenizer(prompts, padding=True, return_tensors="pt")
    full = tokenizer(prompts, padding="max_length", max_length=64, return_tensors="pt")
    assert short.input_ids.shape[1] < 64
    with torch.no_grad():
        padded_by_model = model.encode_clip_text(short.input_ids, short.attention_mask)
        stock = model.clip.get_text_features(**full).pooler_output
        unpadded = model.clip.get_text_features(**short).pooler_output
    assert torch.allclose(padded_by_model, stock, atol=1e-6)
    assert not torch.allclose(unpadded, stock, atol=1e-3)


@pytest.mark.parametrize("family", ["siglip", "siglip2"])
def test_saved_folder_keeps_pil_preprocessing_with_torchvision_installed(family, expclip_dirs):
    from transformers.utils import is_torchvision_available

    assert is_torchvision_available()  # installed with the test environment: the torchvision backend is the default
    assert type(AutoImageProcessor.from_pretrained(expclip_dirs[family])).__name__.endswith("ImageProcessorPil")
    assert type(AutoProcessor.from_pretrained(expclip_dirs[family]).image_processor).__name__.endswith("Pil")


def test_predictor_of_a_folder_saved_before_the_pil_pin_resizes_with_pil(tiny_expclip_dir, tmp_path):
    """A folder saved before the pin names CLIPImageProcessor, which transformers gives its torchvision backend
    when torchvision is installed; the predictor (as evaluate and export) still loads the PIL one."""
    from expclip.predictor import ExpCLIPPredictor

    old = tmp_path / "old"
    shutil.copytree(tiny_expclip_dir, old)
    processor_config = json.loads((old / "processor_config.json").read_text())
    processor_config["image_processor"]["image_processor_type"] = "CLIPImageProcessor"
    (old / "processor_config.json").write_text(json.dumps(processor_config))
    assert not type(AutoProcessor.from_pretrained(old).image_processor).__name__.endswith("Pil")  # the trap
    predictor = ExpCLIPPredictor.from_pretrained(str(old), device="cpu", detector=None, workers=0)
    assert type(predictor.processor.image_processor).__name__ == "CLIPImageProcessorPil"


def test_folder_saved_before_siglip_support_loads(tiny_expclip_dir, tmp_path):
    """Older folders name the backbone config `clip_config`; they load and score as before."""
    old = tmp_path / "old"
    shutil.copytree(tiny_expclip_dir, old)
    config = json.loads((old / "config.json").read_text())
    config["clip_config"] = config.pop("dual_encoder_config")
    config.pop("text_padding_side")
    (old / "config.json").write_text(json.dumps(config))
    loaded, current = ExpCLIPModel.from_pretrained(old).eval(), ExpCLIPModel.from_pretrained(tiny_expclip_dir).eval()
    assert loaded.config.backbone_type == "clip" and loaded.config.clip_config.projection_dim == 16
    pixels = torch.rand(2, 3, 32, 32)
    tokenizer = AutoProcessor.from_pretrained(old).tokenizer
    assert torch.equal(loaded.classify(pixels, loaded.text_classifier(tokenizer)),
                       current.classify(pixels, current.text_classifier(tokenizer)))


def test_unsupported_backbone_is_refused_in_one_line(tmp_path):
    from transformers import BertConfig, BertModel

    BertModel(BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"unsupported backbone model_type 'bert'; supported: clip, metaclip_2, siglip, siglip2$"):
        ExpCLIPModel.from_clip(str(tmp_path), projection_dim=8)


def test_clip_and_siglip_run_without_torchvision(expclip_dirs, photo_dir):
    script = HIDE_TORCHVISION + textwrap.dedent(
        f"""
        import torch
        from PIL import Image
        from transformers import AutoModel, AutoProcessor
        from transformers.utils import is_torchvision_available
        import expclip, modeling_expclip
        assert not is_torchvision_available() and "torchvision" not in sys.modules
        image = Image.open({str(photo_dir / "astronaut.jpg")!r})
        for folder in {[str(expclip_dirs[f]) for f in ("clip", "siglip")]!r}:
            model, processor = AutoModel.from_pretrained(folder).eval(), AutoProcessor.from_pretrained(folder)
            classifier = model.text_classifier(processor.tokenizer, ["happiness", "sadness"])
            probs = model.zero_shot_probabilities(model.classify(processor(images=[image], return_tensors="pt").pixel_values, classifier), classifier)
            print(type(processor.image_processor).__name__, round(float(probs.sum()), 4))
        """
    )
    result = run_command(sys.executable, "-c", script, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["CLIPImageProcessorPil", "1.0", "SiglipImageProcessorPil", "1.0"]


def test_head_of_another_embedding_width_is_refused_in_one_line(tiny_expclip_dir, photo_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "mismatched"
    shutil.copytree(tiny_expclip_dir, folder)
    weights = load_file(folder / "model.safetensors")
    weights["projection.weight"] = torch.randn(weights["projection.weight"].shape[0], 24)  # a head for a 24-wide backbone
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    result = run_command(sys.executable, "-m", "expclip", "predict", photo_dir / "astronaut.jpg", "--model", folder,
                         "--output", tmp_path / "out.csv", cwd=REPO_ROOT)
    assert result.returncode == 1
    line = one_line_error(result)
    assert line.startswith(f"expclip predict: error: cannot load the model {str(folder)!r}: ")
    assert line.endswith("a saved weight does not fit the backbone in its config.json (the head's input width must be "
                         "the backbone's embedding width, 16)")
    assert not (tmp_path / "out.csv").exists()
