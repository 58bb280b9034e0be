"""Sealed DCP checkpoints at ``scheme://`` URLs: memory:// and s3:// (moto's S3 server on loopback)."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from typing import Any

import pytest
import torch
import torch.distributed.checkpoint as dcp
from remote_fixtures import ServedBytes, s3fs_client

import sealedckpt
from sealedckpt import _remote
from sealedckpt.dcp import SealedStorageReader, SealedStorageWriter

pytest.importorskip("fsspec")
pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled")


def _state(seed: int = 0, big: int = 0) -> dict[str, Any]:
    g = torch.Generator().manual_seed(seed)
    model = {"w": torch.randn(5, 3, generator=g), "b": torch.randn(3, generator=g).to(torch.bfloat16)}
    if big:
        model["big"] = torch.randn(big, generator=g)
    return {"model": model, "extra": {"epoch": seed, "name": f"run-{seed}", "betas": (0.9, 0.99)}}


def _blank(like: dict[str, Any]) -> dict[str, Any]:
    return {"model": {k: torch.zeros_like(v) for k, v in like["model"].items()},
            "extra": {"epoch": -1, "name": "", "betas": ()}}  # fmt: skip


def _equal(a: dict[str, Any], b: dict[str, Any]) -> None:
    for k, v in a["model"].items():
        assert b["model"][k].dtype == v.dtype and torch.equal(b["model"][k], v), k
    assert b["extra"] == a["extra"]


def _base(where: str, request: pytest.FixtureRequest) -> str:
    if where == "memory":
        return f"memory://sealedckpt-dcp-{secrets.token_hex(6)}"
    return "s3://" + request.getfixturevalue("s3_bucket")


def _put(url: str, data: bytes) -> None:
    with _remote.atomic_write(url) as f:
        f.write(data)


def _get(url: str) -> bytes:
    with _remote.open_read(url) as f:
        return f.read()


@pytest.mark.parametrize("where", ["memory", "s3"])
def test_round_trip_at_a_url(where: str, request: pytest.FixtureRequest, key: Any, signer: Any) -> None:
    url = f"{_base(where, request)}/run/dcp"
    saved = _state(1)
    dcp.save(saved, storage_writer=SealedStorageWriter(url, key=key, sign_with=signer, thread_count=3))
    assert _remote.listdir(url) == [".metadata", "__0_0.sealed", "__0_1.sealed", "__0_2.sealed"]
    got = _blank(saved)
    dcp.load(got, storage_reader=SealedStorageReader(url, key=key, trusted_signers=[signer.public]))
    _equal(saved, got)
    assert isinstance(got["extra"]["betas"], tuple)
    # a second save into the same prefix replaces the checkpoint: the earlier rank files are gone
    again = _state(2)
    sealedckpt.dcp.save(again, url, key=key, sign_with=signer)
    assert _remote.listdir(url) == [".metadata", "__0_0.sealed"]
    got = _blank(again)
    sealedckpt.dcp.load(got, url + "/", key=key, trusted_signers=[signer.public])
    _equal(again, got)
    res = sealedckpt.dcp.verify(url, trusted_signers=[signer.public])
    _, files = sealedckpt.dcp.inspect(url)
    assert [f.name for f in res.files] == [f.name for f in files] == ["__0_0.sealed"]
    assert files[0].size == _remote.size(f"{url}/__0_0.sealed") and files[0].root == res.files[0].root
    assert sealedckpt.dcp.is_dcp_dir(url) and not sealedckpt.dcp.is_dcp_dir(f"{url}/__0_0.sealed")
    assert not sealedckpt.dcp.is_dcp_dir(f"{_base(where, request)}/none")


def test_replaced_and_missing_objects_fail(s3_bucket: str, key: Any, signer: Any) -> None:
    a, b = f"s3://{s3_bucket}/a", f"s3://{s3_bucket}/b"
    sealedckpt.dcp.save(_state(1), a, key=key, sign_with=signer)
    sealedckpt.dcp.save(_state(1), b, key=key, sign_with=signer)  # same sizes, other file keys
    orig = _get(f"{a}/__0_0.sealed")
    _put(f"{a}/__0_0.sealed", _get(f"{b}/__0_0.sealed"))  # a rank object replaced by another save's
    with pytest.raises(sealedckpt.IntegrityError, match="not the file"):
        sealedckpt.dcp.load(_blank(_state(1)), a, key=key)
    with pytest.raises(sealedckpt.IntegrityError):
        sealedckpt.dcp.verify(a)
    raw = bytearray(orig)
    raw[len(raw) // 2] ^= 0x10  # one flipped bit in a rank object
    _put(f"{a}/__0_0.sealed", bytes(raw))
    with pytest.raises(sealedckpt.SealedCkptError):
        sealedckpt.dcp.load(_blank(_state(1)), a, key=key)
    with pytest.raises(sealedckpt.SealedCkptError):
        sealedckpt.dcp.verify(a)
    _put(f"{a}/__1_0.sealed", orig)  # an extra rank object
    _put(f"{a}/__0_0.sealed", orig)
    with pytest.raises(sealedckpt.IntegrityError, match="does not list"):
        sealedckpt.dcp.load(_blank(_state(1)), a, key=key)
    _remote.delete(f"{a}/__1_0.sealed")
    _remote.delete(f"{a}/__0_0.sealed")  # a missing rank object
    with pytest.raises(sealedckpt.IntegrityError, match="missing"):
        sealedckpt.dcp.load(_blank(_state(1)), a, key=key)
    with pytest.raises(sealedckpt.IntegrityError, match="missing"):
        sealedckpt.dcp.verify(a)
    _put(f"{a}/__0_0.sealed", orig)
    sealedckpt.dcp.load(_blank(_state(1)), a, key=key, trusted_signers=[signer.public])
    _remote.delete(f"{a}/.metadata")  # no metadata: no checkpoint
    with pytest.raises(sealedckpt.StorageNotFoundError):
        sealedckpt.dcp.load(_blank(_state(1)), a, key=key)
    with pytest.raises(sealedckpt.StorageNotFoundError):
        sealedckpt.dcp.verify(a)


def test_partial_load_reads_only_the_chunks_it_needs(s3_bucket: str, key: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"s3://{s3_bucket}/lazy"
    saved = _state(3, big=5 << 20)  # 20 MiB (five 4 MiB chunks, the unit of a read) next to two small tensors
    sealedckpt.dcp.save(saved, url, key=key)
    size = _remote.size(f"{url}/__0_0.sealed")
    served = ServedBytes(monkeypatch)
    got = {"model": {"w": torch.zeros(5, 3)}}
    sealedckpt.dcp.load(got, url, key=key)
    assert torch.equal(got["model"]["w"], saved["model"]["w"])
    assert served.total <= 2 * (4 << 20) + (64 << 10) < size // 2, (served.total, size)  # at most 2 chunks
    served.reset()
    full = _blank(saved)
    sealedckpt.dcp.load(full, url, key=key)
    _equal(saved, full)
    assert size <= served.total < 2 * size, (served.total, size)


def test_failed_save_leaves_no_metadata(key: Any) -> None:
    url = f"memory://sealedckpt-dcp-{secrets.token_hex(6)}/c"
    sealedckpt.dcp.save(_state(1), url, key=key)
    with pytest.raises(sealedckpt.SealedCkptError, match="cannot store"):
        sealedckpt.dcp.save({"fn": {"x": lambda: 1}}, url, key=key)
    assert not _remote.exists(f"{url}/.metadata")  # the earlier checkpoint stopped being one first


def test_cli_verify_and_inspect_an_s3_checkpoint(s3_bucket: str, key: Any, signer: Any) -> None:
    from sealedckpt.crypto import textkeys

    url = f"s3://{s3_bucket}/cli/dcp"
    sealedckpt.dcp.save(_state(1), url, key=key, sign_with=signer)
    pub = textkeys.verify_key_to_text(signer.public)
    code = (
        "import json, sys; from sealedckpt.cli.main import main\n"
        f"assert main(['verify', {url!r}, '--trust', {pub!r}, '--json']) == 0\n"
        f"assert main(['inspect', {url!r}]) == 0\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout[: out.stdout.index("\n}") + 2])
    assert doc["kind"] == "dcp" and doc["ok"] is True and doc["trust_checked"] is True
    assert [f["name"] for f in doc["files"]] == ["__0_0.sealed"]
    assert f"{url}: sealed DCP checkpoint" in out.stdout
    raw = bytearray(s3fs_client().cat_file(f"{s3_bucket}/cli/dcp/__0_0.sealed"))
    raw[len(raw) // 2] ^= 1
    s3fs_client().pipe_file(f"{s3_bucket}/cli/dcp/__0_0.sealed", bytes(raw))
    out = subprocess.run([sys.executable, "-m", "sealedckpt", "verify", url], capture_output=True, text=True,
                         timeout=120)  # fmt: skip
    assert out.returncode == 4, out.stderr
    assert out.stderr.startswith("sealedckpt: error:") and "Traceback" not in out.stderr
