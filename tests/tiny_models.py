"""Tiny models of the real architectures, built offline, saved to folders and loaded back through `from_pretrained`.

Nothing here is mocked: the tokenizer is a real CLIP byte-level BPE (its vocabulary is the 256 byte symbols and
their end-of-word forms, with no merges), the image processor is CLIP's, and the model is `CLIPModel` with a few
thousand parameters.
"""

from pathlib import Path

import torch
from tokenizers import pre_tokenizers
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

IMAGE_SIZE = 32
CLIP_EMBED_DIM = 16


def save_tiny_clip_tokenizer(folder: Path) -> CLIPTokenizer:
    """A CLIP tokenizer whose BPE has no merges: every byte is its own token."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    symbols = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {}
    for symbol in symbols + [s + "</w>" for s in symbols] + ["<|startoftext|>", "<|endoftext|>"]:
        vocab.setdefault(symbol, len(vocab))
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)
    tokenizer.save_pretrained(folder)
    return tokenizer


def tiny_clip_config(projection_dim: int = CLIP_EMBED_DIM) -> CLIPConfig:
    text = dict(
        vocab_size=1024,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=77,
        projection_dim=projection_dim,
        bos_token_id=1023 - 1,
        eos_token_id=1023,
    )
    vision = dict(
        image_size=IMAGE_SIZE,
        patch_size=8,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        projection_dim=projection_dim,
    )
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=projection_dim)


def save_tiny_clip(folder: Path, seed: int = 0) -> Path:
    """A complete tiny CLIP checkpoint folder: weights, config, tokenizer, image processor."""
    folder = Path(folder)
    tokenizer = save_tiny_clip_tokenizer(folder)
    config = tiny_clip_config()
    config.text_config.bos_token_id = tokenizer.bos_token_id
    config.text_config.eos_token_id = tokenizer.eos_token_id
    config.text_config.vocab_size = len(tokenizer)
    torch.manual_seed(seed)
    CLIPModel(config).save_pretrained(folder)
    CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    ).save_pretrained(folder)
    return folder
