"""A tiny BLIP-2 + T5 checkpoint folder of the real architecture (`Blip2ForConditionalGeneration`), built offline.

The teacher tokenizer is a real `T5Tokenizer` (a `tokenizers` Unigram model over single characters, ending every
text with `</s>`), the image processor is BLIP-2's own, and the weights are a few thousand random parameters.
"""

import string
from pathlib import Path

import torch
from transformers import Blip2Config, Blip2ForConditionalGeneration, BlipImageProcessor, T5Config, T5Tokenizer

from configuration_expclip import INSTRUCTION

IMAGE_SIZE = 32
TEACHER_DIM = 24  # the tiny T5's d_model: the width of the teacher targets
NUM_QUERY_TOKENS = 4


def save_tiny_t5_tokenizer(folder: Path) -> T5Tokenizer:
    """A T5 tokenizer whose Unigram vocabulary is the printable ASCII characters, with and without the word marker."""
    chars = sorted(set(string.ascii_letters + string.digits + string.punctuation))
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    vocab += [(c, -3.0) for c in chars] + [("\u2581" + c, -2.5) for c in chars]
    vocab += [("\u2581" + word, -1.0) for word in sorted(set(INSTRUCTION.replace(".", " ").split()))]  # whole words
    tokenizer = T5Tokenizer(vocab=vocab, extra_ids=0)
    tokenizer.save_pretrained(folder)
    return tokenizer


def tiny_blip2_config(vocab_size: int) -> Blip2Config:
    vision = dict(
        image_size=IMAGE_SIZE, patch_size=8, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, initializer_range=0.3,
    )
    qformer = dict(
        hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, encoder_hidden_size=16,
        vocab_size=64, max_position_embeddings=32, initializer_range=0.3,
    )
    text = T5Config(
        vocab_size=vocab_size, d_model=TEACHER_DIM, d_kv=8, d_ff=32, num_layers=1, num_decoder_layers=1, num_heads=2,
        decoder_start_token_id=0, pad_token_id=0, eos_token_id=1, dropout_rate=0.1,
    )
    # Weights far larger than BLIP-2's 0.02 init, so a few thousand random parameters still let the image through.
    return Blip2Config(
        vision_config=vision, qformer_config=qformer, text_config=text.to_dict(), num_query_tokens=NUM_QUERY_TOKENS,
        initializer_range=0.3,
    )


def save_tiny_blip2(folder: Path, seed: int = 0) -> Path:
    """A complete tiny BLIP-2 + T5 checkpoint folder: safetensors (decoder included), config, tokenizer, processor."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = save_tiny_t5_tokenizer(folder)
    torch.manual_seed(seed)
    model = Blip2ForConditionalGeneration(tiny_blip2_config(len(tokenizer)))
    with torch.no_grad():  # zero query tokens and a 0.02-std projection would leave the targets blind to the image
        model.query_tokens.normal_()
        model.language_projection.weight.normal_(std=1.0)
    model.save_pretrained(folder, max_shard_size="40KB")  # several shards + index, like the real checkpoint
    BlipImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}).save_pretrained(folder)
    return folder
