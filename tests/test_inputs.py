"""The input pipeline (`expclip.inputs.InputPipeline`): order, bad items and worker processes, and the opt-in
on-device normalisation, on real photos."""

import os

import numpy as np
import pytest
import torch

from expclip.inputs import ImagePreprocessing, InputPipeline, load_image


def _read(path) -> dict:
    """A `prepare` for the pipeline: one file -> its decoding process and a (1, 3) tensor of its mean colour."""
    if str(path).endswith("boom.png"):
        raise RuntimeError("unexpected failure")  # not an InputError: named by the pipeline
    image = np.asarray(load_image(path), dtype=np.float32)
    return {"pid": os.getpid(), "mean": torch.from_numpy(image.reshape(-1, 3).mean(0, keepdims=True))}


@pytest.fixture(scope="module")
def paths(photo_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("mixed")
    (folder / "empty.jpg").write_bytes(b"")
    good = sorted(photo_dir.iterdir())
    return [good[0], folder / "empty.jpg", good[1], folder / "boom.png", folder / "missing.jpg", good[2]]


def _run(paths, num_workers):
    return list(InputPipeline(paths, _read, batch_size=4, num_workers=num_workers))


def test_batches_keep_input_order_and_carry_each_bad_item_as_one_line(paths):
    batches = _run(paths, num_workers=0)
    assert [len(batch.items) for batch in batches] == [4, 2]
    prepared = [one for batch in batches for one in batch.items]
    assert [one.index for one in prepared] == list(range(6))
    errors = {one.index: one.error for one in prepared if one.error is not None}
    assert errors == {
        1: f"{paths[1]}: empty file (0 bytes)",
        3: f"{paths[3]}: RuntimeError: unexpected failure",
        4: f"{paths[4]}: no such file or directory",
    }
    assert batches[0].tensors["mean"].shape == (2, 3)  # only the good items' rows, concatenated


def test_worker_processes_give_the_same_batches_as_the_main_process(paths):
    in_process, workers = _run(paths, num_workers=0), _run(paths, num_workers=2)
    for a, b in zip(in_process, workers, strict=True):
        assert [(one.index, one.error) for one in a.items] == [(one.index, one.error) for one in b.items]
        assert torch.equal(a.tensors["mean"], b.tensors["mean"])
    pids = {one.value["pid"] for batch in workers for one in batch.good}
    assert os.getpid() not in pids  # the reading happened in the worker processes


def test_on_device_normalisation_equals_the_processor_within_float_rounding(tiny_expclip_dir, photo_dir):
    from transformers import AutoImageProcessor

    import modeling_expclip  # noqa: F401 -- registers Exp-CLIP's PIL image processor

    processor = AutoImageProcessor.from_pretrained(tiny_expclip_dir)
    processor.do_normalize = True  # CLIP's mean/std, the case with the most arithmetic
    images = [load_image(path) for path in sorted(photo_dir.iterdir())]
    exact = ImagePreprocessing(processor)(images)
    fast = ImagePreprocessing(processor, normalize_on_device=True)
    uint8 = fast(images)
    assert uint8.dtype == torch.uint8
    assert torch.allclose(fast.to_device(uint8), exact, rtol=0, atol=1e-5)


def test_normalize_on_device_moves_probabilities_by_less_than_1e_5(tiny_expclip_dir, photo_dir):
    from expclip.predictor import ExpCLIPPredictor

    paths = sorted(photo_dir.iterdir())
    records = {}
    for on_device in (False, True):
        predictor = ExpCLIPPredictor.from_pretrained(str(tiny_expclip_dir), device="cpu", detector=None, workers=0,
                                                     normalize_on_device=on_device)
        records[on_device] = predictor(paths)
    for a, b in zip(records[False], records[True], strict=True):
        assert a["label"] == b["label"]
        assert max(abs(a["scores"][k] - b["scores"][k]) for k in a["scores"]) < 1e-5

