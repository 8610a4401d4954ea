"""`expclip predict`: the command line over `expclip.predictor.ExpCLIPPredictor`, with its output formats
(table, JSON, JSON lines, CSV) and the run's one-line summary.

    expclip predict photos/ clip.mp4 --faces --format csv --output results.csv
"""

import argparse
import contextlib
import csv
import io
import json
import os
import sys
import unicodedata
from pathlib import Path

from .inputs import DTYPES, InputError, first_line, long_prompts, one_line, read_prompt_file
from .outputs import OutputError, check_output_file, check_output_folder, mark_output, output_lock
from .predictor import ExpCLIPPredictor, check_label_set, collect_items, parse_labels, parse_prompts, resolve_device

# ----- output formats --------------------------------------------------------------------------------------------------


def _item_label(record: dict) -> str:
    # a newline or tab in a file name would break the row: shown escaped, as Python writes it
    source = record["source"].encode("unicode_escape", "backslashreplace").decode("ascii", "backslashreplace") \
        if any(char in record["source"] for char in "\n\r\t") else record["source"]
    if record.get("kind") == "face":
        x, y, w, h = record["box"]
        return f"{source} [face {record['face']} at {x},{y} {w}x{h}]"
    if record.get("kind") == "video" and "frames" in record:
        return f"{source} [clip, {len(set(record['frame_indices']))} of {record['frames']} frames]"
    return source


def _display_width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(char) in "WF" else 1 for char in text)


def _pad(text: str, width: int) -> str:
    """Left-justify for a terminal, where CJK characters take two columns."""
    return text + " " * max(0, width - _display_width(text))


def format_table(records: list[dict], class_names: list[str]) -> str:
    """One row per image, face or clip: the item, its top label and every class's probability."""
    rows = [r for r in records if not r.get("error")]
    width = max([len("item")] + [_display_width(_item_label(r)) for r in rows])
    label_width = max([len("label")] + [len(n) for n in class_names])
    columns = [max(6, len(name)) for name in class_names]
    lines = ["  ".join([f"{'item':<{width}}", f"{'label':<{label_width}}"]
                       + [f"{name:>{c}}" for name, c in zip(class_names, columns)])]
    for record in rows:
        if record.get("label") is None:
            lines.append(f"{_pad(_item_label(record), width)}  {record.get('note', '')}")
            continue
        probs = [f"{record['scores'].get(name, 0.0):>{c}.3f}" for name, c in zip(class_names, columns)]
        lines.append("  ".join([_pad(_item_label(record), width), f"{record['label']:<{label_width}}"] + probs))
    return "\n".join(lines) + "\n"


def format_csv(records: list[dict], class_names: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["source", "kind", "face", "x", "y", "w", "h", "label", *class_names, "note", "error"])
    for record in records:
        box = record.get("box") or ["", "", "", ""]
        scores = record.get("scores") or {}
        writer.writerow([record["source"], record.get("kind", ""), record.get("face", ""), *box,
                         record.get("label") or "", *(f"{scores[n]:.6f}" if n in scores else "" for n in class_names),
                         record.get("note", ""), record.get("error", "")])
    return buffer.getvalue()


def format_records(records: list[dict], class_names: list[str], output_format: str) -> str:
    if output_format == "json":
        return json.dumps(records, indent=2, ensure_ascii=False) + "\n"
    if output_format == "jsonl":
        return "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
    if output_format == "csv":
        return format_csv(records, class_names)
    return format_table(records, class_names)


# ----- command line ----------------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="PATH",
                        help="images, videos, or folders of them (walked recursively)")
    parser.add_argument("--model", default=None,
                        help="local Exp-CLIP folder or Hub id; default: the authors' L/14 head (fetched once, cached); "
                             "aliases expclip-l14, expclip-b16, expclip-b32")
    parser.add_argument("--labels", default=None, help="comma-separated label set (default: the model's, the 7 basic "
                                                       "expressions)")
    parser.add_argument("--prompts", default=None, help="prompt set: type1..type5 (type4/type5: the original's per-class "
                                                        "lists), type4-templates, type5-templates, or templates with "
                                                        "{} separated by | (default: the model's, type3)")
    parser.add_argument("--prompt-file", default=None, metavar="FILE.json",
                        help='per-class prompts {"class": ["prompt", ...], ...}, replacing those classes\' prompts')
    parser.add_argument("--format", dest="output_format", choices=("table", "json", "jsonl", "csv"), default="table",
                        help="table (default, for the terminal), json, jsonl or csv")
    parser.add_argument("--output", default=None, metavar="FILE", help="write the results here instead of stdout")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output file (never an input)")
    parser.add_argument("--faces", action="store_true",
                        help="detect faces and classify each one (videos: the largest face of each sampled frame)")
    parser.add_argument("--detector", choices=("yunet", "haar"), default="yunet",
                        help="face detector: OpenCV's YuNet (default; its model is fetched once from OpenCV Zoo, or "
                             "taken from EXPCLIP_YUNET_MODEL, a path or URL; offline without it: Haar, with a notice), "
                             "or OpenCV's bundled Haar cascade")
    parser.add_argument("--detector-model", default=None, metavar="FILE",
                        help="YuNet ONNX file instead of the fetched one; for haar, another cascade (a file, or a name "
                             "in cv2.data such as haarcascade_frontalface_alt2.xml)")
    parser.add_argument("--frames", action="store_true",
                        help="treat each folder given as the frames of one video (sorted by file name)")
    parser.add_argument("--timeline", action="store_true",
                        help="videos: per-second probabilities (per frame for a folder of frames) as CSV + PNG plot")
    parser.add_argument("--timeline-dir", default=None, metavar="DIR",
                        help="where --timeline writes NAME.timeline.csv/.png (default: a folder `timelines` next "
                             "to --output, else in the current folder)")
    parser.add_argument("--annotate", default=None, metavar="DIR", help="write each image with boxes and labels here")
    parser.add_argument("--batch-size", type=int, default=32, metavar="N", help="images per model call (default 32)")
    parser.add_argument("--workers", "--num-workers", dest="workers", type=int, default=None, metavar="N",
                        help="processes that decode, find faces and preprocess while the model runs (default: one per "
                             "CPU core less one, at most 16; 0: all in this process)")
    parser.add_argument("--normalize-on-device", action="store_true",
                        help="workers send uint8 pixels; rescale and normalise them on the model's device (faster "
                             "feeding of a GPU; equal to the image processor's within float rounding)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    parser.add_argument("--dtype", choices=DTYPES, default="float32",
                        help="model precision: float32 (default; the original on CPU), bfloat16/float16 (several "
                             "times faster on GPUs and on CPUs with AMX, probabilities within about 1e-3), or "
                             "float16-mixed (the original on a GPU: float16 CLIP, float32 LayerNorm and head)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")


def _fail(message: str, status: int) -> int:
    print(f"expclip predict: error: {message}", file=sys.stderr)
    return status


def _check_prompt_set_name(text: str | None) -> None:
    """`--prompts type9`: one word without `{}` is a mistyped set name, not a template (ValueError, one line)."""
    from configuration_expclip import PROMPT_SETS

    if text and text not in PROMPT_SETS and "{}" not in text and "|" not in text and len(text.split()) == 1:
        raise ValueError(f"unknown prompt set {text!r}; known: {', '.join(PROMPT_SETS)} (or templates with {{}}, "
                         "|-separated)")


def run(args: argparse.Namespace) -> int:
    # Options first, cheapest first: a bad one is refused before any model is loaded or any file read.
    if args.batch_size < 1:
        return _fail(f"--batch-size must be at least 1, got {args.batch_size}", 2)
    if args.workers is not None and args.workers < 0:
        return _fail(f"--workers must be at least 0, got {args.workers}", 2)
    timeline_dir = None
    if args.timeline:
        timeline_dir = Path(args.timeline_dir or (Path(args.output).parent if args.output else Path()) / "timelines")
    with contextlib.ExitStack() as stack:
        try:  # where the run writes, before any work: never an input, never a folder holding other files
            folders = [(option, folder) for option, folder in (("--annotate", args.annotate),
                                                               ("--timeline-dir", timeline_dir)) if folder is not None]
            if args.output:
                output = check_output_file(args.output, args.paths, args.overwrite)
                for option, folder in folders:  # the file would land in (or be) a folder this run fills
                    folder = Path(os.path.realpath(Path(folder).expanduser()))
                    if output == folder or folder in output.parents:
                        raise OutputError(f"--output {args.output}: is {'' if output == folder else 'inside '}the "
                                          f"{option} folder; choose another file")
            for option, folder in folders:
                check_output_folder(folder, "predict", args.paths, reuse=True, option=option)
            if args.output:  # a second run writing the same file at once is refused, with the first one's PID
                stack.enter_context(output_lock(args.output, "predict"))
        except OutputError as error:
            return _fail(str(error), 2)
        return _run(args, timeline_dir)


def _run(args: argparse.Namespace, timeline_dir: Path | None) -> int:
    try:
        device = resolve_device(args.device)
    except ValueError as error:
        return _fail(str(error), 2)
    from .faces import DetectorError, load_detector, resolve_detector

    try:  # YuNet's file is fetched (or Haar chosen, with a notice) here, once, before any work starts
        detector = load_detector(*resolve_detector(args.detector, args.detector_model)) if args.faces else None
    except DetectorError as error:
        return _fail(str(error), 2)
    from transformers.utils import logging as hf_logging

    if not args.debug:  # warnings and weight-loading bars of transformers are noise to a user here
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    labels, prompts = parse_labels(args.labels), parse_prompts(args.prompts)
    try:
        _check_prompt_set_name(args.prompts)
        check_label_set(labels, prompts)
    except ValueError as error:
        return _fail(str(error), 2)
    try:
        prompt_file = read_prompt_file(args.prompt_file, labels) if args.prompt_file else None
    except InputError as error:
        return _fail(str(error), 2)

    from .models import ModelFetchError, resolve_model

    try:
        folder = resolve_model(args.model)
        if prompt_file and labels is None:  # the model's own label set: read from its config, before loading it
            from configuration_expclip import ExpCLIPConfig

            read_prompt_file(args.prompt_file, ExpCLIPConfig.from_pretrained(folder).class_names)
        predictor = ExpCLIPPredictor.from_pretrained(folder, device, labels, prompts, detector=None,
                                                     dtype=args.dtype, batch_size=args.batch_size,
                                                     workers=args.workers, prompt_overrides=prompt_file,
                                                     normalize_on_device=args.normalize_on_device)
        predictor.detector = detector
        for name, tokens in long_prompts(prompt_file or {}, predictor.processor.tokenizer).items():
            print(f"expclip predict: warning: --prompt-file class {name!r} has a prompt of {tokens} tokens; CLIP reads "
                  "only the first 77, the rest is cut off", file=sys.stderr)
    except ModelFetchError as error:
        return _fail(str(error), 1)
    except InputError as error:  # --prompt-file names a class outside the model's label set
        return _fail(str(error), 2)
    except Exception as error:  # noqa: BLE001 -- any load failure is one line unless --debug
        if args.debug:
            raise
        # the model code's refusals (ValueError) are sentences already; anything else shows its type
        reason = first_line(error) if type(error) is ValueError else one_line(error)
        return _fail(f"cannot load the model {args.model or 'expclip-l14'!r}: {reason}", 1)

    items = collect_items(args.paths, frames=args.frames)
    records, failed = [], 0
    from tqdm.auto import tqdm

    try:
        with tqdm(total=len(items), unit="item", file=sys.stderr, disable=len(items) <= 4 or None) as progress:
            for _, item_records in predictor.predict(items, args.faces, timeline_dir, args.annotate, progress,
                                                     args.debug):
                for record in item_records:
                    if record.get("error"):
                        failed += 1
                        tqdm.write(f"expclip predict: skipped {record['error']}", file=sys.stderr)
                records.extend(item_records)
        text = format_records(records, predictor.class_names, args.output_format)
        if args.output:
            Path(args.output).parent.mkdir(parents=True, exist_ok=True)
            Path(args.output).write_text(text, encoding="utf-8")
        else:
            sys.stdout.write(text)
    except Exception as error:  # noqa: BLE001 -- a failure of the run itself (model, output file): one line
        if args.debug:
            raise
        return _fail(one_line(error), 1)
    finally:  # the folders now hold only this command's files: a later run may add to them
        for folder in {Path(f) for f in (args.annotate, timeline_dir) if f is not None}:
            mark_output(folder, "predict")
    predicted = sum(1 for r in records if r.get("label"))
    faces = sum(1 for r in records if r.get("kind") == "face")
    no_face = sum(1 for r in records if r.get("note") == "no face found")
    summary = f"{_count(len(items), 'input')}: {_count(predicted, 'prediction')}"
    if args.faces:
        clips = [r for r in records if "frames_with_face" in r]
        parts = [f"{_count(faces, 'face')}, {_count(no_face, 'image')} without a face"] if faces or no_face else []
        if clips:
            sampled = sum(len(r["frame_indices"]) for r in clips)
            parts.append(f"a face in {sum(r['frames_with_face'] for r in clips)} of {sampled} sampled clip frames")
        summary += f" ({'; '.join(parts)})" if parts else ""
    summary += f", {failed} failed" + (f"; results in {args.output}" if args.output else "")
    print(f"expclip predict: {summary}", file=sys.stderr)
    return 1 if failed else 0
