"""Sealed DCP storage in one process: round trip, no pickle, tampering, schema, verify/inspect, CLI."""

from __future__ import annotations

import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException

import sealedckpt
from sealedckpt.dcp import SealedStorageReader, SealedStorageWriter, _schema

pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled")


def _state(seed: int = 0) -> dict[str, Any]:
    g = torch.Generator().manual_seed(seed)
    return {
        "model": {"w": torch.randn(5, 3, generator=g), "b": torch.randn(3, generator=g).to(torch.bfloat16),
                  "mask": torch.rand(4, generator=g) > 0.5, "idx": torch.arange(6, dtype=torch.int64) * seed},
        "extra": {"epoch": seed, "name": f"run-{seed}", "betas": (0.9, 0.99), "done": None, "tags": ["a", "b"]},
    }  # fmt: skip


def _blank() -> dict[str, Any]:
    s = _state(99)
    s["extra"] = {"epoch": -1, "name": "", "betas": (), "done": 1, "tags": []}
    return s


def _save(d: Path, key: Any, signer: Any = None, state: dict[str, Any] | None = None) -> dict[str, Any]:
    state = state if state is not None else _state(1)
    dcp.save(state, storage_writer=SealedStorageWriter(d, key=key, sign_with=signer))
    return state


def _equal(a: dict[str, Any], b: dict[str, Any]) -> None:
    for k, v in a["model"].items():
        assert b["model"][k].dtype == v.dtype and torch.equal(b["model"][k], v), k
    assert b["extra"] == a["extra"]


def test_round_trip_tensors_and_objects(tmp_path: Path, key: Any, signer: Any) -> None:
    saved = _save(tmp_path / "c", key, signer)
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == [".metadata", "__0_0.sealed"]
    got = _blank()
    dcp.load(got, storage_reader=SealedStorageReader(tmp_path / "c", key=key, trusted_signers=[signer.public]))
    _equal(saved, got)
    assert isinstance(got["extra"]["betas"], tuple)


def test_threads_write_several_files(tmp_path: Path, key: Any) -> None:
    state = _state(2)
    dcp.save(state, storage_writer=SealedStorageWriter(tmp_path / "c", key=key, thread_count=3))
    assert sorted(p.name for p in (tmp_path / "c").glob("__*")) == ["__0_0.sealed", "__0_1.sealed", "__0_2.sealed"]
    got = _blank()
    sealedckpt.dcp.load(got, tmp_path / "c", key=key)
    _equal(state, got)


def test_nothing_read_is_unpickled(tmp_path: Path, key: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Save and load with every pickle and torch.save/torch.load entry point raising."""

    def refuse(*a: object, **k: object) -> Any:
        raise AssertionError("pickle / torch.load / torch.save was called")

    class NoUnpickler:
        def __init__(self, *a: object, **k: object) -> None:
            refuse()

    for name in ("load", "loads", "dump", "dumps"):
        monkeypatch.setattr(pickle, name, refuse)
    monkeypatch.setattr(pickle, "Unpickler", NoUnpickler)
    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(torch, "save", refuse)
    monkeypatch.setattr(torch.serialization, "load", refuse)
    monkeypatch.setattr(torch.serialization, "save", refuse)
    saved = _save(tmp_path / "c", key)
    got = _blank()
    dcp.load(got, storage_reader=SealedStorageReader(tmp_path / "c", key=key))
    _equal(saved, got)
    monkeypatch.undo()
    for p in (tmp_path / "c").iterdir():  # every file is a sealed file, none a pickle (opcode PROTO 0x80)
        head = p.read_bytes()[:8]
        assert (
            not head.startswith(b"\x80")
            and sealedckpt.container.sniff.classify(p.read_bytes()[:512], p.read_bytes()[-512:]) == "sealed"
        ), p


def _expect(exc_type: type[BaseException], d: Path, key: Any, **kw: Any) -> str:
    with pytest.raises(exc_type) as info:
        sealedckpt.dcp.load(_blank(), d, key=key, **kw)
    return str(info.value)


def test_missing_extra_swapped_and_stale_rank_files(tmp_path: Path, key: Any) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    _save(a, key)
    _save(b, key, state=_state(2))
    (a / "__0_0.sealed").rename(tmp_path / "moved")
    assert "missing" in _expect(sealedckpt.IntegrityError, a, key)
    shutil.copy(b / "__0_0.sealed", a / "__0_0.sealed")  # swapped in from another save (same key)
    msg = _expect(sealedckpt.IntegrityError, a, key)
    assert "bytes" in msg or "not the file" in msg
    shutil.copy(tmp_path / "moved", a / "__0_0.sealed")
    shutil.copy(a / "__0_0.sealed", a / "__1_0.sealed")  # an extra rank file
    assert "does not list" in _expect(sealedckpt.IntegrityError, a, key)
    (a / "__1_0.sealed").unlink()
    stale = (a / "__0_0.sealed").read_bytes()
    _save(a, key, state=_state(3))  # a later save into the same directory
    (a / "__0_0.sealed").write_bytes(stale)  # the older rank file put back
    _expect(sealedckpt.IntegrityError, a, key)
    with pytest.raises(CheckpointException) as info:  # DCP's own call: the rank's error is ours
        dcp.load(_blank(), storage_reader=SealedStorageReader(a, key=key))
    assert isinstance(next(iter(info.value.failures.values()))[0], sealedckpt.IntegrityError)


def test_same_size_swap_is_caught(tmp_path: Path, key: Any, signer: Any) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    _save(a, key, signer)
    _save(b, key, signer)  # the same state: same size, another file key
    assert (a / "__0_0.sealed").stat().st_size == (b / "__0_0.sealed").stat().st_size
    shutil.copy(b / "__0_0.sealed", a / "__0_0.sealed")
    assert "not the file" in _expect(sealedckpt.IntegrityError, a, key)
    with pytest.raises(sealedckpt.IntegrityError):
        sealedckpt.dcp.verify(a)


def test_tampered_files_wrong_key_untrusted_signer(tmp_path: Path, key: Any, signer: Any) -> None:
    d = tmp_path / "c"
    _save(d, key, signer)
    _expect(sealedckpt.DecryptionError, d, sealedckpt.SymmetricKey.generate())
    _expect(sealedckpt.SignatureError, d, key, trusted_signers=[sealedckpt.SigningKey.generate().public])
    for name in ("__0_0.sealed", ".metadata"):
        orig = (d / name).read_bytes()
        for pos in (len(orig) // 2, len(orig) - 10):
            raw = bytearray(orig)
            raw[pos] ^= 0x40
            (d / name).write_bytes(bytes(raw))
            _expect(sealedckpt.SealedCkptError, d, key)
            with pytest.raises(sealedckpt.SealedCkptError):
                sealedckpt.dcp.verify(d)
        (d / name).write_bytes(orig)
    sealedckpt.dcp.load(_blank(), d, key=key)


def test_unstorable_value_is_refused_at_save(tmp_path: Path, key: Any) -> None:
    with pytest.raises(sealedckpt.SealedCkptError, match="cannot store"):
        sealedckpt.dcp.save({"fn": {"x": lambda: 1}}, tmp_path / "c", key=key)
    assert not (tmp_path / "c" / ".metadata").exists()


def test_remote_paths_are_refused_for_now(key: Any) -> None:
    with pytest.raises(sealedckpt.InvalidArgumentError, match="remote"):
        SealedStorageWriter("s3://bucket/ckpt", key=key)


def test_metadata_schema_is_strict(tmp_path: Path, key: Any) -> None:
    dcp.save(_state(1), storage_writer=SealedStorageWriter(tmp_path / "c", key=key))
    md = SealedStorageReader(tmp_path / "c", key=key).read_metadata()
    text = _schema.to_json(md, md.storage_data)
    files = {"__0_0.sealed"}
    md2, storage = _schema.from_json(text, files)
    assert md2.state_dict_metadata == md.state_dict_metadata and storage == md.storage_data
    doc = json.loads(text)
    bad: list[Any] = [
        {**doc, "extra": 1},
        {**doc, "format": "other/1"},
        {**doc, "state_dict": {**doc["state_dict"], "model.w": {**doc["state_dict"]["model.w"], "dtype": "Tensor"}}},
        {**doc, "storage": [[*doc["storage"][0][:2], "__9_0.sealed", *doc["storage"][0][3:]], *doc["storage"][1:]]},
        {**doc, "storage": [*doc["storage"], doc["storage"][0]]},
    ]
    for b in bad:
        with pytest.raises(sealedckpt.FormatError):
            _schema.from_json(json.dumps(b), files)
    with pytest.raises(sealedckpt.FormatError):
        _schema.from_json(text.replace('"format"', '"format","format"', 1), files)


def test_verify_and_inspect_without_key_or_torch(tmp_path: Path, key: Any, signer: Any) -> None:
    d = tmp_path / "c"
    _save(d, key, signer)
    code = (
        "import sys, sealedckpt.dcp as d; from sealedckpt.cli.main import main\n"
        f"r = d.verify({str(d)!r}); info, files = d.inspect({str(d)!r})\n"
        "assert [f.name for f in r.files] == ['__0_0.sealed'] and files[0].root == r.files[0].root\n"
        f"assert main(['verify', {str(d)!r}, '--json']) == 0 and main(['inspect', {str(d)!r}]) == 0\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert '"kind": "dcp"' in out.stdout and "__0_0.sealed" in out.stdout


def test_cli_verify_fails_on_tampered_dir(tmp_path: Path, key: Any, signer: Any) -> None:
    d = tmp_path / "c"
    _save(d, key, signer)
    raw = bytearray((d / "__0_0.sealed").read_bytes())
    raw[len(raw) // 2] ^= 1
    (d / "__0_0.sealed").write_bytes(bytes(raw))
    out = subprocess.run([sys.executable, "-m", "sealedckpt", "verify", str(d)], capture_output=True, text=True,
                         timeout=120)  # fmt: skip
    assert out.returncode == 4, out.stderr
    assert out.stderr.startswith("sealedckpt: error:") and "Traceback" not in out.stderr


def test_unsupported_type_error_survives_reconstruction() -> None:
    """DCP pickles a rank's exception to the others (in memory): the class must rebuild from its
    reduce tuple (copy uses the same protocol)."""
    import copy

    err = sealedckpt.UnsupportedTypeError("a.b", "a lambda", hint="drop it")
    again = copy.copy(err)
    assert type(again) is sealedckpt.UnsupportedTypeError
    assert (again.path, str(again), again.hint) == ("a.b", str(err), "drop it")
