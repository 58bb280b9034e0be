"""Committed sealed container v1 test vectors (tests/vectors): reproducible and loaded as specified.

* the generator reproduces every committed file and the manifest byte for byte;
* each case loads to the described value, or fails with exactly the named error class;
* for valid cases the decrypted payload has the recorded SHA-256 and parses as safetensors;
* an error case with ``max_seconds`` fails within that time (e.g. a scrypt work factor over the
  cap is refused before scrypt runs).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import sealedckpt
from sealedckpt import (
    CompositeVerifyKey,
    Passphrase,
    PQRecipientKey,
    RecipientKey,
    SymmetricKey,
    VerifyKey,
    container,
)

VECTORS = Path(__file__).resolve().parent / "vectors"
MANIFEST = json.loads((VECTORS / "vectors.json").read_text(encoding="utf-8"))
CASES = {c["name"]: c for c in MANIFEST["cases"]}
VALID = [n for n, c in CASES.items() if c["expect"].get("ok")]


def _generator() -> Any:
    name = "sealedckpt_test_vectors_generate"
    mod = sys.modules.get(name)
    if mod is None:
        spec = importlib.util.spec_from_file_location(name, VECTORS / "generate.py")
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    return mod


OpenKey = SymmetricKey | RecipientKey | Passphrase


def _key(entry: str | dict[str, Any]) -> OpenKey:
    """A manifest key: a hex string (symmetric), or an object with a ``kind`` (see generate.py)."""
    if isinstance(entry, str):
        return SymmetricKey(bytes.fromhex(entry))
    kind = entry["kind"]
    if kind == "symmetric":
        return SymmetricKey(bytes.fromhex(entry["key"]))
    if kind in ("recipient", "pq-recipient"):
        key = (RecipientKey if kind == "recipient" else PQRecipientKey)(bytes.fromhex(entry["secret"]))
        assert key.public.to_bytes().hex() == entry["public"]
        return key
    if kind == "passphrase":
        return Passphrase(entry["passphrase"], max_log2n=entry["max_log2n"])
    raise AssertionError(f"unknown key kind {kind!r}")


def _keys(case: dict[str, Any]) -> list[OpenKey]:
    return [_key(k) for k in case["keys"]]


def _trusted(case: dict[str, Any]) -> list[VerifyKey] | None:
    t = case["trusted_signers"]
    if t is None:
        return None
    return [VerifyKey(bytes.fromhex(h)) if len(h) == 64 else CompositeVerifyKey(bytes.fromhex(h)) for h in t]


def _maybe_xfail(case: dict[str, Any], request: pytest.FixtureRequest) -> None:
    """A case marked ``xfail`` in the manifest documents a known library bug."""
    if case.get("xfail"):
        request.applymarker(pytest.mark.xfail(reason=case["xfail"], strict=False))


def test_manifest_is_consistent() -> None:
    names = [c["name"] for c in MANIFEST["cases"]]
    assert len(names) == len(set(names))
    on_disk = {p.name for p in VECTORS.glob("*.sealed")}
    assert on_disk == {c["file"] for c in MANIFEST["cases"]}
    errors = {"IntegrityError", "FormatError", "DecryptionError", "SignatureError", "UnsafePayloadError"}
    for c in MANIFEST["cases"]:
        assert c["why"]
        assert c["expect"].get("ok") is True or c["expect"].get("error") in errors, c["name"]
        data = (VECTORS / c["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == c["sha256"], c["name"]
        assert len(data) == c["size"]
    total = sum(p.stat().st_size for p in VECTORS.iterdir() if p.is_file())
    assert total < 1_500_000


def test_generator_reproduces_committed_vectors(tmp_path: Path) -> None:
    _generator().generate(tmp_path)
    produced = sorted(p.name for p in tmp_path.iterdir())
    committed = sorted(p.name for p in VECTORS.iterdir() if p.suffix in (".sealed", ".json"))
    assert produced == committed
    for name in produced:
        assert (tmp_path / name).read_bytes() == (VECTORS / name).read_bytes(), name


@pytest.mark.parametrize("name", list(CASES))
def test_load(name: str, request: pytest.FixtureRequest) -> None:
    case = CASES[name]
    _maybe_xfail(case, request)
    path = VECTORS / case["file"]
    expect = case["expect"]
    if "error" in expect:
        with pytest.raises(sealedckpt.SealedCkptError) as info:
            sealedckpt.load(path, key=_keys(case), trusted_signers=_trusted(case))
        assert type(info.value).__name__ == expect["error"], f"{name}: {info.value!r}"
        return
    describe = _generator().describe
    assert describe(sealedckpt.load(path, key=_keys(case), trusted_signers=_trusted(case))) == expect["value"]
    if len(case["keys"]) > 1:  # every key opens the file on its own
        for k in _keys(case):
            assert describe(sealedckpt.load(path, key=[k], trusted_signers=_trusted(case))) == expect["value"]
    assert sealedckpt.inspect(path).metadata == expect["metadata"]


@pytest.mark.parametrize("name", [n for n, c in CASES.items() if "max_seconds" in c["expect"]])
def test_fails_fast(name: str, request: pytest.FixtureRequest) -> None:
    case = CASES[name]
    _maybe_xfail(case, request)
    keys = _keys(case)
    with open(VECTORS / case["file"], "rb") as fh:
        start = time.perf_counter()
        with pytest.raises(sealedckpt.SealedCkptError) as info:
            container.open_sealed(fh, keys, trusted_signers=_trusted(case))
        elapsed = time.perf_counter() - start
    assert type(info.value).__name__ == case["expect"]["error"], f"{name}: {info.value!r}"
    assert elapsed < case["expect"]["max_seconds"], f"{name}: took {elapsed:.2f} s"


@pytest.mark.parametrize("name", VALID)
def test_payload(name: str, tmp_path: Path) -> None:
    case = CASES[name]  # the container layer is checked even where loading xfails
    expect = case["expect"]
    with open(VECTORS / case["file"], "rb") as fh:
        reader = container.open_sealed(fh, _keys(case), trusted_signers=_trusted(case))
        assert reader.content.payload_len == expect["payload_len"]
        payload = reader.read_prefix(expect["payload_len"])
        reader.decrypt_regions([])  # every chunk authenticates (and matches its signed digest)
        signers = [
            {"public_key": s.public_key.to_bytes().hex(), "signed_at": s.signed_at, "trusted": s.trusted}
            for s in reader.signers
        ]
    assert hashlib.sha256(payload).hexdigest() == expect["payload_sha256"]
    assert signers == expect["signers"]

    safetensors = pytest.importorskip("safetensors")
    st_torch = pytest.importorskip("safetensors.torch")
    tensors = st_torch.load(payload)
    f = tmp_path / "payload.safetensors"
    f.write_bytes(payload)
    with safetensors.safe_open(str(f), framework="pt") as st:
        meta = st.metadata()
        assert sorted(st.keys()) == sorted(tensors)
    assert meta["sealedckpt.version"] == "1"
    assert "sealedckpt.structure" in meta


@pytest.mark.parametrize(
    ("data", "want"),
    [  # from BLAKE3's published test_vectors.json (input = bytes(i % 251), hash mode, 32 bytes)
        (b"", "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"),
        (bytes([0]), "2d3adedff11b61f14c886e35afa036736dcd87a74d27b5c1510225d0f592e213"),
        (bytes(i % 251 for i in range(1025)), "d00278ae47eb27b34faecf67b4fe263f82d5412916c1ffd97c8cb7fb814b8444"),
    ],
)
def test_content_hash_is_blake3_256(data: bytes, want: str) -> None:
    from sealedckpt import crypto

    assert crypto.content_hash(data).hex() == want
