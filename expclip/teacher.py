"""The LLM teacher of Exp-CLIP (README: Faithful to the paper): one L2-normalised target vector per face image from BLIP-2's T5 encoder,
or (README: Beyond the paper) from any open VLM of TEACHER_FAMILIES.

    image -> vision encoder -> Q-Former (32 queries) -> language projection   # 32 "visual tokens" in T5's space
          -> [visual tokens ; T5 embeddings of the instruction + </s>] -> T5 ENCODER (final layer norm included)
          -> mean over all positions -> float32 -> L2-normalise              # the target, e.g. 4096-d

Works with any BLIP-2 + T5 checkpoint of `transformers` (default `Salesforce/blip2-flan-t5-xxl`). No text is ever
generated, so the T5 decoder and LM head are never built: the teacher is assembled on the meta device from BLIP-2's
own modules and only the tensors it needs are read from the checkpoint's safetensors (only the shards holding them).
"""

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from torch import nn
from transformers import AutoImageProcessor, AutoTokenizer, Blip2Config, T5EncoderModel
from transformers.models.blip_2.modeling_blip_2 import Blip2QFormerModel, Blip2VisionModel
from transformers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME, cached_file

from configuration_expclip import INSTRUCTION

logger = logging.getLogger(__name__)

DEFAULT_TEACHER = "Salesforce/blip2-flan-t5-xxl"
# Teacher model_type -> what it is (README: Beyond the paper). "blip-2" is the paper's BLIP-2 + T5 (ExpCLIPTeacher); the
# others are VLMs of AutoModelForImageTextToText, read by VLMTeacher.
TEACHER_FAMILIES = {
    "blip-2": "BLIP-2 + T5 (the paper)",
    "qwen2_5_vl": "Qwen2.5-VL",
    "qwen3_vl": "Qwen3-VL",
    "smolvlm": "SmolVLM",
    "idefics3": "Idefics3",
    "gemma3": "Gemma 3",
    "llava_onevision": "LLaVA-OneVision",
    "internvl": "InternVL",
}
TARGET_POOLINGS = ("mean", "last")


class UnsupportedTeacherError(ValueError):
    """A teacher checkpoint whose model_type is not in TEACHER_FAMILIES."""


class MissingDependencyError(ImportError):
    """A teacher whose processor needs a package that is not installed (one line saying what to install)."""


def teacher_model_type(name_or_path: str) -> str:
    """The teacher checkpoint's model_type (reads config.json only); raises UnsupportedTeacherError (one line)."""
    from transformers import PreTrainedConfig

    model_type = PreTrainedConfig.get_config_dict(name_or_path)[0].get("model_type")
    if model_type not in TEACHER_FAMILIES:
        raise UnsupportedTeacherError(f"{name_or_path}: unsupported teacher model_type {model_type!r}; supported: "
                                      f"{', '.join(TEACHER_FAMILIES)}")
    return model_type
TIED_EMBEDDINGS = "language_model.encoder.embed_tokens.weight"  # T5 ties it to `shared`; checkpoints store one copy


class ExpCLIPTeacher(nn.Module):
    """BLIP-2's image side and T5 encoder, with the instruction's token ids fixed: `forward(pixel_values)` -> targets.

    Parameter names follow `Blip2ForConditionalGeneration` (`vision_model`, `query_tokens`, `qformer`,
    `language_projection`, `language_model.{shared,encoder}`), so checkpoint keys load as they are.
    """

    def __init__(self, config: Blip2Config, instruction_ids: torch.Tensor):
        super().__init__()
        if config.text_config.model_type not in ("t5", "umt5", "mt5"):
            raise ValueError(f"the teacher needs a BLIP-2 checkpoint with a T5 language model, got {config.text_config.model_type!r}")
        self.config = config
        self.vision_model = Blip2VisionModel._from_config(config.vision_config)
        self.query_tokens = nn.Parameter(torch.zeros(1, config.num_query_tokens, config.qformer_config.hidden_size))
        self.qformer = Blip2QFormerModel._from_config(config.qformer_config)
        self.language_projection = nn.Linear(config.qformer_config.hidden_size, config.text_config.hidden_size)
        self.language_model = T5EncoderModel._from_config(config.text_config)  # the encoder stack only
        self.register_buffer("instruction_ids", instruction_ids.view(1, -1), persistent=False)

    @property
    def target_dim(self) -> int:
        """Width of the targets: T5's d_model (4096 for Flan-T5-XXL)."""
        return self.config.text_config.hidden_size

    @property
    def dtype(self) -> torch.dtype:
        return self.language_projection.weight.dtype

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str = DEFAULT_TEACHER,
        instruction: str = INSTRUCTION,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        dropout: bool = False,
    ) -> "ExpCLIPTeacher":
        """Load the teacher from a BLIP-2 + T5 checkpoint (Hub id or folder) without ever creating the T5 decoder.

        dtype defaults to bfloat16 on GPU and float32 on CPU; the Q-Former and query tokens stay float32, as in
        `transformers`' BLIP-2. `dropout=True` reproduces the original's quirk of computing targets in train mode.
        """
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
        config = Blip2Config.from_pretrained(name_or_path)
        for sub_config in (config.vision_config, config.qformer_config, config.text_config):
            sub_config._attn_implementation = "sdpa"
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        instruction_ids = tokenizer(instruction, return_tensors="pt").input_ids[0]  # T5's tokenizer ends it with </s>
        with torch.device("meta"):
            teacher = cls(config, instruction_ids.to("meta"))
        state_dict = _read_tensors(name_or_path, set(teacher.state_dict()) - {TIED_EMBEDDINGS}, device, dtype)
        loaded = teacher.load_state_dict(state_dict, strict=False, assign=True)
        if loaded.unexpected_keys or set(loaded.missing_keys) - {TIED_EMBEDDINGS}:
            raise KeyError(f"{name_or_path}: teacher tensors not loaded: {loaded.missing_keys or loaded.unexpected_keys}")
        teacher.language_model.encoder.set_input_embeddings(teacher.language_model.shared)  # T5 ties them
        teacher.instruction_ids = instruction_ids.view(1, -1).to(device)
        teacher.requires_grad_(False)
        return teacher.train(dropout)  # quirk switch: the original left the teacher in train mode (dropout on)

    @torch.no_grad()
    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(batch, 3, H, W) images prepared by BLIP-2's image processor -> (batch, target_dim) float32, normalised."""
        image_embeds = self.vision_model(pixel_values=pixel_values.to(self.dtype)).last_hidden_state
        query_tokens = self.query_tokens.expand(image_embeds.shape[0], -1, -1)
        query_output = self.qformer(
            query_embeds=query_tokens,
            encoder_hidden_states=image_embeds.to(query_tokens.dtype),
            encoder_attention_mask=torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=image_embeds.device),
        ).last_hidden_state
        visual_tokens = self.language_projection(query_output.to(self.dtype))
        instruction_embeds = self.language_model.get_input_embeddings()(self.instruction_ids)
        inputs_embeds = torch.cat([visual_tokens, instruction_embeds.expand(visual_tokens.shape[0], -1, -1)], dim=1)
        # README: Faithful to the paper: the target is read where the original's hook read it, at T5's final_layer_norm, i.e. before the
        # encoder's final dropout (the same values in eval mode; under the dropout quirk that dropout is not applied).
        read = {}
        final_layer_norm = self.language_model.encoder.final_layer_norm
        hook = final_layer_norm.register_forward_hook(lambda module, args, output: read.update(states=output))
        try:
            self.language_model(
                inputs_embeds=inputs_embeds,
                attention_mask=torch.ones(inputs_embeds.shape[:-1], dtype=torch.long, device=inputs_embeds.device),
            )
        finally:
            hook.remove()
        hidden_states = read["states"]
        # README: Faithful to the paper: mean over ALL positions (queries + instruction + </s>); pooled in float32 for a bf16 teacher.
        return F.normalize(hidden_states.float().mean(dim=1), dim=-1)


def load_teacher_image_processor(name_or_path: str = DEFAULT_TEACHER):
    """BLIP-2's own image processor (224 px bicubic resize, CLIP mean/std for the real checkpoint)."""
    return AutoImageProcessor.from_pretrained(name_or_path, backend="pil")  # PIL resizing, as the original (README: Reproducing the paper)


def _read_tensors(name_or_path: str, needed: set[str], device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The `needed` tensors from a checkpoint's safetensors, opening only the shards that hold them, each cast and
    moved on its own (peak host memory: one tensor). The Q-Former and query tokens stay float32, as in transformers'
    BLIP-2 (`_keep_in_fp32_modules`)."""
    index_file = cached_file(name_or_path, SAFE_WEIGHTS_INDEX_NAME, _raise_exceptions_for_missing_entries=False)
    if index_file is not None:
        weight_map = json.loads(Path(index_file).read_text())["weight_map"]
    else:
        single = cached_file(name_or_path, SAFE_WEIGHTS_NAME, _raise_exceptions_for_missing_entries=False)
        if single is None:
            raise FileNotFoundError(f"{name_or_path}: no {SAFE_WEIGHTS_NAME} or {SAFE_WEIGHTS_INDEX_NAME} (safetensors only)")
        with safe_open(single, framework="pt") as f:
            weight_map = {key: SAFE_WEIGHTS_NAME for key in f.keys()}
    source_key = {key: key for key in needed}
    if "language_model.shared.weight" in needed and "language_model.shared.weight" not in weight_map:
        # Some T5 checkpoints keep the tied input embedding only under the encoder's (or decoder's) name.
        for alias in ("language_model.encoder.embed_tokens.weight", "language_model.decoder.embed_tokens.weight"):
            if alias in weight_map:
                source_key["language_model.shared.weight"] = alias
                break
    missing = {key for key in needed if source_key[key] not in weight_map}
    if missing:
        raise KeyError(f"{name_or_path}: checkpoint lacks {len(missing)} teacher tensors, e.g. {sorted(missing)[:3]}")
    by_shard: dict[str, list[str]] = {}
    for key in sorted(needed):
        by_shard.setdefault(weight_map[source_key[key]], []).append(key)
    tensors = {}
    for shard, keys in by_shard.items():  # shards holding only decoder/LM-head tensors are never downloaded or opened
        with safe_open(cached_file(name_or_path, shard), framework="pt") as f:
            for key in keys:
                keep_fp32 = key.startswith(("qformer.", "query_tokens"))
                tensors[key] = f.get_tensor(source_key[key]).to(device=device, dtype=torch.float32 if keep_fp32 else dtype)
    return tensors


# ----- VLM teachers (README: Beyond the paper) ------------------------------------------------------------------------


PLAIN_PROMPT_NOTE = "the teacher's processor has no chat template: using the plain prompt (its image token, then the instruction)"


def load_vlm_processor(name_or_path: str):
    """The VLM's own `AutoProcessor`; raises MissingDependencyError (one line) where it needs torchvision (the video
    processors of Qwen2/2.5/3-VL, SmolVLM, LLaVA-OneVision, InternVL do) and torchvision is not installed."""
    from transformers import AutoProcessor
    from transformers.utils import is_torchvision_available

    try:
        return AutoProcessor.from_pretrained(name_or_path)
    except (ImportError, ValueError) as error:
        if not is_torchvision_available():
            raise MissingDependencyError(f"{name_or_path}: this VLM's processor needs torchvision: "
                                         f"pip install torchvision==0.29.1 (with torch==2.14.1)") from error
        raise


def has_chat_template(processor) -> bool:
    return bool(getattr(processor, "chat_template", None))


def render_prompt(processor, instruction: str = INSTRUCTION) -> str:
    """One user turn, the image first, then the instruction, rendered by the processor's own chat template with
    `add_generation_prompt=True` (including any system turn the template adds); without a chat template
    (`has_chat_template`), the processor's image token followed by the instruction (callers say so: PLAIN_PROMPT_NOTE)."""
    if has_chat_template(processor):
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": instruction}]}]
        return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return (getattr(processor, "boi_token", None) or processor.image_token) + instruction


@dataclass(frozen=True)
class VLMTeacherInputs:
    """Runs in a pipeline worker: one RGB image -> the processor's own outputs for the rendered prompt (every key the
    processor returns: Qwen2.5-VL's `mm_token_type_ids`, Gemma 3's `token_type_ids`, `image_grid_thw`, ...)."""

    processor: object
    prompt: str
    image_size: int | None = None  # a fixed square side for every image (dynamic-resolution models: one shape)

    def __call__(self, image) -> dict:
        if self.image_size:
            image = image.resize((self.image_size, self.image_size), resample=3)  # bicubic, PIL
        inputs = self.processor(text=[self.prompt], images=[image], return_tensors="pt")
        return {key: value for key, value in inputs.items() if hasattr(value, "shape")}


class VLMTeacher(nn.Module):
    """A VLM's language model read at `hidden_states[layer]` over the rendered prompt of each image: pooled by `mean`
    (every non-padding token, as the paper averages T5's input positions) or `last` (the last non-padding token, as
    E5-V and VLM2Vec), cast to float32 and L2-normalised. The base model only (`AutoModel`: no LM head, no generation)."""

    def __init__(self, model, processor, prompt: str, layer: int = -1, pooling: str = "mean",
                 image_size: int | None = None):
        super().__init__()
        if pooling not in TARGET_POOLINGS:
            raise ValueError(f"target_pooling must be one of {', '.join(TARGET_POOLINGS)}, got {pooling!r}")
        self.model, self.processor, self.prompt = model, processor, prompt
        self.layer, self.pooling, self.image_size = layer, pooling, image_size
        self.inputs = VLMTeacherInputs(processor, prompt, image_size)

    @property
    def target_dim(self) -> int:
        """Width of the targets: the language model's hidden size."""
        return self.model.config.get_text_config().hidden_size

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    @classmethod
    def from_pretrained(cls, name_or_path: str, instruction: str = INSTRUCTION, device=None, dtype=None,
                        layer: int = -1, pooling: str = "mean", image_size: int | None = None,
                        prompt: str | None = None) -> "VLMTeacher":
        """bfloat16 on GPU, float32 on CPU; weights read onto the meta-built base model (the LM head is never built).
        `prompt`: the prompt already rendered from this processor and `instruction` (default: rendered here)."""
        from transformers import AutoModel
        from transformers.utils import logging as hf_logging

        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
        processor = load_vlm_processor(name_or_path)
        if prompt is None:
            prompt = render_prompt(processor, instruction)
            if not has_chat_template(processor):
                logger.warning(PLAIN_PROMPT_NOTE)
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # the checkpoint's LM head is reported as unused: by design
        try:
            model = AutoModel.from_pretrained(name_or_path, dtype=dtype).to(device)
        finally:
            hf_logging.set_verbosity(verbosity)
        model.requires_grad_(False).eval()
        return cls(model, processor, prompt, layer, pooling, image_size)

    def collate(self, items: list[dict]) -> dict:
        """Per-image processor outputs -> one batch: token tensors padded as the processor's tokenizer pads,
        everything else concatenated (one image per row, so pixel rows follow input rows)."""
        tokenizer = self.processor.tokenizer
        token_keys = [k for k in items[0] if items[0][k].dim() == 2 and items[0][k].shape[0] == 1
                      and k in ("input_ids", "attention_mask", "mm_token_type_ids", "token_type_ids")]
        lengths = {item["input_ids"].shape[1] for item in items}
        batch = {}
        if len(lengths) == 1:
            for key in token_keys:
                batch[key] = torch.cat([item[key] for item in items])
        else:
            longest = max(lengths)
            for key in token_keys:
                fill = tokenizer.pad_token_id if key == "input_ids" else 0
                rows = []
                for item in items:
                    missing = longest - item[key].shape[1]
                    pad = (missing, 0) if tokenizer.padding_side == "left" else (0, missing)
                    rows.append(F.pad(item[key], pad, value=fill))
                batch[key] = torch.cat(rows)
        for key in items[0]:
            if key not in batch:
                batch[key] = torch.cat([item[key] for item in items])
        return batch

    @torch.no_grad()
    def forward(self, inputs: dict) -> torch.Tensor:
        """A collated batch of processor outputs -> (batch, target_dim) float32, L2-normalised."""
        device = self.model.device
        inputs = {key: value.to(device=device, dtype=self.dtype if value.is_floating_point() else value.dtype)
                  for key, value in inputs.items()}
        outputs = self.model(**inputs, output_hidden_states=self.layer != -1, use_cache=False)
        # hidden_states as transformers returns them: 0 the embeddings, -1 the last layer after the final norm
        # (= last_hidden_state, read without keeping every layer).
        states = outputs.last_hidden_state if self.layer == -1 else outputs.hidden_states[self.layer]
        states = states.float()
        mask = inputs["attention_mask"].to(states.device)
        if self.pooling == "mean":  # every non-padding token of the prompt (README: Beyond the paper)
            pooled = (states * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        else:  # the last non-padding token
            last = mask.shape[1] - 1 - mask.flip(1).argmax(1)
            pooled = states[torch.arange(len(states), device=states.device), last]
        return F.normalize(pooled, dim=-1)
