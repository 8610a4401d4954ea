"""Small fake copies of the official benchmark releases, in each release's own layout and label format.

Each `make_*` writes a release under `root` and returns `(source_folder, expected)`, where `expected` maps an item id
(as `expclip prepare` names it) to the canonical class name the item must get. The code -> name tables here are
written from the releases' documentation, independently of eval/prepare.py, so a test comparing the two checks the
mapping. Images are 32x32 (FERPlus: 48x48 pixel strings); clips have a few frames.
"""

import csv
import io
from pathlib import Path

import numpy as np
from PIL import Image

CANONICAL = ["happiness", "sadness", "neutral", "anger", "surprise", "disgust", "fear", "contempt", "anxiety",
             "helplessness", "disappointment"]


def write_image(path: Path, seed: int, size: int = 32):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)


def write_clip(folder: Path, num_frames: int, seed: int):
    for index in range(num_frames):
        write_image(folder / f"{index + 1:05d}.jpg", seed * 1000 + index)


def make_rafdb(root: Path, per_class=None, bad_row: bool = True):
    """RAF-DB basic: EmoLabel/list_patition_label.txt + Image/aligned/<name>_aligned.jpg; labels 1..7 =
    Surprise, Fear, Disgust, Happiness, Sadness, Anger, Neutral. Unbalanced by default, so UAR differs from WAR."""
    source = root / "basic"
    names = {1: "surprise", 2: "fear", 3: "disgust", 4: "happiness", 5: "sadness", 6: "anger", 7: "neutral"}
    per_class = per_class or {1: 1, 2: 1, 3: 2, 4: 4, 5: 2, 6: 1, 7: 3}
    lines, expected, number = [], {}, 0
    for code in names:
        for _ in range(per_class[code]):
            number += 1
            lines.append(f"train_{number:05d}.jpg {code}")  # training rows are not part of the benchmark
            name = f"test_{number:04d}.jpg"
            lines.append(f"{name} {code}")
            write_image(source / "Image" / "aligned" / f"test_{number:04d}_aligned.jpg", number)
            expected[name] = names[code]
    if bad_row:
        lines.append("test_9999.jpg 9")  # a label outside 1..7
    (source / "EmoLabel").mkdir(parents=True)
    (source / "EmoLabel" / "list_patition_label.txt").write_text("\n".join(lines) + "\n")
    return source, expected


AFFECTNET_NAMES = {0: "neutral", 1: "happiness", 2: "sadness", 3: "surprise", 4: "fear", 5: "disgust", 6: "anger",
                   7: "contempt"}


def make_affectnet_csv(root: Path, per_class: int = 2):
    """AffectNet: Manually_Annotated_file_lists/validation.csv (no header, expression in column 7) +
    Manually_Annotated_Images/<dir>/<file>.jpg; codes 8-10 (None, Uncertain, No-Face) are not expressions."""
    source = root / "AffectNet"
    rows, expected, number = [], {}, 0
    for code in list(AFFECTNET_NAMES) + [8, 10]:
        for _ in range(per_class):
            number += 1
            relative = f"{number % 3 + 1}/{number:04d}abc.jpg"
            write_image(source / "Manually_Annotated_Images" / relative, number)
            rows.append([relative, 2, 3, 20, 24, "1;2;3", code, 0.1, -0.2])  # face box x, y, width, height
            if code in AFFECTNET_NAMES:
                expected[Path(relative).name] = AFFECTNET_NAMES[code]
    (source / "Manually_Annotated_file_lists").mkdir(parents=True)
    with open(source / "Manually_Annotated_file_lists" / "validation.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return source, expected


def make_affectnet_npy(root: Path, per_class: int = 1):
    """The later AffectNet release: val_set/images/N.jpg + val_set/annotations/N_exp.npy (a numpy string)."""
    source = root / "AffectNet-npy"
    expected, number = {}, 0
    for code in AFFECTNET_NAMES:
        for _ in range(per_class):
            write_image(source / "val_set" / "images" / f"{number}.jpg", number)
            (source / "val_set" / "annotations").mkdir(parents=True, exist_ok=True)
            np.save(source / "val_set" / "annotations" / f"{number}_exp.npy", np.array(str(code)))
            np.save(source / "val_set" / "annotations" / f"{number}_val.npy", np.array("0.5"))
            expected[f"{number}.jpg"] = AFFECTNET_NAMES[code]
            number += 1
    return source, expected


FERPLUS_VOTE_COLUMNS = ["neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt",
                        "unknown", "NF"]


def make_ferplus(root: Path):
    """FER2013's fer2013.csv (emotion,pixels,Usage) and FERPlus's row-aligned fer2013new.csv (Usage,Image name,
    10 vote counts). Returns (source, expected, skipped) where skipped counts the PrivateTest rows the majority
    protocol drops."""
    source = root / "FERPlus"
    source.mkdir(parents=True)
    rng = np.random.default_rng(0)
    old_rows, new_rows, expected = [], [], {}

    def add(usage, votes, name=None):
        number = len(old_rows)
        pixels = " ".join(map(str, rng.integers(0, 256, 48 * 48)))
        old_rows.append([0, pixels, usage])
        name = f"fer{number:07d}.png" if name is None else name
        new_rows.append([usage, name, *votes])
        return name

    add("Training", [10, 0, 0, 0, 0, 0, 0, 0, 0, 0])
    for k, column in enumerate(FERPLUS_VOTE_COLUMNS[:8]):  # a clear majority for each of the 8 classes
        votes = [0] * 10
        votes[k], votes[(k + 1) % 8] = 7, 3
        expected[add("PrivateTest", votes)] = column
    # single votes are outliers: happiness 5 of 10 is no majority, but 5 of 5 once the single votes are dropped
    expected[add("PrivateTest", [1, 5, 1, 1, 1, 1, 0, 0, 0, 0])] = "happiness"
    add("PrivateTest", [5, 5, 0, 0, 0, 0, 0, 0, 0, 0])  # a tie: no majority
    add("PrivateTest", [2, 0, 0, 0, 0, 0, 0, 0, 8, 0])  # majority unknown
    add("PrivateTest", [0, 0, 0, 0, 0, 0, 0, 0, 0, 10])  # majority not a face
    add("PrivateTest", [0, 10, 0, 0, 0, 0, 0, 0, 0, 0], name="")  # no image name: dropped by FERPlus
    add("PublicTest", [0, 10, 0, 0, 0, 0, 0, 0, 0, 0])
    with open(source / "fer2013.csv", "w", newline="") as f:
        csv.writer(f).writerows([["emotion", "pixels", "Usage"], *old_rows])
    with open(source / "fer2013new.csv", "w", newline="") as f:
        csv.writer(f).writerows([["Usage", "Image name", *FERPLUS_VOTE_COLUMNS], *new_rows])
    return source, expected, 4


DFEW_NAMES = {1: "happiness", 2: "sadness", 3: "neutral", 4: "anger", 5: "surprise", 6: "disgust", 7: "fear"}


def make_dfew(root: Path, frame_counts=(5, 16, 17, 9, 12, 20, 6)):
    """DFEW: EmoLabel_DataSplit/test(single-labeled)/set_1..5.csv (video_name,label 1..7) +
    Clip/clip_224x224/NNNNN/*.jpg. One clip per class per fold; returns (source, expected, fold of each clip)."""
    source = root / "DFEW"
    split_dir = source / "EmoLabel_DataSplit" / "test(single-labeled)"
    split_dir.mkdir(parents=True)
    expected, folds, video = {}, {}, 0
    for fold in range(1, 6):
        rows = [["video_name", "label"]]
        for code in DFEW_NAMES:
            video += 1
            write_clip(source / "Clip" / "clip_224x224" / f"{video:05d}", frame_counts[code - 1], video)
            rows.append([video, code])  # DFEW lists the number without its zero padding
            expected[f"{video:05d}"], folds[f"{video:05d}"] = DFEW_NAMES[code], fold
        with open(split_dir / f"set_{fold}.csv", "w", newline="") as f:
            csv.writer(f).writerows(rows)
    return source, expected, folds


def make_ferv39k(root: Path):
    """FERV39k: 4_setups/All_scenes/test_All.csv ("Scene/Class/NNNN,Class") + 2_ClipsforFaceCrop/ frame folders."""
    source = root / "FERV39k"
    folder_names = {"Happy": "happiness", "Sad": "sadness", "Neutral": "neutral", "Angry": "anger",
                    "Surprise": "surprise", "Disgust": "disgust", "Fear": "fear"}
    rows, expected = [], {}
    for k, (folder, name) in enumerate(folder_names.items()):
        for scene in ("Action", "Argue"):
            clip = f"{scene}/{folder}/{k:04d}"
            write_clip(source / "2_ClipsforFaceCrop" / clip, 4 + k, k)
            rows.append([clip, folder])
            expected[clip] = name
    (source / "4_setups" / "All_scenes").mkdir(parents=True)
    with open(source / "4_setups" / "All_scenes" / "test_All.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return source, expected


def make_mafw(root: Path):
    """MAFW single-label: Train & Test Set/single/no_caption/set_K/test.txt ("00025.mp4 anger") + data/faces/."""
    source = root / "MAFW"
    expected, clip = {}, 0
    for fold in range(1, 6):
        lines = []
        for name in CANONICAL:
            clip += 1
            write_clip(source / "data" / "faces" / f"{clip:05d}", 3, clip)
            lines.append(f"{clip:05d}.mp4 {name}")
            expected[f"{clip:05d}"] = name
        folder = source / "Train & Test Set" / "single" / "no_caption" / f"set_{fold}"
        folder.mkdir(parents=True)
        (folder / "test.txt").write_text("\n".join(lines) + "\n")
    return source, expected


def make_afew(root: Path):
    """AFEW 7.0 validation, face frames extracted: Val_AFEW/<Class>/<clip>/*.jpg."""
    source = root / "AFEW"
    folder_names = {"Angry": "anger", "Disgust": "disgust", "Fear": "fear", "Happy": "happiness",
                    "Neutral": "neutral", "Sad": "sadness", "Surprise": "surprise"}
    expected = {}
    for k, (folder, name) in enumerate(folder_names.items()):
        clip = f"{k:03d}{k:06d}"
        write_clip(source / "Val_AFEW" / folder / clip, 6, k)
        expected[f"{folder}/{clip}"] = name
    return source, expected


def make_clip_lists(root: Path, name: str, sizes: dict, label_counts: dict, num_classes: int) -> list[Path]:
    """The original code's clip lists ("FRAME_FOLDER NUM_FRAMES LABEL", one per fold, named <name>_set_K.txt, or
    <name>.txt for fold 0), written as the original's files are: no newline after the last line. Fold k holds
    `sizes[k]` clips, labelled by `label_counts[k]` (canonical indices) when given, else cycling over the classes.
    Each clip folder holds one tiny frame (prepare counts frames, it does not decode them)."""
    buffer = io.BytesIO()
    Image.new("RGB", (2, 2)).save(buffer, "PNG")
    frame = buffer.getvalue()
    (root / "lists").mkdir(parents=True, exist_ok=True)
    files, clip = [], 0
    for fold, size in sizes.items():
        counts = label_counts.get(fold)
        labels = [c for c, n in enumerate(counts) for _ in range(n)] if counts else [k % num_classes for k in range(size)]
        assert len(labels) == size
        rows = []
        for label in labels:
            clip += 1
            folder = root / "clips" / f"{clip:05d}"
            folder.mkdir(parents=True)
            (folder / "00001.png").write_bytes(frame)
            rows.append(f"clips/{clip:05d} 1 {label}")
        path = root / "lists" / (f"{name}_set_{fold}.txt" if fold else f"{name}.txt")
        path.write_text("\n".join(rows))  # the original's files end without a newline
        files.append(path)
    return files
