"""The Makefile's two commands from a fresh clone, `make demo` and `make test`, run with the real make.

What make would install is read from its dry run (`make -n`), so these tests never install anything. Where a target
runs for real, it runs in `installed_venv`: a real virtual environment without pip (so nothing can be installed into
it) that sees this test run's packages and holds the stamps a first `make test` leaves.
"""

import re
import shutil
import site
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO_ROOT, run_command
from PIL import Image

YUNET_FILE = REPO_ROOT.parent / "shared" / "models" / "face_detection_yunet_2026may.onnx"
EXAMPLES = REPO_ROOT / "docs" / "examples"
MAKE = shutil.which("make")

pytestmark = pytest.mark.skipif(MAKE is None, reason="GNU make is not installed")


def make(*args, cwd=REPO_ROOT, env=None, timeout=300):
    return run_command(MAKE, "--no-print-directory", *args, cwd=cwd, env=env, timeout=timeout)


def dry_run(*args, cwd=REPO_ROOT) -> list[str]:
    result = make("-n", *args, cwd=cwd)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def index_of(lines, pattern) -> int:
    matches = [i for i, line in enumerate(lines) if re.search(pattern, line)]
    assert matches, f"no line matches {pattern!r} in:\n" + "\n".join(lines)
    return matches[0]


@pytest.fixture(scope="module")
def installed_venv(tmp_path_factory) -> Path:
    venv = tmp_path_factory.mktemp("make") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site_packages = next(venv.glob("lib/python*/site-packages"))
    paths = "; ".join(f"site.addsitedir({path!r})" for path in site.getsitepackages())
    (site_packages / "test-run-packages.pth").write_text(f"import site; {paths}\n")
    (venv / "bin" / "expclip").symlink_to(Path(sys.executable).parent / "expclip")
    touch = [line for line in dry_run("test", f"VENV={venv}") if line.startswith("touch ")]
    assert len(touch) == 1, touch
    for stamp in touch[0].split()[1:]:
        Path(stamp).touch()
    return venv


def test_help_lists_the_targets():
    result = make("help")
    assert result.returncode == 0, result.stderr
    for target in ("make demo ", "make demo MODEL=DIR", "make test ", "make test PYTEST_ARGS=", "make help"):
        assert target in result.stdout
    assert make().stdout == result.stdout  # plain `make` is `make help`


def test_first_make_test_creates_the_venv_and_installs_torch_before_the_package(tmp_path):
    lines = dry_run("test", f"VENV={tmp_path / 'venv'}")
    venv = index_of(lines, r"-m venv .*/venv$")
    torch = index_of(lines, r"/venv/bin/python -m pip install torch==\S+ torchvision==\S+$")  # VLM processors
    package = index_of(lines, r'/venv/bin/python -m pip install -e "\.\[test,app,onnx\]"$')
    pytest_line = index_of(lines, r"/venv/bin/python -m pytest tests -q -n auto --dist loadscope$")
    assert venv < torch < package < pytest_line


def test_first_make_demo_installs_torch_then_the_package_with_the_app_extra(tmp_path):
    lines = dry_run("demo", f"VENV={tmp_path / 'venv'}")
    assert index_of(lines, r"pip install torch==") < index_of(lines, r'pip install -e "\.\[app\]"$')
    assert not any("[test" in line for line in lines)


def test_the_torch_line_is_one_variable(tmp_path):
    lines = dry_run("test", f"VENV={tmp_path / 'venv'}", "TORCH=torch==2.13.0")
    index_of(lines, r"pip install torch==2\.13\.0$")


def test_a_second_run_installs_nothing(installed_venv):
    for target in ("test", "demo"):
        lines = dry_run(target, f"VENV={installed_venv}")
        assert not [line for line in lines if "pip install" in line or "-m venv" in line], lines
    index_of(dry_run("test", f"VENV={installed_venv}"), r"/bin/python -m pytest tests -q -n auto --dist loadscope$")


def test_a_new_torch_line_installs_again(installed_venv):
    lines = dry_run("test", f"VENV={installed_venv}", "TORCH=torch==2.13.0")
    index_of(lines, r'pip install -e "\.\[test,app,onnx\]"$')


def test_make_test_runs_pytest_with_the_venv_python(installed_venv):
    result = make("test", f"VENV={installed_venv}", "SYSTEM_TOOLS=", "PYTEST_ARGS=--version")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{installed_venv}/bin/python -m pytest --version" in result.stdout
    assert f"pytest {pytest.__version__}" in result.stdout + result.stderr


def test_a_missing_system_tool_prints_the_apt_get_command_when_not_root():
    command = [MAKE, "--no-print-directory", "system-packages", "SYSTEM_TOOLS=sh:dash expclip-no-such-tool:expclip-pkg"]
    if subprocess.run(["id", "-u"], capture_output=True, text=True).stdout.strip() == "0":
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: cannot run make as an ordinary user")
        command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command]
    result = run_command(*command, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
    assert "sudo apt-get install -y expclip-pkg" in result.stderr
    assert "dash" not in result.stderr  # sh is there: its package is not asked for


def test_node_packages_are_installed_only_when_tests_js_exists(tmp_path, installed_venv):
    for name in ("Makefile", "setup.py"):  # setup.py: the stamps are keyed on it
        shutil.copy(REPO_ROOT / name, tmp_path / name)
    assert not any("npm" in line for line in dry_run("test", f"VENV={installed_venv}", cwd=tmp_path))

    js = tmp_path / "tests" / "js"
    js.mkdir(parents=True)
    (js / "package.json").write_text('{"name": "expclip-js-tests", "private": true}\n')
    (js / "package-lock.json").write_text('{"name": "expclip-js-tests", "lockfileVersion": 3, "packages": {}}\n')
    lines = dry_run("test", f"VENV={installed_venv}", cwd=tmp_path)
    assert index_of(lines, r"ONNXRUNTIME_NODE_INSTALL=skip npm ci --prefix tests/js") < index_of(lines, "-m pytest")
    assert any("node:nodejs npm:npm" in line for line in lines)  # node and npm join the system tools

    (js / "node_modules").mkdir()
    (js / "node_modules" / ".package-lock.json").write_text("{}\n")  # what npm ci leaves, newer than the inputs
    assert not any("npm ci" in line for line in dry_run("test", f"VENV={installed_venv}", cwd=tmp_path))


def test_demo_with_a_local_model_writes_the_example_photos_with_boxes_and_labels(tmp_path, installed_venv,
                                                                                tiny_expclip_dir):
    if not YUNET_FILE.is_file():
        pytest.fail(f"{YUNET_FILE} is missing: the tests need shared/models/ beside the project (see its README)")
    output = tmp_path / "demo"
    result = make("demo", f"VENV={installed_venv}", f"MODEL={tiny_expclip_dir}", f"DEMO_OUTPUT={output}",
                  env={"EXPCLIP_YUNET_MODEL": str(YUNET_FILE)})
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"annotated photos are in {output}/" in result.stdout
    photos = sorted(EXAMPLES.glob("*.jpg"))
    assert sorted(path.name for path in output.glob("*.jpg")) == [photo.name for photo in photos]
    labels = {"happiness", "sadness", "neutral", "anger", "surprise", "disgust", "fear"}
    for photo in photos:
        row = next(line for line in result.stdout.splitlines() if line.startswith(f"docs/examples/{photo.name} [face"))
        assert row.split("]")[1].split()[0] in labels
        x, y, _, h = map(int, re.search(r"at (\d+),(\d+) (\d+)x(\d+)\]", row).groups())
        original = np.asarray(Image.open(photo).convert("RGB")).astype(int)
        annotated = np.asarray(Image.open(output / photo.name).convert("RGB")).astype(int)
        assert annotated.shape == original.shape
        left_edge = (slice(y + h // 4, y + 3 * h // 4), x)  # the middle of the box's left side

        def redness(pixels):  # how much red stands above green and blue
            return pixels[..., 0] - (pixels[..., 1] + pixels[..., 2]) / 2

        assert redness(annotated[left_edge]).min() > 80 > 60 > redness(original[left_edge]).max()  # a red box


def test_demo_offline_without_a_cache_says_how_to_use_a_local_model(tmp_path, installed_venv):
    output = tmp_path / "demo"
    result = make("demo", f"VENV={installed_venv}", f"DEMO_OUTPUT={output}",
                  env={"HF_HUB_OFFLINE": "1", "EXPCLIP_CACHE": str(tmp_path / "empty-cache")})
    assert result.returncode != 0
    assert "expclip predict: error: expclip-l14: not in the cache" in result.stderr
    assert "make demo MODEL=path" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not output.exists()


def test_every_example_photo_names_its_source_and_licence():
    readme = (EXAMPLES / "README.md").read_text(encoding="utf-8")
    photos = sorted(EXAMPLES.glob("*.jpg"))
    assert photos
    for photo in photos:
        row = next((line for line in readme.splitlines() if line.startswith(f"| `{photo.name}` |")), None)
        assert row is not None, f"{photo.name} is not in docs/examples/README.md"
        assert re.search(r"public domain|CC0", row), row
