"""The dependency direction is a rule, not a hope: walk every import with `ast` and enforce it.

Project packages: ledger/, slicing/, p2p/ never import each other nor node/; nothing imports
simnet/ (except simnet itself and tests).

Third-party packages (README, "Layout"): each leaf imports only its own short list (ledger: msgpack,
cryptography; p2p: trio, msgpack, and libp2p with the types its API hands over; slicing: onnx,
onnxruntime, ezkl, numpy, and protobuf, onnx's wire format); node/ and simnet/ import anything the
project declares as a dependency in pyproject.toml. Some are confined to one module wherever they
are imported: libp2p (and multiaddr) only in p2p/libp2p_transport.py, ezkl only in
slicing/ezkl_prover.py, onnx and onnxruntime only in slicing/.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("node", "p2p", "slicing", "ledger", "simnet")
LEAVES = ("ledger", "p2p", "slicing")
FORBIDDEN: dict[str, set[str]] = {
    "ledger": {"node", "p2p", "slicing", "simnet"},
    "slicing": {"node", "p2p", "ledger", "simnet"},
    "p2p": {"node", "slicing", "ledger", "simnet"},
    "node": {"simnet"},
    "simnet": set(),
}
FIRST_PARTY = {*PACKAGES, "tests", "bench"}
ANYWHERE = ("",)  # a path prefix every file has
LIBP2P_ADAPTER = ("p2p/libp2p_transport.py",)

# Third-party modules (top-level import names) each leaf may import, and where in the leaf.
LEAF_THIRD_PARTY: dict[str, dict[str, tuple[str, ...]]] = {
    "ledger": {"msgpack": ANYWHERE, "cryptography": ANYWHERE},
    "p2p": {
        "trio": ANYWHERE,
        "msgpack": ANYWHERE,
        "libp2p": LIBP2P_ADAPTER,
        # libp2p's API hands over multiaddr objects and raises protobuf's DecodeError.
        "multiaddr": LIBP2P_ADAPTER,
        "google": LIBP2P_ADAPTER,
    },
    "slicing": {
        "onnx": ANYWHERE,
        "onnxruntime": ANYWHERE,
        "numpy": ANYWHERE,
        "google": ANYWHERE,  # protobuf: ONNX models are protobuf messages
        "ezkl": ("slicing/ezkl_prover.py",),
        "rich": ("slicing/progress.py",),  # the CLI's progress bars; the rest stays headless
        "sklearn": ("slicing/models/",),  # dev only: the script that trains the shipped model
    },
}
# Third-party modules confined to one place, whichever package imports them.
CONFINED = {
    "libp2p": LIBP2P_ADAPTER,
    "multiaddr": LIBP2P_ADAPTER,
    "ezkl": ("slicing/ezkl_prover.py",),
    "onnx": ("slicing/",),
    "onnxruntime": ("slicing/",),
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


def _is_third_party(top: str) -> bool:
    return top not in FIRST_PARTY and top not in sys.stdlib_module_names and top != "__future__"


def _normalise(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()


def declared_modules() -> set[str]:
    """Top-level import names of the distributions pyproject.toml declares as dependencies."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    declared = set()
    for requirement in project["dependencies"]:
        match = re.match(r"[A-Za-z0-9_.-]+", requirement)
        assert match, requirement
        declared.add(_normalise(match.group(0)))
    return {
        top
        for top, distributions in importlib.metadata.packages_distributions().items()
        if any(_normalise(d) in declared for d in distributions)
    }


def third_party_offences(
    package: str, rel: str, imports: Iterable[tuple[int, str]], declared: set[str]
) -> list[str]:
    """Each third-party import in file `rel` (of `package`) that the rules above do not allow."""
    offences = []
    for lineno, module in imports:
        top = module.split(".")[0]
        if not _is_third_party(top):
            continue
        where = f"{rel}:{lineno}: imports {module}"
        if package in LEAF_THIRD_PARTY:
            allowed = LEAF_THIRD_PARTY[package]
            if top not in allowed:
                names = ", ".join(sorted(allowed))
                offences.append(f"{where}: {package}/ may import only the stdlib and {names}")
                continue
            if not rel.startswith(allowed[top]):
                places = ", ".join(allowed[top])
                offences.append(f"{where}: within {package}/, {top} belongs only in {places}")
        elif top not in declared:
            offences.append(f"{where}: {top} is not a dependency declared in pyproject.toml")
    return offences


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
def test_third_party_imports_are_the_packages_own(package: str) -> None:
    declared = declared_modules()
    offences = []
    for path in _sources(package):
        rel = path.relative_to(ROOT).as_posix()
        offences += third_party_offences(package, rel, _imports(path), declared)
    assert not offences, "third-party import not allowed here:\n" + "\n".join(offences)


@pytest.mark.parametrize("package", PACKAGES)
def test_heavy_dependencies_stay_confined(package: str) -> None:
    offences = []
    for path in _sources(package):
        rel = path.relative_to(ROOT).as_posix()
        for lineno, module in _imports(path):
            top = module.split(".")[0]
            allowed = CONFINED.get(top)
            if allowed is not None and not rel.startswith(allowed):
                places = ", ".join(allowed)
                offences.append(f"{rel}:{lineno}: imports {module}: {top} belongs only in {places}")
    assert not offences, "confined dependency imported elsewhere:\n" + "\n".join(offences)


def test_nothing_outside_simnet_and_tests_imports_simnet() -> None:
    offences = []
    for package in ("node", "p2p", "slicing", "ledger"):
        for path in _sources(package):
            for lineno, module in _imports(path):
                if module.split(".")[0] == "simnet":
                    offences.append(f"{path.relative_to(ROOT)}:{lineno}: imports {module}")
    assert not offences, "\n".join(offences)


def test_the_declared_dependencies_cover_what_node_uses() -> None:
    # Guards the mapping from distributions to import names (e.g. prometheus-client).
    assert {"trio", "msgpack", "cryptography", "rich", "prometheus_client"} <= declared_modules()


def test_the_checker_catches_a_violation(tmp_path: Path) -> None:
    # Guard against a checker that can never fail: it must see a forbidden import.
    bad = tmp_path / "bad.py"
    bad.write_text("import os\nfrom node.wire import REGISTRY\nimport p2p.abc as x\n")
    found = [m for _, m in _imports(bad) if m.split(".")[0] in FORBIDDEN["ledger"]]
    assert found == ["node.wire", "p2p.abc"]


def test_the_third_party_checker_catches_violations(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import os\nimport numpy\nfrom trio import sleep\nimport msgpack\nimport yaml\n")
    declared = declared_modules()
    ledger = third_party_offences("ledger", "ledger/x.py", _imports(bad), declared)
    assert [o.split(": ")[0] for o in ledger] == ["ledger/x.py:2", "ledger/x.py:3", "ledger/x.py:5"]
    assert "ledger/ may import only the stdlib and cryptography, msgpack" in ledger[0]
    ezkl = [(1, "ezkl")]
    assert third_party_offences("slicing", "slicing/ezkl_prover.py", ezkl, declared) == []
    (misplaced,) = third_party_offences("slicing", "slicing/runner.py", ezkl, declared)
    assert "ezkl belongs only in slicing/ezkl_prover.py" in misplaced
    node = third_party_offences("node", "node/x.py", _imports(bad), declared)
    assert node == [
        "node/x.py:5: imports yaml: yaml is not a dependency declared in pyproject.toml"
    ]
