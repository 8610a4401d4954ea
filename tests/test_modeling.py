"""ExpCLIPModel: frozen CLIP + one linear head (paper: Method), the InfoNCE loss (README: Training), zero-shot prompt ensembles and video
sampling (README: Reproducing the paper), against direct computations with a tiny real CLIP."""

import pytest
import torch
import torch.nn.functional as F
from tiny_models import CLIP_EMBED_DIM, IMAGE_SIZE
from transformers import CLIPModel, CLIPTokenizer, Trainer, TrainingArguments

from configuration_expclip import PROMPT_SETS, ExpCLIPConfig
from modeling_expclip import ExpCLIPModel, contrastive_loss, sample_segment_indices

PROJECTION_DIM = 32


def clip_state(model):
    return {name: tensor.detach().clone() for name, tensor in model.clip.state_dict().items()}


def batch_of_images(n, seed=0):
    return torch.rand(n, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(seed))


def teacher_targets(n, seed=1):
    return F.normalize(torch.randn(n, PROJECTION_DIM, generator=torch.Generator().manual_seed(seed)), dim=-1)


@pytest.fixture(scope="module")
def model(tiny_clip_dir):
    torch.manual_seed(0)
    return ExpCLIPModel.from_clip(str(tiny_clip_dir), projection_dim=PROJECTION_DIM).eval()


@pytest.fixture(scope="module")
def tokenizer(tiny_clip_dir):
    return CLIPTokenizer.from_pretrained(tiny_clip_dir)


@pytest.fixture(scope="module")
def clip(tiny_clip_dir):
    return CLIPModel.from_pretrained(tiny_clip_dir).eval()


# ----- freezing (paper: Method): only the projection ever learns --------------------------------------------------------


def fresh_model(tiny_clip_dir, tiny_expclip_dir, how):
    if how == "from_clip":
        return ExpCLIPModel.from_clip(str(tiny_clip_dir), projection_dim=PROJECTION_DIM)
    model = ExpCLIPModel.from_pretrained(tiny_expclip_dir)
    return model.train() if how == "from_pretrained_then_train" else model


@pytest.mark.parametrize("how", ["from_clip", "from_pretrained", "from_pretrained_then_train"])
def test_sgd_on_the_loss_changes_only_the_projection(tiny_clip_dir, tiny_expclip_dir, how):
    model = fresh_model(tiny_clip_dir, tiny_expclip_dir, how)
    before, projection_before = clip_state(model), model.projection.weight.detach().clone()
    # README: Training optimiser over ALL parameters: weight decay would move CLIP if any CLIP weight had a gradient.
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9, weight_decay=1e-4)
    for step in range(3):
        loss = model(pixel_values=batch_of_images(4, seed=step), target_embeds=teacher_targets(4, seed=step)).loss
        optimizer.zero_grad()
        loss.backward()
        assert [name for name, p in model.named_parameters() if p.grad is not None] == ["projection.weight"]
        optimizer.step()
    assert all(torch.equal(before[name], tensor) for name, tensor in model.clip.state_dict().items())
    assert not torch.equal(projection_before, model.projection.weight)
    assert [name for name, p in model.named_parameters() if p.requires_grad] == ["projection.weight"]
    assert model.clip.training is False


def test_train_mode_keeps_clip_in_eval_mode(model):
    model.train()
    try:
        assert model.training and model.projection.training
        assert not any(module.training for module in model.clip.modules())
    finally:
        model.eval()


def test_trainer_steps_on_cached_vectors_change_only_the_projection(tiny_clip_dir, tmp_path):
    model = ExpCLIPModel.from_clip(str(tiny_clip_dir), projection_dim=PROJECTION_DIM)
    before, projection_before = clip_state(model), model.projection.weight.detach().clone()
    clip_image_embeds = torch.randn(16, CLIP_EMBED_DIM, generator=torch.Generator().manual_seed(3))
    targets = teacher_targets(16)
    dataset = [{"clip_image_embeds": x, "target_embeds": t} for x, t in zip(clip_image_embeds, targets)]
    args = TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=8, max_steps=2, learning_rate=0.5,
        optim="sgd", save_strategy="no", report_to=[], use_cpu=True, logging_strategy="no", disable_tqdm=True,
    )
    Trainer(model=model, args=args, train_dataset=dataset).train()
    assert all(torch.equal(before[name], tensor) for name, tensor in model.clip.state_dict().items())
    assert not torch.equal(projection_before, model.projection.weight)
    assert model.clip.training is False


# ----- the loss (README: Training) -----------------------------------------------------------------------------------------


def test_contrastive_loss_is_the_symmetric_info_nce_by_hand():
    image_embeds, target_embeds = teacher_targets(5, seed=10), teacher_targets(5, seed=11)
    scale = 100.0
    similarity = [[scale * float(image_embeds[i] @ target_embeds[j]) for j in range(5)] for i in range(5)]
    image_to_target = -sum(
        similarity[i][i] - torch.logsumexp(torch.tensor(similarity[i]), 0).item() for i in range(5)
    ) / 5
    target_to_image = -sum(
        similarity[j][j] - torch.logsumexp(torch.tensor([similarity[i][j] for i in range(5)]), 0).item()
        for j in range(5)
    ) / 5
    expected = 0.5 * image_to_target + 0.5 * target_to_image
    assert contrastive_loss(image_embeds, target_embeds, scale).item() == pytest.approx(expected, rel=1e-5)


def test_forward_loss_is_the_info_nce_of_projected_images_and_targets(model):
    clip_image_embeds = torch.randn(6, CLIP_EMBED_DIM, generator=torch.Generator().manual_seed(4))
    targets = teacher_targets(6)
    output = model(clip_image_embeds=clip_image_embeds, target_embeds=targets)
    projected = F.normalize(clip_image_embeds @ model.projection.weight.t(), dim=-1)
    assert torch.allclose(output.image_embeds, projected, atol=1e-6)
    assert output.loss.item() == pytest.approx(contrastive_loss(projected, targets, 100.0).item(), rel=1e-5)


# ----- zero-shot scoring and prompt ensembles (paper: Method; README: Reproducing the paper) -------------------------------------------------------


def direct_prompt_embeds(clip, tokenizer, head, prompts):
    """Each prompt on its own through plain CLIP, then the head, then normalised."""
    with torch.no_grad():
        rows = [clip.get_text_features(**tokenizer([p], return_tensors="pt")).pooler_output for p in prompts]
    return F.normalize(torch.cat(rows) @ head.t(), dim=-1)


@pytest.mark.parametrize("ensemble", ["logits", "embeddings"])
def test_prompt_ensemble_with_override_matches_direct_computation(model, clip, tokenizer, ensemble):
    class_names = ["happiness", "sadness", "anger"]
    overrides = {"sadness": ["a sad face.", "a photo of sorrow.", "tears."]}  # 3 prompts where the others have 10
    classifier = model.text_classifier(tokenizer, class_names, "type5-templates", overrides, ensemble=ensemble)
    images = batch_of_images(3, seed=5)
    logits = model.classify(images, classifier)

    head, scale = model.projection.weight.detach(), clip.logit_scale.exp()
    with torch.no_grad():
        image_embeds = F.normalize(clip.get_image_features(pixel_values=images).pooler_output @ head.t(), dim=-1)
    expected = torch.zeros(3, 3)
    for c, name in enumerate(class_names):
        prompts = overrides.get(name) or [t.format(name) for t in PROMPT_SETS["type5-templates"]]
        text = direct_prompt_embeds(clip, tokenizer, head, prompts)
        if ensemble == "logits":  # the paper: mean of the per-prompt logits
            expected[:, c] = (scale * image_embeds @ text.t()).mean(1)
        else:  # common CLIP practice: logit with the normalised mean prompt embedding
            expected[:, c] = scale * image_embeds @ F.normalize(text.mean(0), dim=-1)
    assert torch.allclose(logits, expected, atol=1e-4)


def test_logit_and_embedding_averaging_differ(model, tokenizer):
    images = batch_of_images(4, seed=6)
    by_logits = model.classify(images, model.text_classifier(tokenizer, prompt_templates="type5", ensemble="logits"))
    by_embeds = model.classify(images, model.text_classifier(tokenizer, prompt_templates="type5", ensemble="embeddings"))
    assert not torch.allclose(by_logits, by_embeds, atol=1e-4)


def test_forward_logits_are_clip_scaled_cosines_of_the_projected_embeddings(model, clip, tokenizer):
    images = batch_of_images(2, seed=7)
    tokens = tokenizer(["a smiling face.", "a frowning face."], padding=True, return_tensors="pt")
    output = model(pixel_values=images, **tokens)
    head = model.projection.weight.detach()
    with torch.no_grad():
        image = F.normalize(clip.get_image_features(pixel_values=images).pooler_output @ head.t(), dim=-1)
        text = F.normalize(clip.get_text_features(**tokens).pooler_output @ head.t(), dim=-1)
    assert torch.allclose(output.logits_per_image, clip.logit_scale.exp() * image @ text.t(), atol=1e-5)
    assert torch.equal(output.logits_per_text, output.logits_per_image.t())


def test_without_projection_scores_are_plain_clip(model, clip, tokenizer):
    images = batch_of_images(2, seed=8)
    classifier = model.text_classifier(tokenizer, ["happiness", "anger"], "type3", use_projection=False)
    logits = model.classify(images, classifier, use_projection=False)
    prompts = ["a photo of a face with an expression of happiness.", "a photo of a face with an expression of anger."]
    with torch.no_grad():
        expected = clip(**tokenizer(prompts, padding=True, return_tensors="pt"), pixel_values=images).logits_per_image
    assert torch.allclose(logits, expected, atol=1e-4)


# ----- video (paper: Method; README: Reproducing the paper) ----------------------------------------------------------------------------------------


def test_video_embeds_average_projected_frames_before_normalising(model, clip):
    clips = torch.rand(2, 5, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(9))
    video_embeds = model.get_video_features(clips)
    head = model.projection.weight.detach()
    with torch.no_grad():
        expected = torch.stack(
            [F.normalize((clip.get_image_features(pixel_values=c).pooler_output @ head.t()).mean(0), dim=-1)
             for c in clips]
        )
    assert torch.allclose(video_embeds, expected, atol=1e-5)
    # ... which is not the mean of normalised frame embeddings
    frame_normalised_mean = torch.stack([model.get_image_features(c).mean(0) for c in clips])
    assert not torch.allclose(video_embeds, F.normalize(frame_normalised_mean, dim=-1), atol=1e-4)


def test_classify_scores_clips_like_forward(model, tokenizer):
    clips = torch.rand(3, 4, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(12))
    classifier = model.text_classifier(tokenizer, ["happiness", "anger"], "type3")
    tokens = tokenizer([p[0] for p in classifier.prompts], padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = model(pixel_values=clips, **tokens).logits_per_image
    assert torch.allclose(model.classify(clips, classifier, batch_size=2), expected, atol=1e-5)


def test_text_classifier_cache_follows_a_dtype_change(tiny_expclip_dir, tokenizer):
    model = ExpCLIPModel.from_pretrained(tiny_expclip_dir).eval()
    full = model.text_classifier(tokenizer)
    half = model.to(torch.bfloat16).text_classifier(tokenizer)
    assert (full.prompt_embeds.dtype, half.prompt_embeds.dtype) == (torch.float32, torch.bfloat16)
    assert torch.allclose(half.prompt_embeds.float(), full.prompt_embeds, atol=2e-2)
    logits = model.classify(batch_of_images(2), half)
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits).all()


@pytest.mark.parametrize(
    "num_frames, short_clip, expected",
    [
        (5, "even", [0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 4, 4, 4]),
        (5, "first_frame", [0] * 16),
        (16, "even", list(range(16))),
        (16, "first_frame", [0] * 16),  # the original's quirk covers 16 frames too
        (17, "even", [0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16]),
        (17, "first_frame", [0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16]),
        (144, "even", [4 + 9 * k for k in range(16)]),
        (144, "first_frame", [4 + 9 * k for k in range(16)]),
    ],
)
def test_sample_segment_indices(num_frames, short_clip, expected):
    assert sample_segment_indices(num_frames, 16, short_clip) == expected


# ----- config -----------------------------------------------------------------------------------------------------


def test_config_round_trip_keeps_labels_prompts_and_provenance(model, tmp_path):
    config = ExpCLIPConfig(
        clip_config=model.config.clip_config.to_dict(),
        projection_dim=PROJECTION_DIM,
        class_names=["happiness", "contempt", "boredom"],
        prompt_templates=["a face showing {}.", "{}."],
        prompt_overrides={"boredom": ["a bored face."]},
        ensemble="embeddings",
        num_segments=8,
        clip_model_name_or_path="openai/clip-vit-base-patch16",
        teacher_model_name_or_path="Salesforce/blip2-flan-t5-xl",
        instruction="Describe the face.",
        teacher_dropout=True,
    )
    config.save_pretrained(tmp_path)
    loaded = ExpCLIPConfig.from_pretrained(tmp_path)
    for field in (
        "projection_dim", "class_names", "prompt_templates", "prompt_overrides", "ensemble", "num_segments",
        "clip_model_name_or_path", "teacher_model_name_or_path", "instruction", "teacher_dropout", "target_pooling",
    ):
        assert getattr(loaded, field) == getattr(config, field), field
    assert loaded.clip_embed_dim == CLIP_EMBED_DIM
    assert loaded.clip_config.vision_config.image_size == IMAGE_SIZE


# ----- the original's precision on a GPU (README: Reproducing the paper) ----------------------------------------------------------------


def test_original_precision_runs_layernorm_and_head_in_float32_and_the_rest_in_float16(tiny_expclip_dir):
    model = ExpCLIPModel.from_pretrained(tiny_expclip_dir).to_original_precision()
    layer_norms = [m for m in model.clip.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert len(layer_norms) == 7  # text: 2 per layer + final; vision: pre, 2 per layer, post
    seen = {}

    def record(module, args, output):  # runs after the model's own hooks: input cast up, output cast back
        seen[module] = (args[0].dtype, output.dtype)

    hooks = [m.register_forward_hook(record) for m in layer_norms]
    model.classify(batch_of_images(2), model.text_classifier(CLIPTokenizer.from_pretrained(tiny_expclip_dir)))
    for hook in hooks:
        hook.remove()
    ln_params = {id(p) for m in layer_norms for p in m.parameters()}
    for name, parameter in model.named_parameters():
        expected = torch.float32 if id(parameter) in ln_params or name in ("projection.weight", "clip.logit_scale") \
            else torch.float16
        assert parameter.dtype == expected, name
    # every LayerNorm computed in float32, its output handed on in float16 (README: Reproducing the paper: OpenAI CLIP's LayerNorm)
    assert set(seen) == set(layer_norms) and set(seen.values()) == {(torch.float32, torch.float16)}


def test_original_precision_scores_are_within_1e_2_of_float32(tiny_expclip_dir):
    tokenizer = CLIPTokenizer.from_pretrained(tiny_expclip_dir)
    images = batch_of_images(6, seed=11)
    reference = ExpCLIPModel.from_pretrained(tiny_expclip_dir).eval()
    mixed = ExpCLIPModel.from_pretrained(tiny_expclip_dir).to_original_precision().eval()
    expected = reference.classify(images, reference.text_classifier(tokenizer, prompt_templates="type5"))
    logits = mixed.classify(images, mixed.text_classifier(tokenizer, prompt_templates="type5"))
    assert logits.dtype == torch.float32
    assert (logits.softmax(-1) - expected.softmax(-1)).abs().max().item() < 1e-2  # scores (probabilities)
    assert (logits - expected).abs().max().item() < 5e-2  # logits are scaled cosines x 100
    assert not torch.equal(logits, expected)  # float16 did run
