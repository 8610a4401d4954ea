"""`expclip evaluate`: the paper's zero-shot protocol (README: Reproducing the paper) on a prepared benchmark -> UAR/WAR.

    expclip evaluate --model MODEL --benchmark dfew --data data/dfew --prompts all --baseline-clip --output results

Every item goes through frozen CLIP once; each (head, prompt set) row then scores the cached CLIP embeddings with
the model's zero-shot API (`text_classifier` once per prompt set, `project`, `zero_shot_logits`), so `--prompts all
--baseline-clip` (10 rows) costs one pass over the images. Clips: 16 frames by `sample_segment_indices`, CLIP on
every frame, frame embeddings averaged (in float32, whatever the model's precision), then the head and L2
normalisation; the head is affine, so projecting the mean equals the mean of the projections (paper: Method).
`--paper` selects everything that reproduces the released heads' logs: the original's GPU precision, its short-clip
sampling and its image reading.

Writes OUTPUT/MODEL/BENCHMARK/results.json (every number, per-item predictions, excluded items),
OUTPUT/MODEL/BENCHMARK/confusion/*.png (row-normalised confusion matrices) and OUTPUT/results.md (the paper's table
layout over every model and benchmark evaluated into OUTPUT so far, with the published numbers below it).
"""

import json
import sys
from pathlib import Path

from configuration_expclip import PROMPT_SETS
from ..inputs import (
    DTYPES,
    MIXED_PRECISION,
    ImagePreprocessing,
    InputError,
    InputPipeline,
    first_line,
    load_image,
    read_prompt_file,
)
from ..outputs import OutputError, check_output_folder, mark_output

from .benchmarks import BENCHMARKS, METADATA_FILE, UnknownBenchmarkError, frame_files, get_benchmark, uar_war_results

METRICS_DIR = Path(__file__).parent / "metrics"
PROMPT_STUDY = ["type1", "type2", "type3", "type4", "type5"]  # the paper's prompt study, "--prompts all"
HEADS = {True: "Exp-CLIP", False: "CLIP"}  # use_projection -> row label


class EvaluateError(Exception):
    """A run that cannot start (missing data folder, wrong benchmark, unloadable model): one line naming the item."""


# ----- data: the prepared dataset as CLIP pixel values, one bad item never stops the run -------------------------


class BenchmarkPixels:
    """The input pipeline's `prepare` over a prepared benchmark: row index -> {"pixel_values": ...}; a bad row raises
    `InputError` naming it (the pipeline carries the line, the run goes on).

    Images: (1, 3, H, W). Clips: (num_segments, 3, H, W), frames sorted by file name and picked by
    `sample_segment_indices` from the clip's listed frame count. Pixels: the model's own image processor. A face box
    is cut in the stored pixels' coordinates, as the release gives it; `original_reading` then reads as the original
    did (a plain `.convert("RGB")`: no EXIF rotation, no alpha compositing)."""

    def __init__(self, dataset, image_processor, num_classes, video, num_segments=16, short_clip="even",
                 original_reading=False):
        self.dataset = dataset
        self.preprocess = ImagePreprocessing(image_processor) if image_processor is not None else None
        self.num_classes = num_classes
        self.video = video
        self.num_segments = num_segments
        self.short_clip = short_clip
        self.original_reading = original_reading

    def __len__(self):
        return len(self.dataset)

    def __call__(self, index) -> dict:
        item = self.dataset[index]
        if not 0 <= item["label"] < self.num_classes:
            raise InputError(f"{item['id']}: label {item['label']} is outside the {self.num_classes} classes")
        images = self.load_clip(item) if self.video else [self.load_face(item)]
        return {"pixel_values": self.preprocess(images)}

    def name(self, index) -> str:
        """What a one-line reason calls row `index` when an unexpected error (not an `InputError`) hits it."""
        return str(self.dataset[index]["id"])

    def load_face(self, item):
        box = item.get("box") or []
        if len(box) == 4:  # AffectNet: the release's face box (x, y, width, height), in the stored pixels
            x, y, width, height = box
            return self.load(item["path"], (x, y, x + width, y + height))
        return self.load(item["path"])

    def load(self, path, box=None):
        return load_image(path, box=box, original=self.original_reading)

    def frame_paths(self, item) -> list[Path]:
        """The clip's `num_segments` frames: the paper's test sampling over the frame count its list gives."""
        from modeling_expclip import sample_segment_indices

        folder = Path(item["path"])
        if not folder.is_dir():
            raise InputError(f"{folder}: no such frame folder")
        frames = frame_files(folder)
        claimed = item["num_frames"] or len(frames)
        if len(frames) < claimed or not frames:
            raise InputError(f"{folder}: {len(frames)} frames, its list claims {claimed}")
        return [frames[i] for i in sample_segment_indices(claimed, self.num_segments, self.short_clip)]

    def load_clip(self, item):
        paths = self.frame_paths(item)
        decoded = {path: self.load(path) for path in dict.fromkeys(paths)}  # short clips repeat frames: decode once
        return [decoded[path] for path in paths]


def clip_embeddings(model, batches, video, description="CLIP features"):
    """One pass over the input pipeline's batches (`InputBatch`es of `BenchmarkPixels`): CLIP joint-space
    embeddings (clips: mean over frames) of the good rows, and the excluded rows with their reasons."""
    import torch
    from tqdm.auto import tqdm

    embeds, kept, excluded = {}, [], []
    device = model.projection.weight.device
    with torch.inference_mode():
        for batch in tqdm(batches, desc=description, unit="batch", file=sys.stderr):
            for prepared in batch.errors:
                excluded.append((prepared.index, prepared.error))
                tqdm.write(f"excluded: {prepared.error}", file=sys.stderr)
            good = batch.good
            if not good:
                continue
            pixels = batch.tensors["pixel_values"].to(device=device, dtype=model.clip.dtype, non_blocking=True)
            features = model.encode_clip_image(pixels).float()  # frames averaged in float32, as the original's head
            if video:
                features = features.unflatten(0, (len(good), pixels.shape[0] // len(good))).mean(1)
            for prepared, feature in zip(good, features.cpu()):
                embeds[prepared.index] = feature
                kept.append(prepared.index)
    kept.sort()
    stacked = torch.stack([embeds[i] for i in kept]) if kept else torch.empty(0)
    return kept, stacked, excluded


# ----- metrics: `evaluate` modules shipped in eval/metrics (evaluate.load("accuracy") would need the Hub) ----------


def load_metrics():
    import evaluate

    names = ("accuracy", "recall", "confusion_matrix")
    missing = [name for name in names if not (METRICS_DIR / name / f"{name}.py").is_file()]
    if missing:
        raise EvaluateError(f"{METRICS_DIR}: metric module(s) {', '.join(missing)} not installed with the package")
    return {name: evaluate.load(str(METRICS_DIR / name)) for name in names}


def score(metrics, predictions, references, num_classes) -> dict:
    """WAR = accuracy, UAR = mean per-class recall over the classes present (README: Reproducing the paper), in %; confusion counts."""
    present = sorted(set(references))
    war = metrics["accuracy"].compute(predictions=predictions, references=references)["accuracy"]
    uar = metrics["recall"].compute(
        predictions=predictions, references=references, labels=present, average="macro", zero_division=0
    )["recall"]
    per_class = metrics["recall"].compute(
        predictions=predictions, references=references, labels=list(range(num_classes)), average=None,
        zero_division=0,
    )["recall"]
    confusion = metrics["confusion_matrix"].compute(
        predictions=predictions, references=references, labels=list(range(num_classes))
    )["confusion_matrix"]
    return {
        "uar": 100 * uar,
        "war": 100 * war,
        "num_items": len(references),
        "per_class_recall": [100 * r if c in present else None for c, r in enumerate(per_class)],
        "confusion_matrix": confusion,
    }


def save_confusion_png(confusion, class_names, title, path: Path):
    """Row-normalised confusion matrix (rows: true class, columns: predicted) with class names on both axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    counts = np.asarray(confusion, dtype=float)
    rows = counts.sum(1, keepdims=True)
    normalised = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    size = 1.6 + 0.55 * len(class_names)
    figure, axes = plt.subplots(figsize=(size + 1.2, size))
    image = axes.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    axes.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
    axes.set_yticks(range(len(class_names)), class_names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title, fontsize=9)
    for i in range(len(class_names)):
        for j in range(len(class_names)):
            colour = "white" if normalised[i, j] > 0.5 else "black"
            axes.text(j, i, f"{normalised[i, j]:.2f}", ha="center", va="center", fontsize=7, color=colour)
    figure.colorbar(image, ax=axes, fraction=0.046)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)


# ----- tables and the model card -------------------------------------------------------------------------------------


def render_table(rows: dict) -> list[str]:
    """Markdown in the paper's layout: one column per benchmark (the paper's table order), "UAR/WAR" cells, "–" if not run.

    `rows` maps a row label to {benchmark name: (uar, war)}."""
    header = "| model | " + " | ".join(b.title for b in BENCHMARKS.values()) + " |"
    lines = [header, "| --- " * (len(BENCHMARKS) + 1) + "|"]
    for label, cells in rows.items():
        values = [f"{cells[n][0]:.2f}/{cells[n][1]:.2f}" if n in cells else "–" for n in BENCHMARKS]
        lines.append(f"| {label} | " + " | ".join(values) + " |")
    return lines


def write_results_table(output: Path) -> Path:
    """OUTPUT/results.md over every OUTPUT/*/results.json, then the two targets to compare with (README: Reproducing the paper): the logs
    of the runs whose heads were released (for converted heads) and the paper's table (for retrained heads)."""
    measured = {}
    for results_file in sorted(output.glob("*/*/results.json")):
        results = json.loads(results_file.read_text(encoding="utf-8"))
        for row in results["rows"]:
            key = (row["use_projection"], row["model"], row["prompts"])  # the paper lists CLIP rows first
            measured.setdefault(key, {})[results["benchmark"]] = (row["uar"], row["war"])
    measured = {f"{model} ({prompts})": cells for (_, model, prompts), cells in sorted(measured.items())}
    released, published = {}, {}
    for benchmark in BENCHMARKS.values():
        for model, pair in benchmark.released.items():
            released.setdefault(model, {})[benchmark.name] = pair
        for model, pair in benchmark.published.items():
            published.setdefault(model, {})[benchmark.name] = pair
    lines = ["# Zero-shot results (UAR/WAR, %)", "", *render_table(measured), "",
             "Target for converted released heads (expclip-l14, expclip-b16, expclip-b32): the logs of the runs whose "
             "heads were released (ExpCLIP_L14.txt, ExpCLIP_B16.txt, ExpCLIP_B32.txt in the authors' repository):",
             "", *render_table(released), "",
             "Target for retrained heads: the paper's table (Zhao et al., WACV 2025, type3 prompts; run-to-run spread "
             "1–3 points):", "", *render_table(published), ""]
    path = output / "results.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def update_model_card(model_dir: Path, model_name: str, benchmark, row: dict) -> Path:
    """Add (or replace) this benchmark's UAR and WAR in the folder's README.md `model-index`."""
    from huggingface_hub import ModelCard, ModelCardData

    readme = model_dir / "README.md"
    card = ModelCard.load(readme) if readme.is_file() else None
    data = ModelCardData(**card.data.to_dict()) if card is not None else ModelCardData()
    kept = [r for r in (data.eval_results or []) if r.dataset_type != benchmark.name]
    new = uar_war_results(
        row["uar"], row["war"], {"prompts": row["prompts"], "ensemble": row["ensemble"]},
        dataset_type=benchmark.name,
        dataset_name=benchmark.title,
        dataset_split=benchmark.split,
        dataset_args={"folds": list(benchmark.folds), "reduction": "mean over folds"} if benchmark.folds else None,
    )
    data.eval_results = kept + new
    data.model_name = data.model_name or model_name
    if card is None:
        card = ModelCard(f"---\n{data.to_yaml()}\n---\n\n# {model_name}\n")
    card.data = data
    card.save(readme)
    return readme


# ----- the command ---------------------------------------------------------------------------------------------------


def resolve_model_path(model: str | None) -> str:
    """A local folder as it is; None or an alias (expclip-l14, expclip-b16, expclip-b32) via the converter's cache."""
    if model is not None and Path(model).expanduser().is_dir():
        return str(Path(model).expanduser())
    try:
        from ..models import ModelFetchError, resolve_model
    except ImportError:
        raise EvaluateError(f"{model}: no such model folder")
    try:
        return resolve_model(model)
    except ModelFetchError as error:
        raise EvaluateError(first_line(error))


def load_model(model_path: str, dtype: str, device: str):
    """The model in `dtype` on `device`, in eval mode, and its processor. "float16-mixed" is the original's GPU
    precision (`ExpCLIPModel.to_original_precision`: float16 CLIP, float32 LayerNorm, logit_scale and head)."""
    import torch
    from transformers import AutoProcessor

    from modeling_expclip import ExpCLIPModel

    try:
        mixed = dtype == MIXED_PRECISION
        model = ExpCLIPModel.from_pretrained(model_path, dtype=torch.float32 if mixed else getattr(torch, dtype))
        model = model.to_original_precision() if mixed else model
        processor = AutoProcessor.from_pretrained(model_path, backend="pil")  # PIL's resize, old folders too
    except (OSError, ValueError) as error:
        raise EvaluateError(f"{model_path}: cannot load the model and its processor ({first_line(error)})")
    return model.to(device).eval(), processor


def paper_settings(args, device: str) -> tuple[str, str, bool]:
    """(dtype, short_clip, original_reading) of this run. `--paper` picks what reproduces the released heads' logs
    (README: Reproducing the paper): float16-mixed on a GPU (float32 on CPU, as the original's tests there),
    `--short-clip first_frame`, the original's image reading; an explicit --dtype or --short-clip still wins."""
    dtype, short_clip = args.dtype, args.short_clip
    if getattr(args, "paper", False):
        gpu = device.startswith("cuda")
        if dtype is None and not gpu:
            print("expclip evaluate: --paper on CPU: float32, the original's precision on CPU (float16-mixed needs a "
                  "GPU)", file=sys.stderr)
        dtype = dtype or (MIXED_PRECISION if gpu else "float32")
        short_clip = short_clip or "first_frame"
    return dtype or "float32", short_clip or "even", bool(getattr(args, "paper", False))


def load_prepared(data: Path, benchmark):
    if not data.is_dir():
        hint = f"make it with `expclip prepare --benchmark {benchmark.name}`"
        raise EvaluateError(f"{data}: no such data folder ({hint})")
    import datasets

    metadata_file = data / METADATA_FILE
    metadata = json.loads(metadata_file.read_text(encoding="utf-8")) if metadata_file.is_file() else {}
    if metadata.get("benchmark", benchmark.name) != benchmark.name:
        raise EvaluateError(f"{data}: prepared for {metadata['benchmark']}, not {benchmark.name}")
    try:
        dataset = datasets.load_from_disk(str(data))
    except (FileNotFoundError, ValueError) as error:
        raise EvaluateError(f"{data}: not a prepared dataset ({first_line(error)})")
    missing = {"id", "path", "label"} - set(dataset.column_names)
    if missing:
        raise EvaluateError(f"{data}: the dataset lacks column(s) {', '.join(sorted(missing))}")
    return dataset, metadata


def evaluate_benchmark(args) -> dict:
    if args.num_workers is not None and args.num_workers < 0:
        raise EvaluateError(f"--num-workers must be at least 0, got {args.num_workers}")
    benchmark = get_benchmark(args.benchmark)
    # a bad prompt file is refused before any work (run() turns PromptFileError into exit 2)
    prompt_file = read_prompt_file(args.prompt_file, benchmark.class_names) if args.prompt_file else {}
    data = Path(args.data).expanduser()
    try:  # before any work; runs add up in an earlier output of evaluate, nothing else is written into
        check_output_folder(args.output, "evaluate", [data, args.model if args.model and Path(args.model).exists()
                                                      else None], reuse=True)
    except OutputError as error:
        raise EvaluateError(str(error))
    dataset, metadata = load_prepared(data, benchmark)

    import torch

    model_path = resolve_model_path(args.model)
    if args.update_card and not Path(model_path).is_dir():
        raise EvaluateError(f"{model_path}: --update-card needs a local model folder")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype, short_clip, original_reading = paper_settings(args, device)
    model, processor = load_model(model_path, dtype, device)
    model_name = args.model_name or Path(model_path).name
    clip_name = Path(model.config.clip_model_name_or_path or "clip").name

    metrics = load_metrics()  # before the long pass over the data: a broken install fails at once
    prompt_sets = PROMPT_STUDY if "all" in args.prompts else list(dict.fromkeys(args.prompts))
    ensemble = args.ensemble or model.config.ensemble
    prompt_overrides = {**(model.config.prompt_overrides or {}), **prompt_file}  # the file wins over the config
    num_segments = args.num_segments or model.config.num_segments
    pixels = BenchmarkPixels(dataset, processor.image_processor, benchmark.num_classes, benchmark.is_video,
                             num_segments, short_clip, original_reading)
    batches = InputPipeline(range(len(dataset)), pixels, batch_size=args.batch_size, num_workers=args.num_workers,
                            name=pixels.name, pin_memory=torch.device(device).type == "cuda")
    kept, clip_embeds, excluded = clip_embeddings(model, batches, benchmark.is_video,
                                                  f"{benchmark.title} CLIP features")
    if not kept:
        raise EvaluateError(f"{data}: every item was excluded ({len(excluded)}); nothing to score")
    clip_embeds = clip_embeds.to(device)
    ids, paths, labels = dataset["id"], dataset["path"], dataset["label"]
    all_folds = dataset["fold"] if "fold" in dataset.column_names else [0] * len(dataset)
    references = [int(labels[i]) for i in kept]
    folds = [int(all_folds[i]) for i in kept]

    output = Path(args.output).expanduser()
    run_dir = output / model_name / benchmark.name  # one folder per model and benchmark: runs add up in the table
    rows = []
    for use_projection in [True] + ([False] if args.baseline_clip else []):
        for prompts in prompt_sets:
            classifier = model.text_classifier(processor.tokenizer, benchmark.class_names, prompts,
                                               prompt_overrides, ensemble, use_projection)
            with torch.inference_mode():
                logits = model.zero_shot_logits(model.project(clip_embeds, use_projection), classifier)
            predictions = logits.argmax(-1).tolist()
            label = f"{HEADS[use_projection]} {model_name if use_projection else clip_name}"
            row = {"model": label, "head": HEADS[use_projection], "use_projection": use_projection,
                   "prompts": prompts, "ensemble": ensemble, "class_prompts": classifier.prompts}
            row.update(score(metrics, predictions, references, benchmark.num_classes))
            if benchmark.folds:  # README: Reproducing the paper: DFEW and MAFW report the mean of the per-fold UAR and WAR
                row["folds"] = {}
                for fold in sorted(set(folds)):
                    chosen = [k for k, f in enumerate(folds) if f == fold]
                    fold_score = score(metrics, [predictions[k] for k in chosen], [references[k] for k in chosen],
                                       benchmark.num_classes)
                    row["folds"][str(fold)] = fold_score
                row["uar"] = sum(f["uar"] for f in row["folds"].values()) / len(row["folds"])
                row["war"] = sum(f["war"] for f in row["folds"].values()) / len(row["folds"])
            png = run_dir / "confusion" / f"{row['head']}-{prompts}.png"
            save_confusion_png(row["confusion_matrix"], benchmark.class_names,
                               f"{label}, {benchmark.title}, {prompts}: UAR {row['uar']:.2f} WAR {row['war']:.2f}", png)
            row["confusion_matrix_png"] = str(png)
            row["predictions"] = predictions
            rows.append(row)

    results = {
        "benchmark": benchmark.name,
        "title": benchmark.title,
        "split": benchmark.split,
        "folds": sorted(set(folds)) if benchmark.folds else [],
        "class_names": benchmark.class_names,
        "model": str(model_path),
        "model_name": model_name,
        "clip_model": model.config.clip_model_name_or_path,
        "data": str(data.resolve()),
        "prepare_mismatches": metadata.get("mismatches", []),
        "prepare_num_excluded": metadata.get("num_excluded", 0),
        "ensemble": ensemble,
        "prompt_file": str(Path(args.prompt_file).resolve()) if args.prompt_file else None,
        "prompt_overrides": {name: p for name, p in prompt_overrides.items() if name in benchmark.class_names},
        "paper": bool(getattr(args, "paper", False)),
        "dtype": dtype,
        "num_segments": num_segments if benchmark.is_video else None,
        "short_clip": short_clip if benchmark.is_video else None,
        "image_reading": "original" if original_reading else "upright",  # plain convert("RGB") / EXIF and alpha
        "num_items": len(dataset),
        "num_evaluated": len(kept),
        "num_excluded": len(excluded),
        "excluded": [{"id": ids[i], "path": paths[i], "reason": reason} for i, reason in excluded],
        "items": [{"id": ids[i], "label": references[k], "fold": folds[k]} for k, i in enumerate(kept)],
        "rows": rows,
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    results["results_file"] = str(run_dir / "results.json")
    (run_dir / "results.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    results["table"] = write_results_table(output)
    mark_output(output, "evaluate")
    if args.update_card:
        card_row = next((r for r in rows if r["use_projection"] and r["prompts"] == "type3"), rows[0])
        results["card"] = update_model_card(Path(model_path), model_name, benchmark, card_row)
    return results


def add_arguments(parser):
    parser.add_argument("--model", help="an Exp-CLIP model folder, or expclip-l14 (default), expclip-b16, expclip-b32: "
                        "the authors' heads, converted and cached on first use")
    parser.add_argument("--benchmark", required=True, help=", ".join(BENCHMARKS))
    parser.add_argument("--data", required=True, help="the folder `expclip prepare` wrote")
    parser.add_argument("--prompts", nargs="+", default=["type3"], choices=[*PROMPT_SETS, "all"],
                        help="prompt set(s); 'all' = type1..type5, the paper's prompt study (default: type3); "
                        "type4/type5 are the original's per-class lists, type4-templates/type5-templates the plain "
                        "templates")
    parser.add_argument("--prompt-file", metavar="FILE.json",
                        help='per-class prompts {"class": ["prompt", ...], ...}, replacing those classes\' prompts in '
                        "every row (over the model's own prompt_overrides)")
    parser.add_argument("--ensemble", choices=["logits", "embeddings"],
                        help="combine a class's prompts by averaging logits (the paper) or text embeddings "
                        "(default: the model's config)")
    parser.add_argument("--baseline-clip", action="store_true",
                        help="also score plain CLIP (no head) on the same data in the same run (the paper's Table 2)")
    parser.add_argument("--output", default="outputs/evaluate", help="results folder (default: outputs/evaluate)")
    parser.add_argument("--paper", action="store_true",
                        help="everything that reproduces the released heads' logs: --dtype float16-mixed on a GPU "
                        "(float32 on CPU), --short-clip first_frame, and the original's image reading (a plain "
                        "convert('RGB'): no EXIF rotation, no alpha compositing); explicit --dtype/--short-clip win")
    parser.add_argument("--short-clip", choices=["even", "first_frame"],
                        help="clips of <= 16 frames: sample evenly with repetition (default) or take frame 0 "
                        "sixteen times (the original's quirk; --paper sets it)")
    parser.add_argument("--num-segments", type=int, help="frames per clip (default: the model's config, 16)")
    parser.add_argument("--batch-size", type=int, default=32, help="images or clips per forward pass")
    parser.add_argument("--num-workers", "--workers", dest="num_workers", type=int, default=None,
                        help="input pipeline processes decoding and preprocessing while CLIP runs (default: one per "
                        "CPU core less one, at most 16; 0: all in this process)")
    parser.add_argument("--device", help="cuda, cpu, ... (default: cuda when available)")
    parser.add_argument("--dtype", choices=DTYPES,
                        help="model precision: float32 (default; the original's tests on CPU), float16-mixed (the "
                        "original's tests on a GPU: float16 CLIP, float32 LayerNorm, logit_scale and head, prompts "
                        "padded to 77 tokens; --paper sets it on a GPU), bfloat16/float16 (faster, not the original's)")
    parser.add_argument("--model-name", help="row label of the model (default: the model folder's name)")
    parser.add_argument("--update-card", action="store_true",
                        help="write UAR/WAR into the model folder's README.md model-index")
    parser.add_argument("--debug", action="store_true", help="show a traceback on errors")


def run(args) -> int:
    try:
        results = evaluate_benchmark(args)
    except (EvaluateError, UnknownBenchmarkError, InputError) as error:
        if args.debug:
            raise
        print(f"expclip evaluate: error: {first_line(error)}", file=sys.stderr)
        return 2 if isinstance(error, (UnknownBenchmarkError, InputError)) else 1
    if results["num_excluded"]:
        print(f"{results['num_excluded']} of {results['num_items']} items excluded (listed in results.json)",
              file=sys.stderr)
    cells = {f"{r['model']} ({r['prompts']})": {results['benchmark']: (r["uar"], r["war"])} for r in results["rows"]}
    print("\n".join(render_table(cells)))
    print(f"results: {results['results_file']}; table: {results['table']}")
    if "card" in results:
        print(f"model card updated: {results['card']}")
    return 0
