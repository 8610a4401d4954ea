"""`expclip evaluate` with the tiny Exp-CLIP model on prepared fake releases: the prompt study rows, UAR/WAR against
a hand computation from the stored predictions, fold means, the plain-CLIP baseline, confusion PNGs, the results
table, the model card's model-index, 16-frame sampling and excluded items. Two real CLI runs (an image set and a
video set) are shared by the tests through module-scoped fixtures."""

import json
import shutil
import sys
from pathlib import Path

import datasets
import fake_releases as fake
import numpy as np
import pytest
import torch
from conftest import run_command
from expclip.eval.prepare import prepare
from PIL import Image

BENCHMARK_COLUMNS = "| model | RAF-DB | AffectNet-7 | AffectNet-8 | FERPlus | DFEW | FERV39k | MAFW | AFEW |"


def evaluate_command(*args):
    return run_command(sys.executable, "-m", "expclip", "evaluate", *args)


def hand_scores(predictions, labels):
    """WAR = share of correct predictions; UAR = mean over the classes present of each class's recall (in %)."""
    predictions, labels = np.array(predictions), np.array(labels)
    recalls = [np.mean(predictions[labels == c] == c) for c in sorted(set(labels.tolist()))]
    return 100 * float(np.mean(recalls)), 100 * float(np.mean(predictions == labels))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_expclip_dir):
    """A private copy of the tiny model: --update-card writes its README.md."""
    return Path(shutil.copytree(tiny_expclip_dir, tmp_path_factory.mktemp("model") / "tiny-expclip"))


@pytest.fixture(scope="module")
def output(tmp_path_factory):
    """One results folder shared by both runs: their rows add up in results.md."""
    return tmp_path_factory.mktemp("results")


@pytest.fixture(scope="module")
def image_run(tmp_path_factory, model_dir, output):
    root = tmp_path_factory.mktemp("rafdb")
    source, _ = fake.make_rafdb(root)
    prepare("raf-db", source, root / "prepared")
    result = evaluate_command("--model", model_dir, "--benchmark", "raf-db", "--data", root / "prepared",
                              "--prompts", "all", "--baseline-clip", "--update-card", "--output", output)
    assert result.returncode == 0, result.stderr
    results = json.loads((output / "tiny-expclip" / "raf-db" / "results.json").read_text())
    return result, results, output, root / "prepared"


@pytest.fixture(scope="module")
def video_run(tmp_path_factory, model_dir, output):
    """DFEW (5 folds) plus three bad clips: fewer frames than listed, an unreadable frame, a label outside 0..6."""
    root = tmp_path_factory.mktemp("dfew")
    source, _, _ = fake.make_dfew(root)
    prepare("dfew", source, root / "prepared")
    dataset = datasets.load_from_disk(str(root / "prepared")).cast_column("label", datasets.Value("int64"))
    short = root / "bad" / "short"
    fake.write_clip(short, 3, 1)
    corrupt = root / "bad" / "corrupt"
    fake.write_clip(corrupt, 4, 2)
    (corrupt / "00003.jpg").write_bytes(b"not a jpeg")
    fine = root / "bad" / "fine"
    fake.write_clip(fine, 4, 3)
    for clip_id, folder, frames, label in [("short", short, 10, 0), ("corrupt", corrupt, 4, 1), ("label", fine, 4, 12)]:
        dataset = dataset.add_item({"id": clip_id, "path": str(folder), "num_frames": frames, "label": label,
                                    "fold": 1, "box": []})
    dataset.save_to_disk(str(root / "with-bad"))
    shutil.copy(root / "prepared" / "expclip_prepare.json", root / "with-bad")
    result = evaluate_command("--model", model_dir, "--benchmark", "dfew", "--data", root / "with-bad",
                              "--output", output, "--batch-size", "8", "--model-name", "tiny-video",
                              "--num-workers", "2")
    assert result.returncode == 0, result.stderr
    return result, json.loads((output / "tiny-video" / "dfew" / "results.json").read_text()), root


def test_zero_and_two_workers_give_identical_results_bad_clips_included(video_run, model_dir, tmp_path):
    result, with_workers, root = video_run
    in_process = evaluate_command("--model", model_dir, "--benchmark", "dfew", "--data", root / "with-bad",
                                  "--output", tmp_path, "--batch-size", "8", "--model-name", "tiny-video",
                                  "--num-workers", "0")
    assert in_process.returncode == 0, in_process.stderr
    alone = json.loads((tmp_path / "tiny-video" / "dfew" / "results.json").read_text())
    assert alone["excluded"] == with_workers["excluded"] and len(alone["excluded"]) == 3
    assert alone["items"] == with_workers["items"]
    for one, two in zip(alone["rows"], with_workers["rows"], strict=True):
        assert (one["predictions"], one["uar"], one["war"], one["folds"]) == (
            two["predictions"], two["uar"], two["war"], two["folds"])
    excluded_lines = [line for line in in_process.stderr.splitlines() if line.startswith("excluded: ")]
    assert excluded_lines == [line for line in result.stderr.splitlines() if line.startswith("excluded: ")]


def test_prompts_all_gives_the_five_rows_of_the_prompt_study(image_run):
    _, results, _, _ = image_run
    assert [r["prompts"] for r in results["rows"] if r["head"] == "Exp-CLIP"] == [f"type{k}" for k in range(1, 6)]


def test_prompt_study_rows_use_exactly_the_originals_prompt_lists(image_run):
    """The prompt sets (README: Reproducing the paper): type1-type3 templates, type4/type5 the original's per-class
    lists (written out in test_prompts)."""
    from test_prompts import ORIGINAL_TYPE4, ORIGINAL_TYPE5

    _, results, _, _ = image_run
    names = results["class_names"]
    expected = {
        "type1": [[f"{c}."] for c in names],
        "type2": [[f"an expression of {c}."] for c in names],
        "type3": [[f"a photo of a face with an expression of {c}."] for c in names],
        "type4": [ORIGINAL_TYPE4[c] for c in names],
        "type5": [ORIGINAL_TYPE5[c] for c in names],
    }
    for row in results["rows"]:
        assert row["class_prompts"] == expected[row["prompts"]], (row["head"], row["prompts"])


def test_baseline_clip_adds_plain_clip_rows_in_the_same_run(image_run):
    _, results, _, _ = image_run
    baseline = [r for r in results["rows"] if r["head"] == "CLIP"]
    assert [r["prompts"] for r in baseline] == [f"type{k}" for k in range(1, 6)]
    assert all(r["use_projection"] is False for r in baseline)


def test_baseline_clip_predictions_are_plain_clip_zero_shot(image_run, tiny_clip_dir):
    """The type3 baseline row predicts what CLIPModel itself predicts with type3 prompts (no head at all)."""
    from transformers import CLIPModel, CLIPProcessor

    _, results, _, prepared = image_run
    clip = CLIPModel.from_pretrained(tiny_clip_dir).eval()
    processor = CLIPProcessor.from_pretrained(tiny_clip_dir, backend="pil")
    dataset = datasets.load_from_disk(str(prepared))
    prompts = [f"a photo of a face with an expression of {c}." for c in results["class_names"]]
    images = [Image.open(row["path"]).convert("RGB") for row in dataset]
    with torch.no_grad():
        inputs = processor(text=prompts, images=images, return_tensors="pt", padding=True)
        expected = clip(**inputs).logits_per_image.argmax(-1).tolist()
    row = next(r for r in results["rows"] if r["head"] == "CLIP" and r["prompts"] == "type3")
    assert row["predictions"] == expected


def test_uar_and_war_equal_a_hand_computation_from_the_stored_predictions(image_run):
    _, results, _, _ = image_run
    labels = [item["label"] for item in results["items"]]
    for row in results["rows"]:
        uar, war = hand_scores(row["predictions"], labels)
        assert row["uar"] == pytest.approx(uar) and row["war"] == pytest.approx(war)


def test_per_class_recall_is_stored_for_every_class(image_run):
    _, results, _, _ = image_run
    labels = np.array([item["label"] for item in results["items"]])
    row = results["rows"][0]
    predictions = np.array(row["predictions"])
    expected = [100 * float(np.mean(predictions[labels == c] == c)) for c in range(7)]
    assert row["per_class_recall"] == pytest.approx(expected)


def test_fold_benchmarks_report_the_mean_of_the_per_fold_scores(video_run):
    _, results, _ = video_run
    row = results["rows"][0]
    folds = np.array([item["fold"] for item in results["items"]])
    labels = np.array([item["label"] for item in results["items"]])
    predictions = np.array(row["predictions"])
    per_fold = [hand_scores(predictions[folds == k], labels[folds == k]) for k in range(1, 6)]
    assert sorted(row["folds"]) == ["1", "2", "3", "4", "5"]
    for k, (uar, war) in enumerate(per_fold, 1):
        assert row["folds"][str(k)]["uar"] == pytest.approx(uar)
        assert row["folds"][str(k)]["war"] == pytest.approx(war)
    assert row["uar"] == pytest.approx(np.mean([u for u, _ in per_fold]))
    assert row["war"] == pytest.approx(np.mean([w for _, w in per_fold]))


def test_bad_clips_are_excluded_counted_and_named(video_run):
    result, results, root = video_run
    reasons = {entry["id"]: entry["reason"] for entry in results["excluded"]}
    assert reasons == {
        "short": f"{root}/bad/short: 3 frames, its list claims 10",
        "corrupt": f"{root}/bad/corrupt/00003.jpg: not an image PIL can read",
        "label": "label: label 12 is outside the 7 classes",
    }
    assert results["num_excluded"] == 3 and results["num_evaluated"] == 35 == len(results["items"])
    for reason in reasons.values():
        assert f"excluded: {reason}" in result.stderr
    assert "3 of 38 items excluded (listed in results.json)" in result.stderr


def test_confusion_matrix_png_opens_with_pil(image_run, video_run):
    for _, results, *_ in (image_run, video_run):
        for row in results["rows"]:
            with Image.open(row["confusion_matrix_png"]) as image:
                image.verify()
            assert sum(map(sum, row["confusion_matrix"])) == results["num_evaluated"]


def test_results_table_has_the_papers_columns_and_a_row_per_model_and_prompt_set(image_run, video_run):
    _, _, output, _ = image_run
    _, video_results, _ = video_run
    lines = (output / "results.md").read_text().splitlines()
    assert lines[2] == BENCHMARK_COLUMNS
    measured = lines[4: lines.index("", 4)]
    assert len(measured) == 11  # 2 heads x 5 prompt sets on RAF-DB + the second model's DFEW run
    row = video_results["rows"][0]
    dfew = f"{row['uar']:.2f}/{row['war']:.2f}"
    assert f"| Exp-CLIP tiny-video (type3) | – | – | – | – | {dfew} | – | – | – |" in measured
    assert measured[0].startswith("| CLIP tiny-clip") and "(type1) | " in measured[0]
    assert measured[5].startswith("| Exp-CLIP tiny-expclip (type1) | ")
    assert "| Exp-CLIP L/14 | 58.70/65.37 | 44.27/44.27 | 38.44/38.43 | 48.28/55.42 | 40.16/47.09 | 27.45/31.07 | " \
           "23.95/26.98 | 38.72/40.42 |" in lines


def test_results_table_shows_the_released_head_logs_and_the_papers_table_labelled(image_run):
    """README: Reproducing the paper: under our rows, the released heads' logs (15 rows, the converted heads' target), then the paper's
    table (the retrained heads' target), each under its own label."""
    _, _, output, _ = image_run
    lines = (output / "results.md").read_text().splitlines()
    released_label = next(k for k, line in enumerate(lines) if line.startswith("Target for converted released heads"))
    paper_label = next(k for k, line in enumerate(lines) if line.startswith("Target for retrained heads"))
    assert "logs of the runs whose heads were released" in lines[released_label]
    assert "the paper's table" in lines[paper_label]
    released = lines[released_label + 4: paper_label - 1]
    paper = lines[paper_label + 4:]
    assert len(released) == 15 and len(paper) == 7
    assert "| Exp-CLIP L/14 released (type3) | 57.93/65.94 | 44.47/44.47 | 38.41/38.41 | 46.95/55.82 | 40.73/47.09 | " \
           "27.94/31.57 | 24.19/27.31 | 40.27/41.47 |" in released
    assert "| Exp-CLIP B/32 released (type5) | 39.82/50.49 | 33.98/33.98 | 29.76/29.76 | 40.94/44.09 | 25.32/26.78 | " \
           "22.36/22.19 | 18.75/23.77 | 32.37/34.12 |" in released
    assert "| Exp-CLIP L/14 | 58.70/65.37 | 44.27/44.27 | 38.44/38.43 | 48.28/55.42 | 40.16/47.09 | 27.45/31.07 | " \
           "23.95/26.98 | 38.72/40.42 |" in paper


def test_update_card_writes_a_model_index_that_round_trips(image_run, model_dir):
    from huggingface_hub import ModelCard
    from huggingface_hub.repocard_data import model_index_to_eval_results

    _, results, _, _ = image_run
    row = next(r for r in results["rows"] if r["head"] == "Exp-CLIP" and r["prompts"] == "type3")
    card = ModelCard.load(model_dir / "README.md")
    name, eval_results = model_index_to_eval_results(card.data.to_dict()["model-index"])
    assert name == "tiny-expclip"
    scores = {(r.dataset_type, r.metric_type, r.metric_name): r.metric_value for r in eval_results}
    assert scores == {
        ("raf-db", "recall", "UAR"): round(row["uar"], 2),
        ("raf-db", "accuracy", "WAR"): round(row["war"], 2),
    }
    assert {r.task_type for r in eval_results} == {"zero-shot-image-classification"}


def test_sixteen_frame_indices_for_clip_lengths_5_16_17_144(tmp_path):
    from expclip.eval.evaluate import BenchmarkPixels

    def spec(num_frames):  # README: Reproducing the paper: frame int(tick/2 + tick*k) of segment k, tick = num_frames/16
        tick = num_frames / 16
        return [int(tick / 2 + tick * k) for k in range(16)]

    rows = []
    for length in (5, 16, 17, 144):
        folder = tmp_path / f"clip{length}"
        folder.mkdir()
        for index in range(length):
            (folder / f"{index:05d}.jpg").touch()
        rows.append({"id": str(length), "path": str(folder), "num_frames": length, "label": 0})
    for short_clip in ("even", "first_frame"):
        pixels = BenchmarkPixels(rows, None, 7, video=True, short_clip=short_clip)
        for row in rows:
            picked = [int(path.stem) for path in pixels.frame_paths(row)]
            quirk = short_clip == "first_frame" and row["num_frames"] <= 16
            assert picked == ([0] * 16 if quirk else spec(row["num_frames"])), (short_clip, row["num_frames"])
    assert spec(144)[:3] == [4, 13, 22] and spec(5)[:4] == [0, 0, 0, 1]


def test_cached_clip_features_score_exactly_like_model_classify(tmp_path, tiny_expclip_dir):
    """One CLIP pass serves every row: head(mean of frame features) == mean of head(frame features) (paper: Method)."""
    from expclip.eval.evaluate import BenchmarkPixels, clip_embeddings
    from transformers import AutoProcessor

    from expclip.inputs import InputPipeline
    from modeling_expclip import ExpCLIPModel

    model = ExpCLIPModel.from_pretrained(tiny_expclip_dir)
    processor = AutoProcessor.from_pretrained(tiny_expclip_dir)
    rows = []
    for k, length in enumerate((5, 20)):
        fake.write_clip(tmp_path / f"clip{k}", length, k)
        rows.append({"id": str(k), "path": str(tmp_path / f"clip{k}"), "num_frames": length, "label": k})
    pixels = BenchmarkPixels(rows, processor.image_processor, 7, video=True)
    batches = InputPipeline(range(2), pixels, batch_size=2, num_workers=0)
    _, clip_embeds, excluded = clip_embeddings(model, batches, video=True)
    clips = torch.stack([pixels(i)["pixel_values"] for i in range(2)])
    for use_projection in (True, False):
        classifier = model.text_classifier(processor.tokenizer, prompt_templates="type4", use_projection=use_projection)
        with torch.inference_mode():
            cached = model.zero_shot_logits(model.project(clip_embeds, use_projection), classifier)
        direct = model.classify(clips, classifier, use_projection=use_projection)
        torch.testing.assert_close(cached, direct, atol=1e-4, rtol=1e-4)
    assert excluded == []


def test_face_box_is_cropped_before_the_image_processor(tmp_path, tiny_expclip_dir):
    from expclip.eval.evaluate import BenchmarkPixels
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_expclip_dir).image_processor
    fake.write_image(tmp_path / "photo.jpg", 0, size=64)
    row = {"id": "photo.jpg", "path": str(tmp_path / "photo.jpg"), "num_frames": 0, "label": 0, "box": [8, 4, 30, 40]}
    pixel_values = BenchmarkPixels([row], processor, 7, video=False)(0)["pixel_values"]
    with Image.open(tmp_path / "photo.jpg") as photo:
        expected = processor(images=[photo.convert("RGB").crop((8, 4, 38, 44))], return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(pixel_values, expected, atol=0, rtol=0)


def test_bfloat16_run_records_its_dtype_and_scores_every_item(image_run, tmp_path, model_dir):
    _, full, _, prepared = image_run
    result = evaluate_command("--model", model_dir, "--benchmark", "raf-db", "--data", prepared, "--dtype", "bfloat16",
                              "--output", tmp_path)
    assert result.returncode == 0, result.stderr
    results = json.loads((tmp_path / "tiny-expclip" / "raf-db" / "results.json").read_text())
    assert (results["dtype"], full["dtype"]) == ("bfloat16", "float32")
    assert results["num_evaluated"] == full["num_evaluated"] and 0 <= results["rows"][0]["war"] <= 100


def test_original_mixed_precision_run_records_its_dtype_and_predicts_as_float32(image_run, tmp_path, model_dir):
    """README: Reproducing the paper: --dtype float16-mixed is the original's GPU precision (float16 CLIP, float32 LayerNorm and head)."""
    _, full, _, prepared = image_run
    result = evaluate_command("--model", model_dir, "--benchmark", "raf-db", "--data", prepared, "--dtype",
                              "float16-mixed", "--prompts", "type3", "--output", tmp_path)
    assert result.returncode == 0, result.stderr
    results = json.loads((tmp_path / "tiny-expclip" / "raf-db" / "results.json").read_text())
    assert results["dtype"] == "float16-mixed"
    float32_row = next(r for r in full["rows"] if r["head"] == "Exp-CLIP" and r["prompts"] == "type3")
    assert results["rows"][0]["predictions"] == float32_row["predictions"]


def test_missing_data_folder_is_a_one_line_error(tmp_path, model_dir):
    result = evaluate_command("--model", model_dir, "--benchmark", "afew", "--data", tmp_path / "nowhere")
    assert result.returncode == 1
    assert result.stderr.strip() == (f"expclip evaluate: error: {tmp_path}/nowhere: no such data folder "
                                     "(make it with `expclip prepare --benchmark afew`)")


def test_unknown_benchmark_is_a_one_line_error(tmp_path, model_dir):
    result = evaluate_command("--model", model_dir, "--benchmark", "ck+", "--data", tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("expclip evaluate: error: unknown benchmark 'ck+'; known: raf-db,")
    assert len(result.stderr.strip().splitlines()) == 1


def test_data_prepared_for_another_benchmark_is_refused(image_run):
    from expclip.eval.benchmarks import get_benchmark
    from expclip.eval.evaluate import EvaluateError, load_prepared

    _, _, _, prepared = image_run
    with pytest.raises(EvaluateError, match="prepared for raf-db, not affectnet-7"):
        load_prepared(prepared, get_benchmark("affectnet-7"))


@pytest.fixture(scope="module")
def override_run(tmp_path_factory, image_run, model_dir):
    """A model whose config has prompt_overrides (sadness, anger), run with a --prompt-file (anger, fear)."""
    _, _, _, prepared = image_run
    root = tmp_path_factory.mktemp("overrides")
    model = Path(shutil.copytree(model_dir, root / "tiny-overrides"))
    config = json.loads((model / "config.json").read_text())
    config["prompt_overrides"] = {"sadness": ["a sad face.", "tears."], "anger": ["config's anger."]}
    (model / "config.json").write_text(json.dumps(config))
    prompt_file = root / "prompts.json"
    prompt_file.write_text(json.dumps({"anger": ["an angry face.", "a furious person."], "fear": ["a scared face."]}))
    result = evaluate_command("--model", model, "--benchmark", "raf-db", "--data", prepared, "--prompts", "type3",
                              "type5", "--prompt-file", prompt_file, "--output", root / "out")
    assert result.returncode == 0, result.stderr
    return json.loads((root / "out" / "tiny-overrides" / "raf-db" / "results.json").read_text())


def test_model_prompt_overrides_are_honoured(override_run):
    names = override_run["class_names"]
    for row in override_run["rows"]:
        assert row["class_prompts"][names.index("sadness")] == ["a sad face.", "tears."]


def test_prompt_file_is_honoured_and_wins_over_the_models_overrides(override_run):
    names = override_run["class_names"]
    for row in override_run["rows"]:
        assert row["class_prompts"][names.index("anger")] == ["an angry face.", "a furious person."]
        assert row["class_prompts"][names.index("fear")] == ["a scared face."]
        assert row["class_prompts"][names.index("happiness")][0] != "a sad face."
    assert override_run["prompt_overrides"]["anger"] == ["an angry face.", "a furious person."]
    assert override_run["prompt_file"].endswith("prompts.json")


@pytest.mark.parametrize("content, message", [
    ('{"boredom": ["a bored face."]}', "'boredom' not in the label set"),
    ('{"sadness": []}', "class 'sadness' needs a non-empty list of prompts"),
    ('{"sadness": "a sad face."}', "class 'sadness' needs a non-empty list of prompts"),
    ('["a sad face."]', "a prompt file is a non-empty JSON object"),
    ("{not json", "not a JSON prompt file"),
])
def test_bad_prompt_file_is_one_line_and_exit_2_before_any_work(tmp_path, model_dir, content, message):
    prompt_file = tmp_path / "prompts.json"
    prompt_file.write_text(content)
    # The data folder does not exist: refusing the file first proves nothing else was looked at.
    result = evaluate_command("--model", model_dir, "--benchmark", "raf-db", "--data", tmp_path / "nowhere",
                              "--prompt-file", prompt_file, "--output", tmp_path / "out")
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"expclip evaluate: error: {prompt_file}: ") and message in line
    assert not (tmp_path / "out").exists()
