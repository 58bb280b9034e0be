"""One audit record: its fields, canonical encoding, hash, signature message and strict parser.

Each line is one record::

    {"v":1,"seq":n,"time":"2026-11-30T09:00:00.123456Z","op":"seal","path":"/abs/path"|null,
     "digest":...|null,"key_ids":[...],"signer_ids":[...],"outcome":"ok","host":...,"user":...,
     "pid":...,"detail":{...},"prev":<hash of record n-1, "0"*64 for the first>,"hash":<hex>,
     ["signer":"sckpt-vk1...","sig":<base64>]}

``hash`` is SHA-256 over the canonical JSON (``sort_keys``, separators ``(",", ":")``,
``ensure_ascii=False``) of the record without ``hash`` and ``sig``; ``sig`` is an Ed25519
signature over ``b"sealedckpt/v1 audit\\x00" + bytes.fromhex(hash)`` by ``signer``. Lines are
written in one fixed key order, and :func:`.audit.verify` also requires every line to be byte-for-byte
that serialization, so any change to any byte of the log is detected.

The log itself is described in :mod:`sealedckpt.stores.audit`.
"""

from __future__ import annotations

import datetime as _dt
import getpass
import hashlib
import json
import os
import socket
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .._json import strict_loads
from ..crypto import textkeys
from ..errors import AuditError

FORMAT_VERSION = 1
GENESIS = "0" * 64
SIG_CONTEXT = b"sealedckpt/v1 audit\x00"
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"

#: The order fields are written in (and must appear in, see :func:`sealedckpt.stores.audit.verify`).
FIELDS = (
    "v",
    "seq",
    "time",
    "op",
    "path",
    "digest",
    "key_ids",
    "signer_ids",
    "outcome",
    "host",
    "user",
    "pid",
    "detail",
    "prev",
    "hash",
)
SIG_FIELDS = ("signer", "sig")
_SECRET_MARKERS = tuple(h + "1" for h in (textkeys.HRP_SYMMETRIC, textkeys.HRP_SIGNING, textkeys.HRP_IDENTITY))


# --- encoding -------------------------------------------------------------------------------------


def _canonical(obj: Mapping[str, Any]) -> bytes:
    try:
        return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode(
            "utf-8"
        )
    except (UnicodeEncodeError, ValueError, TypeError) as exc:
        raise AuditError(f"record cannot be encoded: {exc}") from None


def record_hash(rec: Mapping[str, Any]) -> str:
    """Hex SHA-256 of the canonical JSON of ``rec`` without ``hash`` and ``sig``."""
    body = {k: v for k, v in rec.items() if k not in ("hash", "sig")}
    return hashlib.sha256(_canonical(body)).hexdigest()


def line(rec: Mapping[str, Any]) -> bytes:
    """The record as written: its fields in :data:`FIELDS` order, then a newline."""
    ordered = {k: rec[k] for k in (*FIELDS, *SIG_FIELDS) if k in rec}
    try:
        text = json.dumps(ordered, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        return text.encode("utf-8") + b"\n"
    except (UnicodeEncodeError, ValueError, TypeError) as exc:
        raise AuditError(f"record cannot be encoded: {exc}") from None


def sig_message(hash_hex: str) -> bytes:
    return SIG_CONTEXT + bytes.fromhex(hash_hex)


def _looks_secret(s: str) -> bool:
    if "SCKPT-" in s:
        return True
    low = s.lower()
    return any(m in low for m in _SECRET_MARKERS)


def check_text(value: object, what: str, *, allow_empty: bool = True) -> str:
    """``value`` if it is a string fit for a record (never anything that looks like a secret key)."""
    if not isinstance(value, str):
        raise AuditError(f"audit {what} must be a string, not {type(value).__name__}")
    if not allow_empty and not value:
        raise AuditError(f"audit {what} must not be empty")
    if _looks_secret(value):
        raise AuditError(
            f"refusing to write what looks like a secret key into the audit log ({what})",
            hint="audit records hold key ids, never keys",
        )
    return value


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name and no passwd entry (e.g. a container with an unknown uid)
        getuid = getattr(os, "getuid", None)
        return str(getuid()) if getuid is not None else "unknown"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime(TIME_FORMAT)


def new_record(
    op: str,
    *,
    path: str | os.PathLike[str] | None,
    digest: str | None,
    key_ids: Sequence[str],
    signer_ids: Sequence[str],
    outcome: str,
    detail: Mapping[str, str] | None,
) -> dict[str, Any]:
    """The checked fields of a record, before ``seq``, ``prev``, ``hash`` and a signature."""
    check_text(op, "op", allow_empty=False)
    check_text(outcome, "outcome", allow_empty=False)
    abs_path = None if path is None else check_text(os.path.abspath(os.fspath(path)), "path")
    if digest is not None:
        check_text(digest, "digest")
    if isinstance(key_ids, str) or isinstance(signer_ids, str):
        raise AuditError("audit key_ids and signer_ids must be lists of strings, not a string")
    det: dict[str, str] = {}
    for k, v in (detail or {}).items():
        det[check_text(k, "detail key")] = check_text(v, f"detail {k!r}")
    return {
        "v": FORMAT_VERSION,
        "seq": 0,
        "time": _now(),
        "op": op,
        "path": abs_path,
        "digest": digest,
        "key_ids": [check_text(k, "key id") for k in key_ids],
        "signer_ids": [check_text(k, "signer id") for k in signer_ids],
        "outcome": outcome,
        "host": socket.gethostname(),
        "user": _user(),
        "pid": os.getpid(),
        "detail": det,
        "prev": GENESIS,
    }


# --- parsing and checking one line ----------------------------------------------------------------


def is_hex64(v: object) -> bool:
    return isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdef" for c in v)


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_str_list(v: object) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def _is_str(v: object) -> bool:
    return isinstance(v, str)


def _is_opt_str(v: object) -> bool:
    return v is None or isinstance(v, str)


def _is_time(v: object) -> bool:
    return isinstance(v, str)  # the format is checked after the types, with its own message


#: What each field must hold (checked in this order; the first misfit is reported).
_FIELD_CHECKS: dict[str, Callable[[object], bool]] = {
    "seq": lambda v: _is_int(v) and v >= 0,  # type: ignore[operator]
    "time": _is_time,
    "op": lambda v: isinstance(v, str) and bool(v),
    "path": _is_opt_str,
    "digest": _is_opt_str,
    "key_ids": _is_str_list,
    "signer_ids": _is_str_list,
    "outcome": _is_str,
    "host": _is_str,
    "user": _is_str,
    "pid": _is_int,
    "detail": lambda v: isinstance(v, dict) and all(isinstance(x, str) for x in v.values()),
    "prev": is_hex64,
    "hash": is_hex64,
    "signer": _is_str,
    "sig": _is_str,
}


def _decode(raw: bytes, where: str) -> dict[str, Any]:
    rec = strict_loads(raw, where, AuditError)
    if not isinstance(rec, dict):
        raise AuditError(f"{where}: not a JSON object")
    return rec


def parse(raw: bytes, lineno: int) -> dict[str, Any]:
    """One line (without its newline) as a schema-checked record; AuditError naming the line."""
    where = f"audit log line {lineno}"
    rec = _decode(raw, where)
    if rec.get("v") != FORMAT_VERSION or not _is_int(rec.get("v")):
        raise AuditError(f"{where}: unsupported record version {rec.get('v')!r}")
    keys = set(rec)
    missing = [k for k in FIELDS if k not in keys]
    if missing:
        raise AuditError(f"{where}: missing field(s) {', '.join(missing)}")
    extra = sorted(keys - set(FIELDS) - set(SIG_FIELDS))
    if extra:
        raise AuditError(f"{where}: unknown field(s) {', '.join(extra)}")
    if ("signer" in keys) != ("sig" in keys):
        raise AuditError(f"{where}: 'signer' and 'sig' must appear together")
    for name, ok in _FIELD_CHECKS.items():
        if name in rec and not ok(rec[name]):
            raise AuditError(f"{where}: field {name!r} has the wrong type or form")
    try:
        _dt.datetime.strptime(rec["time"], TIME_FORMAT)
    except ValueError:
        raise AuditError(f"{where}: field 'time' is not an ISO-8601 UTC time with microseconds") from None
    return rec


def record_time(rec: Mapping[str, Any]) -> _dt.datetime:
    return _dt.datetime.strptime(rec["time"], TIME_FORMAT).replace(tzinfo=_dt.timezone.utc)
