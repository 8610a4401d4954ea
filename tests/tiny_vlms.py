"""Tiny VLM teachers of the real architectures (`AutoModelForImageTextToText`), built offline: each with its own
tokenizer (a `tokenizers` BPE over single characters, the family's special tokens added), its own chat template in
the style of the real one, and its family's processor, saved and loaded back with `AutoProcessor`.
"""

import string
from pathlib import Path

import torch
from tokenizers import AddedToken, Tokenizer, models
from transformers import AutoModelForImageTextToText, PreTrainedTokenizerFast

CHARACTERS = sorted(set(string.ascii_letters + string.digits + string.punctuation + " \n"))
HIDDEN = 32  # the tiny language model's width: the width of the teacher targets


def char_tokenizer(special_tokens: list[str], chat_template: str | None = None, **named_tokens) -> PreTrainedTokenizerFast:
    """A BPE with no merges over printable characters; `special_tokens` are whole tokens (ids 0, 1, ...);
    `named_tokens` (pad_token=..., image_token=...) name some of them."""
    vocab = {token: i for i, token in enumerate(special_tokens)}
    for character in CHARACTERS:
        vocab.setdefault(character, len(vocab))
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=special_tokens[0]))
    tokenizer.add_special_tokens([AddedToken(token, special=True, normalized=False) for token in special_tokens])
    extra = {k: v for k, v in named_tokens.items() if k not in ("pad_token", "bos_token", "eos_token", "unk_token")}
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, chat_template=chat_template, model_max_length=4096,
        **{k: v for k, v in named_tokens.items() if k in ("pad_token", "bos_token", "eos_token", "unk_token")},
        extra_special_tokens=extra or None,
    )
    return fast


def _text(vocab_size: int, **extra) -> dict:
    return dict(vocab_size=vocab_size, hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, head_dim=8, **extra)


# ----- Qwen2.5-VL and Qwen3-VL ------------------------------------------------------------------------------------

QWEN_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
               "<|video_pad|>"]
QWEN_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' %}"
    "<|vision_start|><|image_pad|><|vision_end|>{% elif content['type'] == 'text' %}{{ content['text'] }}"
    "{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _qwen_ids(tokenizer) -> dict:
    ids = tokenizer.convert_tokens_to_ids
    return dict(image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
                vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"))


def save_tiny_qwen2_5_vl(folder: Path, seed: int = 0) -> Path:
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    tokenizer = char_tokenizer(QWEN_TOKENS, pad_token="<|endoftext|>", eos_token="<|im_end|>")
    vision = dict(depth=2, hidden_size=16, intermediate_size=32, num_heads=2, out_hidden_size=HIDDEN, patch_size=14,
                  spatial_merge_size=2, temporal_patch_size=2, window_size=56, fullatt_block_indexes=[1])
    text = _text(len(tokenizer), rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                    "mrope_section": [1, 1, 2]})
    config = Qwen2_5_VLConfig(text_config=text, vision_config=vision, **_qwen_ids(tokenizer))
    image_processor = Qwen2VLImageProcessor(min_pixels=28 * 28, max_pixels=56 * 56)
    processor = Qwen2_5_VLProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                    video_processor=Qwen2VLVideoProcessor(), chat_template=QWEN_TEMPLATE)
    return _save(folder, config, processor, seed)


def save_tiny_qwen3_vl(folder: Path, seed: int = 0) -> Path:
    from transformers import Qwen2VLImageProcessor, Qwen3VLConfig, Qwen3VLProcessor, Qwen3VLVideoProcessor

    tokenizer = char_tokenizer(QWEN_TOKENS, pad_token="<|endoftext|>", eos_token="<|im_end|>")
    vision = dict(depth=2, hidden_size=16, intermediate_size=32, num_heads=2, out_hidden_size=HIDDEN, patch_size=16,
                  spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=16, deepstack_visual_indexes=[1])
    text = _text(len(tokenizer), rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                    "mrope_section": [1, 1, 2], "mrope_interleaved": True})
    config = Qwen3VLConfig(text_config=text, vision_config=vision, **_qwen_ids(tokenizer))
    image_processor = Qwen2VLImageProcessor(patch_size=16, min_pixels=32 * 32, max_pixels=64 * 64)
    processor = Qwen3VLProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                 video_processor=Qwen3VLVideoProcessor(), chat_template=QWEN_TEMPLATE)
    return _save(folder, config, processor, seed)


def _save(folder: Path, config, processor, seed: int) -> Path:
    folder = Path(folder)
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(config)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


VLM_BUILDERS = {
    "qwen2_5_vl": save_tiny_qwen2_5_vl,
    "qwen3_vl": save_tiny_qwen3_vl,
}
