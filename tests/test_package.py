"""The package itself: one importable `expclip` whose public names load lazily, `python -m expclip`, what a wheel
installs, and imports that point down the layers (commands on top, never imported by another module)."""

import ast
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import REPO_ROOT, run_command

PACKAGE = REPO_ROOT / "expclip"
# The command modules (top layer): only cli.py may name them, and only as strings it imports on demand.
COMMANDS = {"expclip.predict", "expclip.convert", "expclip.export", "expclip.app", "expclip.eval.prepare",
            "expclip.eval.evaluate", "expclip.cli", "expclip.__main__"}


def test_import_expclip_loads_neither_torch_nor_transformers():
    code = "import sys, expclip; print(sorted(m for m in ('torch', 'transformers', 'numpy') if m in sys.modules))"
    result = run_command(sys.executable, "-c", code, cwd=REPO_ROOT.parent)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_public_names_resolve_to_their_defining_modules():
    import expclip

    assert expclip.ExpCLIPPredictor.__module__ == "expclip.predictor"
    assert expclip.export_model.__module__ == "expclip.export"
    assert expclip.convert_original_head.__module__ == "expclip.models"
    assert expclip.ExpCLIPModel.__module__ == "modeling_expclip"
    assert expclip.ExpCLIPConfig.__module__ == "configuration_expclip"
    assert {"ExpCLIPPredictor", "export_model", "convert_original_head", "ExpCLIPModel"} <= set(dir(expclip))


def test_an_unknown_public_name_is_an_attribute_error():
    import expclip

    with pytest.raises(AttributeError, match="no attribute 'predict_expclip'"):
        expclip.predict_expclip  # noqa: B018


@pytest.mark.parametrize("command", [[sys.executable, "-m", "expclip"], [Path(sys.executable).with_name("expclip")]])
def test_predict_help_through_python_m_and_the_entry_point(command, tmp_path):
    result = run_command(*command, "predict", "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: expclip predict")


def test_eval_scripts_are_the_commands(tmp_path):
    result = run_command(sys.executable, REPO_ROOT / "eval" / "evaluate.py", "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: expclip evaluate")


def test_a_wheel_installs_one_package_and_the_three_hub_and_trainer_modules(tmp_path):
    result = run_command(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                         "-w", tmp_path, REPO_ROOT, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    (wheel,) = tmp_path.glob("expclip-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names if not name.split("/")[0].endswith((".dist-info", ".data"))}
    # train_expclip stays importable for `accelerate launch -m train_expclip`
    assert top == {"expclip", "configuration_expclip.py", "modeling_expclip.py", "train_expclip.py"}
    assert "expclip/eval/metrics/recall/recall.py" in names


def _imports(path: Path) -> set[str]:
    """Absolute names of the project modules a file imports (relative imports resolved; `from a import b` gives
    both `a` and `a.b`, since `b` may be a module)."""
    parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
    package = parts[:-1]  # the package a relative import starts from (a top-level file: none)
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            start = package[: len(package) - node.level + 1] if node.level else []
            base = ".".join(start + ([node.module] if node.module else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.split(".")[0] in ("expclip", "configuration_expclip", "modeling_expclip")}


def _project_modules() -> dict[str, set[str]]:
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if "metrics" in path.parts:
            continue
        name = ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts).removesuffix(".__init__")
        modules[name] = _imports(path)
    for name in ("configuration_expclip", "modeling_expclip"):
        modules[name] = _imports(REPO_ROOT / f"{name}.py")
    # keep the names that are modules of the project (`from .inputs import load_image` -> expclip.inputs)
    return {name: {i for i in imports if i in modules} for name, imports in modules.items()}


def test_no_module_imports_a_command_module():
    modules = _project_modules()
    # __init__ re-exports the public API lazily (export_model included); __main__ is the command line itself
    offenders = {name: sorted(imports & COMMANDS) for name, imports in modules.items()
                 if name not in ("expclip", "expclip.__main__")}
    assert {name: found for name, found in offenders.items() if found} == {}


def test_the_import_graph_has_no_circle():
    modules = _project_modules()
    graph = {name: imports - {name, "expclip"} for name, imports in modules.items()}
    done, stack = set(), []

    def visit(name):
        if name in stack:
            pytest.fail("import circle: " + " -> ".join(stack[stack.index(name):] + [name]))
        if name in done:
            return
        stack.append(name)
        for child in sorted(graph.get(name, ())):
            visit(child)
        stack.pop()
        done.add(name)

    for name in sorted(graph):
        visit(name)


def test_the_model_files_stay_self_contained():
    """The Hub custom code is copied alone into model folders: it imports nothing of the package."""
    assert _imports(REPO_ROOT / "configuration_expclip.py") == set()
    assert {name.split(".")[0] for name in _imports(REPO_ROOT / "modeling_expclip.py")} == {"configuration_expclip"}


@pytest.mark.parametrize("module, usage", [("train_expclip", "--train_dir"), ("expclip", "usage: expclip")])
def test_accelerate_launch_runs_the_installed_modules(module, usage, tmp_path):
    """`accelerate launch -m train_expclip` and `-m expclip` from a folder that holds no project file."""
    accelerate = Path(sys.executable).with_name("accelerate")
    result = run_command(accelerate, "launch", "--num_processes", "1", "--num_machines", "1", "--mixed_precision", "no",
                         "--dynamo_backend", "no", "-m", module, "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert usage in result.stdout
