"""The dependency direction is a rule, not a hope: walk every import with `ast` and enforce it.

ledger/, slicing/, p2p/ never import each other nor node/; nothing imports simnet/ (except simnet
itself and tests); only slicing/ imports ezkl or onnx; only p2p/libp2p_transport.py imports libp2p.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("node", "p2p", "slicing", "ledger", "simnet")
FORBIDDEN: dict[str, set[str]] = {
    "ledger": {"node", "p2p", "slicing", "simnet"},
    "slicing": {"node", "p2p", "ledger", "simnet"},
    "p2p": {"node", "slicing", "ledger", "simnet"},
    "node": {"simnet"},
    "simnet": set(),
}
# Third-party modules confined to one place.
CONFINED = {
    "ezkl": ("slicing/ezkl_prover.py", "slicing/"),
    "onnx": ("slicing/",),
    "onnxruntime": ("slicing/",),
    "libp2p": ("p2p/libp2p_transport.py", "p2p/libp2p_"),
}


def _imports(path: Path) -> Iterator[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module


def _sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def test_every_package_exists() -> None:
    for package in PACKAGES:
        assert (ROOT / package / "__init__.py").is_file(), package


@pytest.mark.parametrize("package", PACKAGES)
def test_package_imports_follow_the_layers(package: str) -> None:
    offences = []
    for path in _sources(package):
        for lineno, module in _imports(path):
            top = module.split(".")[0]
            if top in FORBIDDEN[package]:
                offences.append(f"{path.relative_to(ROOT)}:{lineno}: imports {module}")
    assert not offences, "layering violated:\n" + "\n".join(offences)


@pytest.mark.parametrize("package", PACKAGES)
def test_heavy_dependencies_stay_confined(package: str) -> None:
    offences = []
    for path in _sources(package):
        rel = path.relative_to(ROOT).as_posix()
        for lineno, module in _imports(path):
            top = module.split(".")[0]
            allowed = CONFINED.get(top)
            if allowed is not None and not any(rel.startswith(a) for a in allowed):
                offences.append(f"{rel}:{lineno}: imports {module}")
    assert not offences, "confined dependency imported elsewhere:\n" + "\n".join(offences)


def test_nothing_outside_simnet_and_tests_imports_simnet() -> None:
    offences = []
    for package in ("node", "p2p", "slicing", "ledger"):
        for path in _sources(package):
            for lineno, module in _imports(path):
                if module.split(".")[0] == "simnet":
                    offences.append(f"{path.relative_to(ROOT)}:{lineno}: imports {module}")
    assert not offences, "\n".join(offences)


def test_the_checker_catches_a_violation(tmp_path: Path) -> None:
    # Guard against a checker that can never fail: it must see a forbidden import.
    bad = tmp_path / "bad.py"
    bad.write_text("import os\nfrom node.wire import REGISTRY\nimport p2p.abc as x\n")
    found = [m for _, m in _imports(bad) if m.split(".")[0] in FORBIDDEN["ledger"]]
    assert found == ["node.wire", "p2p.abc"]
