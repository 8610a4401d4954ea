"""The LLM teacher (README: Faithful to the paper): targets from BLIP-2's T5 encoder, loaded without the decoder."""

import json
import shutil

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from transformers import AutoImageProcessor, AutoTokenizer, Blip2ForConditionalGeneration

from configuration_expclip import INSTRUCTION
from expclip.inputs import load_image
from expclip.teacher import ExpCLIPTeacher


@pytest.fixture(scope="module")
def photos_pixels(tiny_blip2_dir, photo_dir):
    images = [load_image(path) for path in sorted(photo_dir.iterdir())]
    return AutoImageProcessor.from_pretrained(tiny_blip2_dir, backend="pil")(images, return_tensors="pt").pixel_values


@pytest.fixture(scope="module")
def teacher(tiny_blip2_dir):
    return ExpCLIPTeacher.from_pretrained(str(tiny_blip2_dir), device="cpu")


def direct_targets(folder, pixel_values, instruction=INSTRUCTION, dropout=False, seed=None, read="final_layer_norm"):
    """The recipe written out on the full BLIP-2 model: vision -> Q-Former -> projection -> concat -> encoder -> mean.

    `dropout=True`: the whole model in train mode, as the original left it; `read` says where the states are taken:
    the output of T5's final_layer_norm (the original's hook), or the encoder's last_hidden_state (after its dropout)."""
    blip2 = Blip2ForConditionalGeneration.from_pretrained(folder).train(dropout)
    input_ids = AutoTokenizer.from_pretrained(folder)(instruction, return_tensors="pt").input_ids
    encoder = blip2.language_model.get_encoder()
    at_norm = {}
    encoder.final_layer_norm.register_forward_hook(lambda module, args, output: at_norm.update(states=output))
    if seed is not None:
        torch.manual_seed(seed)
    with torch.no_grad():
        image_embeds = blip2.vision_model(pixel_values=pixel_values).last_hidden_state
        queries = blip2.query_tokens.expand(len(pixel_values), -1, -1)
        query_output = blip2.qformer(query_embeds=queries, encoder_hidden_states=image_embeds).last_hidden_state
        visual_tokens = blip2.language_projection(query_output)
        text_embeds = blip2.language_model.get_input_embeddings()(input_ids).expand(len(pixel_values), -1, -1)
        inputs_embeds = torch.cat([visual_tokens, text_embeds], dim=1)
        hidden = encoder(inputs_embeds=inputs_embeds).last_hidden_state
    return F.normalize((at_norm["states"] if read == "final_layer_norm" else hidden).mean(1), dim=-1)


def test_targets_equal_the_direct_blip2_computation(teacher, tiny_blip2_dir, photos_pixels):
    expected = direct_targets(tiny_blip2_dir, photos_pixels)
    targets = teacher(photos_pixels)
    assert targets.dtype == torch.float32
    assert targets.shape == (3, teacher.target_dim)
    torch.testing.assert_close(targets, expected, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(targets.norm(dim=-1), torch.ones(3))


def test_instruction_is_tokenised_with_closing_eos(teacher, tiny_blip2_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_blip2_dir)
    assert teacher.instruction_ids[0, -1].item() == tokenizer.eos_token_id
    assert tokenizer.decode(teacher.instruction_ids[0], skip_special_tokens=True) == INSTRUCTION


def test_loading_creates_no_decoder_or_lm_head_parameters(teacher, tiny_blip2_dir):
    names = [name for name, _ in teacher.named_parameters()]
    assert not [name for name in names if "decoder" in name or "lm_head" in name]
    full = Blip2ForConditionalGeneration.from_pretrained(tiny_blip2_dir)
    encoder_side = sum(
        p.numel() for n, p in full.named_parameters() if ".decoder." not in n and "lm_head" not in n
    )
    assert sum(p.numel() for p in teacher.parameters()) == encoder_side


def test_checkpoint_without_decoder_tensors_gives_the_same_targets(teacher, tiny_blip2_dir, photos_pixels, tmp_path):
    """The decoder is never read: a checkpoint stripped of every decoder and LM-head tensor loads and agrees."""
    stripped = tmp_path / "blip2-no-decoder"
    shutil.copytree(tiny_blip2_dir, stripped)
    index = json.loads((stripped / "model.safetensors.index.json").read_text())
    for shard in sorted(set(index["weight_map"].values())):
        tensors = {k: v for k, v in load_file(stripped / shard).items() if ".decoder." not in k and "lm_head" not in k}
        save_file(tensors, stripped / shard, metadata={"format": "pt"})
    index["weight_map"] = {k: v for k, v in index["weight_map"].items() if ".decoder." not in k and "lm_head" not in k}
    (stripped / "model.safetensors.index.json").write_text(json.dumps(index))
    reloaded = ExpCLIPTeacher.from_pretrained(str(stripped), device="cpu")
    torch.testing.assert_close(reloaded(photos_pixels), teacher(photos_pixels), atol=0, rtol=0)


def test_checkpoint_storing_the_tied_embedding_under_the_encoders_name_loads(
    teacher, tiny_blip2_dir, photos_pixels, tmp_path
):
    """T5 ties `shared` to the encoder's embed_tokens; a checkpoint that kept only the encoder's name still loads."""
    renamed = tmp_path / "blip2-encoder-embeddings"
    shutil.copytree(tiny_blip2_dir, renamed)
    index = json.loads((renamed / "model.safetensors.index.json").read_text())
    shard = index["weight_map"].pop("language_model.shared.weight")
    tensors = load_file(renamed / shard)
    tensors["language_model.encoder.embed_tokens.weight"] = tensors.pop("language_model.shared.weight")
    save_file(tensors, renamed / shard, metadata={"format": "pt"})
    index["weight_map"]["language_model.encoder.embed_tokens.weight"] = shard
    (renamed / "model.safetensors.index.json").write_text(json.dumps(index))
    reloaded = ExpCLIPTeacher.from_pretrained(str(renamed), device="cpu")
    torch.testing.assert_close(reloaded(photos_pixels), teacher(photos_pixels), atol=0, rtol=0)


def test_default_is_deterministic_eval_mode(teacher, photos_pixels):
    assert not teacher.training
    torch.testing.assert_close(teacher(photos_pixels), teacher(photos_pixels), atol=0, rtol=0)


def test_dropout_quirk_makes_targets_stochastic(tiny_blip2_dir, photos_pixels):
    quirky = ExpCLIPTeacher.from_pretrained(str(tiny_blip2_dir), device="cpu", dropout=True)
    assert quirky.training
    assert not torch.equal(quirky(photos_pixels), quirky(photos_pixels))


def test_dropout_quirk_reads_the_target_at_final_layer_norm_before_the_last_dropout(tiny_blip2_dir, photos_pixels):
    """README: Faithful to the paper: under the quirk the original read T5's final_layer_norm output, so the encoder's final dropout is not
    applied to the target; the same dropout masks (same seed) elsewhere."""
    quirky = ExpCLIPTeacher.from_pretrained(str(tiny_blip2_dir), device="cpu", dropout=True)
    torch.manual_seed(5)
    targets = quirky(photos_pixels)
    expected = direct_targets(tiny_blip2_dir, photos_pixels, dropout=True, seed=5)
    torch.testing.assert_close(targets, expected, atol=1e-6, rtol=1e-5)
    after_dropout = direct_targets(tiny_blip2_dir, photos_pixels, dropout=True, seed=5, read="last_hidden_state")
    assert not torch.allclose(targets, after_dropout, atol=1e-4)


def test_a_different_instruction_changes_the_targets(teacher, tiny_blip2_dir, photos_pixels):
    other = ExpCLIPTeacher.from_pretrained(str(tiny_blip2_dir), instruction="Describe the face.", device="cpu")
    torch.testing.assert_close(
        other(photos_pixels), direct_targets(tiny_blip2_dir, photos_pixels, "Describe the face."), atol=1e-6, rtol=1e-5
    )
    assert not torch.allclose(other(photos_pixels), teacher(photos_pixels))
