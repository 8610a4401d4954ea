"""The download cache shared by everything fetched on first use (the default Exp-CLIP model, the YuNet face detector).

Bottom of the import graph beside `expclip.inputs`: where the cache lives (`EXPCLIP_CACHE`, else `$HF_HOME/expclip`),
whether offline mode is on (the Hub client's variables), and one plain HTTP download.
"""

import os
import shutil
import urllib.request
from pathlib import Path

from huggingface_hub import constants

DOWNLOAD_TIMEOUT_S = 60


def cache_root() -> Path:
    # Read at call time, so HF_HOME set after import counts too.
    hf_home = os.path.expanduser(os.environ.get("HF_HOME") or constants.HF_HOME)
    return Path(os.environ.get("EXPCLIP_CACHE") or Path(hf_home) / "expclip")


def offline() -> bool:
    # Read at call time (huggingface_hub's constant is frozen at import), same variables as the Hub client.
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().upper() in {"1", "ON", "YES", "TRUE"}


def download(url: str, destination: Path) -> None:
    """`url` -> the file `destination`; raises urllib's errors (HTTPError, URLError) or OSError."""
    request = urllib.request.Request(url, headers={"User-Agent": "expclip"})
    with urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_S) as response, open(destination, "wb") as file:
        shutil.copyfileobj(response, file)
