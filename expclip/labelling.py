"""Labelling at scale: `accelerate launch -m expclip predict ... --output OUT` on any number of processes, and
`datasets` datasets in and out (README: Labelling a dataset at scale). Middle of the import graph: the predict
command builds on it.

The inputs (paths or dataset rows) are cut into shards of whole model batches (`plan_shards`), so that every item is
scored in the same batch as in a one-process run and the records are identical. Each process takes its share of the
unfinished shards (`PartialState().split_between_processes`), labels them on its own device and writes each one
into `OUT.shards/` as it finishes (JSON lines, one per item, written to a `.partial` name and renamed). Rank 0 merges
the shards in input order into the one output asked for. A killed run resumes with `--resume`: the finished shards
are kept, the others recomputed.
"""

import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

from .inputs import first_line, one_line
from .outputs import MARKER, OutputError, check_output_folder, clear_output, own_files
from .predictor import Item, plan_batches

SHARD_SIZE = 1000  # items per shard (at most): the unit of work of a process and of --resume
MANIFEST = "manifest.json"  # {"fingerprint": the run's inputs and settings, "shards": [[start, stop], ...]}
EXPRESSION_COLUMNS = ("expression", "expression_scores", "expression_error", "faces")


class DatasetError(ValueError):
    """A dataset that cannot be labelled (not found, no such split or image column): one line naming it."""


class ShardError(RuntimeError):
    """A process failed on a shard: one line naming the rank and the shard."""


@dataclass(frozen=True)
class Shard:
    """Items `start` to `stop` (positions in the inputs, a run of whole model batches), numbered from 0."""

    number: int
    start: int
    stop: int

    @property
    def file_name(self) -> str:
        return f"shard-{self.number:05d}.jsonl"

    def describe(self, count: int) -> str:
        return f"shard {self.number + 1} of {count} (items {self.start + 1}-{self.stop})"


def plan_shards(items: list[Item], batch_size: int, shard_size: int = SHARD_SIZE, num_processes: int = 1
                ) -> list[Shard]:
    """Cut `items` into shards of whole model batches (`expclip.predictor.plan_batches`): each about `shard_size`
    items, never more than an even share per process, so that every process has work."""
    size = max(1, min(shard_size, math.ceil(len(items) / max(1, num_processes))))
    shards, start = [], 0
    for batch in plan_batches(items, batch_size):
        stop = batch[-1] + 1
        if stop - start >= size:
            shards.append(Shard(len(shards), start, stop))
            start = stop
    if start < len(items):
        shards.append(Shard(len(shards), start, len(items)))
    return shards


def fingerprint(names: list[str], settings: dict) -> str:
    """What makes two runs give the same records: the items, in order, and every setting that changes a score."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for name in names:
        digest.update(name.encode("utf-8", "surrogateescape") + b"\0")
    return digest.hexdigest()


class ShardFolder:
    """`OUT.shards/`, beside the output: the manifest and one JSON-lines file per finished shard. Only rank 0 creates,
    checks and removes it; every process writes its own shards into it."""

    def __init__(self, output):
        self.path = Path(str(output) + ".shards")

    def prepare(self, run_fingerprint: str, shards: list[Shard], resume: bool, overwrite: bool, inputs=()
                ) -> tuple[list[Shard], list[Shard]]:
        """Rank 0, before any work: a new folder, or (`resume`) an earlier run's of the same inputs and settings.
        Returns (the shards to use: the earlier run's with `resume`, the finished ones). Raises `OutputError`."""
        option = f"{self.path} (the shards of this run)"
        check_output_folder(self.path, "predict", inputs, reuse=True, option=option)
        earlier = own_files(self.path, "predict") is not None
        if earlier and resume:
            try:
                manifest = json.loads((self.path / MANIFEST).read_text(encoding="utf-8"))
            except (OSError, ValueError) as error:
                raise OutputError(f"{option}: no readable manifest ({first_line(error)}); pass --overwrite to "
                                  "start over") from None
            if manifest.get("fingerprint") == run_fingerprint:
                shards = [Shard(number, start, stop) for number, (start, stop) in enumerate(manifest["shards"])]
                return shards, [shard for shard in shards if (self.path / shard.file_name).is_file()]
            if not overwrite:
                raise OutputError(f"{option}: holds shards of a run with other inputs or settings; --resume needs "
                                  "the same ones, or pass --overwrite to start over")
        elif earlier and not overwrite:
            raise OutputError(f"{option}: holds the shards of an unfinished run; pass --resume to finish it, or "
                              "--overwrite to start over")
        if earlier:
            clear_output(self.path, "predict")
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / MANIFEST).write_text(json.dumps({"fingerprint": run_fingerprint, "shards": [
            [shard.start, shard.stop] for shard in shards]}) + "\n", encoding="utf-8")
        # Every file the run may write is ours from the start, so a killed run's folder is recognised as our own.
        files = [MANIFEST] + [name for shard in shards for name in (shard.file_name, shard.file_name + ".partial")]
        (self.path / MARKER).write_text(json.dumps({"command": "predict", "files": files}, indent=1) + "\n",
                                        encoding="utf-8")
        return shards, []

    def write(self, shard: Shard, entries: list[list[dict]]) -> None:
        """One finished shard, atomically: a killed process leaves a `.partial` file, never a short shard."""
        partial = self.path / (shard.file_name + ".partial")
        with open(partial, "w", encoding="utf-8") as file:
            for records in entries:
                file.write(json.dumps(records, ensure_ascii=False) + "\n")
            file.flush()
            os.fsync(file.fileno())
        os.replace(partial, self.path / shard.file_name)

    def read(self, shards: list[Shard]):
        """Every item's records, in input order."""
        for shard in shards:
            with open(self.path / shard.file_name, encoding="utf-8") as file:
                for line in file:
                    yield json.loads(line)

    def remove(self) -> None:
        """After the merge: the files this run wrote, and the folder (never anything else)."""
        clear_output(self.path, "predict")
        try:
            self.path.rmdir()
        except OSError:
            pass


def label_shards(predictor, inputs, shards: list[Shard], folder: ShardFolder, count: int, rank: int, faces: bool,
                 progress=None, debug: bool = False, on_records=None) -> None:
    """Label `shards` of `inputs` in this process, writing each as it finishes. `on_records(records)` sees every
    item's records (e.g. to report bad items). Raises `ShardError` naming the rank and the shard."""
    for shard in shards:
        try:
            entries = []
            for _, records in predictor.predict(inputs.items(shard.start, shard.stop), faces, None, None, progress,
                                                debug):
                entries.append(records)
                if on_records is not None:
                    on_records(records)
            folder.write(shard, entries)
        except Exception as error:  # noqa: BLE001 -- named by rank and shard; the finished shards stay for --resume
            if debug:
                raise
            raise ShardError(f"rank {rank} failed on {shard.describe(count)}: {one_line(error)}; the finished "
                             f"shards are kept in {folder.path}: rerun with --resume") from error


# ----- inputs: paths or a `datasets` dataset -------------------------------------------------------------------------


class PathInputs:
    """Items from paths (`collect_items`)."""

    def __init__(self, items: list[Item]):
        self.all = items

    def __len__(self) -> int:
        return len(self.all)

    def names(self) -> list[str]:
        return [item.name for item in self.all]

    def kinds(self) -> list[Item]:
        return self.all

    def items(self, start: int, stop: int) -> list[Item]:
        return self.all[start:stop]


class DatasetInputs:
    """The rows of a `datasets` dataset as items: each row's image, read undecoded (bytes or path) and decoded in
    the input pipeline's worker processes, so a bad image is that row's error, never the run's."""

    def __init__(self, dataset, image_column: str, split: str):
        from datasets import Image as ImageFeature

        self.dataset, self.image_column, self.split = dataset, image_column, split
        feature = dataset.features[image_column]
        self.undecoded = (dataset.cast_column(image_column, ImageFeature(decode=False))
                          if isinstance(feature, ImageFeature) else dataset)

    def __len__(self) -> int:
        return len(self.dataset)

    def row_name(self, index: int) -> str:
        return f"{self.split}[{index}]"

    def names(self) -> list[str]:
        return [self.dataset._fingerprint, str(len(self.dataset)), self.image_column]

    def kinds(self) -> list[Item]:
        return [Item(None, self.row_name(index), "image") for index in range(len(self.dataset))]

    def items(self, start: int, stop: int) -> list[Item]:
        values = self.undecoded.select(range(start, stop))[self.image_column]
        items = []
        for index, value in zip(range(start, stop), values):
            name = self.row_name(index)
            if isinstance(value, dict):  # an Image column: {"bytes", "path"}; the row names bytes without a path
                items.append(Item({"bytes": value.get("bytes"), "path": value.get("path") or name}, name, "image"))
            elif isinstance(value, str) and value:  # a column of file paths
                items.append(Item(value, name, "image"))
            else:
                items.append(Item(None, name, "error", f"{name}: no image in column {self.image_column!r}"))
        return items


def load_image_dataset(name: str, config: str | None, split: str, image_column: str, output_dataset=None):
    """`--dataset`: a Hub id, a folder of images (`imagefolder`) or a dataset saved with `save_to_disk`. Raises
    `DatasetError` (one line) when it cannot be read, or has no `image_column` (naming the columns it has)."""
    import datasets

    path = Path(name)
    try:
        if path.is_dir() and any((path / f).is_file() for f in ("state.json", "dataset_dict.json")):
            dataset = datasets.load_from_disk(str(path))
            if isinstance(dataset, datasets.DatasetDict):
                if split not in dataset:
                    raise DatasetError(f"--dataset {name}: no split {split!r}; it has {', '.join(dataset)}")
                dataset = dataset[split]
        else:
            dataset = datasets.load_dataset(name, config, split=split)
    except DatasetError:
        raise
    except Exception as error:  # noqa: BLE001 -- not found, offline, bad config or split: one line
        raise DatasetError(f"--dataset {name}: cannot load it ({one_line(error)})") from None
    if image_column not in dataset.column_names:
        raise DatasetError(f"--dataset {name}: no column {image_column!r}; its columns are "
                           f"{', '.join(dataset.column_names)} (choose one with --image-column)")
    taken = [column for column in EXPRESSION_COLUMNS if column in dataset.column_names]
    if output_dataset is not None and taken:
        raise DatasetError(f"--dataset {name}: already has the column(s) {', '.join(taken)} that --output-dataset "
                           "adds; rename them first")
    return dataset


def with_expressions(dataset, entries, class_names: list[str], faces: bool):
    """The dataset plus `expression` (the top label, a `ClassLabel` whose names are the label set, in the order of
    `expression_scores`), `expression_scores`, `expression_error` (None on good rows) and, with `faces`, `faces`
    (each face's box, top label and scores, largest first). With faces the row's expression is its largest face's."""
    import datasets

    label = datasets.ClassLabel(names=class_names)
    scores_feature = datasets.List(datasets.Value("float32"))
    features = {"expression": label, "expression_scores": scores_feature,
                "expression_error": datasets.Value("string")}
    if faces:
        features["faces"] = datasets.List({"box": datasets.List(datasets.Value("int32")), "expression": label,
                                           "expression_scores": scores_feature})
    columns = {name: [] for name in features}
    for records in entries:
        errors = [record["error"] for record in records if record.get("error")]
        predicted = [record for record in records if record.get("label") is not None]
        top = predicted[0] if predicted and not errors else None
        columns["expression"].append(class_names.index(top["label"]) if top else None)
        columns["expression_scores"].append([top["scores"][n] for n in class_names] if top else None)
        columns["expression_error"].append("; ".join(errors) or None)
        if faces:
            columns["faces"].append(None if errors else [
                {"box": record["box"], "expression": class_names.index(record["label"]),
                 "expression_scores": [record["scores"][n] for n in class_names]}
                for record in predicted if record.get("kind") == "face"])
    added = datasets.Dataset.from_dict(columns, features=datasets.Features(features))
    return datasets.concatenate_datasets([dataset, added], axis=1)

