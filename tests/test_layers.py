"""DESIGN.md §3 layer rules, checked on the imports of every module."""

import ast
import subprocess
import sys
import time
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "genomelm"


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def modules_under(folder: str):
    return sorted((PACKAGE / folder).rglob("*.py"))


def top(name: str) -> str:
    return name.split(".")[0]


@pytest.mark.parametrize("path", modules_under("kernels"), ids=lambda p: p.name)
def test_kernels_import_only_torch_triton_stdlib(path):
    allowed_third_party = {"torch", "triton"}
    for name in imported_modules(path):
        if name.startswith("genomelm"):
            assert name.startswith(("genomelm.kernels", "genomelm.errors", "genomelm.log")), name
        else:
            assert top(name) in allowed_third_party or top(name) in sys.stdlib_module_names, name


@pytest.mark.parametrize("path", modules_under("model"), ids=lambda p: p.name)
def test_model_imports_no_io_libraries(path):
    for name in imported_modules(path):
        assert top(name) not in {"pysam", "pyfaidx", "Bio", "typer", "safetensors", "rich"}, name
        if name.startswith("genomelm"):
            assert name.startswith(("genomelm.model", "genomelm.kernels", "genomelm.errors", "genomelm.log")), name


# checkpoint.py and soft_prompt.py are the format modules that need torch (weight I/O).
@pytest.mark.parametrize(
    "path",
    [p for p in modules_under("formats") if p.name not in ("checkpoint.py", "soft_prompt.py")],
    ids=lambda p: p.name,
)
def test_sequence_formats_do_not_import_torch(path):
    assert "torch" not in {top(n) for n in imported_modules(path)}


@pytest.mark.parametrize("path", modules_under("commands"), ids=lambda p: p.name)
def test_commands_never_import_typer_nor_exit(path):
    assert "typer" not in {top(n) for n in imported_modules(path)}
    assert "sys.exit" not in path.read_text()


# ----------------------------------------------------------------- import direction (DESIGN.md §3)

# cli -> commands -> {variants, training, classify} -> {formats, runtime, tokenizer, model} -> kernels;
# errors and log below everything (any module may use them). The package root (lazy public names), its
# __main__, cli.py and the Python API (api.py) are the top floor.
FLOORS = [
    (5, ("genomelm", "genomelm.__main__", "genomelm.cli", "genomelm.api")),
    (4, ("genomelm.commands",)),
    (3, ("genomelm.variants", "genomelm.training", "genomelm.classify", "genomelm.icl_prompts")),
    (2, ("genomelm.formats", "genomelm.runtime", "genomelm.tokenizer", "genomelm.model")),
    (1, ("genomelm.kernels",)),
    (0, ("genomelm.errors", "genomelm.log")),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def genomelm_imports(path: Path) -> set[str]:
    return imports_in(path.read_text(), module_name(path), is_package=path.name == "__init__.py")


def imports_in(text: str, module: str, is_package: bool = False) -> set[str]:
    """Every genomelm module ``text`` (the source of ``module``) imports, at the top or inside functions
    (lazy imports included); ``from genomelm import x`` names module genomelm.x when there is one, else
    the package root; relative imports are resolved."""
    package = module if is_package else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if top(alias.name) == "genomelm")
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            if top(base) == "genomelm":
                found.update(f"{base}.{a.name}" if is_module(f"{base}.{a.name}") else base for a in node.names)
    return found


def is_module(name: str) -> bool:
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def floor(name: str) -> int:
    for level, prefixes in FLOORS:
        if any(name == p or (p != "genomelm" and name.startswith(p + ".")) for p in prefixes):
            return level
    raise AssertionError(f"{name} has no floor in DESIGN.md §3: place it in FLOORS")


ALL_MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", ALL_MODULES, ids=lambda p: module_name(p))
def test_imports_never_run_up_a_floor(path):
    source = module_name(path)
    for target in genomelm_imports(path):
        if target == "genomelm":  # the package root: only its version, which imports nothing
            assert "from genomelm import __version__" in path.read_text(), (source, target)
            continue
        assert floor(target) <= floor(source), f"{source} (floor {floor(source)}) imports {target} ({floor(target)})"


@pytest.mark.parametrize("path", modules_under("commands"), ids=lambda p: p.name)
def test_commands_import_no_other_command(path):
    """DESIGN.md §2: a command is orchestration only; what two commands share lives a floor down
    (training/, classify/, variants/, runtime) or in a private helper of commands/ (``_common``)."""
    source = module_name(path)
    for target in genomelm_imports(path):
        if target.startswith("genomelm.commands.") and not target.rpartition(".")[2].startswith("_"):
            raise AssertionError(f"{source} imports the command {target}")


@pytest.mark.parametrize("folder", ["training", "classify"])
def test_the_engine_floor_is_covered(folder):
    """training/ and classify/ sit on floor 3: they may use formats, runtime, tokenizer and model, never a command."""
    modules = modules_under(folder)
    assert modules, folder
    for path in modules:
        assert floor(module_name(path)) == 3, path
        assert all(floor(t) <= 3 for t in genomelm_imports(path) if t != "genomelm"), path


def test_the_layer_check_catches_an_upward_import():
    """An arrow that runs back up is seen, lazy and relative imports included."""
    text = "def f():\n    from genomelm.commands import score_variants\n    from ..runtime import batched\n"
    imports = imports_in(text, "genomelm.variants.probe")
    assert imports == {"genomelm.commands.score_variants", "genomelm.runtime"}
    assert floor("genomelm.commands.score_variants") > floor("genomelm.variants.probe")
    assert floor("genomelm.runtime") < floor("genomelm.variants.probe")


def test_help_and_version_are_fast_and_do_not_import_torch():
    code = (
        "import sys, genomelm, genomelm.cli; assert 'torch' not in sys.modules, 'cli imported torch'; "
        "assert callable(genomelm.score_variants) and 'torch' in sys.modules"  # the API loads torch on first use
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "genomelm", "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == __import__("genomelm").__version__
    assert time.perf_counter() - started < 5  # well under a second on a warm machine; generous for CI


def test_importing_the_kernels_does_not_load_the_compiler():
    """torch._dynamo costs ~1 s and 70 MB at start-up: only a run that compiles (--compile) should pay it."""
    code = "import sys, genomelm.kernels, genomelm.model.lm; assert 'torch._dynamo' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
