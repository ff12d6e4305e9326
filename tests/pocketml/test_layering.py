"""The layering you can see: one installed namespace (every stage is imported as pocketml.STAGE);
pocketml's vocabulary imports no stage; only the orchestrator (pocketml/app) sits above them; nothing
but the orchestrator imports benchmarks; speed scripts use public entry points and take from tests/ only its model and photo builders."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STAGES = ("acquisition", "training", "export", "benchmarks")
DATA_BUILDERS = ("tests.models", "tests.photos")  # what a speed script may take from tests/


def imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, names) of every import in the file, function-level ones included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, [alias.name for alias in node.names]))
    return found


def top(module: str) -> str:
    """The stage a module belongs to (pocketml.export.tflite -> export), else its first name."""
    parts = module.split(".")
    return parts[1] if parts[0] == "pocketml" and len(parts) > 1 and parts[1] in STAGES else parts[0]


def test_every_stage_is_imported_through_the_pocketml_namespace():
    sources = [p for p in ROOT.rglob("*.py") if not {".venv", ".venv-bench", "build"} & set(p.relative_to(ROOT).parts)]
    assert len(sources) > 100
    offenders = {f"{p.relative_to(ROOT)} imports {m}" for p in sources for m, _ in imports(p) if m.split(".")[0] in STAGES}
    assert offenders == set()


def test_the_vocabulary_imports_no_stage():
    vocabulary = [p for p in (ROOT / "pocketml").rglob("*.py") if "app" not in p.relative_to(ROOT / "pocketml").parts]
    assert len(vocabulary) > 10
    offenders = {f"{p.relative_to(ROOT)} imports {m}" for p in vocabulary for m, _ in imports(p) if top(m) in STAGES}
    assert offenders == set()


def test_only_the_orchestrator_and_benchmarks_itself_import_benchmarks():
    sources = [p for folder in ("pocketml", "acquisition", "training", "export") for p in (ROOT / folder).rglob("*.py")]
    offenders = {
        f"{p.relative_to(ROOT)} imports {m}"
        for p in sources
        if "app" not in p.relative_to(ROOT).parts
        for m, _ in imports(p)
        if top(m) == "benchmarks"
    }
    assert offenders == set()


def test_no_stage_imports_the_orchestrator():
    sources = [p for folder in STAGES for p in (ROOT / folder).rglob("*.py")]
    offenders = {f"{p.relative_to(ROOT)} imports {m}" for p in sources for m, _ in imports(p) if m.startswith("pocketml.app")}
    assert offenders == set()


def test_speed_scripts_use_public_entry_points_and_never_tests():
    scripts = sorted((ROOT / "benchmarks").glob("*_bench.py")) + sorted((ROOT / "benchmarks").glob("coreml_*.py"))
    assert scripts
    for script in scripts:
        for module, names in imports(script):
            # The real-weight model and photo builders are data, shared with the tests; no test logic.
            assert top(module) != "tests" or module in DATA_BUILDERS, f"{script.name} imports {module}"
            private = [n for n in names if n.startswith("_")]
            assert not private, f"{script.name} imports private {module}.{private}"
