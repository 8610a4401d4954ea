"""Exp-CLIP configuration (Zhao et al., "Enhancing Zero-Shot Facial Expression Recognition by LLM Knowledge
Transfer", WACV 2025).

This file and `modeling_expclip.py` are the custom code a saved Exp-CLIP folder carries to the Hub, so they only
import from `transformers`, `torch` and each other.
"""

from transformers import CLIPConfig, PreTrainedConfig

# SPEC §5: canonical class order; 7-class sets use the first 7, 8-class sets the first 8, MAFW all 11.
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

# SPEC §3: the only instruction the paper trains with.
INSTRUCTION = (
    "Please play the role of a facial action describer. "
    "Objectively describe the detailed facial actions of the person in the image."
)

_TYPE4 = [
    "an expression of {}.",
    "a photo of a face with an expression of {}.",
    "a photo radiating {} in a person.",
    "a photo showing someone immersed in {}.",
    "a photo capturing {} within an individual.",
]
# SPEC §5 prompt sets; "{}" is replaced by the class name. type3 is the one used for the paper's tables.
PROMPT_SETS = {
    "type1": ["{}."],
    "type2": ["an expression of {}."],
    "type3": ["a photo of a face with an expression of {}."],
    "type4": _TYPE4,
    "type5": _TYPE4
    + [
        "a photo of a face displaying {}.",
        "a photo of a person embodying {}.",
        "a good photo capturing someone's {}.",
        "a cropped photo emphasizing a face expressing {}.",
        "a clean photo showcasing a person's {}.",
    ],
}


def _original_type5_overrides():
    """Quirk (SPEC §5): the original hand-edits a few type5 prompts per class; this is our reconstruction."""
    adjectives = {
        "anger": "angry expression",
        "surprise": "surprised expression",
        "disgust": "disgusted expression",
        "fear": "fearful expression",
        "contempt": "contemptuous expression",
        "anxiety": "anxious expression",
        "neutral": "neutral expression",
    }
    overrides = {}
    for name in EXPRESSION_CLASSES:
        prompts = [template.format(name) for template in PROMPT_SETS["type5"]]
        if name == "sadness":
            prompts[1] = "a cropped photo emphasizing a face expressing sadness."
        if name in adjectives:
            prompts[-1] = f"a clean photo showcasing a person's {adjectives[name]}."
        if name == "neutral":
            prompts[7] = "a good photo capturing someone's neutral state."
        overrides[name] = prompts
    return overrides


# Named per-class prompt overrides; `type5-original` = type5 templates + ORIGINAL_PROMPT_OVERRIDES.
ORIGINAL_PROMPT_OVERRIDES = _original_type5_overrides()
PROMPT_SETS["type5-original"] = PROMPT_SETS["type5"]

ENSEMBLE_MODES = ("logits", "embeddings")


class ExpCLIPConfig(PreTrainedConfig):
    r"""
    Configuration of an [`ExpCLIPModel`]: a frozen CLIP model plus one linear projection into an LLM's embedding
    space (SPEC §2), together with the zero-shot defaults and the provenance of the projection.

    Example:

    ```python
    >>> from transformers import CLIPConfig
    >>> config = ExpCLIPConfig(clip_config=CLIPConfig())  # ViT-B/32-sized CLIP, 512 -> 4096 head
    ```"""

    model_type = "expclip"
    sub_configs_defaults = {"clip_config": CLIPConfig}

    clip_config: dict | CLIPConfig | None = None  # the full frozen CLIP config (text + vision + projection_dim)
    projection_dim: int = 4096  # output width of the head = teacher's embedding width (Flan-T5-XXL d_model)
    projection_bias: bool = False  # the paper's head has no bias
    loss_scale: float = 100.0  # fixed InfoNCE temperature inverse used in training (SPEC §4)
    class_names: list[str] | None = None  # default zero-shot labels; None -> the 7 basic expressions
    prompt_templates: str | list[str] = "type3"  # a PROMPT_SETS name or a list of "{}" templates
    prompt_overrides: dict | None = None  # class name -> its full list of prompts, replacing the templates
    ensemble: str = "logits"  # how several prompts per class combine: "logits" (the paper) or "embeddings"
    num_segments: int = 16  # frames sampled per video clip at test time (SPEC §5)
    clip_model_name_or_path: str | None = None  # provenance: the CLIP checkpoint the head was trained on
    teacher_model_name_or_path: str | None = "Salesforce/blip2-flan-t5-xxl"  # provenance: the LLM teacher
    instruction: str | None = INSTRUCTION  # provenance: the instruction the teacher was given
    target_pooling: str = "mean"  # provenance: teacher encoder states mean-pooled over all positions
    teacher_dropout: bool = False  # provenance: True if targets were made with the original's dropout-on quirk

    def __post_init__(self, **kwargs):
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
    def clip_embed_dim(self) -> int:
        """Width of CLIP's joint embedding space: the head's input width (512 for B/32, B/16; 768 for L/14)."""
        return self.clip_config.projection_dim


__all__ = [
    "ExpCLIPConfig",
    "EXPRESSION_CLASSES",
    "BASIC_EXPRESSIONS",
    "INSTRUCTION",
    "PROMPT_SETS",
    "ORIGINAL_PROMPT_OVERRIDES",
]
