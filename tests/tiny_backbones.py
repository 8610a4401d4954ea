"""Tiny dual encoders of the other backbone families (MetaCLIP 2, SigLIP, SigLIP 2 NaFlex), built offline, saved to
folders with their own tokenizer and processor, and loaded back through `from_pretrained` / `AutoProcessor`.

The tokenizers are the families' real classes over a character vocabulary (no merges), the processors are the
families' own, the models a few thousand random parameters. CLIP itself is tests/tiny_models.py.
"""

import string
from pathlib import Path

import torch
from transformers import (
    CLIPImageProcessor,
    CLIPProcessor,
    GemmaTokenizer,
    MetaClip2Config,
    MetaClip2Model,
    Siglip2Config,
    Siglip2ImageProcessor,
    Siglip2Model,
    Siglip2Processor,
    Siglip2Tokenizer,
    SiglipConfig,
    SiglipImageProcessor,
    SiglipModel,
    SiglipProcessor,
    XLMRobertaTokenizer,
)

IMAGE_SIZE = 32
PATCH_SIZE = 8
WIDTH = 16  # hidden size of both towers: SigLIP's embedding width; MetaCLIP 2 projects to EMBED_DIM
EMBED_DIM = 16
CHARACTERS = sorted(set(string.ascii_letters + string.digits + string.punctuation))


def _towers(vocab_size: int, max_positions: int, **text) -> tuple[dict, dict]:
    text = dict(vocab_size=vocab_size, hidden_size=WIDTH, intermediate_size=32, num_hidden_layers=1,
                num_attention_heads=2, max_position_embeddings=max_positions, **text)
    vision = dict(image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, hidden_size=WIDTH, intermediate_size=32,
                  num_hidden_layers=1, num_attention_heads=2)
    return text, vision


def gemma_vocab() -> dict[str, int]:
    """Gemma's special tokens, the word marker and one token per printable character (BPE without merges)."""
    vocab = {}
    for symbol in ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "\u2581"] + CHARACTERS + ["\u2581" + c for c in CHARACTERS]:
        vocab.setdefault(symbol, len(vocab))
    return vocab


def save_tiny_metaclip_2(folder: Path, seed: int = 0) -> Path:
    """MetaCLIP 2: CLIP's architecture with an XLM-R (Unigram) tokenizer, CLIP's image processor."""
    folder = Path(folder)
    vocab = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    vocab += [(c, -3.0) for c in CHARACTERS] + [("\u2581" + c, -2.5) for c in CHARACTERS]
    tokenizer = XLMRobertaTokenizer(vocab=vocab, model_max_length=77)
    text, vision = _towers(len(tokenizer), 77, bos_token_id=0, pad_token_id=1, eos_token_id=2, projection_dim=EMBED_DIM)
    torch.manual_seed(seed)
    MetaClip2Model(MetaClip2Config(text_config=text, vision_config={**vision, "projection_dim": EMBED_DIM},
                                   projection_dim=EMBED_DIM)).save_pretrained(folder)
    image_processor = CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE},
                                         crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return folder


def save_tiny_siglip(folder: Path, seed: int = 0) -> Path:
    """Fixed-resolution SigLIP as the SigLIP 2 checkpoints ship it (model_type "siglip", Gemma tokenizer)."""
    folder = Path(folder)
    tokenizer = GemmaTokenizer(vocab=gemma_vocab(), merges=[], padding_side="right")
    text, vision = _towers(len(tokenizer), 64, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                           eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(seed)
    model = SiglipModel(SiglipConfig(text_config=text, vision_config=vision))
    with torch.no_grad():
        model.logit_bias.fill_(-2.5)  # a bias that moves the sigmoid, as real SigLIP's does (about -16)
    model.save_pretrained(folder)
    image_processor = SiglipImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    SiglipProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return folder


def tiny_siglip2_config(tokenizer) -> Siglip2Config:
    text, vision = _towers(len(tokenizer), 64, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                           eos_token_id=tokenizer.eos_token_id)
    # Siglip2Processor passes its defaults (16 px patches, at most 256) to the image processor: the tiny model uses them.
    vision = {key: value for key, value in vision.items() if key != "image_size"} | {"patch_size": 16}
    return Siglip2Config(text_config=text, vision_config={**vision, "num_patches": 256})


def save_tiny_siglip2(folder: Path, seed: int = 0) -> Path:
    """SigLIP 2 NaFlex (model_type "siglip2"): patch sequences of any aspect ratio, up to 256 patches of 16 px."""
    folder = Path(folder)
    tokenizer = Siglip2Tokenizer(vocab=gemma_vocab(), merges=[])  # pads on the left, as the class does by default
    torch.manual_seed(seed)
    model = Siglip2Model(tiny_siglip2_config(tokenizer))
    with torch.no_grad():
        model.logit_bias.fill_(-2.5)
    model.save_pretrained(folder)
    image_processor = Siglip2ImageProcessor(patch_size=16, max_num_patches=256)  # the processor's defaults
    Siglip2Processor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return folder


BACKBONE_BUILDERS = {
    "metaclip_2": save_tiny_metaclip_2,
    "siglip": save_tiny_siglip,
    "siglip2": save_tiny_siglip2,
}
