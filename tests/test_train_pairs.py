"""One command per backbone x teacher pair (README: Beyond the paper): `accelerate launch train_expclip.py` end to end
for SigLIP 2 NaFlex x Qwen2.5-VL and MetaCLIP 2 x SmolVLM, then the folder through AutoModel, the pipeline,
`expclip predict --faces`, `expclip evaluate` and `expclip export --to onnx`; unsupported families refused."""

import json
import sys
from pathlib import Path

import fake_releases as fake
import pytest
import torch
from PIL import Image
from transformers import AutoModel, AutoProcessor, pipeline

from conftest import HIDE_TORCHVISION, REPO_ROOT, one_line_error, run_command
from tiny_backbones import save_tiny_metaclip_2, save_tiny_siglip2
from tiny_vlms import save_tiny_qwen2_5_vl, save_tiny_smolvlm

from configuration_expclip import INSTRUCTION
from expclip.eval.prepare import prepare
from expclip.inputs import ImagePreprocessing

ACCELERATE = [Path(sys.executable).parent / "accelerate", "launch", "--num_machines", "1", "--mixed_precision", "no",
              "--dynamo_backend", "no", "--cpu", "--num_processes", "1"]
PAIRS = {"siglip2-qwen2_5_vl": (save_tiny_siglip2, save_tiny_qwen2_5_vl),
         "metaclip_2-smolvlm": (save_tiny_metaclip_2, save_tiny_smolvlm)}
LABELS = ["happiness", "sadness", "anger"]
IMAGES = 8  # one batch, one training step: each pair's run costs little more than its two processes' start-up


def train_command(backbone, teacher, images, root, output, *extra):
    return run_command(
        *ACCELERATE, REPO_ROOT / "train_expclip.py", "--clip_model_name_or_path", backbone,
        "--teacher_model_name_or_path", teacher, "--train_dir", images, "--feature_cache_dir", root / "cache",
        "--output_dir", output, "--global_batch_size", IMAGES, "--shard_size", IMAGES, "--extraction_batch_size",
        IMAGES, "--teacher_image_size", 48, "--num_train_epochs", 1, "--logging_steps", 1, *extra,
    )


@pytest.fixture(scope="module")
def pair_images(face_images_dir, tmp_path_factory) -> Path:
    """The first few of the shared generated faces (PNG and JPEG)."""
    folder = tmp_path_factory.mktemp("pair-faces")
    for path in sorted(face_images_dir.rglob("face*"))[:IMAGES]:
        (folder / path.name).write_bytes(path.read_bytes())
    return folder


@pytest.fixture(scope="module")
def trained(tmp_path_factory, pair_images) -> dict:
    """pair -> (its run, its output folder, its teacher folder): one `accelerate launch` per pair for the whole file."""
    runs = {}
    for pair, (build_backbone, build_teacher) in PAIRS.items():
        root = tmp_path_factory.mktemp(pair)
        backbone, teacher = build_backbone(root / "backbone"), build_teacher(root / "teacher")
        runs[pair] = (train_command(backbone, teacher, pair_images, root, root / "out"), root / "out", teacher)
    return runs


@pytest.fixture(scope="module")
def prepared_rafdb(tmp_path_factory) -> Path:
    """A small RAF-DB release, prepared once for both pairs' `expclip evaluate`."""
    root = tmp_path_factory.mktemp("rafdb")
    source, _ = fake.make_rafdb(root)
    prepare("raf-db", source, root / "prepared")
    return root / "prepared"


@pytest.mark.parametrize("pair", PAIRS)
def test_one_command_trains_the_pair_and_records_the_teacher(pair, trained):
    result, folder, teacher = trained[pair]
    assert result.returncode == 0, result.stderr[-3000:]
    assert (folder / "model.safetensors").is_file()
    config = json.loads((folder / "config.json").read_text())
    assert config["teacher_model_name_or_path"] == str(teacher)
    assert (config["teacher_layer"], config["target_pooling"], config["teacher_image_size"]) == (-1, "mean", 48)
    rendered = AutoProcessor.from_pretrained(teacher).apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": config["instruction"]}]}],
        add_generation_prompt=True, tokenize=False)
    assert config["teacher_prompt"] == rendered
    assert config["projection_dim"] == 32  # the tiny teachers' hidden size
    assert rendered in (folder / "README.md").read_text()


@pytest.mark.parametrize("pair", PAIRS)
def test_trained_folder_loads_with_automodel_and_the_pipeline(pair, trained, photo_dir):
    folder = trained[pair][1]
    image = Image.open(photo_dir / "astronaut.jpg")
    template = "a photo of a face with an expression of {}."
    scores = pipeline("zero-shot-image-classification", model=str(folder), trust_remote_code=True)(
        image, candidate_labels=LABELS, hypothesis_template=template)
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    classifier = model.text_classifier(processor.tokenizer, LABELS, [template])
    pixel_values = ImagePreprocessing(processor.image_processor)([image.convert("RGB")])
    expected = model.zero_shot_probabilities(model.classify(pixel_values, classifier), classifier)[0]
    got = torch.tensor([{r["label"]: r["score"] for r in scores}[label] for label in LABELS])
    assert torch.allclose(got, expected, atol=1e-6)


@pytest.mark.parametrize("pair", PAIRS)
def test_predict_faces_runs_on_the_trained_folder(pair, trained, photo_dir, tmp_path):
    out = tmp_path / "predictions.jsonl"
    result = run_command(sys.executable, "-m", "expclip", "predict", photo_dir / "astronaut.jpg", "--model",
                         trained[pair][1], "--faces", "--format", "jsonl", "--output", out)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert records and all(r["kind"] == "face" for r in records)
    assert all(abs(sum(r["scores"].values()) - 1) < 1e-5 for r in records)


@pytest.mark.parametrize("pair", PAIRS)
def test_evaluate_runs_on_the_trained_folder(pair, trained, prepared_rafdb, tmp_path):
    result = run_command(sys.executable, "-m", "expclip", "evaluate", "--model", trained[pair][1], "--benchmark",
                         "raf-db", "--data", prepared_rafdb, "--output", tmp_path / "results")
    assert result.returncode == 0, result.stderr
    assert list((tmp_path / "results").rglob("results.json"))


@pytest.mark.parametrize("pair", PAIRS)
def test_export_onnx_matches_pytorch(pair, trained, tmp_path, photo_dir):
    import onnxruntime

    folder = trained[pair][1]
    result = run_command(sys.executable, "-m", "expclip", "export", folder, "--to", "onnx", "--output", tmp_path / "x")
    assert result.returncode == 0, result.stderr
    # the folded MetaCLIP 2 is a stock model transformers.js can run whole; SigLIP 2 keeps W after its pooling head
    assert (tmp_path / "x" / "onnx" / "model.onnx").is_file() == pair.startswith("metaclip_2")
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    pixel_values = ImagePreprocessing(processor.image_processor)([Image.open(photo_dir / "coffee.jpg")])
    session = onnxruntime.InferenceSession(str(tmp_path / "x" / "onnx" / "vision_model.onnx"))
    image = torch.from_numpy(session.run(["image_embeds"], {"pixel_values": pixel_values.numpy()})[0])
    with torch.no_grad():
        expected = model.get_image_features(pixel_values)
    assert (torch.nn.functional.normalize(image, dim=-1) - expected).abs().max() < 1e-4


def test_export_to_clip_refuses_siglip_naming_onnx(trained, tmp_path):
    result = run_command(sys.executable, "-m", "expclip", "export", trained["siglip2-qwen2_5_vl"][1], "--to", "clip",
                         "--output", tmp_path / "x")
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and "use --to onnx" in result.stderr
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("which", ["backbone", "teacher"])
def test_unsupported_family_is_one_line_exit_2_before_loading(which, tmp_path, tiny_clip_dir, tiny_blip2_dir,
                                                              face_images_dir):
    from transformers import BertConfig

    other = tmp_path / "bert"
    BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2).save_pretrained(other)  # config only
    backbone, teacher = (other, tiny_blip2_dir) if which == "backbone" else (tiny_clip_dir, other)
    result = run_command(sys.executable, REPO_ROOT / "train_expclip.py", "--clip_model_name_or_path", backbone,
                         "--teacher_model_name_or_path", teacher, "--train_dir", face_images_dir,
                         "--output_dir", tmp_path / "out", "--feature_cache_dir", tmp_path / "cache")
    assert result.returncode == 2
    line = result.stderr.strip()
    assert "\n" not in line and f"unsupported {which} model_type 'bert'; supported: " in line
    assert ("clip, metaclip_2, siglip, siglip2" if which == "backbone" else "blip-2, qwen2_5_vl, qwen3_vl") in line
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()


def test_vlm_without_chat_template_uses_the_plain_prompt_and_says_so_once(tiny_clip_dir, pair_images, tmp_path):
    teacher = save_tiny_qwen2_5_vl(tmp_path / "teacher")
    (teacher / "chat_template.jinja").unlink()  # the processor's only chat template
    assert not AutoProcessor.from_pretrained(teacher).chat_template
    result = run_command(sys.executable, REPO_ROOT / "train_expclip.py", "--clip_model_name_or_path", tiny_clip_dir,
                         "--teacher_model_name_or_path", teacher, "--train_dir", pair_images, "--feature_cache_dir",
                         tmp_path / "cache", "--output_dir", tmp_path / "out", "--global_batch_size", IMAGES,
                         "--teacher_image_size", 48, "--num_train_epochs", 1, "--use_cpu", "--disable_tqdm", "true")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr.count("has no chat template") == 1, result.stderr
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["teacher_prompt"] == "<|image_pad|>" + INSTRUCTION


def test_vlm_teacher_without_torchvision_is_one_line_exit_2(pair_images, tmp_path):
    backbone, teacher = save_tiny_siglip2(tmp_path / "backbone"), save_tiny_qwen2_5_vl(tmp_path / "teacher")
    argv = ["train_expclip.py", "--clip_model_name_or_path", backbone, "--teacher_model_name_or_path", teacher,
            "--train_dir", pair_images, "--feature_cache_dir", tmp_path / "cache", "--output_dir", tmp_path / "out"]
    script = HIDE_TORCHVISION + (f"import runpy\nsys.argv = {[str(a) for a in argv]!r}\n"
                                 f"runpy.run_path({str(REPO_ROOT / 'train_expclip.py')!r}, run_name='__main__')\n")
    result = run_command(sys.executable, "-c", script, cwd=REPO_ROOT)
    line = one_line_error(result)
    assert result.returncode == 2
    assert line == (f"train_expclip: error: {teacher}: this VLM's processor needs torchvision: "
                    "pip install torchvision==0.29.1 (with torch==2.14.1)")
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()
