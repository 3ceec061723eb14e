"""The import direction of app/: HTTP -> jobs -> domain -> infrastructure, never back.

Read from the source (AST), every import counted, also those inside functions or under
TYPE_CHECKING. A new module must be given a layer here (an unclassified one fails), so
the map below stays the one place that says where each part of app/ belongs.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

INFRASTRUCTURE = {
    "config",
    "intervals",
    "logs",
    "db",
    "queue",
    "resources",
    "metrics",
    "errors",
    "validation",
    "migrator",
    "retry",
    "times",
    "netpolicy",
}
DOMAIN = {"timeseries", "backfill", "drift", "pulse"}
JOBS = {"jobs"}
HTTP = {"api", "health", "auth", "create_app", "resources_of", "EXTENSION"}  # + app/__init__.py
ENTRY = {"manage", "cli"}  # command-line entry points: nothing in the layers imports them

RANK = {"infrastructure": 0, "domain": 1, "jobs": 2, "http": 3, "entry": 4, "worker": 5}


def layer(module: str) -> str | None:
    """The layer of a dotted module name (None: not ours)."""
    parts = module.split(".")
    if parts[0] == "worker":
        return "worker"
    if parts[0] != "app":
        return None
    if len(parts) == 1:
        return "http"  # app/__init__.py: create_app
    for name, members in (
        ("infrastructure", INFRASTRUCTURE),
        ("domain", DOMAIN),
        ("jobs", JOBS),
        ("http", HTTP),
        ("entry", ENTRY),
    ):
        if parts[1] in members:
            return name
    raise AssertionError(f"{module}: not given a layer in tests/test_layers.py")


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path) -> set[str]:
    """Dotted names a module imports; `from a import b` counts as `a.b` (b may be a module)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def sources(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py"))


def violations() -> list[str]:
    out = []
    for path in sources("app", "worker"):
        here = module_name(path)
        mine = layer(here)
        assert mine is not None
        for target in sorted(imports(path)):
            theirs = layer(target)
            if theirs is None or target.split(".")[:2] == here.split(".")[:2]:
                continue  # third party, or inside the same package
            if RANK[theirs] > RANK[mine]:
                out.append(f"{path.relative_to(ROOT)} ({mine}) imports {target} ({theirs})")
    return out


def test_every_import_in_app_points_down_the_layers():
    assert violations() == []


def test_every_module_of_app_has_a_layer():
    for path in sources("app"):
        assert layer(module_name(path)) is not None


def test_the_web_process_never_imports_the_worker():
    offenders = [p for p in sources("app") if any(layer(t) == "worker" for t in imports(p))]
    assert offenders == []


def test_the_checker_sees_an_upward_import(tmp_path):
    """The scan is not vacuous: an upward import in a domain module is reported."""
    assert layer("app.backfill.bars") == "domain" and layer("app.jobs.base") == "jobs"
    fake = tmp_path / "m.py"
    fake.write_text("def f():\n    from app.jobs.base import JobError\n")
    assert "app.jobs.base.JobError" in imports(fake)
    assert RANK[layer("app.jobs.base.JobError")] > RANK[layer("app.backfill.bars")]


def test_only_the_http_layer_knows_flask():
    """Jobs, domain and infrastructure take plain values and raise plain errors."""
    offenders = [
        f"{p.relative_to(ROOT)} imports {t}"
        for p in sources("app", "worker")
        if layer(module_name(p)) not in ("http", "entry")
        for t in imports(p)
        if t.split(".")[0] in ("flask", "werkzeug", "prometheus_flask_exporter")
    ]
    assert offenders == []
