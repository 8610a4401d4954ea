"""`expclip prepare`: an official benchmark release, as downloaded, -> one uniform `datasets` dataset on disk.

    expclip prepare --benchmark raf-db --source ~/data/RAF-DB/basic --output data/raf-db

One reader per release reads that release's own label files; every label is mapped to the canonical class order
(README: Reproducing the paper) through an explicit table, never by sorting names. The output folder holds a `datasets` dataset
(`datasets.load_from_disk`) with one row per test item:

    id          the item's name in the release (image file or clip id)
    path        absolute path of the image file, or of the clip's folder of frames
    num_frames  clips: frames in the folder (or the count the release's list claims); images: 0
    label       canonical class index (`ClassLabel` over the benchmark's classes)
    fold        DFEW/MAFW: the fold (1-5) whose test set holds the clip; 0 for single-split benchmarks
    box         AffectNet: the release's face box [x, y, width, height], cropped at evaluation; otherwise []

and `expclip_prepare.json` (sizes, label counts, mismatches with the paper's, excluded and skipped items). Items the
protocol leaves out (AffectNet's contempt for AffectNet-7, FERPlus images whose vote has no majority) are counted
as "skipped"; broken items (missing file, label outside the class list) are "excluded", each with a one-line
reason naming its file and row.
"""

import csv
import json
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..inputs import first_line
from ..outputs import OutputError, check_output_folder, clear_output, mark_output

from .benchmarks import METADATA_FILE, UnknownBenchmarkError, check_prepared, frame_files, get_benchmark

VIDEO_EXTENSIONS = {".avi", ".mp4", ".mkv", ".mov", ".webm"}

# ----- each release's label codes and names -> canonical class names (README: Reproducing the paper), written out explicitly ------------

# RAF-DB basic, EmoLabel/list_patition_label.txt: 1..7.
RAFDB_LABELS = {1: "surprise", 2: "fear", 3: "disgust", 4: "happiness", 5: "sadness", 6: "anger", 7: "neutral"}
# AffectNet annotations ("expression" column / *_exp.npy): 0..7; 8 None, 9 Uncertain, 10 No-Face are not expressions.
AFFECTNET_LABELS = {
    0: "neutral", 1: "happiness", 2: "sadness", 3: "surprise", 4: "fear", 5: "disgust", 6: "anger", 7: "contempt",
}
AFFECTNET_NOT_EXPRESSIONS = {8: "None", 9: "Uncertain", 10: "No-Face"}
# FERPlus fer2013new.csv vote columns, in the file's order; the last two are not expressions.
FERPLUS_COLUMNS = {
    "neutral": "neutral", "happiness": "happiness", "surprise": "surprise", "sadness": "sadness",
    "anger": "anger", "disgust": "disgust", "fear": "fear", "contempt": "contempt", "unknown": None, "NF": None,
}
# DFEW EmoLabel_DataSplit/*.csv "label" column: 1..7.
DFEW_LABELS = {1: "happiness", 2: "sadness", 3: "neutral", 4: "anger", 5: "surprise", 6: "disgust", 7: "fear"}
# FERV39k and AFEW class folder names (AFEW face-crop copies sometimes use the noun forms).
FOLDER_CLASS_NAMES = {
    "happy": "happiness", "happiness": "happiness", "sad": "sadness", "sadness": "sadness", "neutral": "neutral",
    "angry": "anger", "anger": "anger", "surprise": "surprise", "disgust": "disgust", "fear": "fear",
}
# MAFW single-label lists name the 11 classes.
MAFW_LABELS = {
    "happiness": "happiness", "sadness": "sadness", "neutral": "neutral", "anger": "anger", "surprise": "surprise",
    "disgust": "disgust", "fear": "fear", "contempt": "contempt", "anxiety": "anxiety",
    "helplessness": "helplessness", "disappointment": "disappointment",
}


def is_plain_number(text: str) -> bool:
    """ASCII digits only: "٣" or "²" are digits to Python, not labels a release writes."""
    return text.isascii() and text.isdigit()


class PrepareError(Exception):
    """A release that cannot be read at all: the message is one line naming the file."""


@dataclass
class Prepared:
    """What a reader found: the items, the broken ones it excluded, and the ones the protocol skips."""

    items: list = field(default_factory=list)
    excluded: list = field(default_factory=list)  # {"item": file/row, "reason": one line}
    skipped: Counter = field(default_factory=Counter)  # protocol reason -> count
    rows: list = field(default_factory=list)  # where each item was listed (file:row), for duplicates

    def add(self, benchmark, item_id, path, class_name, fold=0, num_frames=0, box=(), where=""):
        if class_name not in benchmark.class_names:
            self.skipped[f"{class_name} (not one of the {benchmark.num_classes} {benchmark.title} classes)"] += 1
            return
        self.items.append(
            {"id": str(item_id), "path": str(path), "num_frames": int(num_frames),
             "label": benchmark.class_names.index(class_name), "fold": int(fold), "box": list(box)}
        )
        self.rows.append(str(where or path))

    def drop_duplicates(self):
        """An item listed twice in one fold: kept once when the labels agree, excluded (its rows named) when not."""
        by_item = {}
        for index, item in enumerate(self.items):
            by_item.setdefault((item["fold"], item["path"], tuple(item["box"])), []).append(index)
        drop = set()
        for indices in (found for found in by_item.values() if len(found) > 1):
            rows = ", ".join(self.rows[i] for i in indices)
            if len({self.items[i]["label"] for i in indices}) > 1:
                drop.update(indices)
                self.exclude(self.items[indices[0]]["id"], f"listed {len(indices)} times with different labels "
                             f"({rows}); excluded")
            else:
                drop.update(indices[1:])
                self.skipped["duplicate row of an item, same label (kept once)"] += len(indices) - 1
        self.items = [item for i, item in enumerate(self.items) if i not in drop]
        self.rows = [row for i, row in enumerate(self.rows) if i not in drop]

    def exclude(self, where, reason):
        self.excluded.append({"item": str(where), "reason": f"{where}: {reason}"})


def find_path(source: Path, candidates: list[str], what: str, directory=False) -> Path:
    """The first of `candidates` (relative to the release folder) that exists."""
    for candidate in candidates:
        path = source / candidate
        if path.is_dir() if directory else path.is_file():
            return path
    raise PrepareError(f"{source}: no {what} (looked for {', '.join(candidates)})")


def read_table(path: Path) -> list[list[str]]:
    """Rows of a comma- or whitespace-separated list file, blank lines dropped (row numbers kept as index+1)."""
    text = path.read_text(encoding="utf-8-sig", errors="replace")
    delimiter = "," if "," in text.split("\n", 1)[0] else None
    if delimiter:
        return [[cell.strip() for cell in row] for row in csv.reader(text.splitlines())]
    return [line.split() for line in text.splitlines()]


def add_clip(prepared, benchmark, clip_id, folder: Path, class_name, fold=0, claimed=None, where=""):
    """A clip given by its frame folder; checks the folder holds frames (and as many as a list claims)."""
    where = where or folder
    if not folder.is_dir():
        if folder.is_file() and folder.suffix.lower() in VIDEO_EXTENSIONS:
            return prepared.exclude(where, f"{folder} is a video file; extract its frames into a folder first")
        return prepared.exclude(where, f"no frame folder {folder}")
    count = len(frame_files(folder))
    if count == 0:
        return prepared.exclude(where, f"frame folder {folder} holds no frames")
    if claimed is not None and count < claimed:
        return prepared.exclude(where, f"frame folder {folder} has {count} frames, its list claims {claimed}")
    prepared.add(benchmark, clip_id, folder.resolve(), class_name, fold, claimed or count, where=where)


# ----- one reader per release ---------------------------------------------------------------------------------------


def read_rafdb(source: Path, benchmark, output: Path) -> Prepared:
    """RAF-DB basic: EmoLabel/list_patition_label.txt ("test_0001.jpg 5") + Image/aligned/test_0001_aligned.jpg."""
    list_file = find_path(source, ["EmoLabel/list_patition_label.txt", "basic/EmoLabel/list_patition_label.txt"],
                          "RAF-DB label list")
    image_dir = list_file.parent.parent / "Image" / "aligned"
    prepared = Prepared()
    for row_number, row in enumerate(read_table(list_file), 1):
        if not row:
            continue
        where = f"{list_file}:{row_number}"
        if len(row) != 2:
            prepared.exclude(where, f"expected 'NAME LABEL', got {' '.join(row)!r}")
            continue
        name, code = row
        if not name.startswith("test_"):
            continue
        if not is_plain_number(code) or int(code) not in RAFDB_LABELS:
            prepared.exclude(where, f"label {code!r} is outside RAF-DB's 1..7")
            continue
        image = image_dir / f"{Path(name).stem}_aligned{Path(name).suffix}"
        if not image.is_file():
            prepared.exclude(where, f"no aligned image {image}")
            continue
        prepared.add(benchmark, name, image.resolve(), RAFDB_LABELS[int(code)], where=where)
    return prepared


def read_affectnet(source: Path, benchmark, output: Path) -> Prepared:
    """AffectNet validation set: Manually_Annotated_file_lists/validation.csv (image path in column 1, `expression`
    in column 7) + Manually_Annotated_Images/, or the later release's val_set/images/N.jpg + annotations/N_exp.npy.
    The CSV's face box (columns 2-5) is kept: those images are uncropped photos and the paper evaluated face crops."""
    prepared = Prepared()
    entries = []  # (where, image path, code text, face box)
    npy_dir = source / "val_set" / "annotations"
    if npy_dir.is_dir() and not (source / "Manually_Annotated_file_lists").is_dir():
        for npy in sorted(npy_dir.glob("*_exp.npy")):
            number = npy.name[: -len("_exp.npy")]
            try:
                code = str(np.load(npy, allow_pickle=False).item())
            except (ValueError, OSError) as error:
                prepared.exclude(npy, f"unreadable annotation ({first_line(error)})")
                continue
            entries.append((npy, source / "val_set" / "images" / f"{number}.jpg", code, ()))  # already face crops
    else:
        csv_file = find_path(source, ["Manually_Annotated_file_lists/validation.csv", "validation.csv"],
                             "AffectNet validation list")
        image_root = find_path(source, ["Manually_Annotated_Images", "Manually_Annotated/Manually_Annotated_Images"],
                               "AffectNet image folder", directory=True)
        for row_number, row in enumerate(read_table(csv_file), 1):
            if not row or row[0] == "subDirectory_filePath":  # the header, when the file has one
                continue
            where = f"{csv_file}:{row_number}"
            if len(row) < 7 or not all(is_plain_number(cell) for cell in row[1:5]):
                prepared.exclude(where, f"expected 'PATH,X,Y,WIDTH,HEIGHT,LANDMARKS,EXPRESSION,...', got {len(row)} "
                                 "columns")
                continue
            entries.append((where, image_root / row[0], row[6], [int(cell) for cell in row[1:5]]))
    for where, image, code, box in entries:
        code = code.strip()
        if is_plain_number(code.lstrip("-")) and int(code) in AFFECTNET_NOT_EXPRESSIONS:
            prepared.skipped[f"AffectNet code {code} ({AFFECTNET_NOT_EXPRESSIONS[int(code)]}): not an expression"] += 1
            continue
        if not is_plain_number(code) or int(code) not in AFFECTNET_LABELS:
            prepared.exclude(where, f"expression {code!r} is outside AffectNet's 0..10")
            continue
        if not image.is_file():
            prepared.exclude(where, f"no image {image}")
            continue
        prepared.add(benchmark, image.name, image.resolve(), AFFECTNET_LABELS[int(code)], box=box, where=where)
    return prepared


def ferplus_majority(votes: list[float]) -> int | None:
    """FERPlus's "majority" protocol (Barsoum et al. 2016; microsoft/FERPlus `_process_data`): single votes are
    dropped as outliers, then the label is the class holding MORE than half of the remaining votes; no such class
    (ties included) -> None. Returns an index into the vote columns (unknown and NF included)."""
    votes = [vote if vote > 1 else 0.0 for vote in votes]
    total = sum(votes)
    best = int(np.argmax(votes))
    if total == 0 or votes[best] <= 0.5 * total:
        return None
    return best


def read_ferplus(source: Path, benchmark, output: Path) -> Prepared:
    """FERPlus: fer2013new.csv (Usage, Image name, 10 vote columns) row-aligned with FER2013's fer2013.csv (emotion,
    pixels, Usage). The test set is Usage == PrivateTest; images are written as 48x48 PNGs under OUTPUT/images."""
    old_csv = find_path(source, ["fer2013.csv", "fer2013/fer2013.csv"], "FER2013 fer2013.csv (the pixels)")
    new_csv = find_path(source, ["fer2013new.csv", "FERPlus/fer2013new.csv"], "FERPlus fer2013new.csv (the votes)")
    with open(old_csv, newline="", encoding="utf-8") as f:
        old_rows = list(csv.DictReader(f))
    with open(new_csv, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        new_rows = list(reader)
        missing = [c for c in ["Usage", "Image name", *FERPLUS_COLUMNS] if c not in (reader.fieldnames or [])]
    if missing:
        raise PrepareError(f"{new_csv}: missing column(s) {', '.join(missing)}")
    if len(old_rows) != len(new_rows):
        raise PrepareError(f"{new_csv}: {len(new_rows)} rows but {old_csv} has {len(old_rows)}; they must align")
    image_dir = output / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    prepared = Prepared()
    columns = list(FERPLUS_COLUMNS)
    for row_number, (old, new) in enumerate(zip(old_rows, new_rows), 2):  # row 1 is the header
        if new["Usage"].strip() != "PrivateTest":
            continue
        where = f"{new_csv}:{row_number}"
        name = (new["Image name"] or "").strip()
        if not name:
            prepared.skipped["no image name in fer2013new.csv (dropped by FERPlus)"] += 1
            continue
        try:
            votes = [float(new[column]) for column in columns]
        except (TypeError, ValueError):
            prepared.exclude(where, f"vote counts are not numbers: {[new[c] for c in columns]}")
            continue
        winner = ferplus_majority(votes)
        if winner is None:
            prepared.skipped["no majority vote (FERPlus majority protocol)"] += 1
            continue
        if FERPLUS_COLUMNS[columns[winner]] is None:
            prepared.skipped[f"majority vote {columns[winner]!r} (FERPlus majority protocol)"] += 1
            continue
        pixels = (old.get("pixels") or "").split()
        if len(pixels) != 48 * 48 or not all(is_plain_number(p) for p in pixels):
            prepared.exclude(f"{old_csv}:{row_number}", f"pixels are not 2304 numbers 0..255 (got {len(pixels)})")
            continue
        image = image_dir / name
        Image.fromarray(np.array(pixels, dtype=np.uint8).reshape(48, 48)).save(image)
        prepared.add(benchmark, name, image.resolve(), FERPLUS_COLUMNS[columns[winner]])
    return prepared


def read_dfew(source: Path, benchmark, output: Path) -> Prepared:
    """DFEW: EmoLabel_DataSplit/test(single-labeled)/set_K.csv (video_name,label 1..7) + Clip/clip_224x224/NNNNN/."""
    split_dir = find_path(source, ["EmoLabel_DataSplit/test(single-labeled)"], "DFEW test split folder", True)
    clip_root = find_path(source, ["Clip/clip_224x224", "clip_224x224"], "DFEW frame folder", True)
    prepared = Prepared()
    for fold in benchmark.folds:
        list_file = find_path(split_dir, [f"set_{fold}.csv"], f"fold {fold} list")
        rows = read_table(list_file)
        for row_number, row in enumerate(rows[1:], 2):
            if not row:
                continue
            where = f"{list_file}:{row_number}"
            if len(row) < 2 or not is_plain_number(row[0]):
                prepared.exclude(where, f"expected 'video_name,label', got {','.join(row)!r}")
                continue
            code = row[1]
            if not is_plain_number(code) or int(code) not in DFEW_LABELS:
                prepared.exclude(where, f"label {code!r} is outside DFEW's 1..7")
                continue
            clip_id = row[0].zfill(5)
            add_clip(prepared, benchmark, clip_id, clip_root / clip_id, DFEW_LABELS[int(code)], fold, where=where)
    return prepared


def read_ferv39k(source: Path, benchmark, output: Path) -> Prepared:
    """FERV39k: 4_setups/All_scenes/test_All.csv (clip path "Scene/Class/NNNN" first, optionally the class name
    second) + 2_ClipsforFaceCrop/Scene/Class/NNNN/ frame folders."""
    list_file = find_path(source, ["4_setups/All_scenes/test_All.csv", "test_All.csv"], "FERV39k test list")
    clip_root = find_path(source, ["2_ClipsforFaceCrop"], "FERV39k face-crop frame folder", True)
    prepared = Prepared()
    for row_number, row in enumerate(read_table(list_file), 1):
        if not row or (row_number == 1 and "/" not in row[0]):  # header
            continue
        where = f"{list_file}:{row_number}"
        clip = row[0].strip("/")
        name = row[1] if len(row) > 1 and row[1] else Path(clip).parent.name
        class_name = FOLDER_CLASS_NAMES.get(name.lower())
        if class_name is None:
            prepared.exclude(where, f"class {name!r} is not one of FERV39k's 7 classes")
            continue
        add_clip(prepared, benchmark, clip, clip_root / clip, class_name, where=where)
    return prepared


def read_mafw(source: Path, benchmark, output: Path) -> Prepared:
    """MAFW single-label: Train & Test Set/single/no_caption/set_K/test.txt ("00025.mp4 anger") + data/faces/00025/
    (face frames; data/frames/ is used when there is no faces folder)."""
    split_root = find_path(source, ["Train & Test Set/single/no_caption"], "MAFW single-label split folder", True)
    frame_root = find_path(source, ["data/faces", "data/frames"], "MAFW frame folder", True)
    prepared = Prepared()
    for fold in benchmark.folds:
        list_file = find_path(split_root, [f"set_{fold}/test.txt"], f"fold {fold} list")
        for row_number, row in enumerate(read_table(list_file), 1):
            if not row:
                continue
            where = f"{list_file}:{row_number}"
            if len(row) < 2:
                prepared.exclude(where, f"expected 'CLIP LABEL', got {' '.join(row)!r}")
                continue
            class_name = MAFW_LABELS.get(row[1].lower())
            if class_name is None:
                prepared.exclude(where, f"label {row[1]!r} is not one of MAFW's 11 classes")
                continue
            clip_id = Path(row[0]).stem
            add_clip(prepared, benchmark, clip_id, frame_root / clip_id, class_name, fold, where=where)
    return prepared


def read_afew(source: Path, benchmark, output: Path) -> Prepared:
    """AFEW 7.0 validation set: Val_AFEW/Class/CLIP/ frame folders (the released .avi files need their face frames
    extracted first, see the README section "Reproducing the paper"); class folders Angry, Disgust, Fear, Happy, Neutral, Sad, Surprise."""
    val_dir = find_path(source, ["Val_AFEW", "Val", "validation", "AFEW_Face/validation"], "AFEW validation folder",
                        True)
    prepared = Prepared()
    for class_dir in sorted(p for p in val_dir.iterdir() if p.is_dir()):
        class_name = FOLDER_CLASS_NAMES.get(class_dir.name.lower())
        if class_name is None:
            prepared.exclude(class_dir, f"folder {class_dir.name!r} is not one of AFEW's 7 classes")
            continue
        for clip in sorted(class_dir.iterdir()):
            add_clip(prepared, benchmark, f"{class_dir.name}/{clip.name}", clip, class_name)
    return prepared


def read_clip_list(list_files: list[Path], source: Path, benchmark) -> Prepared:
    """The original code's annotation lists ("FRAME_FOLDER NUM_FRAMES LABEL", LABEL a canonical index, one file per
    fold named ..._set_K_...): relative folders are taken under --source."""
    prepared = Prepared()
    for list_file in list_files:
        if not list_file.is_file():
            raise PrepareError(f"{list_file}: no such annotation list")
        match = re.search(r"set_(\d+)", list_file.name)
        fold = int(match.group(1)) if match and benchmark.folds else 0
        for row_number, row in enumerate(read_table(list_file), 1):
            if not row:
                continue
            where = f"{list_file}:{row_number}"
            if len(row) != 3 or not is_plain_number(row[1]) or not is_plain_number(row[2].lstrip("-")):
                prepared.exclude(where, f"expected 'FRAME_FOLDER NUM_FRAMES LABEL', got {' '.join(row)!r}")
                continue
            label = int(row[2])
            if not 0 <= label < benchmark.num_classes:
                classes = f"{benchmark.num_classes} {benchmark.title} classes"
                prepared.exclude(where, f"label {label} is outside the {classes}")
                continue
            folder = source / row[0]
            add_clip(prepared, benchmark, folder.name, folder, benchmark.class_names[label], fold, int(row[1]), where)
    return prepared


READERS = {
    "raf-db": read_rafdb,
    "affectnet-7": read_affectnet,
    "affectnet-8": read_affectnet,
    "ferplus": read_ferplus,
    "dfew": read_dfew,
    "ferv39k": read_ferv39k,
    "mafw": read_mafw,
    "afew": read_afew,
}


def prepare(benchmark_name: str, source, output, annotation=None, strict: bool = False,
            overwrite: bool = False) -> dict:
    """Read a release, save the uniform dataset and its metadata; returns the metadata."""
    import datasets

    benchmark = get_benchmark(benchmark_name)
    source, output = Path(source).expanduser(), Path(output).expanduser()
    if not source.is_dir():
        raise PrepareError(f"{source}: no such release folder")
    try:  # before reading anything (FERPlus writes its images into the output while reading)
        check_output_folder(output, "prepare", [source, *(annotation or [])], overwrite=overwrite)
    except OutputError as error:
        raise PrepareError(str(error))
    clear_output(output, "prepare")
    if annotation:
        if not benchmark.is_video:
            raise PrepareError(f"--annotation lists are for the video benchmarks; {benchmark.title} is an image set")
        prepared = read_clip_list([Path(a) for a in annotation], source, benchmark)
    else:
        prepared = READERS[benchmark.name](source, benchmark, output)
    prepared.drop_duplicates()
    if not prepared.items:
        raise PrepareError(f"{source}: no {benchmark.title} {benchmark.split} items found")
    labels_by_fold = {}
    for item in prepared.items:
        labels_by_fold.setdefault(item["fold"], []).append(item["label"])
    mismatches = check_prepared(benchmark, labels_by_fold)
    metadata = {
        "benchmark": benchmark.name,
        "title": benchmark.title,
        "split": benchmark.split,
        "kind": benchmark.kind,
        "class_names": benchmark.class_names,
        "source": str(source.resolve()),
        "annotation": [str(Path(a).resolve()) for a in annotation or []],
        "num_items": len(prepared.items),
        "sizes": {str(fold): len(labels) for fold, labels in sorted(labels_by_fold.items())},
        "label_counts": {
            str(fold): [labels.count(i) for i in range(benchmark.num_classes)]
            for fold, labels in sorted(labels_by_fold.items())
        },
        "mismatches": mismatches,
        "num_excluded": len(prepared.excluded),
        "excluded": prepared.excluded,
        "skipped": dict(prepared.skipped),
    }
    if strict and mismatches:
        raise PrepareError(f"differs from the paper's test sets (--strict): {'; '.join(mismatches)}")
    features = datasets.Features(
        {
            "id": datasets.Value("string"),
            "path": datasets.Value("string"),
            "num_frames": datasets.Value("int32"),
            "label": datasets.ClassLabel(names=benchmark.class_names),
            "fold": datasets.Value("int32"),
            "box": datasets.Sequence(datasets.Value("int32")),
        }
    )
    # Built with a fingerprint: `datasets` would otherwise hash the table with dill, which failed in one environment
    import hashlib

    import pyarrow as pa
    from datasets.table import InMemoryTable

    fingerprint = hashlib.sha256(json.dumps(prepared.items).encode()).hexdigest()[:16]
    table = InMemoryTable(pa.Table.from_pylist(prepared.items, schema=features.arrow_schema))
    dataset = datasets.Dataset(table, info=datasets.DatasetInfo(features=features), fingerprint=fingerprint)
    dataset.info.description = f"{benchmark.title} {benchmark.split} ({benchmark.kind}), prepared by expclip prepare"
    output.mkdir(parents=True, exist_ok=True)
    dataset.save_to_disk(str(output))
    (output / METADATA_FILE).write_text(json.dumps(metadata, indent=2), encoding="utf-8")
    mark_output(output, "prepare")
    return metadata


def add_arguments(parser):
    parser.add_argument("--benchmark", required=True, help="raf-db, affectnet-7, affectnet-8, ferplus, dfew, ferv39k, "
                        "mafw or afew")
    parser.add_argument("--source", required=True, help="the official release folder, as downloaded and unpacked")
    parser.add_argument("--output", required=True, help="folder for the prepared dataset (new, or empty)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an earlier output of expclip prepare (never a folder holding anything else)")
    parser.add_argument("--annotation", nargs="+", help="video sets: the original code's 'FRAME_FOLDER NUM_FRAMES "
                        "LABEL' lists (one per fold) instead of the release's own split files")
    parser.add_argument("--strict", action="store_true", help="fail when sizes or label counts differ from the paper's "
                        "test sets (the README's table)")
    parser.add_argument("--debug", action="store_true", help="show a traceback on errors")


def run(args) -> int:
    try:
        metadata = prepare(args.benchmark, args.source, args.output, args.annotation, args.strict, args.overwrite)
    except (PrepareError, UnknownBenchmarkError) as error:
        if args.debug:
            raise
        print(f"expclip prepare: error: {error}", file=sys.stderr)
        return 2 if isinstance(error, UnknownBenchmarkError) else 1
    for entry in metadata["excluded"][:20]:
        print(f"excluded: {entry['reason']}", file=sys.stderr)
    if metadata["num_excluded"] > 20:
        more = metadata["num_excluded"] - 20
        print(f"excluded: ... and {more} more (all listed in {METADATA_FILE})", file=sys.stderr)
    for reason, count in metadata["skipped"].items():
        print(f"skipped by the protocol: {count} x {reason}")
    for mismatch in metadata["mismatches"]:
        print(f"warning: {mismatch} (the paper's test sets, as in the README's table of sizes)", file=sys.stderr)
    sizes = ", ".join(f"fold {k}: {v}" for k, v in metadata["sizes"].items()) if len(metadata["sizes"]) > 1 else ""
    print(
        f"prepared {metadata['title']} {metadata['split']}: {metadata['num_items']} items"
        + (f" ({sizes})" if sizes else "")
        + f", {metadata['num_excluded']} excluded -> {args.output}"
    )
    return 0
