"""The packages are layers: each imports only from layers below it (and errors/_fs/_env/_json)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "sealedckpt"
ORDER = [
    "errors", "_fs", "_env", "_json", "_pool", "crypto", "container", "payload", "release", "stores",
    "api", "dcp", "hf", "lightning", "cli",
]
BOTTOM = {"errors": 0, "_fs": 0, "_env": 0, "_json": 0, "_pool": 0, "_remote": 0}


def _layer(module: str) -> int:
    """``module`` relative to the package (``container.reader``), as a layer number."""
    top = module.split(".")[0]
    if top in BOTTOM:
        return BOTTOM[top]
    return ORDER.index(top)


def _imports(path: Path) -> list[str]:
    rel = path.relative_to(SRC).with_suffix("")
    package = list(rel.parts[:-1])  # a module and a package's __init__ both live in their folder
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - node.level + 1] if node.level > 1 else package
            target = [*base, *(node.module.split(".") if node.module else [])]
            if target:
                out.append(".".join(target))
            else:  # ``from . import x`` at the top: x is the module
                out.extend(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sealedckpt."):
            out.append(node.module.removeprefix("sealedckpt."))
    return out


def test_the_checker_sees_imports() -> None:
    assert "errors" in _imports(SRC / "container" / "format.py")
    assert "crypto" in _imports(SRC / "container" / "slots" / "symmetric.py")
    assert "stores.audit" in _imports(SRC / "api" / "_common.py")


def test_imports_point_down() -> None:
    upward = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC)
        if len(rel.parts) == 1 and rel.stem in ("__init__", "__main__"):
            continue  # the package front: re-exports the public names
        own = _layer(rel.with_suffix("").as_posix().replace("/", "."))
        for target in _imports(path):
            if target.split(".")[0] not in (*ORDER, *BOTTOM):
                continue
            if _layer(target) > own:
                upward.append(f"{rel} imports {target}")
    assert upward == []


def test_only_crypto_imports_cryptography() -> None:
    bad = [
        str(p.relative_to(SRC))
        for p in SRC.rglob("*.py")
        if "cryptography" in p.read_text()
        and "import" in p.read_text()
        and p.relative_to(SRC).parts[0] != "crypto"
        and any(
            (isinstance(n, ast.ImportFrom) and (n.module or "").startswith("cryptography"))
            or (isinstance(n, ast.Import) and any(a.name.startswith("cryptography") for a in n.names))
            for n in ast.walk(ast.parse(p.read_text()))
        )
    ]
    assert bad == []


def test_container_knows_no_torch() -> None:
    for p in [*(SRC / "container").rglob("*.py"), *(SRC / "crypto").rglob("*.py")]:
        mods = [a.name for n in ast.walk(ast.parse(p.read_text())) if isinstance(n, ast.Import) for a in n.names] + [
            n.module or "" for n in ast.walk(ast.parse(p.read_text())) if isinstance(n, ast.ImportFrom)
        ]
        assert not any(m == "torch" or m.startswith("torch.") for m in mods), p
