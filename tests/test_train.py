"""`accelerate launch train_expclip.py`: tiny CLIP + tiny BLIP-2-T5 + 64 generated faces, with 1 and 2 processes."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO_ROOT, run_command
from huggingface_hub import ModelCard
from safetensors.numpy import load_file
from transformers import AutoModelForZeroShotImageClassification, AutoProcessor, HfArgumentParser, Trainer

from train_expclip import (
    DataArguments,
    EpochTargetCallback,
    EpochTargetDataset,
    ExpCLIPTrainingArguments,
    ModelArguments,
    build_model_card,
    global_contrastive_loss,
    read_eval_results,
)

ACCELERATE = [Path(sys.executable).parent / "accelerate", "launch", "--num_machines", "1", "--mixed_precision", "no",
              "--dynamo_backend", "no"]


def train_args(tiny_clip_dir, tiny_blip2_dir, images, cache, output, *extra):
    return [
        REPO_ROOT / "train_expclip.py",
        "--clip_model_name_or_path", tiny_clip_dir, "--teacher_model_name_or_path", tiny_blip2_dir,
        "--train_dir", images, "--feature_cache_dir", cache, "--output_dir", output,
        "--global_batch_size", 16, "--shard_size", 16, "--extraction_batch_size", 8, "--logging_steps", 1, *extra,
    ]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_clip_dir, tiny_blip2_dir, face_images_dir):
    """The paper's recipe (global batch 16 here) with one process, with two (gloo), and a LoRA + quirks run."""
    root = tmp_path_factory.mktemp("train")
    one = run_command(
        *ACCELERATE, "--cpu", "--num_processes", 1,
        *train_args(tiny_clip_dir, tiny_blip2_dir, face_images_dir, root / "cache-1", root / "out-1"),
    )
    # On CPU, two processes need the torchrun launcher (--multi_gpu) and the Trainer's --use_cpu (gloo).
    two = run_command(
        *ACCELERATE, "--multi_gpu", "--num_processes", 2,
        *train_args(tiny_clip_dir, tiny_blip2_dir, face_images_dir, root / "cache-2", root / "out-2", "--use_cpu"),
    )
    # LoRA, --paper_recipe (both quirks), and a `datasets` imagefolder as input instead of --train_dir
    lora_args = train_args(tiny_clip_dir, tiny_blip2_dir, face_images_dir, root / "cache-q", root / "out-lora",
                           "--lora_r", 2, "--max_steps", 1, "--learning_rate", 0.1, "--paper_recipe")
    at = lora_args.index("--train_dir")
    lora_args[at : at + 2] = ["--dataset_name", "imagefolder", "--dataset_data_dir", face_images_dir]
    lora = run_command(sys.executable, *lora_args)
    # The head fed row by row from the Arrow cache (the cache of the one-process run, reused as it is)
    arrow = run_command(
        *ACCELERATE, "--cpu", "--num_processes", 1,
        *train_args(tiny_clip_dir, tiny_blip2_dir, face_images_dir, root / "cache-1", root / "out-arrow",
                    "--cache_in_memory", "false"),
    )
    return {"root": root, "one": one, "two": two, "lora": lora, "arrow": arrow}


def test_one_and_two_process_runs_complete(runs):
    for name in ("one", "two", "lora", "arrow"):
        assert runs[name].returncode == 0, f"{name}: {runs[name].stderr[-3000:]}"


def test_output_is_a_loadable_hub_folder_with_provenance(runs, tiny_clip_dir, tiny_blip2_dir):
    for name in ("out-1", "out-2"):
        folder = runs["root"] / name
        assert {"model.safetensors", "config.json", "modeling_expclip.py", "configuration_expclip.py",
                "processor_config.json", "README.md"} <= {p.name for p in folder.iterdir()}
        model = AutoModelForZeroShotImageClassification.from_pretrained(folder, trust_remote_code=True)
        assert model.projection.weight.shape == (24, 16)
        assert model.config.teacher_model_name_or_path == str(tiny_blip2_dir)
        assert model.config.clip_model_name_or_path == str(tiny_clip_dir)
        assert model.config.teacher_dropout is False
        assert AutoProcessor.from_pretrained(folder).image_processor.do_normalize


def test_model_card_has_hub_metadata_and_the_paper_hyperparameters(runs, tiny_clip_dir):
    card = ModelCard.load(runs["root"] / "out-1" / "README.md")
    assert card.data.library_name == "transformers"
    assert card.data.pipeline_tag == "zero-shot-image-classification"
    assert card.data.base_model == str(tiny_clip_dir)
    assert card.data.license == "mit"
    assert "facial-expression-recognition" in card.data.tags
    hyper = card.data.hyperparameters
    assert (hyper["learning_rate"], hyper["weight_decay"], hyper["seed"], hyper["num_train_epochs"]) == (1e-3, 1e-4, 1, 5)
    assert hyper["optimizer"] == "sgd (momentum=0.9)" and hyper["lr_scheduler_type"] == "constant"
    assert "64 used, 2 skipped" in card.text


def test_loss_decreases(runs):
    history = json.loads((runs["root"] / "out-1" / "trainer_state.json").read_text())["log_history"]
    losses = [entry["loss"] for entry in history if "loss" in entry]
    assert len(losses) == 20  # 64 images / 16 per step (drop_last) x 5 epochs
    assert np.mean(losses[-4:]) < np.mean(losses[:4]) - 0.5


def test_two_process_caches_equal_the_one_process_caches(runs):
    def arrow_files(cache):
        return {p.relative_to(cache): p.read_bytes() for p in sorted(cache.glob("*/shard-*/*.arrow"))}

    one, two = arrow_files(runs["root"] / "cache-1"), arrow_files(runs["root"] / "cache-2")
    assert len(one) == 5 and one == two


def test_two_process_weights_agree_with_one_process(runs):
    one = load_file(runs["root"] / "out-1" / "model.safetensors")
    two = load_file(runs["root"] / "out-2" / "model.safetensors")
    for key in one:
        np.testing.assert_allclose(two[key], one[key], atol=1e-6, rtol=0)


def test_the_head_trained_from_tensors_equals_the_head_trained_from_arrow_rows(runs):
    in_memory = load_file(runs["root"] / "out-1" / "model.safetensors")["projection.weight"]
    arrow = load_file(runs["root"] / "out-arrow" / "model.safetensors")["projection.weight"]
    assert not np.allclose(in_memory, load_file(runs["root"] / "out-lora" / "model.safetensors")["projection.weight"])
    np.testing.assert_allclose(in_memory, arrow, atol=1e-6, rtol=0)


def test_unreadable_images_are_skipped_and_reported(runs):
    for name in ("one", "two", "lora"):
        assert "skipped 2 unreadable image(s)" in runs[name].stderr
        assert "zero.jpg: empty file (0 bytes)" in runs[name].stderr
        assert "corrupt.png: corrupt or truncated image" in runs[name].stderr
    listed = (runs["root"] / "out-1" / "skipped_images.txt").read_text().splitlines()
    assert len(listed) == 2


def test_lora_changes_only_the_vision_adapters_and_the_projection(runs, tiny_clip_dir):
    trained = load_file(runs["root"] / "out-lora" / "model.safetensors")
    original = load_file(tiny_clip_dir / "model.safetensors")
    changed = {k for k, v in original.items() if not np.array_equal(trained[f"clip.{k}"], v)}
    assert changed and all(".vision_model." in f".{k}" and k.endswith(("q_proj.weight", "v_proj.weight")) for k in changed)
    assert set(trained) == {f"clip.{k}" for k in original} | {"projection.weight"}


def test_quirk_flags_reach_the_saved_config_and_processor(runs):
    folder = runs["root"] / "out-lora"
    config = json.loads((folder / "config.json").read_text())
    assert config["teacher_dropout"] is True
    image_processor = AutoProcessor.from_pretrained(folder).image_processor
    assert not image_processor.do_normalize and not image_processor.do_center_crop
    assert (image_processor.size.height, image_processor.size.width) == (32, 32)


def test_saved_processor_names_no_class_so_the_pil_backend_is_taken(runs):
    """README: Reproducing the paper: a trained folder loads CLIP's PIL-backend processor whatever is installed (the class registered for
    ExpCLIPConfig); naming "CLIPImageProcessor" would give the torchvision backend where torchvision is installed."""
    for name in ("out-1", "out-lora"):
        folder = runs["root"] / name
        assert "image_processor_type" not in json.loads((folder / "processor_config.json").read_text())["image_processor"]
        assert type(AutoProcessor.from_pretrained(folder).image_processor).__name__ == "CLIPImageProcessorPil"


def test_paper_recipe_is_the_default():
    _, _, args = HfArgumentParser((ModelArguments, DataArguments, ExpCLIPTrainingArguments)).parse_args_into_dataclasses(
        args=["--train_dir", "faces", "--output_dir", "out"]
    )
    assert (args.learning_rate, args.weight_decay, args.num_train_epochs, args.seed) == (1e-3, 1e-4, 5, 1)
    assert str(getattr(args.optim, "value", args.optim)) == "sgd" and args.optim_args == "momentum=0.9"
    assert args.global_batch_size == args.per_device_train_batch_size == 512
    assert args.dataloader_drop_last and args.max_grad_norm == 0
    assert getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type) == "constant"


def test_model_card_results_section_from_expclip_evaluate_output(tmp_path, tiny_expclip_dir):
    from transformers import AutoConfig

    run = tmp_path / "eval" / "rafdb"
    run.mkdir(parents=True)
    (run / "results.json").write_text(json.dumps({
        "benchmark": "rafdb", "title": "RAF-DB", "split": "test",
        "rows": [{"use_projection": False, "prompts": "type3", "uar": 40.0, "war": 41.0},
                 {"use_projection": True, "prompts": "type3", "uar": 58.7, "war": 65.37}],
    }))
    config = AutoConfig.from_pretrained(tiny_expclip_dir, trust_remote_code=True)
    card = build_model_card(config, "Exp-CLIP tiny", {"learning_rate": 1e-3}, [], "mit",
                            read_eval_results(tmp_path / "eval"), 64, 0)
    reloaded = ModelCard(str(card))
    assert [(r.metric_name, r.metric_value) for r in reloaded.data.eval_results] == [("UAR", 58.7), ("WAR", 65.37)]
    assert "| RAF-DB | type3 | 58.70 | 65.37 |" in reloaded.text


def test_a_missing_train_dir_is_one_line_without_traceback(tmp_path):
    result = run_command(sys.executable, REPO_ROOT / "train_expclip.py", "--train_dir", tmp_path / "nowhere",
                         "--output_dir", tmp_path / "out")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].endswith("nowhere: not a folder")
    assert "Traceback" not in result.stderr


def test_paper_recipe_sets_both_quirks_and_the_dropout_quirk_caches_a_draw_per_epoch(runs):
    folder = runs["root"] / "out-lora"
    hyper = ModelCard.load(folder / "README.md").data.hyperparameters
    assert hyper["paper_recipe"] is True
    assert hyper["original_preprocessing"] is True and hyper["teacher_dropout"] is True
    [settings] = [json.loads(p.read_text()) for p in (runs["root"] / "cache-q").glob("*/settings.json")]
    assert settings["teacher_dropout"] and settings["original_preprocessing"] and settings["target_draws"] == 5


def test_dropout_quirk_trains_epoch_e_on_draw_e(tiny_clip_dir, tmp_path):
    """Through the HF Trainer as train_expclip.py builds it: each epoch's batches carry that epoch's draw."""
    import datasets
    import torch

    from modeling_expclip import ExpCLIPModel

    generator = torch.Generator().manual_seed(0)
    num_images, num_draws = 8, 3
    columns = {"image": [f"face{i}.png" for i in range(num_images)],
               "clip_image_embeds": torch.randn(num_images, 16, generator=generator).tolist()}
    for epoch, name in enumerate(["target_embeds", "target_embeds_epoch1", "target_embeds_epoch2"]):
        columns[name] = torch.nn.functional.normalize(torch.randn(num_images, 24, generator=generator), dim=-1).tolist()
    dataset = EpochTargetDataset(datasets.Dataset.from_dict(columns), num_draws)
    seen = []

    def loss(outputs, labels, num_items_in_batch=None):
        seen.append(labels.detach().clone())
        return global_contrastive_loss(outputs, labels)

    args = ExpCLIPTrainingArguments(output_dir=str(tmp_path), global_batch_size=num_images, num_train_epochs=3,
                                    use_cpu=True, disable_tqdm=True)
    model = ExpCLIPModel.from_clip(str(tiny_clip_dir), projection_dim=24)
    trainer = Trainer(model=model, args=args, train_dataset=dataset, compute_loss_func=loss,
                      callbacks=[EpochTargetCallback(dataset)])
    trainer.train()
    assert len(seen) == 3  # one step per epoch
    for epoch, labels in enumerate(seen):
        draws = [torch.tensor(columns[name]) for name in ("target_embeds", "target_embeds_epoch1",
                                                          "target_embeds_epoch2")]
        matches = [sum(bool((torch.isclose(draw, row).all(-1)).any()) for row in labels) for draw in draws]
        assert matches == [num_images if k == epoch else 0 for k in range(num_draws)]


def test_datasets_failing_to_hash_is_one_line_without_traceback(tmp_path, face_images_dir):
    # The H100's mixed environment made dill fail inside `datasets` fingerprinting (issue 11); make it fail here too.
    failing_hasher = (
        "import pickle, runpy, sys; from datasets import fingerprint\n"
        "def fail(*args, **kwargs): raise pickle.PicklingError(\"Can't pickle <class 'MonthDayNano'>\")\n"
        "fingerprint.Hasher.hash = fail; fingerprint.Hasher.update = fail\n"
        f"sys.argv = sys.argv[1:]; runpy.run_path({str(REPO_ROOT / 'train_expclip.py')!r}, run_name='__main__')\n"
    )
    result = run_command(sys.executable, "-c", failing_hasher, "train_expclip.py", "--dataset_name", "imagefolder",
                         "--dataset_data_dir", face_images_dir, "--output_dir", tmp_path / "out")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "train_expclip: error: datasets could not hash an object to fingerprint it "
        "(PicklingError: Can't pickle <class 'MonthDayNano'>)"
    )
