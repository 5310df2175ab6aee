"""The module map's one direction of imports, checked on the source."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OURS = {"webapp", "tasks", "inference", "cache", "celeryconfig", "settings"}
# Packages, and the top-level modules (settings.py, celeryconfig.py).
ALLOWED = {
    "webapp": {"webapp", "cache", "tasks.app", "settings"},
    "tasks": {"tasks", "cache", "inference", "settings"},
    "inference": {"inference"},
    "cache": {"cache"},
    "settings": set(),
    "celeryconfig": {"settings"},
}
# Libraries that load models: never in a web process.
HEAVY = {"torch", "sentence_transformers", "onnxruntime", "transformers", "xllamacpp"}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names |= {f"{node.module}.{a.name}" for a in node.names} | {node.module}
    return names


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_follow_the_module_map(package):
    bad = []
    where = ROOT / package
    for path in sorted(where.rglob("*.py")) if where.is_dir() else [where.with_suffix(".py")]:
        for name in _imports(path):
            top = name.split(".")[0]
            if top in OURS and not any(
                name == a or name.startswith(a + ".") for a in ALLOWED[package]
            ):
                bad.append(f"{path.relative_to(ROOT)} imports {name}")
            if package == "webapp" and top in HEAVY:
                bad.append(f"{path.relative_to(ROOT)} imports {name}")
    assert bad == []


def test_web_process_loads_no_model_library():
    import subprocess
    import sys

    code = (
        "import sys, webapp; webapp.create_app({'SECRET_KEY': 'x'});"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {sorted(HEAVY)!r}))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_there_is_no_default_secret_key(monkeypatch):
    import webapp

    monkeypatch.delenv("SECRET_KEY", raising=False)
    with pytest.raises(RuntimeError, match="SECRET_KEY"):
        webapp.create_app()


def test_every_setting_is_documented():
    """Each variable Flock reads (settings.py) is in .env.sample and the README."""
    import settings

    names = set(settings.variables())
    assert len(names) > 20
    sample = (ROOT / ".env.sample").read_text()
    readme = (ROOT / "README.md").read_text()
    assert sorted(n for n in names if f"{n}=" not in sample) == []
    assert sorted(n for n in names if f"`{n}`" not in readme) == []


def test_the_surfaces_stand_side_by_side():
    """Each HTTP surface is a thin adapter on webapp/call.py; none imports another."""
    surfaces = {"api", "compat_openai", "compat_ollama", "fastpath", "embed"}
    bad = []
    for name in sorted(surfaces):
        for imported in _imports(ROOT / "webapp" / f"{name}.py"):
            parts = imported.split(".")
            if parts[0] == "webapp" and len(parts) > 1 and parts[1] in surfaces - {name}:
                bad.append(f"webapp/{name}.py imports {imported}")
    assert bad == []
