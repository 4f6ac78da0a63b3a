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


# checkpoint.py is the one format module that needs torch (weight I/O).
@pytest.mark.parametrize(
    "path", [p for p in modules_under("formats") if p.name != "checkpoint.py"], ids=lambda p: p.name
)
def test_sequence_formats_do_not_import_torch(path):
    assert "torch" not in {top(n) for n in imported_modules(path)}


@pytest.mark.parametrize("path", modules_under("commands"), ids=lambda p: p.name)
def test_commands_never_import_typer_nor_exit(path):
    assert "typer" not in {top(n) for n in imported_modules(path)}
    assert "sys.exit" not in path.read_text()


def test_help_and_version_are_fast_and_do_not_import_torch():
    code = "import sys, genomelm.cli; assert 'torch' not in sys.modules, 'cli imported torch'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "genomelm", "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == __import__("genomelm").__version__
    assert time.perf_counter() - started < 5  # well under a second on a warm machine; generous for CI
