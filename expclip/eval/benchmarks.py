"""The paper's zero-shot benchmarks as named presets, with the published numbers (README: Reproducing the paper).

A preset knows its classes (always a prefix of the canonical order `EXPRESSION_CLASSES`), which official split is
evaluated, its folds, whether items are images or video clips, and the sizes and label counts a correctly prepared
set must have.
"""

from dataclasses import dataclass, field
from pathlib import Path


# The prepared-data format that `expclip prepare` writes and `expclip evaluate` reads.
METADATA_FILE = "expclip_prepare.json"
FRAME_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def frame_files(folder: Path) -> list[Path]:
    """A clip folder's frames, sorted by file name (the order the clip lists count them in)."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in FRAME_EXTENSIONS)


@dataclass(frozen=True)
class Benchmark:
    name: str  # the command-line name: `expclip prepare --benchmark NAME`
    title: str  # the paper's column header
    kind: str  # "image" or "video"
    num_classes: int  # the first `num_classes` of EXPRESSION_CLASSES (7, 8 or 11)
    split: str  # the official split the paper evaluates
    folds: tuple[int, ...] = ()  # DFEW/MAFW: 5-fold cross-validation, the test set of each fold; () = a single split
    expected_sizes: dict = field(default_factory=dict)  # fold (0 = the single split) -> number of items
    size_tolerance: float = 0.0  # relative slack of the size check (FERPlus: "about 3,100")
    expected_label_counts: dict = field(default_factory=dict)  # fold -> items per canonical class index
    published: dict = field(default_factory=dict)  # model -> (UAR, WAR) in %, README: Reproducing the paper (the paper's table)
    released: dict = field(default_factory=dict)  # "Exp-CLIP L/14 released (type3)" -> (UAR, WAR): the logs, README: Reproducing the paper

    @property
    def class_names(self) -> list[str]:
        from configuration_expclip import EXPRESSION_CLASSES  # imports transformers: only when a preset is used

        return list(EXPRESSION_CLASSES[: self.num_classes])

    @property
    def is_video(self) -> bool:
        return self.kind == "video"


def _published(*columns):
    """README: Reproducing the paper rows in the table's model order, for one benchmark column."""
    models = ["CLIP B/32", "CLIP B/16", "CLIP L/14", "Exp-CLIP B/32", "Exp-CLIP B/16", "Exp-CLIP L/14", "BLIP-2 (L/14)"]
    return {model: pair for model, pair in zip(models, columns) if pair is not None}


# README: Reproducing the paper: the logs of the runs whose heads were released (ExpCLIP_{L14,B16,B32}.txt in the authors' repository), the
# target of a converted released head; columns RAF-DB, AffectNet-7, AffectNet-8, FERPlus, DFEW, FERV39k, MAFW, AFEW.
RELEASED_HEAD_LOGS = {
    "L/14 type1": "50.38/55.02 37.92/37.93 33.28/33.28 48.06/50.59 26.65/31.36 23.01/24.99 20.67/23.78 32.16/33.07",
    "L/14 type2": "58.08/62.87 42.41/42.41 37.43/37.43 51.07/55.66 38.22/38.07 27.44/26.23 25.12/28.99 37.90/37.80",
    "L/14 type3": "57.93/65.94 44.47/44.47 38.41/38.41 46.95/55.82 40.73/47.09 27.94/31.57 24.19/27.31 40.27/41.47",
    "L/14 type4": "57.18/63.20 42.90/42.90 37.93/37.93 51.47/54.64 39.50/41.83 28.72/28.86 25.64/29.31 37.74/38.32",
    "L/14 type5": "57.99/63.89 43.70/43.70 38.31/38.31 50.95/54.86 40.30/45.02 29.17/31.43 26.33/31.52 39.47/40.42",
    "B/16 type1": "41.57/47.13 34.95/34.95 30.26/30.26 37.91/44.92 22.96/29.59 23.85/26.15 19.03/22.31 38.57/39.90",
    "B/16 type2": "57.01/60.72 38.87/38.87 33.96/33.96 42.01/53.49 30.90/31.74 27.28/29.14 21.42/26.14 35.17/34.91",
    "B/16 type3": "48.42/54.11 38.98/38.98 33.56/33.56 39.78/53.71 25.70/31.17 25.16/28.69 18.86/23.75 31.17/32.28",
    "B/16 type4": "52.86/59.32 39.38/39.38 33.61/33.61 42.29/55.98 30.20/32.49 27.17/29.08 21.70/26.49 36.64/37.80",
    "B/16 type5": "50.82/58.87 40.10/40.10 34.26/34.26 43.33/55.24 30.32/33.77 27.94/30.06 22.01/28.21 36.04/36.75",
    "B/32 type1": "36.00/44.95 29.26/29.27 25.56/25.56 25.75/37.26 20.91/27.37 19.39/20.30 16.05/20.10 32.09/33.33",
    "B/32 type2": "42.00/51.27 33.01/33.01 28.98/28.98 40.62/45.20 28.08/26.37 22.36/19.79 19.59/22.66 31.34/31.50",
    "B/32 type3": "38.68/45.05 31.12/31.12 27.41/27.41 39.36/36.98 25.11/29.41 21.94/24.14 17.87/21.05 31.64/33.60",
    "B/32 type4": "40.34/48.57 33.49/33.50 29.33/29.33 40.27/42.97 24.96/26.96 21.58/21.01 18.92/23.02 34.20/35.70",
    "B/32 type5": "39.82/50.49 33.98/33.98 29.76/29.76 40.94/44.09 25.32/26.78 22.36/22.19 18.75/23.77 32.37/34.12",
}


def _released(column: int) -> dict:
    """One benchmark column of RELEASED_HEAD_LOGS: "Exp-CLIP L/14 released (type1)" -> (UAR, WAR)."""
    released = {}
    for row, cells in RELEASED_HEAD_LOGS.items():
        backbone, prompts = row.split()
        uar, war = cells.split()[column].split("/")
        released[f"Exp-CLIP {backbone} released ({prompts})"] = (float(uar), float(war))
    return released


BENCHMARKS = {
    benchmark.name: benchmark
    for benchmark in [
        Benchmark(
            "raf-db", "RAF-DB", "image", 7, "test",
            expected_sizes={0: 3068},
            published=_published((34.97, 30.05), (38.66, 37.16), (47.22, 41.13), (39.56, 42.14), (48.96, 54.50),
                                 (58.70, 65.37), (43.78, 44.07)),
            released=_released(0),
        ),
        Benchmark(
            "affectnet-7", "AffectNet-7", "image", 7, "validation",
            expected_sizes={0: 3500}, expected_label_counts={0: [500] * 7},
            published=_published((29.29, 29.29), (34.35, 34.35), (34.46, 34.47), (31.73, 31.73), (39.98, 39.98),
                                 (44.27, 44.27), (32.86, 32.87)),
            released=_released(1),
        ),
        Benchmark(
            "affectnet-8", "AffectNet-8", "image", 8, "validation",
            expected_sizes={0: 4000}, expected_label_counts={0: [500] * 8},
            published=_published((25.53, 25.53), (29.38, 29.38), (29.96, 29.96), (27.63, 27.63), (34.40, 34.40),
                                 (38.44, 38.43), (28.53, 28.53)),
            released=_released(2),
        ),
        Benchmark(
            "ferplus", "FERPlus", "image", 8, "test",
            expected_sizes={0: 3100}, size_tolerance=0.05,
            published=_published((36.05, 33.89), (34.33, 45.14), (33.82, 46.67), (37.83, 37.04), (40.81, 53.02),
                                 (48.28, 55.42), (43.40, 48.14)),
            released=_released(3),
        ),
        Benchmark(
            "dfew", "DFEW", "video", 7, "test", folds=(1, 2, 3, 4, 5),
            expected_sizes={1: 2341, 2: 2341, 3: 2340, 4: 2339, 5: 2336},
            expected_label_counts={1: [489, 379, 534, 435, 294, 29, 181]},
            published=_published((22.08, 21.30), (22.92, 28.33), (32.02, 38.12), (24.25, 25.87), (27.12, 31.75),
                                 (40.16, 47.09)),
            released=_released(4),
        ),
        Benchmark(
            "ferv39k", "FERV39k", "video", 7, "test",
            expected_sizes={0: 7847}, expected_label_counts={0: [1473, 1393, 1958, 1487, 638, 467, 431]},
            published=_published((18.12, 17.38), (19.81, 22.51), (21.97, 28.99), (21.48, 21.25), (24.78, 27.99),
                                 (27.45, 31.07)),
            released=_released(5),
        ),
        Benchmark(
            "mafw", "MAFW", "video", 11, "test", folds=(1, 2, 3, 4, 5),
            expected_sizes={1: 1839, 2: 1837, 3: 1833, 4: 1832, 5: 1831},
            expected_label_counts={1: [249, 294, 228, 278, 215, 128, 125, 48, 184, 53, 37]},
            published=_published((13.39, 15.48), (15.45, 17.25), (20.42, 25.58), (17.53, 20.27), (19.17, 23.35),
                                 (23.95, 26.98)),
            released=_released(6),
        ),
        Benchmark(
            "afew", "AFEW", "video", 7, "validation",
            expected_sizes={0: 381}, expected_label_counts={0: [62, 61, 64, 63, 45, 40, 46]},
            published=_published((28.59, 28.87), (28.21, 29.13), (35.50, 38.32), (29.72, 31.23), (32.84, 33.86),
                                 (38.72, 40.42)),
            released=_released(7),
        ),
    ]
}


class UnknownBenchmarkError(ValueError):
    """A benchmark name that is not one of the presets."""


def get_benchmark(name: str) -> Benchmark:
    """A preset by name; case, '-' and '_' are ignored ("RAF_DB", "rafdb" and "raf-db" are the same)."""

    def key(text):
        return text.lower().replace("-", "").replace("_", "").replace(" ", "")

    for benchmark in BENCHMARKS.values():
        if key(name) in (key(benchmark.name), key(benchmark.title)):
            return benchmark
    raise UnknownBenchmarkError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")


def check_prepared(benchmark: Benchmark, labels_by_fold: dict) -> list[str]:
    """Compare a prepared set with the paper's sizes: one line per mismatch of a fold's size or label counts (empty = as
    published). `labels_by_fold` maps fold (0 for a single split) to the list of canonical label indices."""
    mismatches = []
    expected_folds = benchmark.folds or (0,)
    for fold in expected_folds:
        where = f"fold {fold}" if fold else benchmark.split
        labels = labels_by_fold.get(fold, [])
        expected = benchmark.expected_sizes.get(fold)
        if expected is not None:
            slack = round(expected * benchmark.size_tolerance)
            if abs(len(labels) - expected) > slack:
                about = "about " if slack else ""
                mismatches.append(f"{benchmark.title} {where}: {len(labels)} items, expected {about}{expected:,}")
        counts = benchmark.expected_label_counts.get(fold)
        if counts is not None:
            found = [labels.count(index) for index in range(benchmark.num_classes)]
            if found != counts:
                mismatches.append(f"{benchmark.title} {where}: label counts {found}, expected {counts}")
    for fold in sorted(set(labels_by_fold) - set(expected_folds)):
        mismatches.append(f"{benchmark.title}: unexpected fold {fold}")
    return mismatches


def uar_war_results(uar: float, war: float, metric_args: dict, **dataset) -> list:
    """The model-index entries of one benchmark: UAR as macro `recall`, WAR as `accuracy` (both in %).

    `dataset`: EvalResult's dataset_type / dataset_name / dataset_split (/ dataset_args)."""
    from huggingface_hub import EvalResult

    task = dict(task_type="zero-shot-image-classification", task_name="Zero-shot facial expression recognition")
    return [
        EvalResult(metric_type="recall", metric_name="UAR", metric_value=round(uar, 2),
                   metric_args={"average": "macro", **metric_args}, **task, **dataset),
        EvalResult(metric_type="accuracy", metric_name="WAR", metric_value=round(war, 2),
                   metric_args=metric_args, **task, **dataset),
    ]
