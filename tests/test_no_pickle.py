"""Nothing on the load path imports pickle or calls torch.load; inspect/verify need no torch."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import torch

import sealedckpt

SRC = Path(sealedckpt.__file__).resolve().parent

FORBID = textwrap.dedent(
    """
    import sys, importlib.abc

    class Forbid(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name in ("pickle", "_pickle", "pickletools", "dill", "cloudpickle", "copyreg_ext"):
                raise ImportError("forbidden import: " + name)
            return None

    import torch  # torch itself imports pickle at import time; drop it after torch is in
    for mod in ("pickle", "_pickle", "pickletools"):
        sys.modules.pop(mod, None)
    sys.meta_path.insert(0, Forbid())

    def boom(*a, **k):
        raise AssertionError("torch.load / jit.load called")

    torch.load = boom
    torch.jit.load = boom
    import torch.serialization
    torch.serialization.load = boom
    """
)


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_load_path_never_imports_pickle(tmp_path: Path) -> None:
    key = sealedckpt.SymmetricKey.generate()
    path = tmp_path / "c.sealed"
    sealedckpt.save({"w": torch.randn(3), "step": 1, "opt": {"state": {0: {"m": torch.zeros(2)}}}}, path, key=key)
    code = FORBID + textwrap.dedent(
        f"""
        import sealedckpt
        k = sealedckpt.SymmetricKey.from_bytes(bytes.fromhex({key.to_bytes().hex()!r}))
        out = sealedckpt.load({str(path)!r}, key=k)
        assert out["step"] == 1 and out["opt"]["state"][0]["m"].shape == (2,)
        assert "pickle" not in sys.modules and "_pickle" not in sys.modules, "pickle was imported"
        mods = [m for m in sys.modules if m.startswith("sealedckpt")]
        print("OK", sorted(mods))
        """
    )
    r = _run(code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("OK")


def test_forbidding_works(tmp_path: Path) -> None:
    """The harness above really blocks pickle: a test that can fail."""
    r = _run(FORBID + "import pickle\n")
    assert r.returncode != 0 and "forbidden import: pickle" in r.stderr


def test_inspect_and_verify_do_not_import_torch(tmp_path: Path) -> None:
    key = sealedckpt.SymmetricKey.generate()
    signer = sealedckpt.SigningKey.generate()
    path = tmp_path / "c.sealed"
    sealedckpt.save({"w": torch.randn(3)}, path, key=key, sign_with=signer, metadata={"name": "x"})
    code = textwrap.dedent(
        f"""
        import sys
        import sealedckpt
        info = sealedckpt.inspect({str(path)!r})
        vk = sealedckpt.VerifyKey.from_bytes(bytes.fromhex({signer.public.to_bytes().hex()!r}))
        res = sealedckpt.verify({str(path)!r}, trusted_signers=[vk])
        assert info.metadata == {{"name": "x"}} and res.signers[0].trusted
        assert "torch" not in sys.modules and "numpy" not in sys.modules, sorted(m for m in sys.modules if "torch" in m)
        print("OK")
        """
    )
    r = _run(code)
    assert r.returncode == 0, r.stderr


def test_source_has_no_pickle_or_torch_load() -> None:
    for f in SRC.rglob("*.py"):
        text = f.read_text()
        for bad in ("import pickle", "from pickle", "torch.load(", "pickle.load", "torch.jit.load"):
            lines = [ln for ln in text.splitlines() if bad in ln and "# pickle-ok" not in ln]
            assert not lines, f"{f.name}: {lines}"
