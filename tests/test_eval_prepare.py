"""`expclip prepare` on small fake releases in each official layout: canonical labels, folds, the README: Reproducing the paper checks,
and one-line reports for bad rows and bad input. Every release is prepared once by a real `expclip prepare`
subprocess (two at a time) in a module-scoped fixture; each test then reads the prepared dataset or the output."""

import json
import sys
from concurrent.futures import ThreadPoolExecutor

import datasets
import fake_releases as fake
import pytest
from conftest import run_command
from expclip.eval.prepare import prepare

CANONICAL = fake.CANONICAL


def prepare_command(benchmark, source, output, *extra):
    return run_command(sys.executable, "-m", "expclip", "prepare", "--benchmark", benchmark, "--source", source,
                       "--output", output, *extra)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """benchmark -> (subprocess result, dataset or None, metadata, expected id -> class name, extra info)."""
    root = tmp_path_factory.mktemp("releases")
    out = tmp_path_factory.mktemp("prepared")
    rafdb, rafdb_expected = fake.make_rafdb(root)
    affectnet, affectnet_expected = fake.make_affectnet_csv(root)
    affectnet_npy, affectnet_npy_expected = fake.make_affectnet_npy(root)
    ferplus, ferplus_expected, ferplus_skipped = fake.make_ferplus(root)
    dfew, dfew_expected, dfew_folds = fake.make_dfew(root)
    ferv39k, ferv39k_expected = fake.make_ferv39k(root)
    mafw, mafw_expected = fake.make_mafw(root)
    afew, afew_expected = fake.make_afew(root)
    # the original code's clip list: a folder listed with more frames than it holds, and a label outside 0..6
    (root / "lists").mkdir()
    clip_list = root / "lists" / "AFEW_validation.txt"
    clip_list.write_text("Val_AFEW/Happy/003000003 6 0\nVal_AFEW/Sad/005000005 60 1\nVal_AFEW/Fear/002000002 6 9\n")
    # the command, as a user runs it, for three releases; the other readers are called in-process (same code path
    # after argument parsing) to keep the suite fast
    commands = {
        "raf-db": ("raf-db", rafdb, rafdb_expected),
        "dfew": ("dfew", dfew, dfew_expected),
        "strict": ("afew", afew, None, "--strict"),
    }
    in_process = {
        "affectnet-7": ("affectnet-7", affectnet, affectnet_expected),
        "affectnet-8": ("affectnet-8", affectnet, affectnet_expected),
        "affectnet-npy": ("affectnet-8", affectnet_npy, affectnet_npy_expected),
        "ferplus": ("ferplus", ferplus, ferplus_expected),
        "ferv39k": ("ferv39k", ferv39k, ferv39k_expected),
        "mafw": ("mafw", mafw, mafw_expected),
        "afew-list": ("afew", afew, None, [clip_list]),
        "afew": ("afew", afew, afew_expected),
    }

    def command(key):
        benchmark, source, expected, *extra = commands[key]
        return key, prepare_command(benchmark, source, out / key, *extra)

    with ThreadPoolExecutor(2) as pool:
        results = dict(pool.map(command, commands))
    table = {}
    for key, (benchmark, source, expected, *extra) in commands.items():
        metadata_file = out / key / "expclip_prepare.json"
        table[key] = (
            results[key],
            datasets.load_from_disk(str(out / key)) if results[key].returncode == 0 else None,
            json.loads(metadata_file.read_text()) if metadata_file.exists() else None,
            expected,
        )
    for key, (benchmark, source, expected, *annotation) in in_process.items():
        metadata = prepare(benchmark, source, out / key, annotation[0] if annotation else None)
        table[key] = (None, datasets.load_from_disk(str(out / key)), metadata, expected)
    table["ferplus-skipped"] = ferplus_skipped
    table["dfew-folds"] = dfew_folds
    table["clip-list"] = clip_list
    table["afew-source"] = afew
    return table


def labels_by_id(dataset):
    names = dataset.features["label"].names
    return {row["id"]: names[row["label"]] for row in dataset}


@pytest.mark.parametrize("key", ["raf-db", "affectnet-8", "affectnet-npy", "ferplus", "dfew", "ferv39k", "mafw",
                                 "afew"])
def test_release_labels_map_to_canonical_classes(prepared, key):
    result, dataset, metadata, expected = prepared[key]
    assert result is None or result.returncode == 0, result.stderr
    assert labels_by_id(dataset) == expected
    assert dataset.features["label"].names == CANONICAL[: len(dataset.features["label"].names)]


def test_canonical_label_index_is_the_spec_order_not_alphabetical(prepared):
    _, dataset, _, _ = prepared["raf-db"]
    # RAF-DB code 4 is Happiness: canonical index 0 (alphabetical order would make it 3)
    happy = [row["label"] for row in dataset if row["id"] == "test_0005.jpg"]
    assert happy == [0]
    assert dataset.features["label"].names == ["happiness", "sadness", "neutral", "anger", "surprise", "disgust",
                                               "fear"]


def test_affectnet7_skips_contempt_and_non_expressions(prepared):
    _, dataset, metadata, expected = prepared["affectnet-7"]
    assert labels_by_id(dataset) == {k: v for k, v in expected.items() if v != "contempt"}
    assert sum(metadata["skipped"].values()) == 6  # 2 contempt, 2 None (8), 2 No-Face (10)
    assert any("contempt" in reason for reason in metadata["skipped"])


def test_affectnet_csv_keeps_its_face_box_and_the_cropped_release_has_none(prepared):
    _, dataset, _, _ = prepared["affectnet-8"]
    assert {tuple(row["box"]) for row in dataset} == {(2, 3, 20, 24)}
    _, dataset, _, _ = prepared["affectnet-npy"]
    assert {tuple(row["box"]) for row in dataset} == {()}


def test_affectnet8_keeps_contempt(prepared):
    _, dataset, _, _ = prepared["affectnet-8"]
    assert "contempt" in set(labels_by_id(dataset).values())


def test_ferplus_majority_vote_drops_ties_unknown_nonface_and_nameless_rows(prepared):
    _, dataset, metadata, expected = prepared["ferplus"]
    assert sorted(labels_by_id(dataset)) == sorted(expected)  # includes the row decided after dropping single votes
    assert sum(metadata["skipped"].values()) == prepared["ferplus-skipped"]
    assert metadata["num_excluded"] == 0


def test_ferplus_writes_its_pixels_as_48px_images(prepared):
    from PIL import Image

    _, dataset, _, _ = prepared["ferplus"]
    with Image.open(dataset[0]["path"]) as image:
        assert image.size == (48, 48)


def test_dfew_folds_come_from_its_set_files(prepared):
    _, dataset, metadata, _ = prepared["dfew"]
    assert {row["id"]: row["fold"] for row in dataset} == prepared["dfew-folds"]
    assert metadata["sizes"] == {str(k): 7 for k in range(1, 6)}


def test_clips_store_their_frame_count(prepared):
    _, dataset, _, _ = prepared["dfew"]
    assert [row["num_frames"] for row in dataset][:7] == [5, 16, 17, 9, 12, 20, 6]


def test_mafw_has_all_eleven_classes_in_each_fold(prepared):
    _, dataset, metadata, _ = prepared["mafw"]
    assert metadata["label_counts"] == {str(k): [1] * 11 for k in range(1, 6)}


def test_size_mismatch_is_a_warning_line_and_stored_in_metadata(prepared):
    result, _, metadata, _ = prepared["raf-db"]
    assert "warning: RAF-DB test: 14 items, expected 3,068" in result.stderr
    assert metadata["mismatches"] == ["RAF-DB test: 14 items, expected 3,068"]


def test_label_counts_mismatch_is_reported(prepared):
    _, _, metadata, _ = prepared["afew"]
    assert "AFEW validation: label counts [1, 1, 1, 1, 1, 1, 1], expected [62, 61, 64, 63, 45, 40, 46]" in \
        metadata["mismatches"]


def test_strict_makes_a_mismatch_fatal_in_one_line(prepared):
    result, dataset, _, _ = prepared["strict"]
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith(
        "expclip prepare: error: differs from the paper's test sets (--strict): AFEW validation: 7 items")
    assert "Traceback" not in result.stderr


def test_label_outside_the_class_list_is_excluded_naming_the_row(prepared):
    result, dataset, metadata, _ = prepared["raf-db"]
    reason = f"{metadata['source']}/EmoLabel/list_patition_label.txt:29: label '9' is outside RAF-DB's 1..7"
    assert [e["reason"] for e in metadata["excluded"]] == [reason]
    assert f"excluded: {reason}" in result.stderr
    assert "1 excluded" in result.stdout


def test_clip_list_with_fewer_frames_than_claimed_or_bad_label_is_excluded(prepared):
    _, dataset, metadata, _ = prepared["afew-list"]
    assert [row["id"] for row in dataset] == ["003000003"]
    clip_list, source = prepared["clip-list"], prepared["afew-source"]
    assert [e["reason"] for e in metadata["excluded"]] == [
        f"{clip_list}:2: frame folder {source}/Val_AFEW/Sad/005000005 has 6 frames, its list claims 60",
        f"{clip_list}:3: label 9 is outside the 7 AFEW classes",
    ]


def test_unknown_benchmark_is_a_one_line_error(tmp_path):
    result = prepare_command("raf-db2", tmp_path, tmp_path / "out")
    assert result.returncode == 2
    assert result.stderr.strip() == ("expclip prepare: error: unknown benchmark 'raf-db2'; known: raf-db, affectnet-7, "
                                     "affectnet-8, ferplus, dfew, ferv39k, mafw, afew")


def test_missing_label_file_is_a_one_line_error_naming_what_was_looked_for(tmp_path):
    (tmp_path / "release").mkdir()  # the output may not lie inside the release
    result = prepare_command("dfew", tmp_path / "release", tmp_path / "out")
    assert result.returncode == 1
    assert result.stderr.strip() == (f"expclip prepare: error: {tmp_path / 'release'}: no DFEW test split folder "
                                     "(looked for EmoLabel_DataSplit/test(single-labeled))")


@pytest.mark.parametrize("benchmark, num_classes, sizes, fold1_counts", [
    ("mafw", 11, {1: 1839, 2: 1837, 3: 1833, 4: 1832, 5: 1831}, [249, 294, 228, 278, 215, 128, 125, 48, 184, 53, 37]),
    ("afew", 7, {0: 381}, [62, 61, 64, 63, 45, 40, 46]),
])
def test_strict_passes_on_the_original_clip_lists_of_spec_sizes(tmp_path, benchmark, num_classes, sizes,
                                                                 fold1_counts):
    """README: Reproducing the paper sizes (MAFW 1,839 / 1,837 / 1,833 / 1,832 / 1,831, AFEW 381) from lists without a final newline."""
    lists = fake.make_clip_lists(tmp_path / "release", benchmark, sizes, {min(sizes): fold1_counts}, num_classes)
    result = prepare_command(benchmark, tmp_path / "release", tmp_path / "out", "--strict", "--annotation", *lists)
    assert result.returncode == 0, result.stderr
    metadata = json.loads((tmp_path / "out" / "expclip_prepare.json").read_text())
    assert metadata["mismatches"] == [] and metadata["num_excluded"] == 0
    assert metadata["sizes"] == {str(fold): size for fold, size in sizes.items()}
    assert metadata["label_counts"][str(min(sizes))] == fold1_counts


def test_prepare_does_not_need_datasets_to_hash_the_table(tmp_path):
    # On one H100 machine dill failed inside `datasets` fingerprinting (issue 11): the table now comes with its own.
    rafdb, expected = fake.make_rafdb(tmp_path)
    failing_hasher = (  # dill fails on any Arrow table, as it did there
        "import pickle, sys; from datasets import fingerprint, table\n"
        "original = fingerprint.Hasher.hash.__func__\n"
        "def hash(cls, value):\n"
        "    if isinstance(value, table.Table): raise pickle.PicklingError(\"Can't pickle <class 'MonthDayNano'>\")\n"
        "    return original(cls, value)\n"
        "fingerprint.Hasher.hash = classmethod(hash)\n"
        "from expclip import cli; sys.exit(cli.main(sys.argv[1:]))\n"
    )
    result = run_command(sys.executable, "-c", failing_hasher, "prepare", "--benchmark", "raf-db", "--source", rafdb,
                         "--output", tmp_path / "out")
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(datasets.load_from_disk(str(tmp_path / "out"))["id"]) == sorted(expected)
