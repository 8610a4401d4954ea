"""`expclip export`: an Exp-CLIP model wherever CLIP runs, with no custom code.

    expclip export expclip-l14 --to clip --output expclip-l14-clip   # stock CLIPModel folder (transformers)
    expclip export expclip-l14 --to onnx --output expclip-l14-onnx   # + onnx/model.onnx and the two towers

Exp-CLIP's head W is one bias-free linear map applied to both of CLIP's projected embeddings before normalisation
(paper: Method). CLIP's `visual_projection` and `text_projection` are bias-free linear maps too, so `W @ visual_projection`
and `W @ text_projection` make a stock `CLIPModel` with `projection_dim` 4096 whose logits are Exp-CLIP's. Videos
too: frames are averaged before normalisation, and averaging commutes with a linear map.

Every export holds a ready text classifier (`text_classifier.safetensors` + `text_classifier.json`): the normalised
prompt embeddings of a label set under some prompt sets, with each prompt's class index (the paper averages per-prompt
logits) and the normalised class embeddings, so an app needs only the vision model. The JSON repeats them as plain
arrays, for JavaScript, which has no safetensors reader.

Backbones whose image embedding is not a bias-free linear map of pooled features (SigLIP, SigLIP 2: an attention-
pooling head; README: Beyond the paper) cannot absorb W: `--to onnx` writes the Exp-CLIP folder itself and the two
towers, which run the backbone and then W (transformers.js has no Exp-CLIP model, so no `onnx/model.onnx`).

ONNX: the whole CLIP (`onnx/model.onnx`, what transformers.js's zero-shot-image-classification pipeline loads) and the
two towers, in the layout transformers.js and the Hub's ONNX repositories use, written by torch.onnx's exporter
(torch.export-based; it needs `onnxscript`) and checked with ONNX Runtime before the folder is kept. Not
optimum / optimum-onnx: their releases require transformers<4.58, and this project needs transformers 5.
"""

import argparse
import copy
import importlib.util
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from huggingface_hub import ModelCard, ModelCardData
from PIL import Image
from safetensors.torch import save_file
from torch import nn
from transformers import AutoProcessor, CLIPModel, PreTrainedConfig

from configuration_expclip import BASIC_EXPRESSIONS, PROMPT_SETS
from .inputs import first_line, one_line
from .outputs import OutputError, check_output_folder, clear_output, mark_output, output_lock
from modeling_expclip import ExpCLIPModel, pack_image_inputs

TARGETS = ("clip", "onnx")
FOLDABLE_BACKBONES = ("clip", "metaclip_2")  # bias-free visual/text projections: `--to clip` folds W into them
ONNX_DTYPES = {"float32": "", "float16": "_fp16"}  # file-name suffix transformers.js reads for `dtype: "fp16"`
DEFAULT_PROMPT_SETS = ("type3", "type5")
ONNX_PACKAGES = ("onnx", "onnxruntime", "onnxscript")  # onnxscript: torch.onnx's torch.export-based exporter needs it
ONNX_INSTALL = 'pip install -e ".[onnx]"  (or: pip install onnx onnxruntime onnxscript)'
TEXT_CLASSIFIER = "text_classifier"  # .safetensors + .json
# Largest norm-embedding difference the command accepts between ONNX Runtime (or the reloaded CLIP) and Exp-CLIP.
TOLERANCE = {"float32": 1e-4, "float16": 2e-2}
EXTERNAL_DATA_BYTES = 1_800_000_000  # ONNX protobufs stop at 2 GiB; bigger towers keep weights in a .onnx_data file
ARXIV = "https://arxiv.org/abs/2405.19100"
CONTEXT_LENGTH = 77  # CLIP's text context (README: Reproducing the paper); longer prompts are truncated
MODEL_OUTPUTS = ["logits_per_image", "logits_per_text", "text_embeds", "image_embeds"]  # as CLIPModel.forward


class ExportError(ValueError):
    """A model that cannot be exported, or an output that must not be written; the message is one line."""


class ExportWarning(UserWarning):
    """Something the export wrote that some clients will read differently; the message is one line."""


# ----- folding the head into CLIP ----------------------------------------------------------------------------------


def fold_into_clip(model: ExpCLIPModel) -> CLIPModel:
    """A stock `CLIPModel` whose projections are `W @ visual_projection` and `W @ text_projection` (float32)."""
    if model.projection.bias is not None:
        raise ExportError("the model's projection has a bias; a stock CLIPModel's projections have none")
    clip = copy.deepcopy(model.clip).float()
    weight = model.projection.weight.detach().double()
    with torch.no_grad():
        for name in ("visual_projection", "text_projection"):
            clip_projection = getattr(clip, name)
            folded = nn.Linear(clip_projection.in_features, weight.shape[0], bias=False)
            folded.weight.copy_(weight @ clip_projection.weight.double())  # products in float64, stored as float32
            setattr(clip, name, folded)
    projection_dim = weight.shape[0]
    clip.config.projection_dim = projection_dim
    clip.config.text_config.projection_dim = projection_dim
    clip.config.vision_config.projection_dim = projection_dim
    if hasattr(clip.config, "auto_map"):
        del clip.config.auto_map  # a stock model: no custom code to point at
    return clip.eval()


# ----- the ready text classifier -----------------------------------------------------------------------------------


def text_classifier_files(model: ExpCLIPModel, tokenizer, class_names: list[str], prompt_sets: dict):
    """Tensors and JSON of the text classifier: for each prompt set, the normalised per-prompt embeddings, each
    prompt's class index and the normalised class embeddings, encoded by the model's own `text_classifier`."""
    tensors, sets = {}, {}
    for set_name, templates in prompt_sets.items():
        classifier = model.text_classifier(tokenizer, class_names, templates, ensemble="logits")
        tensors[f"{set_name}.prompt_embeds"] = classifier.prompt_embeds.float().contiguous()
        tensors[f"{set_name}.prompt_class"] = classifier.prompt_class.long().contiguous()
        tensors[f"{set_name}.class_embeds"] = classifier.class_embeds.float().contiguous()
        sets[set_name] = {
            "prompts": classifier.prompts,
            "prompt_embeds": f"{set_name}.prompt_embeds",
            "prompt_class": f"{set_name}.prompt_class",
            "class_embeds": f"{set_name}.class_embeds",
        }
    _warn_long_prompts(tokenizer, [prompt for spec in sets.values() for ps in spec["prompts"] for prompt in ps])
    for set_name, spec in sets.items():
        # The same tensors as plain arrays, for JavaScript: float32 values written as their shortest decimals.
        spec["arrays"] = {name: _JSONArray(tensors[spec[name]]) for name in ("prompt_embeds", "prompt_class",
                                                                                "class_embeds")}
    info = {
        "class_names": list(class_names),
        "logit_scale": float(model.logit_scale),
        "ensemble": "logits",
        "default_prompt_set": next(iter(prompt_sets)),
        "prompt_sets": sets,
        "usage": (
            "logits[c] = logit_scale * mean over the prompts p of class c (prompt_class == c) of "
            "normalize(image_embeds) . prompt_embeds[p] (the paper's logit averaging); or "
            "logit_scale * normalize(image_embeds) . class_embeds[c] (averaged prompt embeddings); "
            "prompt_sets[name].arrays holds the same tensors as plain JSON arrays"
        ),
    }
    return tensors, info


def _warn_long_prompts(tokenizer, prompts: list[str]) -> None:
    """Warn once about prompts over CLIP's 77 tokens: transformers (and the stored classifier) truncate them keeping the
    end-of-text token, where CLIP reads the text embedding; transformers.js's truncation drops it."""
    lengths = [len(ids) for ids in tokenizer(prompts, truncation=False, verbose=False)["input_ids"]]
    long = [(prompt, length) for prompt, length in zip(prompts, lengths) if length > CONTEXT_LENGTH]
    if long:
        prompt, length = long[0]
        warnings.warn(
            f"{len(long)} prompt(s) over CLIP's {CONTEXT_LENGTH} tokens, e.g. {prompt!r} ({length} tokens): the stored "
            "classifier truncates them as CLIP does, but transformers.js's truncation drops the end-of-text token and "
            "scores them wrongly; shorten them for the transformers.js pipeline", ExportWarning, stacklevel=2,
        )


class _JSONArray:
    """A tensor to be written as a plain JSON array, one row per line (see `classifier_json`)."""

    def __init__(self, tensor: torch.Tensor):
        self.tensor = tensor

    def rows(self) -> list[str]:
        values = self.tensor.numpy()
        if values.ndim == 1:
            return [",".join(map(str, values.tolist()))]
        # str(np.float32) is the shortest decimal that reads back as the same float32.
        return ["[" + ",".join(str(value) for value in row) + "]" for row in values]


def classifier_json(info: dict) -> str:
    """`text_classifier.json`: indented, with each `_JSONArray` as plain JSON, one row per line (an indented dump of a
    4096-wide classifier puts each number on a line of its own)."""
    arrays = []

    def placeholder(value):
        if isinstance(value, _JSONArray):
            arrays.append(value)
            return f"\0array{len(arrays) - 1}"
        raise TypeError(f"not JSON serializable: {type(value).__name__}")

    text = json.dumps(info, indent=2, default=placeholder)
    for index, array in enumerate(arrays):
        token = json.dumps(f"\0array{index}")
        indent = re.search(f"^( *).*{re.escape(token)}", text, re.M).group(1)
        rows = array.rows()
        compact = (f"[{rows[0]}]" if array.tensor.ndim == 1
                   else "[\n" + ",\n".join(f"{indent}  {row}" for row in rows) + f"\n{indent}]")
        text = text.replace(token, compact, 1)
    return text + "\n"


# ----- ONNX --------------------------------------------------------------------------------------------------------


def check_onnx_installed() -> None:
    missing = [name for name in ONNX_PACKAGES if _find_spec(name) is None]
    if missing:
        raise ExportError(f"--to onnx needs {', '.join(missing)} (not installed): {ONNX_INSTALL}")


def _find_spec(name: str):
    try:
        return importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None


class VisionTower(nn.Module):
    """pixel_values -> image_embeds (projected, not normalised), as `CLIPModel.get_image_features`: what
    transformers.js's `CLIPVisionModelWithProjection` runs as `onnx/vision_model.onnx`."""

    def __init__(self, clip: CLIPModel):
        super().__init__()
        self.vision_model, self.visual_projection = clip.vision_model, clip.visual_projection

    def forward(self, pixel_values):
        return self.visual_projection(self.vision_model(pixel_values=pixel_values).pooler_output)


class ExpCLIPVisionTower(nn.Module):
    """pixel_values -> image_embeds (W applied, not normalised) for a backbone that cannot absorb W (SigLIP); SigLIP 2
    NaFlex takes its pixels packed with their mask and grid shapes (`modeling_expclip.pack_image_inputs`)."""

    def __init__(self, model: ExpCLIPModel):
        super().__init__()
        self.model = model

    def forward(self, pixel_values):
        return self.model.project(self.model.encode_clip_image(pixel_values), normalize=False)


class ExpCLIPTextTower(nn.Module):
    """input_ids, attention_mask -> text_embeds (W applied, not normalised); SigLIP's prompts padded to 64."""

    def __init__(self, model: ExpCLIPModel):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        return self.model.project(self.model.encode_clip_text(input_ids, attention_mask), normalize=False)


class TextTower(nn.Module):
    """input_ids, attention_mask -> text_embeds (projected, not normalised), as `CLIPModel.get_text_features`:
    transformers.js's `CLIPTextModelWithProjection` as `onnx/text_model.onnx`."""

    def __init__(self, clip: CLIPModel):
        super().__init__()
        self.text_model, self.text_projection = clip.text_model, clip.text_projection

    def forward(self, input_ids, attention_mask):
        return self.text_projection(self.text_model(input_ids=input_ids, attention_mask=attention_mask).pooler_output)


class CLIPWithLogits(nn.Module):
    """input_ids, attention_mask, pixel_values -> logits_per_image, logits_per_text, text_embeds, image_embeds (the
    embeddings normalised), as `CLIPModel.forward`: what transformers.js's `CLIPModel`, and so its
    zero-shot-image-classification pipeline, runs as `onnx/model.onnx`."""

    def __init__(self, clip: CLIPModel):
        super().__init__()
        self.clip = clip

    def forward(self, input_ids, attention_mask, pixel_values):
        output = self.clip(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values)
        return tuple(getattr(output, name) for name in MODEL_OUTPUTS)


def _is_all_true(self):
    """ONNX for `aten._is_all_true` (SigLIP 2's shape checks, `torch_compilable_check`): min over the bools."""
    from onnxscript import opset18 as op

    return op.Cast(op.ReduceMin(op.Cast(self, to=7), keepdims=0), to=9)  # 7: INT64, 9: BOOL


def _export_tower(tower: nn.Module, args: tuple, input_names, output_names, dynamic_shapes, path: Path, dtype: str):
    import onnx

    big = sum(p.numel() * 4 for p in tower.parameters()) > EXTERNAL_DATA_BYTES
    torch_onnx_log = logging.getLogger("torch.onnx")
    level = torch_onnx_log.level
    torch_onnx_log.setLevel(logging.ERROR)  # "torchvision is not installed. Skipping torchvision::nms" and such
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                tower.eval(), args, input_names=input_names, output_names=list(output_names),
                dynamic_shapes=dynamic_shapes, dynamo=True, verbose=False,
                custom_translation_table={torch.ops.aten._is_all_true.default: _is_all_true},
            )
    finally:
        torch_onnx_log.setLevel(level)
    proto = program.model_proto
    if dtype == "float16":
        from onnxruntime.transformers.float16 import convert_float_to_float16

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # Inputs and outputs stay float32, so every client feeds the same tensors to either precision.
            proto = convert_float_to_float16(proto, keep_io_types=True)
    # `<name>.onnx_data` is the external-data file name transformers.js looks for.
    onnx.save_model(proto, str(path), save_as_external_data=big, location=path.name + "_data")


def export_onnx(clip: CLIPModel | ExpCLIPModel, tokenizer, folder: Path, dtype: str = "float32",
                processor=None) -> dict:
    """`folder/onnx/model{,_fp16}.onnx` (the whole CLIP), `vision_model{,_fp16}.onnx` and `text_model{,_fp16}.onnx`;
    returns their paths. `clip`: the folded stock model, or the Exp-CLIP model itself for a backbone that cannot absorb
    W (then `processor` gives the example pixels, and there is no model.onnx: transformers.js has no Exp-CLIP model)."""
    onnx_dir = folder / "onnx"
    onnx_dir.mkdir(parents=True, exist_ok=True)
    suffix = ONNX_DTYPES[dtype]
    batch, sequence = torch.export.Dim("batch_size"), torch.export.Dim("sequence_length")
    paths = {"vision": onnx_dir / f"vision_model{suffix}.onnx", "text": onnx_dir / f"text_model{suffix}.onnx"}
    prompts = ["a face.", "a photo of a face with an expression of happiness."]
    if isinstance(clip, ExpCLIPModel):
        vision, text, pixel_values = ExpCLIPVisionTower(clip), ExpCLIPTextTower(clip), probe_pixel_values(processor)
        tokens = clip.tokenize(tokenizer, prompts)
        fixed_length = clip.family.text_padding == "max_length"  # SigLIP: always 64 tokens
    else:
        size = clip.config.vision_config.image_size
        vision, text, pixel_values = VisionTower(clip), TextTower(clip), torch.rand(2, 3, size, size)
        # Two prompts of different lengths, so neither axis is traced as a constant.
        tokens, fixed_length = tokenizer(prompts, padding=True, return_tensors="pt"), False
    _export_tower(vision, (pixel_values,), ["pixel_values"], ["image_embeds"], {"pixel_values": {0: batch}},
                  paths["vision"], dtype)
    token_axes = {0: batch} if fixed_length else {0: batch, 1: sequence}
    _export_tower(
        text, (tokens["input_ids"], tokens["attention_mask"]), ["input_ids", "attention_mask"],
        ["text_embeds"], {"input_ids": token_axes, "attention_mask": token_axes}, paths["text"], dtype,
    )
    if not isinstance(clip, ExpCLIPModel):  # the folded stock model
        paths["model"] = onnx_dir / f"model{suffix}.onnx"
        # Three images and two prompts: the image and text batches stay two separate axes.
        images = torch.export.Dim("image_batch_size")
        _export_tower(
            CLIPWithLogits(clip), (tokens["input_ids"], tokens["attention_mask"], torch.rand(3, *pixel_values.shape[1:])),
            ["input_ids", "attention_mask", "pixel_values"], MODEL_OUTPUTS,
            {"input_ids": token_axes, "attention_mask": token_axes, "pixel_values": {0: images}}, paths["model"], dtype,
        )
    return paths


# ----- checks before the folder is kept ----------------------------------------------------------------------------


def probe_pixel_values(processor) -> torch.Tensor:
    """Two deterministic images of different shapes through the model's own processor."""
    y, x = np.mgrid[0:96, 0:128]
    first = np.stack([x * 2 % 256, y * 2 % 256, (x + y) % 256], -1).astype(np.uint8)
    second = (255 * (0.5 + 0.5 * np.sin(np.stack([x / 7.0, y / 5.0, (x - y) / 9.0], -1)))).astype(np.uint8)
    images = [Image.fromarray(first), Image.fromarray(second[:80, :60])]
    outputs = processor(images=images, return_tensors="pt")
    if "spatial_shapes" in outputs:  # SigLIP 2 NaFlex: one tensor, as the package's input pipelines give it
        return pack_image_inputs(outputs["pixel_values"], outputs["pixel_attention_mask"], outputs["spatial_shapes"])
    return outputs["pixel_values"]


def _largest_difference(embeds, expected: torch.Tensor) -> float:
    embeds = F.normalize(torch.as_tensor(np.asarray(embeds), dtype=torch.float32), dim=-1)
    return float((embeds - expected.float()).abs().max())


def _check(name: str, difference: float, tolerance: float) -> None:
    if not difference <= tolerance:  # also refuses NaN
        raise ExportError(
            f"check failed: {name} differs from Exp-CLIP's by {difference:.3g} (more than {tolerance:g}); "
            "nothing was written"
        )


def verify_export(folder: Path, model: ExpCLIPModel, processor, prompts: list[str], onnx_paths: dict | None,
                  dtype: str) -> dict:
    """Reload what was written and compare its normalised embeddings with Exp-CLIP's: the stock CLIPModel (float32)
    always, ONNX Runtime's towers when exported. Raises ExportError when any difference is over the tolerance."""
    pixel_values = probe_pixel_values(processor)
    tokens = {key: value.numpy() for key, value in model.tokenize(processor.tokenizer, prompts).items()}
    differences = {}
    with torch.inference_mode():
        expected_image = model.get_image_features(pixel_values)
        expected_text = model.get_text_features(torch.from_numpy(tokens["input_ids"]),
                                                torch.from_numpy(tokens["attention_mask"]))
        if model.config.backbone_type in FOLDABLE_BACKBONES:  # the folded stock model, reloaded
            from transformers import AutoModel

            clip = AutoModel.from_pretrained(folder, dtype=torch.float32).eval()
            image = clip.get_image_features(pixel_values=pixel_values).pooler_output
            text = clip.get_text_features(input_ids=torch.from_numpy(tokens["input_ids"]),
                                          attention_mask=torch.from_numpy(tokens["attention_mask"])).pooler_output
            differences["CLIPModel image_embeds"] = _largest_difference(image, expected_image)
            differences["CLIPModel text_embeds"] = _largest_difference(text, expected_text)
    if onnx_paths:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        vision = onnxruntime.InferenceSession(str(onnx_paths["vision"]), options, providers=["CPUExecutionProvider"])
        text_session = onnxruntime.InferenceSession(str(onnx_paths["text"]), options,
                                                    providers=["CPUExecutionProvider"])
        image = vision.run(["image_embeds"], {"pixel_values": pixel_values.numpy()})[0]
        text = text_session.run(["text_embeds"], {"input_ids": tokens["input_ids"].astype(np.int64),
                                                  "attention_mask": tokens["attention_mask"].astype(np.int64)})[0]
        differences[f"ONNX Runtime image_embeds ({dtype})"] = _largest_difference(image, expected_image)
        differences[f"ONNX Runtime text_embeds ({dtype})"] = _largest_difference(text, expected_text)
    if onnx_paths and "model" in onnx_paths:
        whole = onnxruntime.InferenceSession(str(onnx_paths["model"]), options, providers=["CPUExecutionProvider"])
        logits_per_image, _, text, image = whole.run(MODEL_OUTPUTS, {
            "input_ids": tokens["input_ids"].astype(np.int64),
            "attention_mask": tokens["attention_mask"].astype(np.int64),
            "pixel_values": pixel_values.numpy(),
        })
        # Logits over logit_scale are cosines: the tolerance is the embeddings' one.
        cosine = F.normalize(expected_image, dim=-1) @ F.normalize(expected_text, dim=-1).T
        scale = float(model.logit_scale)
        differences[f"ONNX Runtime model.onnx logits_per_image / logit_scale ({dtype})"] = float(
            (torch.from_numpy(logits_per_image) / scale - cosine).abs().max())
        differences[f"ONNX Runtime model.onnx image_embeds ({dtype})"] = _largest_difference(image, expected_image)
        differences[f"ONNX Runtime model.onnx text_embeds ({dtype})"] = _largest_difference(text, expected_text)
    for name, difference in differences.items():
        _check(name, difference, TOLERANCE["float32" if name.startswith("CLIPModel") else dtype])
    return differences


# ----- the model card ----------------------------------------------------------------------------------------------


def _hub_id(name: str | None) -> str | None:
    """`owner/name` when `name` looks like a Hub id rather than a local path (the card's base_model must be one)."""
    if name and re.fullmatch(r"[\w.-]+/[\w.-]+", name) and not Path(name).exists():
        return name
    return None


def model_card(model: ExpCLIPModel, source: str, to: str, dtype: str, info: dict) -> ModelCard:
    config = model.config
    base = config.clip_model_name_or_path
    tags = ["exp-clip", "clip", "facial-expression-recognition", "zero-shot-image-classification"]
    if to == "onnx":
        tags += ["onnx", "transformers.js"] if config.backbone_type in FOLDABLE_BACKBONES else ["onnx"]
    data = ModelCardData(
        base_model=_hub_id(base),
        library_name="transformers",
        pipeline_tag="zero-shot-image-classification",
        tags=tags,
    )
    type3 = PROMPT_SETS["type3"][0]
    provenance = [
        ("base CLIP", base),
        ("Exp-CLIP head", f"{config.clip_embed_dim} -> {config.projection_dim}, no bias"),
        ("teacher (LLM knowledge)", config.teacher_model_name_or_path),
        ("teacher instruction", config.instruction),
        ("teacher target pooling", config.target_pooling),
        ("teacher dropout during training (original quirk)", config.teacher_dropout),
        ("original checkpoint", getattr(config, "original_checkpoint", None)),
        ("image preprocessing", getattr(config, "image_preprocessing", None)),
        ("exported from", source),
    ]
    rows = "\n".join(f"| {key} | {value} |" for key, value in provenance if value is not None)
    labels = ", ".join(f'"{name}"' for name in info["class_names"][:3])
    onnx_files = ""
    foldable = config.backbone_type in FOLDABLE_BACKBONES
    if to == "onnx" and not foldable:
        suffix = ONNX_DTYPES[dtype]
        onnx_files = (
            f"\n## ONNX\n\n`onnx/vision_model{suffix}.onnx` (`pixel_values` -> `image_embeds`) and "
            f"`onnx/text_model{suffix}.onnx` (`input_ids`, `attention_mask` -> `text_embeds`), {dtype}: the "
            f"{config.backbone_type} backbone, then W (not normalised), checked against Exp-CLIP with ONNX Runtime when "
            "exported. Give them what this folder's processor gives"
            + (" (SigLIP 2 NaFlex: its pixels, patch mask and grid shapes packed into one tensor by "
               "`modeling_expclip.pack_image_inputs`)" if config.backbone_type == "siglip2" else "")
            + ". transformers.js has no Exp-CLIP model, so there is no `onnx/model.onnx`. `text_classifier.json` holds "
            "the classifier as plain JSON arrays too (`prompt_sets.<name>.arrays`).\n"
        )
    elif to == "onnx":
        suffix = ONNX_DTYPES[dtype]
        js_dtype = ', with `dtype: "fp16"`' if suffix else ""
        js_options = ', { dtype: "fp16" }' if suffix else ""
        onnx_files = (
            f"\n## ONNX\n\n`onnx/model{suffix}.onnx` (the whole CLIP: `input_ids`, `attention_mask`, `pixel_values` -> "
            "`logits_per_image`, `logits_per_text`, `text_embeds`, `image_embeds`), "
            f"`onnx/vision_model{suffix}.onnx` (`pixel_values` -> `image_embeds`) and "
            f"`onnx/text_model{suffix}.onnx` (`input_ids`, `attention_mask` -> `text_embeds`), {dtype}, the layout "
            "transformers.js reads (`CLIPModel`, `CLIPVisionModelWithProjection`, `CLIPTextModelWithProjection`"
            f"{js_dtype}). All three were checked against Exp-CLIP with ONNX Runtime when exported. "
            "`text_classifier.json` holds the classifier as plain JSON arrays too (`prompt_sets.<name>.arrays`).\n\n"
            "```js\n"
            'import { pipeline } from "@huggingface/transformers";\n\n'
            f'const classifier = await pipeline("zero-shot-image-classification", "path/to/this/folder"{js_options});\n'
            f'const scores = await classifier("face.jpg", [{labels}], {{ hypothesis_template: "{type3}" }});\n'
            "```\n\n"
            "Give it images at the processor's size (`preprocessor_config.json`): its resize is not PIL's. It drops "
            "the end-of-text token of prompts over 77 tokens: keep prompts shorter.\n"
        )
    if foldable:
        title, form = "Exp-CLIP as a stock CLIP model", f"""Here W is folded into CLIP's own projections: \
`visual_projection = W · visual_projection`
and `text_projection = W · text_projection` (`projection_dim` {config.projection_dim}). The logits are Exp-CLIP's
(videos too: average the frames' `image_embeds`, then normalise), and the folder is a plain `CLIPModel`: no custom
code, no `trust_remote_code`."""
        remote_code = ""
    else:
        title, form = "Exp-CLIP with ONNX towers", f"""Its {config.backbone_type} backbone's image embedding \
comes
from an attention-pooling head, which cannot absorb W, so this folder is the Exp-CLIP model itself (custom code:
`trust_remote_code=True`) with ONNX towers that run the backbone and then W (`projection_dim` {config.projection_dim})."""
        remote_code = ", trust_remote_code=True"
    body = f"""
# {title}

[Exp-CLIP]({ARXIV}) (Zhao, Cao, Gong, Patras, *Enhancing Zero-Shot Facial Expression Recognition by LLM Knowledge
Transfer*, WACV 2025) trains one bias-free linear map W on top of a frozen CLIP so that CLIP's embeddings of faces
land where an LLM puts them. {form} Written by `expclip export`.

## Use

Use the paper's prompt (type3): `{type3}`

```python
from transformers import pipeline

classifier = pipeline("zero-shot-image-classification", model="path/to/this/folder"{remote_code})
classifier("face.jpg", candidate_labels=[{labels}, ...],
           hypothesis_template="{type3}")
```

Keep the folder's image processor: it is the preprocessing the head was trained with.

## Text classifier

`text_classifier.safetensors` and `text_classifier.json` hold the normalised prompt embeddings of
{", ".join(info["class_names"])} under the prompt sets {", ".join(info["prompt_sets"])}, each prompt's class index and
the normalised class embeddings: `logits = logit_scale * normalize(image_embeds) @ prompt_embeds.T`, then the
mean over each class's prompts (the paper's logit averaging); `logit_scale` is {info["logit_scale"]:g}. With it an
app needs only the vision model.
{onnx_files}
## Provenance

| | |
| --- | --- |
{rows}
"""
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{body}")


# ----- output folder -----------------------------------------------------------------------------------------------


def check_output(output_dir: Path, overwrite: bool, model: str | None = None) -> Path:
    """The rule every command follows (`expclip.outputs`): the output is new, empty, or an earlier export whose
    marker lists every file in it (replaced only with `overwrite`, and then only those files); never the input model
    folder. Returns it resolved; raises `ExportError` (one line) before anything is loaded."""
    model_folder = model if model is not None and Path(model).expanduser().is_dir() else None
    try:
        return check_output_folder(output_dir, "export", [model_folder], overwrite=overwrite)
    except OutputError as error:
        raise ExportError(str(error))


def _shareable(folder: Path) -> None:
    """The permissions a plain `mkdir` / `open` would give: mkdtemp's folder and some writers' files are private (0700,
    0600), and a model folder is meant to be served and shared."""
    umask = os.umask(0)
    os.umask(umask)
    for path in [folder, *folder.rglob("*")]:
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def _write_atomically(output_dir: Path, write) -> None:
    """`write(tmp)` in a temporary folder, checked, then moved into place: a failure leaves nothing behind. A new
    output is the renamed temporary folder; an existing one (empty, or an earlier export, checked by `check_output`)
    keeps its folder: only the files its marker lists are deleted, then the new files are moved in."""
    existing = output_dir.is_dir()
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".expclip-export.", suffix=".partial", dir=output_dir if existing
                                else output_dir.parent))
    try:
        write(tmp)
        mark_output(tmp, "export")
        _shareable(tmp)
        if not existing:
            os.replace(tmp, output_dir)
            return
        clear_output(output_dir, "export")
        for entry in sorted(tmp.iterdir()):
            os.replace(entry, output_dir / entry.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ----- export ------------------------------------------------------------------------------------------------------


def load_expclip(model: str | None) -> tuple[ExpCLIPModel, object, str]:
    """MODEL (a folder, a Hub id, or None / an alias for the authors' converted head) -> model, processor, folder."""
    from .models import ModelFetchError, resolve_model

    try:
        source = resolve_model(model)
    except ModelFetchError as error:
        raise ExportError(str(error))
    path = Path(source)
    if path.is_dir() and not any(path.iterdir()):
        raise ExportError(f"{source}: an empty folder, not an Exp-CLIP model")
    if path.is_file():
        raise ExportError(f"{source}: a file, not an Exp-CLIP model folder (expclip convert turns an authors' .pth "
                          "head into one)")
    if path.is_dir() and not (path / "config.json").is_file():
        raise ExportError(f"{source}: not an Exp-CLIP model (no config.json in this folder)")
    if not path.exists() and _hub_id(source) is None:
        raise ExportError(f"{source}: no such folder, and not a Hub id")
    try:
        config, _ = PreTrainedConfig.get_config_dict(source)
    except (OSError, ValueError) as error:
        raise ExportError(f"{source}: not an Exp-CLIP model ({first_line(error)})")
    if config.get("model_type") != "expclip":
        found = f"model_type {config.get('model_type')!r}" if config.get("model_type") else "no model_type"
        raise ExportError(f"{source}: not an Exp-CLIP model ({found} in its config.json, expected 'expclip')")
    try:
        expclip = ExpCLIPModel.from_pretrained(source, dtype=torch.float32).eval()
        processor = AutoProcessor.from_pretrained(source, backend="pil")  # PIL's resize, old folders too
    except (OSError, ValueError) as error:
        raise ExportError(f"{source}: cannot load this Exp-CLIP model ({first_line(error)})")
    broken = next((name for name, weight in expclip.named_parameters() if not torch.isfinite(weight).all()), None)
    if broken is not None:  # every check would then read "differs by nan"
        raise ExportError(f"{source}: the model's weight {broken} holds NaN or infinite values; refused (a broken model)")
    return expclip, processor, source


def export_model(
    model: str | None,
    output_dir,
    to: str = "clip",
    dtype: str = "float32",
    class_names: list[str] | None = None,
    prompt_sets=DEFAULT_PROMPT_SETS,
    overwrite: bool = False,
) -> Path:
    """Export an Exp-CLIP model (folder, Hub id or alias) to `output_dir`: a stock CLIPModel folder with the model's
    processor, a model card and the text classifier; `to="onnx"` adds the two ONNX towers, checked with ONNX Runtime.

    `class_names`: default the 7 basic expressions. `prompt_sets`: names from PROMPT_SETS, or a dict name -> templates.
    Raises `ExportError` (one line) and writes nothing when the model, the options or the output are refused."""
    if str(output_dir) == "":
        raise ExportError("--output is empty; give a folder")
    output_dir = Path(output_dir)
    if to not in TARGETS:
        raise ExportError(f"--to must be one of {', '.join(TARGETS)}, got {to!r}")
    if dtype not in ONNX_DTYPES:
        raise ExportError(f"--dtype must be one of {', '.join(ONNX_DTYPES)}, got {dtype!r}")
    if dtype != "float32" and to != "onnx":
        raise ExportError("--dtype applies to the ONNX files only (use --to onnx); the safetensors stay float32")
    output_dir = check_output(output_dir, overwrite, model)  # before any loading; "." becomes a named folder
    if to == "onnx":
        check_onnx_installed()
    if not isinstance(prompt_sets, dict):
        prompt_sets = {name: name for name in prompt_sets}
    if not prompt_sets:
        raise ExportError("no prompt set given")
    class_names = list(class_names) if class_names is not None else list(BASIC_EXPRESSIONS)
    if not class_names or any(not name.strip() for name in class_names):
        raise ExportError(f"empty label in {','.join(class_names)!r}" if class_names else "the label list is empty")
    try:  # labels and prompt sets before the model loads: build_class_prompts needs no model
        from modeling_expclip import build_class_prompts

        for templates in prompt_sets.values():
            build_class_prompts(class_names, templates)
    except ValueError as error:  # unknown prompt set, template without {}, duplicate labels
        raise ExportError(first_line(error))
    try:
        lock = output_lock(output_dir, "export")
        lock.__enter__()
    except OutputError as error:  # another export is writing this folder now
        raise ExportError(str(error))
    try:
        return _export(model, output_dir, to, dtype, class_names, prompt_sets)
    finally:
        lock.__exit__(None, None, None)


def _export(model, output_dir: Path, to: str, dtype: str, class_names: list[str], prompt_sets: dict) -> Path:
    expclip, processor, source = load_expclip(model)
    foldable = expclip.config.backbone_type in FOLDABLE_BACKBONES
    if to == "clip" and not foldable:
        raise ExportError(f"{source}: a {expclip.config.backbone_type} backbone cannot absorb the head into a stock "
                          "model (its image embedding is not a linear projection); use --to onnx")
    try:
        tensors, info = text_classifier_files(expclip, processor.tokenizer, class_names, prompt_sets)
    except ValueError as error:  # unknown prompt set, template without {}, duplicate labels
        raise ExportError(first_line(error))
    clip = fold_into_clip(expclip) if foldable else expclip  # not foldable: the Exp-CLIP folder itself
    card = model_card(expclip, str(model if model is not None else source), to, dtype, info)
    prompts = [prompt for spec in info["prompt_sets"].values() for class_prompts in spec["prompts"]
               for prompt in class_prompts]

    def write(folder: Path):
        clip.save_pretrained(folder)
        processor.save_pretrained(folder)
        processor.image_processor.save_pretrained(folder)  # preprocessor_config.json: what transformers.js reads
        if not foldable:
            from .inputs import pin_pil_image_processor

            pin_pil_image_processor(folder)  # README: Reproducing the paper: the Exp-CLIP folder keeps PIL resizing
        save_file(tensors, folder / f"{TEXT_CLASSIFIER}.safetensors", metadata={"format": "pt"})
        (folder / f"{TEXT_CLASSIFIER}.json").write_text(classifier_json(info), encoding="utf-8")
        card.save(folder / "README.md")
        onnx_paths = export_onnx(clip, processor.tokenizer, folder, dtype, processor) if to == "onnx" else None
        verify_export(folder, expclip, processor, prompts, onnx_paths, dtype)

    _write_atomically(output_dir, write)
    return output_dir


# ----- command line ------------------------------------------------------------------------------------------------


def parse_prompt_sets(text: str | None) -> dict:
    """`--prompts type3,type5` (named sets) or `--prompts "a photo of {}.|a face showing {}."` (one set of
    `|`-separated templates, stored as `custom`)."""
    if text is None:
        return {name: name for name in DEFAULT_PROMPT_SETS}
    names = [name.strip() for name in text.split(",")]
    if all(name in PROMPT_SETS for name in names):
        return {name: name for name in names}
    unknown = [name for name in names if name not in PROMPT_SETS and "{}" not in name and len(name.split()) == 1]
    if "{}" not in text and unknown:  # `--prompts type9`: a mistyped set name, not a template
        raise ExportError(f"unknown prompt set {unknown[0]!r}; known: {', '.join(PROMPT_SETS)} (or templates with {{}}, "
                          "|-separated)")
    return {"custom": [template.strip() for template in text.split("|")]}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", help="an Exp-CLIP model: a local folder, a Hub id, or one of the "
                        "aliases expclip-l14, expclip-b16, expclip-b32")
    parser.add_argument("--to", choices=TARGETS, default="clip", help="clip: a stock CLIPModel folder (default); "
                        "onnx: the same plus onnx/vision_model.onnx and onnx/text_model.onnx")
    parser.add_argument("--output", required=True, type=Path, help="folder to write (must not exist, or be empty)")
    parser.add_argument("--dtype", choices=list(ONNX_DTYPES), default="float32",
                        help="precision of the ONNX files (float16: *_fp16.onnx, float32 inputs and outputs)")
    parser.add_argument("--labels", help='comma-separated class names for the text classifier (default: the 7 basic '
                        'expressions)')
    parser.add_argument("--prompts", help="prompt sets for the text classifier, comma-separated (default: type3,type5;"
                        f" known: {', '.join(PROMPT_SETS)}), or your own '|'-separated templates with {{}}")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output written by an earlier "
                        "export")
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")


def run(args: argparse.Namespace) -> int:
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # success is one line, a refusal too
    if not args.debug:  # transformers' multi-line LOAD REPORT for a broken folder: our one line says it
        transformers_logging.set_verbosity_error()
    labels = None if args.labels is None else [name.strip() for name in args.labels.split(",")]
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ExportWarning)
            folder = export_model(args.model, args.output, to=args.to, dtype=args.dtype, class_names=labels,
                                  prompt_sets=parse_prompt_sets(args.prompts), overwrite=args.overwrite)
        for warning in caught:
            if issubclass(warning.category, ExportWarning):
                print(f"expclip export: warning: {warning.message}", file=sys.stderr)
            else:  # shown as they would have been
                warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)
        folder = args.output  # as the user wrote it
    except Exception as error:
        if args.debug:
            raise
        message = str(error) if isinstance(error, ExportError) else one_line(error)
        print(f"expclip export: {message}", file=sys.stderr)
        return 1
    print(f"wrote {folder}")
    return 0
