"""The suite's own rules, checked on its source: shared helpers come from tests/support,
and no test waits by sleeping (README, "Tests")."""

from __future__ import annotations

import ast

import pytest

from tests.support.common import ROOT

TESTS = ROOT / "tests"
MODULES = sorted(p for p in TESTS.rglob("*.py") if "support" not in p.relative_to(TESTS).parts)
TEST_MODULES = [p for p in MODULES if p.name.startswith("test_")]


def _imported(tree: ast.AST) -> list[str]:
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return names


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(TESTS)))
def test_helpers_come_from_support_never_from_conftest_or_another_test_module(path):
    bad = [
        name
        for name in _imported(ast.parse(path.read_text()))
        if name.split(".")[-1] == "conftest" or name.split(".")[-1].startswith("test_")
    ]
    assert not bad, f"{path.name} imports {bad}: move shared helpers into tests/support/"


@pytest.mark.parametrize("path", TEST_MODULES, ids=lambda p: str(p.relative_to(TESTS)))
def test_no_test_waits_by_sleeping(path):
    """A sleep is allowed only to dwell in a state that was already reached and cannot be
    observed, with a comment on its line saying `# not synchronisation: <why>`."""
    text = path.read_text()
    lines = text.splitlines()
    sleeps = [
        node.lineno
        for node in ast.walk(ast.parse(text))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute | ast.Name)
        and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id) == "sleep"
        and "# not synchronisation:" not in lines[node.lineno - 1]
    ]
    assert not sleeps, f"{path.name} sleeps at lines {sleeps}: poll a condition with wait_for instead"
