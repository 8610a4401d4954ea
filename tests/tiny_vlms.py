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
    return _fast(tokenizer, special_tokens, chat_template, named_tokens)


def word_tokenizer(special_tokens: list[str], words_from: str, chat_template: str | None = None,
                   **named_tokens) -> PreTrainedTokenizerFast:
    """Like `char_tokenizer`, but each word and punctuation run of `words_from` is one token (about what a real BPE
    gives English prose), so a prompt is as long as with the real tokenizer (benchmarks/gpu_bench.py)."""
    from tokenizers import pre_tokenizers

    vocab = {token: i for i, token in enumerate(special_tokens)}
    for word, _ in pre_tokenizers.Whitespace().pre_tokenize_str(words_from):
        vocab.setdefault(word, len(vocab))
    for character in CHARACTERS:
        vocab.setdefault(character, len(vocab))
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token=special_tokens[0]))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    return _fast(tokenizer, special_tokens, chat_template, named_tokens)


def _fast(tokenizer: Tokenizer, special_tokens: list[str], chat_template: str | None, named_tokens: dict):
    tokenizer.add_special_tokens([AddedToken(token, special=True, normalized=False) for token in special_tokens])
    extra = {k: v for k, v in named_tokens.items() if k not in ("pad_token", "bos_token", "eos_token", "unk_token")}
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, chat_template=chat_template, model_max_length=4096,
        **{k: v for k, v in named_tokens.items() if k in ("pad_token", "bos_token", "eos_token", "unk_token")},
        extra_special_tokens=extra or None,
    )


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


def qwen_token_ids(tokenizer) -> dict:
    ids = tokenizer.convert_tokens_to_ids
    return dict(image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
                vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"))


def tiny_qwen2_5_vl_config(tokenizer):
    from transformers import Qwen2_5_VLConfig

    vision = dict(depth=2, hidden_size=16, intermediate_size=32, num_heads=2, out_hidden_size=HIDDEN, patch_size=14,
                  spatial_merge_size=2, temporal_patch_size=2, window_size=56, fullatt_block_indexes=[1])
    text = _text(len(tokenizer), rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                    "mrope_section": [1, 1, 2]})
    return Qwen2_5_VLConfig(text_config=text, vision_config=vision, **qwen_token_ids(tokenizer))


def save_tiny_qwen2_5_vl(folder: Path, seed: int = 0) -> Path:
    from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    tokenizer = char_tokenizer(QWEN_TOKENS, pad_token="<|endoftext|>", eos_token="<|im_end|>")
    config = tiny_qwen2_5_vl_config(tokenizer)
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
    config = Qwen3VLConfig(text_config=text, vision_config=vision, **qwen_token_ids(tokenizer))
    image_processor = Qwen2VLImageProcessor(patch_size=16, min_pixels=32 * 32, max_pixels=64 * 64)
    processor = Qwen3VLProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                 video_processor=Qwen3VLVideoProcessor(), chat_template=QWEN_TEMPLATE)
    return _save(folder, config, processor, seed)


# ----- SmolVLM (Idefics3 architecture) ---------------------------------------------------------------------------

SMOLVLM_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for content in message['content'] %}{% if content['type'] == 'image' %}{{ '<image>' }}"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)


def save_tiny_smolvlm(folder: Path, seed: int = 0) -> Path:
    from transformers import SmolVLMConfig, SmolVLMImageProcessor, SmolVLMProcessor, SmolVLMVideoProcessor

    tokenizer = char_tokenizer(
        ["<|endoftext|>", "<|im_start|>", "<end_of_utterance>", "<fake_token_around_image>", "<image>", "<global-img>"],
        pad_token="<|endoftext|>", eos_token="<end_of_utterance>", image_token="<image>",
        fake_image_token="<fake_token_around_image>", global_image_token="<global-img>",
        end_of_utterance_token="<end_of_utterance>",
    )
    vision = dict(image_size=32, patch_size=8, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                  num_attention_heads=2)
    config = SmolVLMConfig(vision_config=vision, text_config={"model_type": "llama", **_text(len(tokenizer))},
                           scale_factor=2, image_token_id=tokenizer.convert_tokens_to_ids("<image>"))
    image_processor = SmolVLMImageProcessor(do_image_splitting=False, size={"longest_edge": 32},
                                            max_image_size={"longest_edge": 32})
    processor = SmolVLMProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                 video_processor=SmolVLMVideoProcessor(), image_seq_len=4,
                                 chat_template=SMOLVLM_TEMPLATE)  # (32 / 8)^2 patches / scale_factor^2
    return _save(folder, config, processor, seed)


# ----- Gemma 3 -----------------------------------------------------------------------------------------------------

GEMMA3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<start_of_turn>{{ 'model' if message['role'] == 'assistant' else "
    "message['role'] }}\n{% for content in message['content'] %}{% if content['type'] == 'image' %}<start_of_image>"
    "{% elif content['type'] == 'text' %}{{ content['text'] | trim }}{% endif %}{% endfor %}<end_of_turn>\n"
    "{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


def save_tiny_gemma3(folder: Path, seed: int = 0) -> Path:
    from transformers import Gemma3Config, Gemma3ImageProcessor, Gemma3Processor

    tokenizer = char_tokenizer(
        ["<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>", "<start_of_image>", "<end_of_image>",
         "<image_soft_token>"],
        pad_token="<pad>", eos_token="<eos>", bos_token="<bos>", boi_token="<start_of_image>",
        eoi_token="<end_of_image>", image_token="<image_soft_token>",
    )
    ids = tokenizer.convert_tokens_to_ids
    vision = dict(image_size=32, patch_size=8, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                  num_attention_heads=2)
    text = _text(len(tokenizer), sliding_window=16, query_pre_attn_scalar=8)
    config = Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=4,
                          boi_token_index=ids("<start_of_image>"), eoi_token_index=ids("<end_of_image>"),
                          image_token_index=ids("<image_soft_token>"))
    image_processor = Gemma3ImageProcessor(size={"height": 32, "width": 32}, do_pan_and_scan=False)
    processor = Gemma3Processor(image_processor=image_processor, tokenizer=tokenizer, image_seq_length=4,
                                chat_template=GEMMA3_TEMPLATE)
    return _save(folder, config, processor, seed)


# ----- LLaVA-OneVision (SigLIP + Qwen2, any-resolution tiles) ------------------------------------------------------

LLAVA_TEMPLATE = QWEN_TEMPLATE.replace("<|vision_start|><|image_pad|><|vision_end|>", "<image>\n")


def save_tiny_llava_onevision(folder: Path, seed: int = 0) -> Path:
    from transformers import (LlavaOnevisionConfig, LlavaOnevisionImageProcessor, LlavaOnevisionProcessor,
                              LlavaOnevisionVideoProcessor)

    tokenizer = char_tokenizer(["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"],
                               pad_token="<|endoftext|>", eos_token="<|im_end|>", image_token="<image>",
                               video_token="<video>")
    ids = tokenizer.convert_tokens_to_ids
    vision = dict(model_type="siglip_vision_model", image_size=32, patch_size=8, hidden_size=16, intermediate_size=32,
                  num_hidden_layers=1, num_attention_heads=2)
    pinpoints = [[32, 32], [32, 64], [64, 32], [64, 64]]
    config = LlavaOnevisionConfig(text_config={"model_type": "qwen2", **_text(len(tokenizer))}, vision_config=vision,
                                  image_token_id=ids("<image>"), video_token_id=ids("<video>"),
                                  image_grid_pinpoints=pinpoints, vision_feature_layer=-1,
                                  vision_feature_select_strategy="full")
    image_processor = LlavaOnevisionImageProcessor(size={"height": 32, "width": 32}, image_grid_pinpoints=pinpoints)
    processor = LlavaOnevisionProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                        video_processor=LlavaOnevisionVideoProcessor(), num_image_tokens=16,
                                        vision_feature_select_strategy="full", chat_template=LLAVA_TEMPLATE)
    return _save(folder, config, processor, seed)


# ----- InternVL (HF-native) -----------------------------------------------------------------------------------------

INTERNVL_TEMPLATE = QWEN_TEMPLATE.replace("<|vision_start|><|image_pad|><|vision_end|>", "<IMG_CONTEXT>\n").replace(
    "You are a helpful assistant.", "You are InternVL, a multimodal model.")


def save_tiny_internvl(folder: Path, seed: int = 0) -> Path:
    from transformers import GotOcr2ImageProcessor, InternVLConfig, InternVLProcessor, InternVLVideoProcessor

    tokenizer = char_tokenizer(["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>",
                                "<video>"],
                               pad_token="<|endoftext|>", eos_token="<|im_end|>", start_image_token="<img>",
                               end_image_token="</img>", context_image_token="<IMG_CONTEXT>", video_token="<video>")
    vision = dict(image_size=32, patch_size=8, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                  num_attention_heads=2)
    config = InternVLConfig(vision_config=vision, text_config={"model_type": "qwen2", **_text(len(tokenizer))},
                            image_token_id=tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>"), image_seq_length=4,
                            downsample_ratio=0.5)
    image_processor = GotOcr2ImageProcessor(size={"height": 32, "width": 32}, crop_to_patches=False)
    processor = InternVLProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                  video_processor=InternVLVideoProcessor(), image_seq_length=4,
                                  chat_template=INTERNVL_TEMPLATE)  # (32 / 8)^2 patches * 0.5^2
    return _save(folder, config, processor, seed)


def _save(folder: Path, config, processor, seed: int) -> Path:
    folder = Path(folder)
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(config)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("mm_input_projection_weight"):  # Gemma 3 initialises it to zeros: the image would vanish
                parameter.normal_()
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


VLM_BUILDERS = {
    "qwen2_5_vl": save_tiny_qwen2_5_vl,
    "qwen3_vl": save_tiny_qwen3_vl,
    "smolvlm": save_tiny_smolvlm,
    "gemma3": save_tiny_gemma3,
    "llava_onevision": save_tiny_llava_onevision,
    "internvl": save_tiny_internvl,
}
