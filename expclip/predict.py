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
from .labelling import SHARD_SIZE
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
    if record.get("kind") == "track":
        return f"{source} [person {record['track']}, {record['start']:g}-{record['end']:g} s]"
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
    # `track`, `start`, `end` (seconds): a person's record with --track; last, so the columns before keep their place
    writer.writerow(["source", "kind", "face", "x", "y", "w", "h", "label", *class_names, "note", "error",
                     "track", "start", "end"])
    for record in records:
        box = record.get("box") or ["", "", "", ""]
        scores = record.get("scores") or {}
        writer.writerow([record["source"], record.get("kind", ""), record.get("face", ""), *box,
                         record.get("label") or "", *(f"{scores[n]:.6f}" if n in scores else "" for n in class_names),
                         record.get("note", ""), record.get("error", ""),
                         *(record.get(key, "") for key in ("track", "start", "end"))])
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
    parser.add_argument("paths", nargs="*", metavar="PATH",
                        help="images, videos, or folders of them (walked recursively); or --dataset")
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
    parser.add_argument("--track", action="store_true",
                        help="videos: every face of the sampled frames (see --track-fps), linked across frames into "
                             "one track per person: a 'track' record each, after the clip's record (turns on --faces)")
    parser.add_argument("--track-fps", type=float, default=5.0, metavar="N",
                        help="--track: frames per second of video searched for faces (default 5; a folder of frames: "
                             "every frame, taken as N per second)")
    parser.add_argument("--track-memory", type=float, default=5.0, metavar="SECONDS",
                        help="--track: how long a person may leave the frame and keep their track number (default 5)")
    parser.add_argument("--frames", action="store_true",
                        help="treat each folder given as the frames of one video (sorted by file name)")
    parser.add_argument("--timeline", action="store_true",
                        help="videos: per-second probabilities (per frame for a folder of frames) as CSV + PNG plot")
    parser.add_argument("--timeline-dir", default=None, metavar="DIR",
                        help="where --timeline writes NAME.timeline.csv/.png (default: a folder `timelines` next "
                             "to --output, else in the current folder)")
    parser.add_argument("--annotate", default=None, metavar="DIR",
                        help="write each image with boxes and labels here (with --track, each video as an MP4 with "
                             "every tracked face boxed, numbered and labelled)")
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
    group = parser.add_argument_group("datasets and labelling at scale (README: Labelling a dataset at scale)")
    group.add_argument("--dataset", default=None, metavar="NAME_OR_PATH",
                       help="label the images of a `datasets` dataset instead of PATHs: a Hub id, a folder of images "
                            "(imagefolder) or a folder written by save_to_disk")
    group.add_argument("--dataset-config", default=None, metavar="NAME", help="the dataset's configuration")
    group.add_argument("--split", default="train", help="the dataset's split (default train)")
    group.add_argument("--image-column", default="image", metavar="NAME",
                       help="the column holding the images (or image paths); default image")
    group.add_argument("--output-dataset", default=None, metavar="DIR",
                       help="write the dataset with the columns expression, expression_scores, expression_error "
                            "(and faces, with --faces) here (save_to_disk)")
    group.add_argument("--push-to-hub", default=None, metavar="REPO",
                       help="push the dataset with those columns to this Hub dataset repository")
    group.add_argument("--resume", action="store_true",
                       help="keep the finished shards of a killed run with the same inputs and settings, and label "
                            "the rest (runs under accelerate launch are always resumable; one process: pass "
                            "--resume from the first run)")
    group.add_argument("--shard-size", type=int, default=None, metavar="N",
                       help=f"items per shard, the unit of work of a process and of --resume (default "
                            f"{SHARD_SIZE}, at most an even share per process)")


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")


def _rank() -> int:
    """This process's rank under `accelerate launch` / torchrun (0 when run alone)."""
    return int(os.environ.get("RANK", "0"))


def _fail(message: str, status: int) -> int:
    if _rank() == 0:  # every process meets the same refusal; one line says it
        print(f"expclip predict: error: {message}", file=sys.stderr)
    return status


def _check_prompt_set_name(text: str | None) -> None:
    """`--prompts type9`: one word without `{}` is a mistyped set name, not a template (ValueError, one line)."""
    from configuration_expclip import PROMPT_SETS

    if text and text not in PROMPT_SETS and "{}" not in text and "|" not in text and len(text.split()) == 1:
        raise ValueError(f"unknown prompt set {text!r}; known: {', '.join(PROMPT_SETS)} (or templates with {{}}, "
                         "|-separated)")


def _check_options(args: argparse.Namespace, world_size: int) -> str | None:
    """The options, cheapest first: a bad combination is refused before anything is read or loaded."""
    if args.batch_size < 1:
        return f"--batch-size must be at least 1, got {args.batch_size}"
    if args.workers is not None and args.workers < 0:
        return f"--workers must be at least 0, got {args.workers}"
    if args.track_fps <= 0:
        return f"--track-fps must be above 0, got {args.track_fps:g}"
    if args.track_memory < 0:
        return f"--track-memory must be at least 0 seconds, got {args.track_memory:g}"
    if args.shard_size is not None and args.shard_size < 1:
        return f"--shard-size must be at least 1, got {args.shard_size}"
    if args.dataset is None and not args.paths:
        return "give images, videos or folders (PATH ...), or --dataset"
    if args.dataset is not None and args.paths:
        return f"give PATHs or --dataset, not both (got {args.paths[0]} and --dataset {args.dataset})"
    if args.dataset is None:
        for option in ("output_dataset", "push_to_hub", "dataset_config"):
            if getattr(args, option):
                return f"--{option.replace('_', '-')} needs --dataset"
    elif args.frames or args.timeline:
        return "--frames and --timeline read videos; a dataset's rows are images"
    sharded = world_size > 1 or args.resume
    if sharded and not (args.output or args.output_dataset):
        return ("several processes and --resume need --output or --output-dataset (the shards are written beside "
                "it)")
    if sharded and (args.annotate or args.timeline or args.track):
        return "--annotate, --timeline and --track run in one process, without --resume"
    return None


def run(args: argparse.Namespace) -> int:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))  # set by `accelerate launch` / torchrun
    problem = _check_options(args, world_size)
    if problem:
        return _fail(problem, 2)
    args.faces = args.faces or args.track  # tracks are made of faces
    sharded = world_size > 1 or args.resume
    timeline_dir = None
    if args.timeline:
        timeline_dir = Path(args.timeline_dir or (Path(args.output).parent if args.output else Path()) / "timelines")
    state = device = None
    if sharded:  # the process group (gloo on CPU, NCCL on GPUs): one rank per process of the launcher
        try:
            device = resolve_device(args.device)
        except ValueError as error:
            return _fail(str(error), 2)
        from datetime import timedelta

        from accelerate import PartialState

        # A long timeout: rank 0 waits at the end for the slowest process to finish its shards.
        state = PartialState(cpu=device == "cpu", timeout=timedelta(days=7))
        device = "cpu" if device == "cpu" else str(state.device)
    inputs_given = [args.dataset] if args.dataset and Path(args.dataset).exists() else args.paths
    with contextlib.ExitStack() as stack:  # rank 0 holds the output locks until the run ends
        problem = None
        if state is None or state.is_main_process:
            try:  # where the run writes, before any work: never an input, never a folder holding other files
                folders = [(option, folder) for option, folder in (("--annotate", args.annotate),
                                                                   ("--timeline-dir", timeline_dir)) if folder]
                if args.output:
                    output = check_output_file(args.output, inputs_given, args.overwrite)
                    for option, folder in folders:  # the file would land in (or be) a folder this run fills
                        folder = Path(os.path.realpath(Path(folder).expanduser()))
                        if output == folder or folder in output.parents:
                            raise OutputError(f"--output {args.output}: is {'' if output == folder else 'inside '}"
                                              f"the {option} folder; choose another file")
                if args.output_dataset:
                    check_output_folder(args.output_dataset, "predict", inputs_given, args.overwrite)
                for option, folder in folders:
                    check_output_folder(folder, "predict", inputs_given, reuse=True, option=option)
                for target in (args.output, args.output_dataset):  # another run writing it: refused, its PID named
                    if target:
                        stack.enter_context(output_lock(target, "predict"))
            except OutputError as error:
                problem = str(error)
        if state is not None:
            problem = _broadcast(problem)
        if problem:
            return _fail(problem, 2)
        if state is None:  # one process: after the output checks, so that a refusal never waits for torch to load
            try:
                device = resolve_device(args.device)
            except ValueError as error:
                return _fail(str(error), 2)
        return _label(args, state, device, timeline_dir, inputs_given)


def _label(args, state, device: str, timeline_dir, inputs_given) -> int:
    """Read the inputs, load the detector and the model, and label: in one process, or in shards."""
    sharded = state is not None
    # The inputs: paths, or a dataset's rows (every process loads it; the first builds the cache, the others wait).
    from .labelling import DatasetError, DatasetInputs, PathInputs, load_image_dataset

    dataset = None
    if args.dataset is not None:
        from datasets.utils.logging import disable_progress_bar

        if not args.debug:
            disable_progress_bar()
        try:
            with contextlib.nullcontext() if state is None else state.main_process_first():
                dataset = load_image_dataset(args.dataset, args.dataset_config, args.split, args.image_column,
                                             args.output_dataset or args.push_to_hub)
        except DatasetError as error:
            return _fail(str(error), 2)
        inputs = DatasetInputs(dataset, args.image_column, args.split)
    else:
        inputs = PathInputs(collect_items(args.paths, frames=args.frames))

    from .faces import DetectorError, load_detector, resolve_detector

    try:  # YuNet's file is fetched (or Haar chosen, with a notice) here, once, before any work starts
        detector_choice = resolve_detector(args.detector, args.detector_model) if args.faces else None
        detector = load_detector(*detector_choice) if args.faces else None
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

    from .models import resolve_model

    def resolve():
        folder = resolve_model(args.model)
        if prompt_file and labels is None:  # the model's own label set: read from its config, before loading it
            from configuration_expclip import ExpCLIPConfig

            read_prompt_file(args.prompt_file, ExpCLIPConfig.from_pretrained(folder).class_names)
        return folder

    folder, status = _loading(args, resolve)
    if status is not None:
        return status

    shards = kept = problem = None
    if sharded and state.is_main_process:
        try:
            shards, kept = _prepare_shards(args, inputs, folder, prompt_file, state.num_processes,
                                           detector_choice, inputs_given)
        except OutputError as error:
            problem = str(error)
    if sharded:
        problem, shards, kept = _broadcast(problem, shards, kept)
    if problem:
        return _fail(problem, 2)
    def load():
        predictor = ExpCLIPPredictor.from_pretrained(folder, device, labels, prompts, detector=None,
                                                     dtype=args.dtype, batch_size=args.batch_size,
                                                     workers=args.workers, prompt_overrides=prompt_file,
                                                     normalize_on_device=args.normalize_on_device)
        predictor.detector = detector
        for name, tokens in long_prompts(prompt_file or {}, predictor.processor.tokenizer).items():
            print(f"expclip predict: warning: --prompt-file class {name!r} has a prompt of {tokens} tokens; CLIP reads "
                  "only the first 77, the rest is cut off", file=sys.stderr)
        return predictor

    predictor, status = _loading(args, load)
    if status is not None:
        return status
    if sharded:
        return _run_sharded(args, state, predictor, inputs, dataset, shards, kept)
    return _run_one_process(args, predictor, inputs, dataset, timeline_dir)


def _loading(args: argparse.Namespace, step):
    """`step()` (resolving or loading the model) -> (its result, None), or (None, the exit status) once a failure
    has been said in one line: 1 for a model that cannot be had, 2 for a --prompt-file class outside its label set;
    --debug raises instead."""
    from .models import ModelFetchError

    try:
        return step(), None
    except ModelFetchError as error:
        return None, _fail(str(error), 1)
    except InputError as error:  # --prompt-file names a class outside the model's label set
        return None, _fail(str(error), 2)
    except Exception as error:  # noqa: BLE001 -- any load failure is one line unless --debug
        if args.debug:
            raise
        return None, _fail(_load_failure(args.model, error), 1)


def _load_failure(model: str | None, error: Exception) -> str:
    # the model code's refusals (ValueError) are sentences already; anything else shows its type
    reason = first_line(error) if type(error) is ValueError else one_line(error)
    return f"cannot load the model {model or 'expclip-l14'!r}: {reason}"


def _broadcast(*values):
    """Rank 0's values, on every process."""
    from accelerate.utils import broadcast_object_list

    values = broadcast_object_list(list(values), from_process=0)
    return values[0] if len(values) == 1 else values


def _report_bad(records: list[dict]) -> int:
    from tqdm.auto import tqdm

    failed = 0
    for record in records:
        if record.get("error"):
            failed += 1
            tqdm.write(f"expclip predict: skipped {record['error']}", file=sys.stderr)
    return failed


def _run_one_process(args, predictor, inputs, dataset, timeline_dir) -> int:
    items = inputs.items(0, len(inputs))
    entries = []
    from tqdm.auto import tqdm

    try:
        with tqdm(total=len(items), unit="item", file=sys.stderr, disable=len(items) <= 4 or None) as progress:
            for _, item_records in predictor.predict(items, args.faces, timeline_dir, args.annotate, progress,
                                                     args.debug, track=args.track, track_fps=args.track_fps,
                                                     track_memory=args.track_memory):
                _report_bad(item_records)
                entries.append(item_records)
        _write_outputs(args, predictor.class_names, entries, dataset)
    except Exception as error:  # noqa: BLE001 -- a failure of the run itself (model, output file): one line
        if args.debug:
            raise
        return _fail(one_line(error), 1)
    finally:  # the folders now hold only this command's files: a later run may add to them
        for folder in {Path(f) for f in (args.annotate, timeline_dir) if f is not None}:
            mark_output(folder, "predict")
    return _summary(args, len(items), entries)


def _prepare_shards(args, inputs, model_folder, prompt_file, world_size, detector_choice, inputs_given):
    """Rank 0: plan the shards (or take a killed run's, with --resume) and set up their folder."""
    from .labelling import ShardFolder, fingerprint, plan_shards

    settings = {option: getattr(args, option) for option in (
        "labels", "prompts", "faces", "frames", "dtype", "batch_size", "normalize_on_device", "dataset",
        "dataset_config", "split", "image_column")}
    settings.update(model=str(model_folder), prompt_file=prompt_file, detector=repr(detector_choice))
    shards = plan_shards(inputs.kinds(), args.batch_size, args.shard_size or SHARD_SIZE, world_size)
    folder = ShardFolder(args.output_dataset or args.output)
    return folder.prepare(fingerprint(inputs.names(), settings), shards, args.resume, args.overwrite, inputs_given)


def _run_sharded(args, state, predictor, inputs, dataset, shards, kept) -> int:
    """Every process labels its share of the unfinished shards; rank 0 merges them into the output(s)."""
    from tqdm.auto import tqdm

    from .labelling import ShardError, ShardFolder, label_shards

    folder = ShardFolder(args.output_dataset or args.output)
    kept_numbers = {shard.number for shard in kept}
    pending = [shard for shard in shards if shard.number not in kept_numbers]
    if kept and state.is_main_process:
        shown = ", ".join(str(shard.number + 1) for shard in kept[:10]) + (
            f" and {len(kept) - 10} more" if len(kept) > 10 else "")
        print(f"expclip predict: resuming: {len(kept)} of {len(shards)} shards already done (shard {shown}), kept, "
              f"not recomputed; labelling the other {len(pending)}", file=sys.stderr)
    with state.split_between_processes(pending) as mine:
        total = sum(shard.stop - shard.start for shard in mine)
        try:
            with tqdm(total=total, unit="item", file=sys.stderr,
                      disable=not state.is_main_process or total <= 4 or None) as progress:
                label_shards(predictor, inputs, mine, folder, len(shards), state.process_index, args.faces,
                             progress, args.debug, on_records=_report_bad)
        except ShardError as error:
            print(f"expclip predict: error: {error}", file=sys.stderr)
            return 1
    state.wait_for_everyone()
    status = None
    if state.is_main_process:
        try:
            entries = list(folder.read(shards))
            _write_outputs(args, predictor.class_names, entries, dataset)
            folder.remove()
            status = _summary(args, len(inputs), entries)
            if state.num_processes > 1:  # bad items are counted in the summary; a launcher would call 1 a crash
                status = 0
        except Exception as error:  # noqa: BLE001 -- a failure of the merge itself: one line, the shards kept
            if args.debug:
                raise
            status = _fail(f"{one_line(error)}; the shards are kept in {folder.path}: rerun with --resume", 1)
    status = _broadcast(status)
    state.destroy_process_group()  # left to exit, gloo's threads can abort the process (SIGABRT) after the work
    return status


def _write_outputs(args, class_names: list[str], entries: list[list[dict]], dataset) -> None:
    """--output (or stdout), --output-dataset, --push-to-hub. Files are written whole, then renamed into place."""
    records = [record for item_records in entries for record in item_records]
    if args.output or not args.output_dataset and not args.push_to_hub:
        text = format_records(records, class_names, args.output_format)
        if args.output:
            path = Path(args.output)
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(path.name + ".partial")
            partial.write_text(text, encoding="utf-8")
            os.replace(partial, path)
        else:
            sys.stdout.write(text)
    if dataset is not None and (args.output_dataset or args.push_to_hub):
        from .labelling import with_expressions
        from .outputs import clear_output

        labelled = with_expressions(dataset, entries, class_names, args.faces)
        if args.output_dataset:
            clear_output(args.output_dataset, "predict")  # an earlier output of ours (checked, --overwrite)
            labelled.save_to_disk(args.output_dataset)
            mark_output(args.output_dataset, "predict")
        if args.push_to_hub:
            labelled.push_to_hub(args.push_to_hub)


def _summary(args, count: int, entries: list[list[dict]]) -> int:
    records = [record for item_records in entries for record in item_records]
    failed = sum(1 for r in records if r.get("error"))
    predicted = sum(1 for r in records if r.get("label"))
    faces = sum(1 for r in records if r.get("kind") == "face")
    tracks = sum(1 for r in records if r.get("kind") == "track")
    no_face = sum(1 for r in records if r.get("note") == "no face found")
    summary = f"{_count(count, 'input')}: {_count(predicted, 'prediction')}"
    if args.faces:
        clips = [r for r in records if "frames_with_face" in r]
        parts = [f"{_count(faces, 'face')}, {_count(no_face, 'image')} without a face"] if faces or no_face else []
        if clips:
            sampled = sum(len(r["frame_indices"]) for r in clips)
            parts.append(f"a face in {sum(r['frames_with_face'] for r in clips)} of {sampled} sampled clip frames")
        if args.track:
            parts.append(f"{_count(tracks, 'track')} of people in videos")
        summary += f" ({'; '.join(parts)})" if parts else ""
    written = [target for target in (args.output, args.output_dataset) if target]
    summary += f", {failed} failed" + (f"; results in {' and '.join(written)}" if written else "")
    if args.push_to_hub:
        summary += f"; pushed to {args.push_to_hub}"
    print(f"expclip predict: {summary}", file=sys.stderr)
    return 1 if failed else 0
