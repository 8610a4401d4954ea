"""VLM teachers (README: Beyond the paper): the cached target of every family equals a direct computation from the
stock `AutoModelForImageTextToText` (output_hidden_states=True, the same layer and pooling, computed here), in float32.
"""

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

from tiny_vlms import VLM_BUILDERS

from configuration_expclip import INSTRUCTION
from expclip.features import FeatureCacheSettings, build_feature_cache, folder_image_items

IMAGE_SIZE = 48  # --teacher_image_size of these runs


@pytest.fixture(scope="session")
def vlm_dirs(tmp_path_factory) -> dict:
    return {family: build(tmp_path_factory.mktemp(f"tiny-{family}")) for family, build in VLM_BUILDERS.items()}


def direct_targets(folder, image_paths, layer: int, pooling: str) -> torch.Tensor:
    """The definition, written out: one user turn (image, then the instruction) through the processor's chat template
    with the generation prompt, the stock model's hidden_states[layer], pooled over non-padding tokens, normalised."""
    processor = AutoProcessor.from_pretrained(folder)
    model = AutoModelForImageTextToText.from_pretrained(folder, dtype=torch.float32).eval()
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": INSTRUCTION}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    rows = []
    for path in image_paths:
        image = Image.open(path).convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE), resample=Image.Resampling.BICUBIC)
        inputs = processor(text=[prompt], images=[image], return_tensors="pt")
        with torch.no_grad():
            states = model(**inputs, output_hidden_states=True).hidden_states[layer][0]
        rows.append(states.mean(0) if pooling == "mean" else states[-1])  # one unpadded prompt: every token is real
    return F.normalize(torch.stack(rows).float(), dim=-1)


def cached_targets(tmp_path, clip_dir, teacher_dir, image_dir, layer: int, pooling: str):
    items = folder_image_items(image_dir)
    settings = FeatureCacheSettings(
        clip_model_name_or_path=str(clip_dir), teacher_model_name_or_path=str(teacher_dir), teacher_layer=layer,
        target_pooling=pooling, teacher_image_size=IMAGE_SIZE,  # teacher_prompt None: the teacher renders it
    )
    cache, skipped = build_feature_cache(items, settings, tmp_path / "cache", batch_size=2, show_progress=False,
                                         num_workers=0)
    assert not skipped
    return [item.path for item in items], torch.tensor(cache["target_embeds"])


@pytest.mark.parametrize("family", sorted(VLM_BUILDERS))
def test_cached_target_equals_the_stock_model(family, vlm_dirs, tiny_clip_dir, photo_dir, tmp_path):
    paths, cached = cached_targets(tmp_path, tiny_clip_dir, vlm_dirs[family], photo_dir, -1, "mean")
    expected = direct_targets(vlm_dirs[family], paths, -1, "mean")
    assert cached.shape == (3, 32)
    assert torch.allclose(cached, expected, atol=1e-5)
    assert not torch.allclose(cached[0], cached[1], atol=1e-3)  # the image reaches the target


def test_layer_and_last_token_pooling(vlm_dirs, tiny_clip_dir, photo_dir, tmp_path):
    paths, cached = cached_targets(tmp_path, tiny_clip_dir, vlm_dirs["qwen2_5_vl"], photo_dir, 1, "last")
    assert torch.allclose(cached, direct_targets(vlm_dirs["qwen2_5_vl"], paths, 1, "last"), atol=1e-5)
