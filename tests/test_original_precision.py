"""`float16-mixed` is the original's float16 run (README: Reproducing the paper), checked against that run written out
here from the stock `CLIPModel` weights: OpenAI's `clip.load` on a GPU leaves CLIP's weights in float16, computes every
LayerNorm in float32 (its `LayerNorm` subclass casts the input up and the result back), never touches the float32
`logit_scale`, pads every prompt to 77 tokens with zeros (`clip.tokenize`, no attention mask), and runs the head in
float32; a clip's projected frame vectors are averaged in float32, then normalised. On CPU, float16 emulates it."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import REPO_ROOT, original_rule, run_command
from PIL import Image
from safetensors.torch import load_file
from transformers import AutoProcessor, CLIPModel, CLIPTokenizer

from configuration_expclip import EXPRESSION_CLASSES, ORIGINAL_CLASS_PROMPTS

CLASSES = EXPRESSION_CLASSES[:7]
NUM_FRAMES = 40


def class_prompts(prompts):
    if prompts == "type3":
        return [[f"a photo of a face with an expression of {name}."] for name in CLASSES]
    return [ORIGINAL_CLASS_PROMPTS["type5"][name] for name in CLASSES]


class OriginalFloat16:
    """The original's float16 test run on the stock CLIP weights and the saved head."""

    def __init__(self, clip_dir, expclip_dir):
        self.clip = CLIPModel.from_pretrained(clip_dir, dtype=torch.float32).eval()
        self.logit_scale = self.clip.logit_scale.detach().clone()  # float32, never converted
        self.clip.half()
        for module in self.clip.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.float()
                module.forward = self._layer_norm(module)
        self.head = load_file(expclip_dir / "model.safetensors")["projection.weight"].float()
        self.tokenizer = CLIPTokenizer.from_pretrained(clip_dir)
        self.image_processor = AutoProcessor.from_pretrained(expclip_dir).image_processor

    @staticmethod
    def _layer_norm(module):
        def forward(x):  # OpenAI CLIP's LayerNorm: computed in float32, handed on in the input's dtype
            return F.layer_norm(x.float(), module.normalized_shape, module.weight, module.bias, module.eps).to(x.dtype)
        return forward

    def tokenize(self, prompts):
        """clip.tokenize: [SOT] + tokens + [EOT], zero-padded to 77."""
        ids = torch.zeros(len(prompts), 77, dtype=torch.long)
        for row, prompt in enumerate(prompts):
            tokens = self.tokenizer(prompt, truncation=True, max_length=77)["input_ids"]
            ids[row, : len(tokens)] = torch.tensor(tokens)
        return ids

    @torch.no_grad()
    def text_embeds(self, prompts):
        features = self.clip.get_text_features(input_ids=self.tokenize(prompts)).pooler_output
        return F.normalize(features.float() @ self.head.t(), dim=-1)

    @torch.no_grad()
    def image_embeds(self, images, video=False):
        pixels = self.image_processor(images=images, return_tensors="pt")["pixel_values"].half()
        projected = self.clip.get_image_features(pixel_values=pixels).pooler_output.float() @ self.head.t()
        return F.normalize(projected.mean(0, keepdim=True) if video else projected, dim=-1)

    def logits(self, images, prompts, video=False):
        """Per-prompt logits averaged over each class's prompts (the paper's ensemble)."""
        image = self.image_embeds(images, video)
        return torch.stack([(self.logit_scale.exp() * image @ self.text_embeds(p).t()).mean(-1)
                            for p in class_prompts(prompts)], dim=-1)


@pytest.fixture(scope="module")
def original(tiny_clip_dir, tiny_expclip_dir):
    return OriginalFloat16(tiny_clip_dir, tiny_expclip_dir)


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
    """A 40-frame clip of real photo crops (the astronaut, panning), JPEG frames in a folder."""
    from skimage import data

    folder = tmp_path_factory.mktemp("clip40")
    astronaut = data.astronaut()
    for index in range(NUM_FRAMES):
        Image.fromarray(astronaut[40 + 4 * index : 240 + 4 * index, 150:330]).save(folder / f"{index:05d}.jpg")
    return folder


def photos(photo_dir):
    return sorted(photo_dir.iterdir())


def frames(clip_folder):
    return [Image.open(clip_folder / f"{i:05d}.jpg").convert("RGB") for i in original_rule(NUM_FRAMES)]


@pytest.mark.parametrize("prompts", ["type3", "type5"])
def test_predict_float16_mixed_logits_are_the_originals_float16_run(tiny_expclip_dir, photo_dir, clip_folder,
                                                                   original, prompts):
    from expclip.predictor import ExpCLIPPredictor, ItemReader, collect_items

    predictor = ExpCLIPPredictor.from_pretrained(str(tiny_expclip_dir), device="cpu", prompts=prompts, detector=None,
                                                 dtype="float16-mixed", workers=0)
    reader = ItemReader(predictor.preprocess, num_segments=16)
    images = collect_items(photos(photo_dir))
    pixels = torch.cat([reader(item)["pixel_values"] for item in images])
    clip = reader(collect_items([clip_folder], frames=True)[0])["pixel_values"]
    logits = predictor.model.classify(pixels, predictor.classifier)
    clip_logits = predictor.model.classify(clip.unsqueeze(0), predictor.classifier)

    expected = original.logits([Image.open(p).convert("RGB") for p in photos(photo_dir)], prompts)
    expected_clip = original.logits(frames(clip_folder), prompts, video=True)
    assert (logits - expected).abs().max().item() < 1e-4
    assert (clip_logits - expected_clip).abs().max().item() < 1e-4
    # the records `expclip predict` writes: their scores are those logits' softmax
    records = predictor([*photos(photo_dir), clip_folder], frames=True)
    scores = torch.tensor([[r["scores"][name] for name in CLASSES] for r in records])
    assert (scores - torch.cat([expected, expected_clip]).softmax(-1)).abs().max().item() < 5e-5


@pytest.mark.parametrize("prompts", ["type3", "type5"])
def test_evaluate_float16_mixed_logits_are_the_originals_float16_run(tiny_expclip_dir, photo_dir, clip_folder,
                                                                    original, prompts):
    from expclip.eval.evaluate import BenchmarkPixels, clip_embeddings, load_model
    from expclip.inputs import InputPipeline

    model, processor = load_model(str(tiny_expclip_dir), "float16-mixed", "cpu")
    classifier = model.text_classifier(processor.tokenizer, CLASSES, prompts)
    image_rows = [{"id": p.name, "path": str(p), "label": 0, "box": []} for p in photos(photo_dir)]
    clip_rows = [{"id": "clip", "path": str(clip_folder), "num_frames": NUM_FRAMES, "label": 0}]
    for rows, video, images in [(image_rows, False, [Image.open(p).convert("RGB") for p in photos(photo_dir)]),
                                (clip_rows, True, frames(clip_folder))]:
        pixels = BenchmarkPixels(rows, processor.image_processor, 7, video, 16, "first_frame", original_reading=True)
        _, clip_embeds, excluded = clip_embeddings(model, InputPipeline(range(len(rows)), pixels, num_workers=0), video)
        with torch.inference_mode():
            logits = model.zero_shot_logits(model.project(clip_embeds), classifier)
        assert excluded == []
        assert (logits - original.logits(images, prompts, video)).abs().max().item() < 1e-4


def test_pipeline_on_a_float16_mixed_model_gives_the_originals_float16_scores(tiny_expclip_dir, photo_dir, original):
    """The zero-shot pipeline builds its own text inputs (padded to the longest prompt): the model pads them to 77."""
    from transformers import pipeline

    from modeling_expclip import ExpCLIPModel

    model = ExpCLIPModel.from_pretrained(tiny_expclip_dir).to_original_precision().eval()
    processor = AutoProcessor.from_pretrained(tiny_expclip_dir)
    classify = pipeline("zero-shot-image-classification", model=model, tokenizer=processor.tokenizer,
                        image_processor=processor.image_processor)
    images = [Image.open(path).convert("RGB") for path in photos(photo_dir)]
    results = classify(images, candidate_labels=CLASSES,
                       hypothesis_template="a photo of a face with an expression of {}.")
    scores = torch.tensor([[{r["label"]: r["score"] for r in result}[name] for name in CLASSES] for result in results])
    assert (scores - original.logits(images, "type3").softmax(-1)).abs().max().item() < 5e-5


def test_float32_keeps_its_longest_padding_and_float16_mixed_pads_to_77(tiny_expclip_dir):
    from modeling_expclip import ExpCLIPModel

    tokenizer = CLIPTokenizer.from_pretrained(tiny_expclip_dir)
    seen = []
    for model in (ExpCLIPModel.from_pretrained(tiny_expclip_dir),
                  ExpCLIPModel.from_pretrained(tiny_expclip_dir).to_original_precision()):
        hook = model.clip.text_model.embeddings.register_forward_hook(lambda m, args, out: seen.append(out.shape[1]))
        model.text_classifier(tokenizer, CLASSES, "type3")
        hook.remove()
    longest = max(len(tokenizer(p[0])["input_ids"]) for p in class_prompts("type3"))
    assert seen == [longest, 77] and longest < 77


def test_float16_mixed_keeps_logit_scale_as_stored(tiny_clip_dir, tiny_expclip_dir):
    from modeling_expclip import ExpCLIPModel

    stored = CLIPModel.from_pretrained(tiny_clip_dir).logit_scale
    mixed = ExpCLIPModel.from_pretrained(tiny_expclip_dir).to_original_precision()
    assert mixed.clip.logit_scale.dtype == torch.float32 and torch.equal(mixed.clip.logit_scale, stored)


# ----- training: the cached CLIP features in the original's precision ----------------------------------------------


def test_paper_recipe_picks_float16_mixed_on_a_gpu_and_cpu_falls_back_to_float32():
    from expclip.features import resolve_dtype

    assert resolve_dtype("auto", "cuda", paper_recipe=True) == "float16-mixed"
    assert resolve_dtype("auto", "cuda") == "bfloat16"
    assert resolve_dtype("float16-mixed", "cuda") == "float16-mixed"
    assert resolve_dtype("auto", "cpu", paper_recipe=True) == resolve_dtype("float16-mixed", "cpu") == "float32"


def test_float16_mixed_feature_cache_holds_the_originals_float16_clip_embeddings(tiny_clip_dir, tiny_blip2_dir,
                                                                                 face_images_dir, tmp_path, original):
    from expclip.features import FeatureCacheSettings, build_feature_cache, folder_image_items

    items = [item for item in folder_image_items(face_images_dir) if "face" in Path(item.path).name][:4]
    settings = FeatureCacheSettings(str(tiny_clip_dir), str(tiny_blip2_dir), clip_dtype="float16-mixed")
    cache, skipped = build_feature_cache(items, settings, tmp_path / "cache", batch_size=4, show_progress=False,
                                         num_workers=0)
    embeds = torch.tensor(np.array(cache["clip_image_embeds"]))
    pixels = original.image_processor(images=[Image.open(item.path).convert("RGB") for item in items],
                                      return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        expected = original.clip.get_image_features(pixel_values=pixels.half()).pooler_output.float()
        float32 = CLIPModel.from_pretrained(tiny_clip_dir).get_image_features(pixel_values=pixels).pooler_output
    assert skipped == [] and len(embeds) == 4
    assert (embeds - expected).abs().max().item() < 1e-4
    assert (embeds - float32).abs().max().item() > 1e-4  # float16 did run


def test_train_clip_dtype_float16_mixed_on_cpu_runs_in_float32_and_says_so_in_one_line(tiny_clip_dir, tiny_blip2_dir,
                                                                                        face_images_dir, tmp_path):
    from huggingface_hub import ModelCard

    result = run_command(
        sys.executable, REPO_ROOT / "train_expclip.py", "--clip_model_name_or_path", tiny_clip_dir,
        "--teacher_model_name_or_path", tiny_blip2_dir, "--train_dir", face_images_dir, "--feature_cache_dir",
        tmp_path / "cache", "--output_dir", tmp_path / "out", "--global_batch_size", 16, "--shard_size", 64,
        "--extraction_batch_size", 16, "--max_steps", 1, "--use_cpu", "--clip_dtype", "float16-mixed",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert [line for line in result.stderr.splitlines() if "float16-mixed" in line] == [
        "train_expclip: CLIP runs in float32 on CPU, the original's precision there (float16-mixed needs a GPU)"]
    [settings] = (tmp_path / "cache").glob("*/settings.json")
    assert json.loads(settings.read_text())["clip_dtype"] == "float32"
    assert ModelCard.load(tmp_path / "out" / "README.md").data.hyperparameters["clip_dtype"] == "float32"
