"""Shared test helpers: bitwise comparison of nested checkpoint objects."""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import decimal
import io
import math
import types
from collections import OrderedDict
from typing import Any

import numpy as np
import torch


def assert_same(a: Any, b: Any, path: str = "") -> None:
    """Equal types and values all the way down; tensors bitwise, with dtype, shape and strides."""
    assert type(a) is type(b), f"{path}: {type(a)} != {type(b)}"
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape, path
        assert a.stride() == b.stride(), f"{path}: strides {a.stride()} != {b.stride()}"
        assert a.requires_grad == b.requires_grad, path
        if a.device.type != "meta":
            assert torch.equal(
                a.view(torch.uint8) if a.dtype.itemsize == 1 else a.detach().contiguous().view(-1).view(torch.uint8),
                b.view(torch.uint8) if b.dtype.itemsize == 1 else b.detach().contiguous().view(-1).view(torch.uint8),
            ), path
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes(), path
    elif isinstance(a, (dict, OrderedDict)):
        assert list(a.keys()) == list(b.keys()), path
        for ka in a:
            assert type(ka) is type(next(k for k in b if k == ka)), f"{path}: key type of {ka!r}"
            assert_same(a[ka], b[ka], f"{path}.{ka}")
        if isinstance(a, OrderedDict):
            assert getattr(a, "_metadata", None) == getattr(b, "_metadata", None), f"{path}._metadata"
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{path}.{i}")
    elif isinstance(a, (set, frozenset)):
        assert len(a) == len(b) and a == b, path
        for x in a:
            assert_same(x, next(y for y in b if y == x), f"{path}.<member>")
    elif isinstance(a, (argparse.Namespace, types.SimpleNamespace)):
        assert_same(vars(a), vars(b), path)
    elif dataclasses.is_dataclass(a):
        for f in dataclasses.fields(a):
            assert_same(getattr(a, f.name), getattr(b, f.name), f"{path}.{f.name}")
    elif isinstance(a, complex):
        assert_same(a.real, b.real, f"{path}.real")
        assert_same(a.imag, b.imag, f"{path}.imag")
    elif isinstance(a, decimal.Decimal):
        assert str(a) == str(b), path
    elif isinstance(a, (datetime.datetime, datetime.time)):
        assert a == b and a.fold == b.fold and a.isoformat() == b.isoformat(), path
        assert type(a.tzinfo) is type(b.tzinfo) and a.tzname() == b.tzname(), path
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b), path
    elif isinstance(a, float):
        assert a == b and math.copysign(1, a) == math.copysign(1, b), path
    else:
        assert a == b, path


def seal_bytes(obj: Any, key: Any, **kw: Any) -> bytes:
    """``sealedckpt.save`` into memory."""
    import sealedckpt

    buf = io.BytesIO()
    sealedckpt.save(obj, buf, key=key, **kw)
    return buf.getvalue()


def load_bytes(data: bytes, key: Any, **kw: Any) -> Any:
    """``sealedckpt.load`` from memory."""
    import sealedckpt

    return sealedckpt.load(io.BytesIO(data), key=key, **kw)


def seal_raw_payload(raw: bytes, keys: Any, **kw: Any) -> bytes:
    """A sealed file whose payload is ``raw`` as given (a key holder's crafted payload)."""
    from sealedckpt import container

    buf = io.BytesIO()
    container.seal(buf, len(raw), [memoryview(raw)], keys=list(keys), **kw)
    return buf.getvalue()


def run_cli(capsys: Any, *argv: str) -> tuple[int, str, str]:
    """Run ``sealedckpt ARGV`` in-process: (exit code, stdout, stderr)."""
    from sealedckpt import cli

    try:
        code = cli.main(list(argv))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


class MemorySecrets:
    """A secret backend in memory (tests only)."""

    name = "memory"

    def __init__(self) -> None:
        self._d: dict[str, str] = {}

    def put(self, key_id: str, secret: str) -> None:
        from sealedckpt import KeystoreError

        if key_id in self._d:
            raise KeystoreError(f"a secret for key {key_id} already exists")
        self._d[key_id] = secret

    def get(self, key_id: str) -> str | None:
        return self._d.get(key_id)

    def delete(self, key_id: str) -> None:
        self._d.pop(key_id, None)


def last_signature(data: bytes | bytearray) -> dict[str, int]:
    """Offsets in a sealed file of its last trailer signature entry (docs/FORMAT.md §8): ``alg``,
    ``pk`` (the public key, 32 bytes for Ed25519), ``stmt`` and ``stmt_end`` (the statement),
    ``sig`` (the signature, to the end of the file); ``block`` is where the signature block
    length (u32) sits when this is the only entry."""
    import struct

    stmt = bytes(data).rfind(b'{"_type"')
    assert stmt > 0, "no signed statement in this file"
    (st_len,) = struct.unpack_from("<H", data, stmt - 2)
    (pk_len,) = struct.unpack_from("<H", data, stmt - 2 - 32 - 2)
    assert pk_len == 32
    alg = stmt - 2 - 32 - 2 - 1
    return {"alg": alg, "pk": alg + 3, "stmt": stmt, "stmt_end": stmt + st_len, "sig": stmt + st_len + 2,
            "block": alg - 4}  # fmt: skip
