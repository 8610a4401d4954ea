"""Exp-CLIP configuration (Zhao et al., "Enhancing Zero-Shot Facial Expression Recognition by LLM Knowledge
Transfer", WACV 2025).

This file and `modeling_expclip.py` are the custom code a saved Exp-CLIP folder carries to the Hub, so they only
import from `transformers`, `torch` and each other.
"""

from transformers import AutoConfig, CLIPImageProcessorPil, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

# README: Reproducing the paper: canonical class order; 7-class sets use the first 7, 8-class sets the first 8, MAFW all 11.
EXPRESSION_CLASSES = [
    "happiness",
    "sadness",
    "neutral",
    "anger",
    "surprise",
    "disgust",
    "fear",
    "contempt",
    "anxiety",
    "helplessness",
    "disappointment",
]
BASIC_EXPRESSIONS = EXPRESSION_CLASSES[:7]

# README: Faithful to the paper: the only instruction the paper trains with.
INSTRUCTION = (
    "Please play the role of a facial action describer. "
    "Objectively describe the detailed facial actions of the person in the image."
)

# README: Reproducing the paper: the base templates of the prompt study, in the original's order; "{}" is replaced by the class name.
_TEMPLATES = [
    "an expression of {}.",
    "a photo of a face with an expression of {}.",
    "a photo radiating {} in a person.",
    "a photo showing someone immersed in {}.",
    "a photo capturing {} within an individual.",
    "a photo of a face displaying {}.",
    "a photo of a person embodying {}.",
    "a good photo capturing someone's {}.",
    "a cropped photo emphasizing a face expressing {}.",
    "a clean photo showcasing a person's {}.",
]
# The prompt sets (README: Reproducing the paper) as templates. type3 is the one used for the paper's tables; type4/type5 are per-class lists
# (ORIGINAL_CLASS_PROMPTS) for the 11 canonical names, these templates for any other label.
PROMPT_SETS = {
    "type1": ["{}."],
    "type2": ["an expression of {}."],
    "type3": ["a photo of a face with an expression of {}."],
    "type4": _TEMPLATES[:5],
    "type5": _TEMPLATES,
    "type4-templates": _TEMPLATES[:5],  # the plain templates for every class, without the original's edits
    "type5-templates": _TEMPLATES,
}

# Quirk of the original (README: Reproducing the paper): hand edits of its type4/type5 lists, class -> {prompt number (1-based): prompt}.
_CLASS_PROMPT_EDITS = {
    "happiness": {6: "a photo of a face exuding happiness."},
    "sadness": {
        2: "a cropped photo emphasizing a face expressing sadness.",
        3: "a photo exuding sadness in a person.",
        9: "a photo of a face with an expression of sadness.",
    },
    "neutral": {
        8: "a good photo capturing someone's neutral state.",
        10: "a clean photo showcasing a person's neutral expression.",
    },
    **{
        name: {10: f"a clean photo showcasing a person's {adjective} expression."}
        for name, adjective in [
            ("anger", "angry"), ("surprise", "surprised"), ("disgust", "disgusted"), ("fear", "fearful"),
            ("contempt", "contemptuous"), ("anxiety", "anxious"), ("helplessness", "helpless"),
            ("disappointment", "disappointed"),
        ]
    },
}


def _original_class_prompts(templates: list[str]) -> dict[str, list[str]]:
    edits = {name: _CLASS_PROMPT_EDITS.get(name, {}) for name in EXPRESSION_CLASSES}
    return {
        name: [edits[name].get(number, template.format(name)) for number, template in enumerate(templates, start=1)]
        for name in EXPRESSION_CLASSES
    }


# prompt set -> class -> its prompts: the original's per-class lists (README: Reproducing the paper), used for the canonical class names.
ORIGINAL_CLASS_PROMPTS = {name: _original_class_prompts(PROMPT_SETS[name]) for name in ("type4", "type5")}

ENSEMBLE_MODES = ("logits", "embeddings")

# The dual encoders Exp-CLIP wraps (README: Beyond the paper): `model_type`s that `AutoModel` loads with
# `get_image_features` / `get_text_features`. "siglip" also covers the fixed-resolution SigLIP 2 checkpoints; "siglip2"
# is SigLIP 2's NaFlex form. How each family is driven lives in modeling_expclip.BACKBONE_FAMILIES.
BACKBONE_TYPES = ("clip", "metaclip_2", "siglip", "siglip2")


class ExpCLIPConfig(PreTrainedConfig):
    r"""
    Configuration of an [`ExpCLIPModel`]: a frozen CLIP-family dual encoder plus one linear projection into an LLM's
    embedding space (paper: Method), together with the zero-shot defaults and the provenance of the projection.

    Example:

    ```python
    >>> from transformers import CLIPConfig
    >>> config = ExpCLIPConfig(dual_encoder_config=CLIPConfig())  # ViT-B/32-sized CLIP, 512 -> 4096 head
    ```"""

    model_type = "expclip"
    # Any family of BACKBONE_TYPES, resolved by its model_type; a dict without one is CLIP (folders before SigLIP).
    sub_configs_defaults = {"dual_encoder_config": SubConfigSpec(AutoConfig, model_type="clip")}

    dual_encoder_config: dict | PreTrainedConfig | None = None  # the full frozen backbone config (text + vision)
    projection_dim: int = 4096  # output width of the head = teacher's embedding width (Flan-T5-XXL d_model)
    projection_bias: bool = False  # the paper's head has no bias
    loss_scale: float = 100.0  # fixed InfoNCE temperature inverse used in training (README: Training)
    class_names: list[str] | None = None  # default zero-shot labels; None -> the 7 basic expressions
    prompt_templates: str | list[str] = "type3"  # a PROMPT_SETS name or a list of "{}" templates
    prompt_overrides: dict | None = None  # class name -> its full list of prompts, replacing the templates
    ensemble: str = "logits"  # how several prompts per class combine: "logits" (the paper) or "embeddings"
    num_segments: int = 16  # frames sampled per video clip at test time (README: Reproducing the paper)
    clip_model_name_or_path: str | None = None  # provenance: the CLIP checkpoint the head was trained on
    teacher_model_name_or_path: str | None = "Salesforce/blip2-flan-t5-xxl"  # provenance: the LLM teacher
    instruction: str | None = INSTRUCTION  # provenance: the instruction the teacher was given
    target_pooling: str = "mean"  # provenance: teacher states pooled by "mean" over the prompt (the paper) or "last"
    teacher_dropout: bool = False  # provenance: True if targets were made with the original's dropout-on quirk
    teacher_layer: int = -1  # provenance: the teacher's hidden_states index the target was read from (-1: last)
    teacher_prompt: str | None = None  # provenance: a VLM teacher's rendered chat-template prompt (None: BLIP-2 + T5)
    teacher_image_size: int | None = None  # provenance: a VLM teacher's fixed input side (None: its processor's own)
    text_padding_side: str = "right"  # the backbone tokenizer's side, where SigLIP prompts are padded to 64

    def __post_init__(self, **kwargs):
        legacy = kwargs.pop("clip_config", None)  # folders saved before SigLIP support name it clip_config
        if self.dual_encoder_config is None and legacy is not None:
            self.dual_encoder_config = legacy
        backbone_type = (self.dual_encoder_config.get("model_type", "clip") if isinstance(self.dual_encoder_config, dict)
                         else getattr(self.dual_encoder_config, "model_type", "clip"))
        if backbone_type not in BACKBONE_TYPES:
            raise ValueError(f"unsupported backbone model_type {backbone_type!r}; supported: {', '.join(BACKBONE_TYPES)}")
        # Saved folders load through all three auto classes with trust_remote_code (custom_object_save merges into it).
        if getattr(self, "auto_map", None) is None:
            self.auto_map = {
                "AutoConfig": "configuration_expclip.ExpCLIPConfig",
                "AutoModel": "modeling_expclip.ExpCLIPModel",
                "AutoModelForZeroShotImageClassification": "modeling_expclip.ExpCLIPModel",
            }
        if self.class_names is None:
            self.class_names = list(BASIC_EXPRESSIONS)
        if self.ensemble not in ENSEMBLE_MODES:
            raise ValueError(f"ensemble must be one of {ENSEMBLE_MODES}, got {self.ensemble!r}")
        if isinstance(self.prompt_templates, str) and self.prompt_templates not in PROMPT_SETS:
            raise ValueError(f"unknown prompt set {self.prompt_templates!r}; known: {', '.join(PROMPT_SETS)}")
        super().__post_init__(**kwargs)

    @property
    def clip_config(self) -> PreTrainedConfig:
        """The backbone's config (the name of folders saved before SigLIP support)."""
        return self.dual_encoder_config

    @property
    def backbone_type(self) -> str:
        """The backbone's `model_type`: one of BACKBONE_TYPES."""
        return self.dual_encoder_config.model_type

    @property
    def clip_embed_dim(self) -> int:
        """Width of the backbone's joint embedding space: the head's input width (512 for CLIP B/32, B/16; 768 for
        L/14; SigLIP's is its vision width, which its text head maps to)."""
        config = self.dual_encoder_config
        return getattr(config, "projection_dim", None) or config.vision_config.hidden_size


# backbone model_type -> its image processor's PIL-backend class name (README: Reproducing the paper: resizing pinned to PIL).
PIL_IMAGE_PROCESSORS = {
    "clip": "CLIPImageProcessorPil",
    "metaclip_2": "CLIPImageProcessorPil",
    "siglip": "SiglipImageProcessorPil",
    "siglip2": "Siglip2ImageProcessorPil",
}


class ExpCLIPImageProcessorPil(CLIPImageProcessorPil):
    """What `AutoImageProcessor` loads for an Exp-CLIP folder: its backbone family's PIL-backend image processor (an
    instance of that family's class; this subclass only dispatches)."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        import transformers

        hub_kwargs = {k: kwargs[k] for k in ("cache_dir", "revision", "token", "local_files_only", "subfolder")
                      if k in kwargs}
        config = ExpCLIPConfig.get_config_dict(pretrained_model_name_or_path, **hub_kwargs)[0]
        backbone = config.get("dual_encoder_config") or config.get("clip_config") or {}
        pil_class = getattr(transformers, PIL_IMAGE_PROCESSORS[backbone.get("model_type", "clip")])
        return pil_class.from_pretrained(pretrained_model_name_or_path, *args, **kwargs)


def register_pil_image_processor():
    """Make `AutoImageProcessor` give an Exp-CLIP folder its backbone's PIL-backend processor, whatever is installed.

    README: Reproducing the paper: the released heads were trained and tested with PIL's bilinear resize; transformers' torchvision
    backend (picked whenever torchvision is importable) resizes differently. A saved folder's processor config names
    no class, so AutoImageProcessor takes the class registered for this config, in-process or through the folder's
    own code (`trust_remote_code=True`): this one loads only a PIL backend."""
    from transformers import AutoImageProcessor

    AutoImageProcessor.register(ExpCLIPConfig, image_processor_classes={"pil": ExpCLIPImageProcessorPil}, exist_ok=True)


register_pil_image_processor()

__all__ = [
    "ExpCLIPConfig",
    "BACKBONE_TYPES",
    "EXPRESSION_CLASSES",
    "BASIC_EXPRESSIONS",
    "INSTRUCTION",
    "PROMPT_SETS",
    "ORIGINAL_CLASS_PROMPTS",
]
