"""Strict reading of the stores' small JSON files (keystore registry, trust store)."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar

from .._json import strict_loads
from ..errors import KeystoreError

MAX_FILE = 16 << 20  # a registry of 10,000 keys is ~4 MiB
T = TypeVar("T")


def _fits(value: object, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin is Literal:
        return any(type(value) is type(a) and value == a for a in typing.get_args(hint))
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return any(_fits(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if origin is dict:
        kt, vt = typing.get_args(hint)
        return type(value) is dict and all(_fits(k, kt) and _fits(v, vt) for k, v in value.items())
    if origin is list:
        (item,) = typing.get_args(hint)
        return type(value) is list and all(_fits(v, item) for v in value)
    return type(value) is hint  # exact: a bool is not an int, an int is not a str


def _record(cls: type[T], obj: object, where: str) -> T:
    if not isinstance(obj, dict):
        raise KeystoreError(f"{where}: an entry is not a JSON object")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(obj) - set(fields))
    if unknown:
        raise KeystoreError(f"{where}: unknown field {unknown[0]!r}")
    for name, f in fields.items():
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if name not in obj:
            if required:
                raise KeystoreError(f"{where}: an entry has no {name!r}")
        elif not _fits(obj[name], hints[name]):
            raise KeystoreError(f"{where}: field {name!r} has the wrong type")
    return cls(**obj)


def record(cls: type[T], obj: object, where: str) -> T:
    """One entry checked against ``cls``'s fields and types."""
    return _record(cls, obj, where)


def read_doc(path: Path, what: str) -> Any:
    """A store file's JSON, bounded and strict."""
    with open(path, "rb") as f:
        raw = f.read(MAX_FILE + 1)
    if len(raw) > MAX_FILE:
        raise KeystoreError(f"{what} {path} is damaged: larger than {MAX_FILE} bytes")
    return strict_loads(raw, f"{what} {path}", KeystoreError)


def read_records(path: Path, what: str, version: int, list_field: str, cls: type[T]) -> list[T]:
    """The entries of a ``{"version": N, list_field: [{...}, ...]}`` file, each checked against
    ``cls``'s fields and types (no unknown or missing fields, no duplicate keys)."""
    where = f"{what} {path}"
    with open(path, "rb") as f:
        raw = f.read(MAX_FILE + 1)
    if len(raw) > MAX_FILE:
        raise KeystoreError(f"{where} is damaged: larger than {MAX_FILE} bytes")
    doc = strict_loads(raw, where, KeystoreError)
    if not isinstance(doc, dict) or set(doc) != {"version", list_field}:
        raise KeystoreError(f"{where} is damaged: not a {{version, {list_field}}} object")
    if type(doc["version"]) is not int or doc["version"] != version:
        raise KeystoreError(f"unsupported {what} version {doc['version']!r}")
    if not isinstance(doc[list_field], list):
        raise KeystoreError(f"{where} is damaged: {list_field!r} is not a list")
    return [_record(cls, obj, f"{where} is damaged") for obj in doc[list_field]]
