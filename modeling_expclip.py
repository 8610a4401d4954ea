"""Exp-CLIP model (Zhao et al., WACV 2025): frozen CLIP + one bias-free linear `projection` into an LLM's space.

The frozen backbone is any dual encoder of BACKBONE_FAMILIES that `AutoModel` loads (CLIP, MetaCLIP 2, SigLIP,
SigLIP 2; README: Beyond the paper); the paper's is OpenAI CLIP.

Shape of the model (paper: Method), timm-style: expensive frozen features, then a cheap head.

    clip_image_embeds = CLIP.get_image_features(pixel_values)     # frozen, cacheable, 512-d or 768-d
    image_embeds      = normalize(projection(clip_image_embeds))  # the only trained part, -> 4096-d
    logits_per_image  = exp(logit_scale) * image_embeds @ text_embeds.T

This file is the custom code a saved Exp-CLIP folder carries to the Hub: it imports only `torch`, `transformers`
and the sibling `configuration_expclip.py`.
"""

import math
import string
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, AutoTokenizer, PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

try:  # inside a saved Hub folder (trust_remote_code) the config is a sibling module
    from .configuration_expclip import BACKBONE_TYPES, ORIGINAL_CLASS_PROMPTS, PROMPT_SETS, ExpCLIPConfig
except ImportError:  # installed with the package as a top-level module
    from configuration_expclip import BACKBONE_TYPES, ORIGINAL_CLASS_PROMPTS, PROMPT_SETS, ExpCLIPConfig


@dataclass(frozen=True)
class BackboneFamily:
    """How Exp-CLIP drives one family of dual encoders: each quirk in one place."""

    text_max_length: int  # the text tower's context length (truncation)
    text_padding: bool | str  # True: to the longest prompt; "max_length": to text_max_length
    sigmoid: bool  # its own zero-shot scores: sigmoid(scale * cos + logit_bias) per label, not a softmax over labels
    image_inputs: tuple[str, ...] = ()  # processor outputs the vision tower takes beside pixel_values
    image_dims: int = 4  # pixel_values dims of a batch of images; one more for a batch of clips


# model_type -> family (README: Beyond the paper), dispatched like transformers' Auto mappings.
BACKBONE_FAMILIES = {
    "clip": BackboneFamily(text_max_length=77, text_padding=True, sigmoid=False),  # README: Reproducing the paper
    "metaclip_2": BackboneFamily(text_max_length=77, text_padding=True, sigmoid=False),
    # SigLIP pools the LAST position and was trained on text padded to 64: the model pads itself (see encode_clip_text).
    # "siglip" also covers the fixed-resolution SigLIP 2 checkpoints (google/siglip2-base-patch16-224).
    "siglip": BackboneFamily(text_max_length=64, text_padding="max_length", sigmoid=True),
    # SigLIP 2 NaFlex: patches of any aspect ratio, (batch, patches, 3*p*p) with their mask and grid shape.
    "siglip2": BackboneFamily(text_max_length=64, text_padding="max_length", sigmoid=True,
                              image_inputs=("pixel_attention_mask", "spatial_shapes"), image_dims=3),
}
assert set(BACKBONE_FAMILIES) == set(BACKBONE_TYPES)


def pack_image_inputs(pixel_values: torch.Tensor, pixel_attention_mask: torch.Tensor,
                      spatial_shapes: torch.Tensor) -> torch.Tensor:
    """SigLIP 2 NaFlex's three image inputs as ONE tensor `(batch, patches, 3*p*p + 3)`: each patch row carries its
    mask bit and its image's grid shape, so every path that moves `pixel_values` alone (the input pipelines, video
    frames, ONNX) carries them too. `ExpCLIPModel.encode_clip_image` unpacks it."""
    patches = pixel_values.shape[1]
    return torch.cat([pixel_values.float(), pixel_attention_mask[..., None].float(),
                      spatial_shapes[:, None, :].expand(-1, patches, -1).float()], dim=-1)


def unpack_image_inputs(packed: torch.Tensor) -> dict:
    """The inverse of `pack_image_inputs` (grid sizes and mask bits are small integers: exact in any float dtype)."""
    return {"pixel_values": packed[..., :-3], "pixel_attention_mask": packed[..., -3].round().long(),
            "spatial_shapes": packed[:, 0, -2:].round().long()}


def contrastive_loss(image_embeds: torch.Tensor, target_embeds: torch.Tensor, scale: float = 100.0) -> torch.Tensor:
    """Symmetric InfoNCE with in-batch negatives (README: Training): 0.5*CE(s*I@T.T) + 0.5*CE(s*T@I.T).

    Both inputs are L2-normalised, row i of one is the positive of row i of the other.
    """
    logits = scale * (image_embeds @ target_embeds.t())  # scale the (n, n) product, not the (n, d) input
    labels = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))


def sample_segment_indices(num_frames: int, num_segments: int = 16, short_clip: str = "even") -> list[int]:
    """Test-time frame sampling (README: Reproducing the paper): frame `int(tick/2 + tick*k)` of segment k, `tick = num_frames/num_segments`.

    `short_clip="first_frame"` reproduces the original's quirk of taking frame 0 `num_segments` times for clips with
    `num_segments` frames or fewer; the default samples those evenly, with repetition.
    """
    if num_frames < 1:
        raise ValueError(f"a clip needs at least one frame, got {num_frames}")
    if short_clip not in ("even", "first_frame"):
        raise ValueError(f"short_clip must be 'even' or 'first_frame', got {short_clip!r}")
    if short_clip == "first_frame" and num_frames <= num_segments:
        return [0] * num_segments  # quirk of the original release
    tick = num_frames / num_segments
    return [int(tick / 2 + tick * k) for k in range(num_segments)]


def build_class_prompts(
    class_names: list[str], prompt_templates: str | list[str] = "type3", prompt_overrides: dict | None = None
) -> list[list[str]]:
    """The prompts of each class: `prompt_overrides[name]` if given, else the original's per-class list of a named set
    that has one (type4/type5, README: Reproducing the paper, the 11 canonical names), else every template filled with the class name."""
    class_lists = {}
    if isinstance(prompt_templates, str):
        if prompt_templates not in PROMPT_SETS:
            raise ValueError(f"unknown prompt set {prompt_templates!r}; known: {', '.join(PROMPT_SETS)}")
        class_lists = ORIGINAL_CLASS_PROMPTS.get(prompt_templates, {})
        prompt_templates = PROMPT_SETS[prompt_templates]
    if not class_names:
        raise ValueError("the label list is empty")
    duplicates = sorted({name for name in class_names if list(class_names).count(name) > 1})
    if duplicates:
        raise ValueError(f"duplicate labels: {', '.join(duplicates)}")
    if not prompt_templates:
        raise ValueError("the prompt template list is empty")
    for template in prompt_templates:
        try:  # exactly one "{}" (literal braces are written "{{" and "}}")
            fields = [field for _, field, _, _ in string.Formatter().parse(template) if field is not None]
        except ValueError as error:
            raise ValueError(f"prompt template {template!r}: {error}")
        if fields != [""]:
            found = ", ".join("{" + field + "}" for field in fields) or "none"
            raise ValueError(f"prompt template {template!r} must hold exactly one '{{}}' for the class name "
                             f"(found: {found}; write literal braces as '{{{{' and '}}}}')")
    prompt_overrides = prompt_overrides or {}
    return [
        list(prompt_overrides.get(name) or class_lists.get(name) or [t.format(name) for t in prompt_templates])
        for name in class_names
    ]


def _layer_norm_in_float32(module, args):
    return (args[0].float(),) + tuple(args[1:])


def _layer_norm_out_in_float16(module, args, output):
    return output.half()


@dataclass
class ExpCLIPOutput(ModelOutput):
    r"""
    loss (`torch.Tensor` of shape `()`, *optional*, returned when `target_embeds` is given):
        Symmetric InfoNCE between `image_embeds` and the teacher's `target_embeds` (README: Training).
    logits_per_image (`torch.Tensor` of shape `(image_batch_size, text_batch_size)`):
        `exp(logit_scale) * image_embeds @ text_embeds.T`, CLIP's frozen scale (100 for OpenAI CLIP).
    logits_per_text (`torch.Tensor` of shape `(text_batch_size, image_batch_size)`):
        The transpose of `logits_per_image`.
    text_embeds (`torch.Tensor` of shape `(text_batch_size, projection_dim)`):
        L2-normalised projected CLIP text embeddings.
    image_embeds (`torch.Tensor` of shape `(image_batch_size, projection_dim)`):
        L2-normalised projected CLIP image embeddings (for videos: frame average, then normalised).
    """

    loss: torch.Tensor | None = None
    logits_per_image: torch.Tensor | None = None
    logits_per_text: torch.Tensor | None = None
    text_embeds: torch.Tensor | None = None
    image_embeds: torch.Tensor | None = None


@dataclass
class ExpCLIPTextClassifier:
    """Encoded class prompts for zero-shot scoring: one normalised embedding per prompt and the class it belongs to."""

    class_names: list[str]
    prompts: list[list[str]]
    prompt_embeds: torch.Tensor  # (num_prompts, dim), L2-normalised
    prompt_class: torch.Tensor  # (num_prompts,), class index of each prompt
    ensemble: str  # "logits" (average per-prompt logits, the paper) or "embeddings" (average prompt embeddings)
    use_projection: bool = True  # False: the plain backbone's embeddings, scored as its own pipeline scores them

    @property
    def prompt_weights(self) -> torch.Tensor:
        """(num_prompts, num_classes) matrix that averages a class's prompts."""
        one_hot = F.one_hot(self.prompt_class, len(self.class_names)).to(self.prompt_embeds.dtype)
        return one_hot / one_hot.sum(0, keepdim=True)

    @property
    def class_embeds(self) -> torch.Tensor:
        """(num_classes, dim): normalised mean of each class's normalised prompt embeddings."""
        return F.normalize(self.prompt_weights.t() @ self.prompt_embeds, dim=-1)


class ExpCLIPPreTrainedModel(PreTrainedModel):
    config: ExpCLIPConfig
    config_class = ExpCLIPConfig
    base_model_prefix = "expclip"
    main_input_name = "pixel_values"
    input_modalities = ("image", "text")
    _no_split_modules = ["CLIPTextEmbeddings", "CLIPEncoderLayer", "CLIPVisionEmbeddings", "MetaClip2EncoderLayer",
                         "SiglipEncoderLayer", "Siglip2EncoderLayer"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_attention_backend = True

    def _init_weights(self, module):
        # paper: Method: the head keeps PyTorch's default nn.Linear init; CLIP's modules are initialised by CLIP's own code.
        if isinstance(module, nn.Linear):
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            if module.bias is not None:
                bound = 1 / math.sqrt(module.in_features)
                init.uniform_(module.bias, -bound, bound)


class ExpCLIPModel(ExpCLIPPreTrainedModel):
    """Frozen CLIP + `projection` (paper: Method). CLIP is locked on construction and stays frozen and in eval mode.

    `clip` is the frozen dual encoder, whichever family of BACKBONE_FAMILIES it is (the name keeps saved weights'
    keys)."""

    def __init__(self, config: ExpCLIPConfig, clip: PreTrainedModel | None = None):
        super().__init__(config)
        self.family = BACKBONE_FAMILIES[config.backbone_type]
        self.clip = clip if clip is not None else AutoModel.from_config(config.dual_encoder_config)
        self.projection = nn.Linear(config.clip_embed_dim, config.projection_dim, bias=config.projection_bias)
        self._text_classifiers = {}  # encoded prompts, per label set / prompt set / ensemble (see text_classifier)
        self.register_load_state_dict_post_hook(lambda module, keys: module._text_classifiers.clear())
        self.post_init()
        self.lock_clip()

    # ----- construction -------------------------------------------------------------------------------------------

    @classmethod
    def from_clip(cls, clip_name_or_path: str, **config_overrides) -> "ExpCLIPModel":
        """A fresh Exp-CLIP model (untrained head) around any backbone of BACKBONE_FAMILIES, a Hub id or a folder."""
        clip = AutoModel.from_pretrained(clip_name_or_path, **config_overrides.pop("clip_kwargs", {}))
        if clip.config.model_type not in BACKBONE_FAMILIES:
            raise ValueError(f"{clip_name_or_path}: unsupported backbone model_type {clip.config.model_type!r}; "
                             f"supported: {', '.join(BACKBONE_FAMILIES)}")
        try:  # the side the backbone's own tokenizer pads on (SigLIP 2's Gemma tokenizer: left)
            padding_side = AutoTokenizer.from_pretrained(clip_name_or_path).padding_side
        except (OSError, ValueError):
            padding_side = "right"
        config_overrides.setdefault("text_padding_side", padding_side)
        config = ExpCLIPConfig(
            dual_encoder_config=clip.config.to_dict(), clip_model_name_or_path=str(clip_name_or_path),
            **config_overrides,
        )
        return cls(config, clip=clip)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs) -> "ExpCLIPModel":
        """Load a saved Exp-CLIP model; a plain CLIP checkpoint, missing weights or a non-finite head are refused
        (ValueError, one line): an untrained head would give confident nonsense."""
        name = str(pretrained_model_name_or_path)
        hub_kwargs = {k: kwargs[k] for k in ("cache_dir", "revision", "token", "local_files_only", "subfolder")
                      if k in kwargs}
        if kwargs.get("config") is None:
            config_dict = cls.config_class.get_config_dict(pretrained_model_name_or_path, **hub_kwargs)[0]
            model_type = config_dict.get("model_type")
            if model_type in BACKBONE_FAMILIES:
                raise ValueError(f"{name}: a plain CLIP checkpoint, not an Exp-CLIP model (it has no projection head); "
                                 f"build one with `expclip convert HEAD.pth --clip {name} --output DIR`")
            if model_type != cls.config_class.model_type:
                raise ValueError(f"{name}: not an Exp-CLIP model (config.json has model_type {model_type!r})")
        want_info = kwargs.pop("output_loading_info", False)
        try:
            model, info = super().from_pretrained(pretrained_model_name_or_path, *args, output_loading_info=True,
                                                  **kwargs)
        except RuntimeError as error:  # transformers reports a size mismatch as a table, then raises
            if "ignore_mismatched_sizes" not in str(error):
                raise
            width = cls.config_class.from_pretrained(name, **hub_kwargs).clip_embed_dim
            raise ValueError(f"{name}: a saved weight does not fit the backbone in its config.json (the head's input "
                             f"width must be the backbone's embedding width, {width})") from None
        missing = sorted(info.get("missing_keys") or ())
        if missing:
            raise ValueError(f"{name}: incomplete Exp-CLIP model, {len(missing)} weight(s) missing from its files "
                             f"({', '.join(missing[:2])}{', ...' if len(missing) > 2 else ''})")
        if not torch.isfinite(model.projection.weight).all():
            raise ValueError(f"{name}: the projection head holds NaN or infinite weights; refused (a broken model)")
        if not model.projection.weight.any():  # uniform scores for every image, whatever the labels
            raise ValueError(f"{name}: the projection head is all zeros; refused (a broken model)")
        model.lock_clip()  # loading replaces parameters (with requires_grad=True): lock CLIP again
        return (model, info) if want_info else model

    def lock_clip(self):
        """Freeze every CLIP weight, `logit_scale` included, and keep CLIP in eval mode (paper: Method)."""
        self.clip.requires_grad_(False)
        self.clip.eval()
        self._clip_locked = True
        return self

    def train(self, mode: bool = True):
        super().train(mode)
        if getattr(self, "_clip_locked", False):
            self.clip.eval()
        if mode:
            self._text_classifiers.clear()  # weights may change from here on
        return self

    def to_original_precision(self):
        """The original's test precision on a GPU (README: Reproducing the paper): CLIP in float16 as OpenAI's `clip.load` leaves it, every
        LayerNorm computed in float32 (weights float32, input cast up, output cast back to float16), `logit_scale`
        and the head in float32, prompts padded to 77 tokens as `clip.tokenize` pads them. Call on a float32 model;
        for inference only."""
        logit_scale = self.clip.logit_scale.data.float()  # before half(): float16 would make exp() 100.03, not 100
        self.clip.half()
        for module in self.clip.modules():
            if isinstance(module, nn.LayerNorm):
                module.float()
                module.register_forward_pre_hook(_layer_norm_in_float32)
                module.register_forward_hook(_layer_norm_out_in_float16)
        self.clip.logit_scale.data = logit_scale
        self.projection.float()
        self._pad_text_to_context = True  # see encode_clip_text
        self._text_classifiers.clear()
        return self

    @property
    def logit_scale(self) -> torch.Tensor:
        """CLIP's frozen, exponentiated temperature (100 for OpenAI CLIP)."""
        return self.clip.logit_scale.exp()

    def is_video(self, pixel_values: torch.Tensor) -> bool:
        """Whether `pixel_values` is a batch of clips (one dim more than the backbone's batch of images)."""
        return pixel_values.dim() == self.family.image_dims + 1

    def tokenize(self, tokenizer, prompts: list[str]) -> dict:
        """Prompts as the backbone's own pipeline tokenises them (README: Reproducing the paper: CLIP's context 77,
        truncated; SigLIP: padded to 64)."""
        family = self.family
        return tokenizer(prompts, padding=family.text_padding, truncation=True, max_length=family.text_max_length,
                         return_tensors="pt")

    # ----- features: frozen CLIP, then the head -------------------------------------------------------------------

    def encode_clip_image(self, pixel_values: torch.Tensor, **image_inputs) -> torch.Tensor:
        """CLIP's projected image embeddings (joint space, not normalised): the frozen, cacheable features.
        `image_inputs`: the family's extra processor outputs (SigLIP 2 NaFlex: `pixel_attention_mask`, `spatial_shapes`)."""
        extra = {name: image_inputs[name] for name in self.family.image_inputs if image_inputs.get(name) is not None}
        if self.family.image_inputs and not extra:  # packed by pack_image_inputs (the package's input pipelines)
            extra = unpack_image_inputs(pixel_values)
            pixel_values = extra.pop("pixel_values")
        return self.clip.get_image_features(pixel_values=pixel_values, **extra).pooler_output

    def encode_clip_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """CLIP's projected text embeddings (joint space, not normalised)."""
        if self.family.text_padding == "max_length" and input_ids.shape[1] < self.family.text_max_length:
            # SigLIP pools the last position: tokens padded only to the longest prompt (as the zero-shot pipeline pads
            # any non-SigLIP model_type) would move it; bring them to the backbone's own 64.
            missing = self.family.text_max_length - input_ids.shape[1]
            pad_id = self.clip.config.text_config.pad_token_id or 0
            padding = (missing, 0) if self.config.text_padding_side == "left" else (0, missing)
            input_ids = F.pad(input_ids, padding, value=pad_id)
            attention_mask = None if attention_mask is None else F.pad(attention_mask, padding, value=0)
        elif getattr(self, "_pad_text_to_context", False):
            context = self.clip.config.text_config.max_position_embeddings
            if input_ids.shape[1] < context:
                # the original's float16 run: `clip.tokenize` pads every prompt with zeros to 77 tokens, and in float16
                # the padded length changes the text embeddings (up to 3e-3); float32 keeps any padding (equal within
                # rounding)
                pad = context - input_ids.shape[1]
                input_ids = F.pad(input_ids, (0, pad), value=0)
                attention_mask = None if attention_mask is None else F.pad(attention_mask, (0, pad), value=0)
        return self.clip.get_text_features(input_ids=input_ids, attention_mask=attention_mask).pooler_output

    def project(self, clip_embeds: torch.Tensor, use_projection: bool = True, normalize: bool = True) -> torch.Tensor:
        """The head: `W x`, then L2-normalised. `use_projection=False` scores plain CLIP (the paper's baseline)."""
        embeds = self.projection(clip_embeds.to(self.projection.weight.dtype)) if use_projection else clip_embeds
        return F.normalize(embeds, dim=-1) if normalize else embeds

    def get_image_features(self, pixel_values: torch.Tensor, use_projection: bool = True, **image_inputs) -> torch.Tensor:
        """(batch, 3, H, W) -> (batch, projection_dim), L2-normalised."""
        return self.project(self.encode_clip_image(pixel_values, **image_inputs), use_projection)

    def get_text_features(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, use_projection: bool = True
    ) -> torch.Tensor:
        """(batch, seq) token ids -> (batch, projection_dim), L2-normalised."""
        return self.project(self.encode_clip_text(input_ids, attention_mask), use_projection)

    def get_video_features(self, pixel_values: torch.Tensor, use_projection: bool = True, **image_inputs) -> torch.Tensor:
        """(batch, frames, 3, H, W) -> (batch, projection_dim): every frame through CLIP and the head, averaged over
        time, then L2-normalised (paper: Method)."""
        batch, frames = pixel_values.shape[:2]
        image_inputs = {name: value.flatten(0, 1) for name, value in image_inputs.items() if value is not None}
        clip_embeds = self.encode_clip_image(pixel_values.flatten(0, 1), **image_inputs)
        frame_embeds = self.project(clip_embeds, use_projection, normalize=False).unflatten(0, (batch, frames))
        return F.normalize(frame_embeds.mean(1), dim=-1)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        clip_image_embeds: torch.Tensor | None = None,
        target_embeds: torch.Tensor | None = None,
        return_loss: bool | None = None,
        **kwargs,
    ) -> ExpCLIPOutput:
        r"""
        input_ids (`torch.LongTensor` of shape `(text_batch_size, seq_len)`, *optional*): CLIP-tokenised prompts.
        pixel_values (`torch.Tensor` of shape `(batch, 3, H, W)` or `(batch, frames, 3, H, W)`, *optional*):
            Images, or video clips (frames are averaged after the head).
        clip_image_embeds (`torch.Tensor` of shape `(batch, clip_embed_dim)`, *optional*):
            Cached CLIP image embeddings, used instead of `pixel_values` (training on cached features).
        target_embeds (`torch.Tensor` of shape `(batch, projection_dim)`, *optional*):
            The teacher's L2-normalised targets (README: Faithful to the paper); given, the InfoNCE loss of README: Training is returned.
        """
        image_embeds = text_embeds = logits_per_image = logits_per_text = loss = None
        image_inputs = {name: kwargs[name] for name in self.family.image_inputs if name in kwargs}
        if clip_image_embeds is not None:
            image_embeds = self.project(clip_image_embeds)
        elif pixel_values is not None:
            features = self.get_video_features if self.is_video(pixel_values) else self.get_image_features
            image_embeds = features(pixel_values, **image_inputs)
        if input_ids is not None:
            text_embeds = self.get_text_features(input_ids, attention_mask)
        if image_embeds is not None and text_embeds is not None:
            logits_per_image = self.logit_scale * (image_embeds @ text_embeds.t())
            logits_per_text = logits_per_image.t()
        if target_embeds is not None and (return_loss is None or return_loss):
            if image_embeds is None:
                raise ValueError("target_embeds needs pixel_values or clip_image_embeds to compare against")
            loss = contrastive_loss(image_embeds, target_embeds.to(image_embeds.dtype), self.config.loss_scale)
        return ExpCLIPOutput(
            loss=loss,
            logits_per_image=logits_per_image,
            logits_per_text=logits_per_text,
            text_embeds=text_embeds,
            image_embeds=image_embeds,
        )

    # ----- batched zero-shot API ----------------------------------------------------------------------------------

    @torch.inference_mode()
    def text_classifier(
        self,
        tokenizer,
        class_names: list[str] | None = None,
        prompt_templates: str | list[str] | None = None,
        prompt_overrides: dict | None = None,
        ensemble: str | None = None,
        use_projection: bool = True,
        batch_size: int = 256,
    ) -> ExpCLIPTextClassifier:
        """Encode every class's prompts once; cached per label set, prompt set, ensemble mode, head use, tokenizer,
        device and dtype.

        Defaults come from the config (the 7 basic expressions, type3 prompts, logit averaging)."""
        class_names = list(class_names or self.config.class_names)
        prompt_templates = prompt_templates or self.config.prompt_templates
        prompt_overrides = prompt_overrides if prompt_overrides is not None else self.config.prompt_overrides
        ensemble = ensemble or self.config.ensemble
        if ensemble not in ("logits", "embeddings"):
            raise ValueError(f"ensemble must be 'logits' or 'embeddings', got {ensemble!r}")
        prompts = build_class_prompts(class_names, prompt_templates, prompt_overrides)
        device, dtype = self.projection.weight.device, self.projection.weight.dtype
        tokenizer_id = (type(tokenizer).__name__, getattr(tokenizer, "name_or_path", ""), len(tokenizer))
        key = (tuple(map(tuple, prompts)), tuple(class_names), ensemble, use_projection, tokenizer_id, str(device),
               str(dtype))
        if key in self._text_classifiers:
            return self._text_classifiers[key]
        flat = [prompt for class_prompts in prompts for prompt in class_prompts]
        embeds = []
        for start in range(0, len(flat), batch_size):
            tokens = self.tokenize(tokenizer, flat[start : start + batch_size]).to(device)
            embeds.append(self.get_text_features(tokens["input_ids"], tokens.get("attention_mask"), use_projection))
        prompt_class = torch.tensor([i for i, ps in enumerate(prompts) for _ in ps], device=device)
        classifier = ExpCLIPTextClassifier(class_names, prompts, torch.cat(embeds), prompt_class, ensemble,
                                           use_projection)
        self._text_classifiers[key] = classifier
        return classifier

    def zero_shot_logits(self, image_embeds: torch.Tensor, classifier: ExpCLIPTextClassifier) -> torch.Tensor:
        """(batch, dim) normalised image/clip embeddings -> (batch, num_classes) logits.

        "logits": mean over a class's prompts of `scale * cos` (the paper); "embeddings": `scale * cos` with the
        normalised mean prompt embedding (common CLIP practice). The plain backbone of a sigmoid family
        (`use_projection=False` on SigLIP) adds its `logit_bias`, as its own model does."""
        image_embeds = image_embeds.to(classifier.prompt_embeds.dtype)
        if classifier.ensemble == "logits":
            logits = self.logit_scale * (image_embeds @ classifier.prompt_embeds.t()) @ classifier.prompt_weights
        else:
            logits = self.logit_scale * (image_embeds @ classifier.class_embeds.t())
        if self.family.sigmoid and not classifier.use_projection:
            logits = logits + self.clip.logit_bias
        return logits

    def zero_shot_probabilities(self, logits: torch.Tensor, classifier: ExpCLIPTextClassifier) -> torch.Tensor:
        """Probabilities of `zero_shot_logits`: a softmax over labels in the projected space (the head is trained
        with InfoNCE, README: Beyond the paper); the plain backbone is scored as its own pipeline scores it
        (SigLIP: an independent sigmoid per label)."""
        if self.family.sigmoid and not classifier.use_projection:
            return logits.float().sigmoid()
        return logits.float().softmax(-1)

    @torch.inference_mode()
    def classify(
        self,
        pixel_values: torch.Tensor,
        classifier: ExpCLIPTextClassifier,
        use_projection: bool = True,
        batch_size: int = 64,
        **image_inputs,
    ) -> torch.Tensor:
        """Zero-shot logits for many images `(n, 3, H, W)` or clips `(n, frames, 3, H, W)`, `batch_size` at a time.
        `image_inputs`: the family's extra processor outputs (SigLIP 2 NaFlex), split with the pixels."""
        device = self.projection.weight.device
        dtype = self.clip.dtype
        features = self.get_video_features if self.is_video(pixel_values) else self.get_image_features
        extras = {name: image_inputs[name] for name in self.family.image_inputs if image_inputs.get(name) is not None}
        logits = []
        for start in range(0, len(pixel_values), batch_size):
            batch = pixel_values[start : start + batch_size].to(device=device, dtype=dtype)
            extra = {name: value[start : start + batch_size].to(device) for name, value in extras.items()}
            embeds = features(batch, use_projection, **extra)
            logits.append(self.zero_shot_logits(embeds, classifier))
        return torch.cat(logits)


def register_expclip():
    """In-process registration for users who installed the package (saved folders carry their own auto_map)."""
    from transformers import AutoConfig, AutoModel, AutoModelForZeroShotImageClassification

    AutoConfig.register("expclip", ExpCLIPConfig, exist_ok=True)
    AutoModel.register(ExpCLIPConfig, ExpCLIPModel, exist_ok=True)
    AutoModelForZeroShotImageClassification.register(ExpCLIPConfig, ExpCLIPModel, exist_ok=True)


# Saved folders carry both code files; the config's default auto_map names all three auto classes.
ExpCLIPConfig.register_for_auto_class()
ExpCLIPModel.register_for_auto_class("AutoModel")
if not __package__:  # imported from the installed package, not as a Hub folder's custom code
    register_expclip()

__all__ = ["ExpCLIPModel", "ExpCLIPPreTrainedModel", "ExpCLIPOutput", "BACKBONE_FAMILIES", "contrastive_loss",
           "pack_image_inputs", "sample_segment_indices"]
