"""The default model (issue 2, item 7): the authors' head fetched, converted and cached on first use.

A synthetic head in the authors' format is served from a local HTTP server on 127.0.0.1; the CLIP is the tiny folder.
"""

import json
import socket
import threading
from functools import partial
from http.server import ThreadingHTTPServer

import pytest
import torch
from conftest import CountingHandler
from tiny_models import CLIP_EMBED_DIM

from expclip.models import ModelFetchError, resolve_model
from modeling_expclip import ExpCLIPModel


@pytest.fixture(scope="module")
def head_server(tmp_path_factory):
    """Serves checkpoint/ExpCLIP_L14_model.pth (a real head) and checkpoint/ExpCLIP_B16_model.pth (not a pickle)."""
    root = tmp_path_factory.mktemp("release")
    (root / "checkpoint").mkdir()
    weight = torch.randn(32, CLIP_EMBED_DIM, generator=torch.Generator().manual_seed(5))
    torch.save({"mlp.weight": weight}, root / "checkpoint" / "ExpCLIP_L14_model.pth")
    (root / "checkpoint" / "ExpCLIP_B16_model.pth").write_text("<html>rate limited</html>")
    handler = type("Handler", (CountingHandler,), {"requests": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/checkpoint/", handler.requests, weight
    server.shutdown()
    thread.join(timeout=10)
    server.server_close()


@pytest.fixture(scope="module")
def environment(tmp_path_factory, tiny_clip_dir, head_server):
    """A fresh Hugging Face home, network allowed (to 127.0.0.1 only), the head URL and CLIP pointed at the fakes."""
    hf_home = tmp_path_factory.mktemp("hf-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HOME", str(hf_home))
        patch.delenv("EXPCLIP_CACHE", raising=False)
        patch.setenv("HF_HUB_OFFLINE", "0")
        patch.setenv("EXPCLIP_HEAD_BASE_URL", head_server[0])
        patch.setenv("EXPCLIP_CLIP_MODEL", str(tiny_clip_dir))
        yield hf_home


@pytest.fixture(scope="module")
def first_use(environment, head_server):
    """The first `resolve_model()`: download, convert, cache."""
    requests = head_server[1]
    requests_before = len(requests)
    folder = resolve_model()
    return folder, requests[requests_before:]


def test_first_use_downloads_the_l14_head_once(first_use):
    _, requests = first_use
    assert requests == ["/checkpoint/ExpCLIP_L14_model.pth"]


def test_first_use_caches_a_complete_converted_folder_in_the_hf_home(first_use, environment, head_server):
    folder, _ = first_use
    assert folder == str(environment / "expclip" / "expclip-l14")
    model = ExpCLIPModel.from_pretrained(folder)
    assert torch.equal(model.projection.weight, head_server[2])
    config = json.loads((environment / "expclip" / "expclip-l14" / "config.json").read_text())
    assert config["original_checkpoint"] == head_server[0] + "ExpCLIP_L14_model.pth"
    assert not [p for p in (environment / "expclip").iterdir() if p.name.startswith(".")]  # no temporary leftovers


def test_second_use_reuses_the_cache_without_a_request(first_use, head_server):
    folder, _ = first_use
    requests_before = len(head_server[1])
    assert resolve_model() == folder
    assert resolve_model("expclip-l14") == folder
    assert len(head_server[1]) == requests_before


def test_local_folders_and_hub_ids_pass_through(environment, tiny_clip_dir):
    assert resolve_model(str(tiny_clip_dir)) == str(tiny_clip_dir)
    assert resolve_model("someone/expclip-finetuned") == "someone/expclip-finetuned"


def test_missing_head_on_the_server_is_a_one_line_fetch_error(environment, head_server):
    with pytest.raises(ModelFetchError) as error:
        resolve_model("expclip-b32")
    message = str(error.value)
    assert len(message.splitlines()) == 1
    assert head_server[0] + "ExpCLIP_B32_model.pth" in message and "404" in message and "--model" in message
    assert not (environment / "expclip" / "expclip-b32").exists()


def test_a_download_that_is_not_a_head_is_a_fetch_error_and_not_cached(environment):
    with pytest.raises(ModelFetchError, match=r"^expclip-b16: could not build the model .*not a PyTorch state dict"):
        resolve_model("expclip-b16")
    assert not (environment / "expclip" / "expclip-b16").exists()


def test_unreachable_server_says_what_failed_and_how_to_use_a_local_folder(environment, monkeypatch):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("EXPCLIP_HEAD_BASE_URL", f"http://127.0.0.1:{port}/checkpoint")
    with pytest.raises(ModelFetchError) as error:
        resolve_model("expclip-b32")
    message = str(error.value)
    assert len(message.splitlines()) == 1
    assert message.startswith(f"expclip-b32: could not download the Exp-CLIP head http://127.0.0.1:{port}/checkpoint/")
    assert "--model" in message and "expclip convert" in message


def test_offline_mode_without_a_cache_fails_without_any_request(environment, head_server, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    requests_before = len(head_server[1])
    with pytest.raises(ModelFetchError, match=r"^expclip-b32: not in the cache .*offline mode.*--model"):
        resolve_model("expclip-b32")
    assert len(head_server[1]) == requests_before
