"""A tamper-evident, append-only audit log of what sealedckpt did (JSON lines, hash-chained).

Each line is one record::

    {"v":1,"seq":n,"time":"2026-11-30T09:00:00.123456Z","op":"seal","path":"/abs/path"|null,
     "digest":...|null,"key_ids":[...],"signer_ids":[...],"outcome":"ok","host":...,"user":...,
     "pid":...,"detail":{...},"prev":<hash of record n-1, "0"*64 for the first>,"hash":<hex>,
     ["signer":"sckpt-vk1...","sig":<base64>]}

``hash`` is SHA-256 over the canonical JSON (``sort_keys``, separators ``(",", ":")``,
``ensure_ascii=False``) of the record without ``hash`` and ``sig``; ``sig`` is an Ed25519
signature over ``b"sealedckpt/v1 audit\\x00" + bytes.fromhex(hash)`` by ``signer``. Lines are
written in one fixed key order, and :func:`verify` also requires every line to be byte-for-byte
that serialization, so any change to any byte of the log is detected.

What the chain detects: an edited, removed, inserted, reordered or duplicated record, and a torn
last line. What it cannot detect by itself: a removed tail (the remaining prefix is a valid log)
and, for unsigned records, a wholesale rewrite with recomputed hashes. Both are caught by
anchoring the head hash somewhere else and passing it as ``expect_head``; rewrites of signed
records are also caught by ``trusted``.

Location: ``$SEALEDCKPT_AUDIT_LOG``, else ``<sealedckpt home>/audit.jsonl``. On/off:
``SEALEDCKPT_AUDIT=1|0`` overrides the caller's default (see :func:`enabled`).

Writers serialize on an exclusive ``flock`` of the log file itself (POSIX; on other platforms
appends are not locked). Records never hold secrets: anything that looks like a secret key's
text form is refused.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import contextvars
import datetime as _dt
import getpass
import hashlib
import json
import os
import socket
import stat
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..crypto import SigningKey, VerifyKey, textkeys
from ..errors import AuditError, SignatureError
from .keystore import default_home

__all__ = [
    "ENV_AUDIT",
    "ENV_AUDIT_LOG",
    "GENESIS",
    "AuditError",
    "VerifyReport",
    "enabled",
    "log_path",
    "read",
    "record",
    "record_hash",
    "verify",
]

ENV_AUDIT = "SEALEDCKPT_AUDIT"
ENV_AUDIT_LOG = "SEALEDCKPT_AUDIT_LOG"
FORMAT_VERSION = 1
GENESIS = "0" * 64
SIG_CONTEXT = b"sealedckpt/v1 audit\x00"
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"

#: The order fields are written in (and must appear in, see :func:`verify`).
_FIELDS = (
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
_SIG_FIELDS = ("signer", "sig")
_BLOCK = 4096
_VERIFY_HINT = "run `sealedckpt audit verify` to see what is wrong with the log"
_SECRET_MARKERS = tuple(h + "1" for h in (textkeys.HRP_SYMMETRIC, textkeys.HRP_SIGNING, textkeys.HRP_IDENTITY))


@dataclass(frozen=True)
class VerifyReport:
    """What :func:`verify` checked."""

    records: int
    head: str  #: hash of the last record (``GENESIS`` for an empty log)
    signed: int  #: records carrying a (valid) signature
    first_time: str | None
    last_time: str | None
    signers: tuple[str, ...] = ()  #: distinct ``sckpt-vk1...`` keys that signed, sorted

    @property
    def fully_signed(self) -> bool:
        return self.records > 0 and self.signed == self.records


# --- configuration --------------------------------------------------------------------------------


def log_path() -> Path:
    """``$SEALEDCKPT_AUDIT_LOG`` if set, else ``default_home() / "audit.jsonl"``."""
    env = os.environ.get(ENV_AUDIT_LOG)
    if env:
        return Path(env).expanduser()
    return default_home() / "audit.jsonl"


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


_override: bool | None = None


def set_enabled(on: bool | None) -> None:
    """Turn auditing on or off for this process from code (``None``: back to the environment)."""
    global _override
    _override = on


def enabled(default: bool) -> bool:
    """Whether to audit: :func:`set_enabled` if called, else ``SEALEDCKPT_AUDIT`` (``1``/``0``)
    if set, else the caller's ``default``.

    The library API passes ``False`` and the CLI ``True``. An unrecognized value is an error
    rather than a silent "off".
    """
    if _override is not None:
        return _override
    raw = os.environ.get(ENV_AUDIT, "").strip().lower()
    if not raw:
        return default
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise AuditError(f"{ENV_AUDIT} must be 1 or 0, not {raw!r}")


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


def _line(rec: Mapping[str, Any]) -> bytes:
    ordered = {k: rec[k] for k in (*_FIELDS, *_SIG_FIELDS) if k in rec}
    try:
        text = json.dumps(ordered, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        return text.encode("utf-8") + b"\n"
    except (UnicodeEncodeError, ValueError, TypeError) as exc:
        raise AuditError(f"record cannot be encoded: {exc}") from None


def _sig_message(hash_hex: str) -> bytes:
    return SIG_CONTEXT + bytes.fromhex(hash_hex)


def _looks_secret(s: str) -> bool:
    if "SCKPT-" in s:
        return True
    low = s.lower()
    return any(m in low for m in _SECRET_MARKERS)


def _check_text(value: object, what: str, *, allow_empty: bool = True) -> str:
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


# --- parsing and checking one line ----------------------------------------------------------------


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def _is_hex64(v: object) -> bool:
    return isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdef" for c in v)


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_str_list(v: object) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def _parse(raw: bytes, lineno: int) -> dict[str, Any]:
    """One line (without its newline) as a schema-checked record; AuditError naming the line."""
    where = f"audit log line {lineno}"
    try:
        rec = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except UnicodeDecodeError:
        raise AuditError(f"{where}: not valid UTF-8") from None
    except ValueError as exc:
        raise AuditError(f"{where}: not valid JSON ({exc})") from None
    if not isinstance(rec, dict):
        raise AuditError(f"{where}: not a JSON object")
    if rec.get("v") != FORMAT_VERSION or not _is_int(rec.get("v")):
        raise AuditError(f"{where}: unsupported record version {rec.get('v')!r}")
    keys = set(rec)
    missing = [k for k in _FIELDS if k not in keys]
    if missing:
        raise AuditError(f"{where}: missing field(s) {', '.join(missing)}")
    extra = sorted(keys - set(_FIELDS) - set(_SIG_FIELDS))
    if extra:
        raise AuditError(f"{where}: unknown field(s) {', '.join(extra)}")
    if ("signer" in keys) != ("sig" in keys):
        raise AuditError(f"{where}: 'signer' and 'sig' must appear together")
    bad: str | None = None
    if not _is_int(rec["seq"]) or rec["seq"] < 0:
        bad = "seq"
    elif not isinstance(rec["time"], str):
        bad = "time"
    elif not isinstance(rec["op"], str) or not rec["op"]:
        bad = "op"
    elif rec["path"] is not None and not isinstance(rec["path"], str):
        bad = "path"
    elif rec["digest"] is not None and not isinstance(rec["digest"], str):
        bad = "digest"
    elif not _is_str_list(rec["key_ids"]):
        bad = "key_ids"
    elif not _is_str_list(rec["signer_ids"]):
        bad = "signer_ids"
    elif not isinstance(rec["outcome"], str):
        bad = "outcome"
    elif not isinstance(rec["host"], str):
        bad = "host"
    elif not isinstance(rec["user"], str):
        bad = "user"
    elif not _is_int(rec["pid"]):
        bad = "pid"
    elif not isinstance(rec["detail"], dict) or not all(isinstance(v, str) for v in rec["detail"].values()):
        bad = "detail"
    elif not _is_hex64(rec["prev"]):
        bad = "prev"
    elif not _is_hex64(rec["hash"]):
        bad = "hash"
    elif "signer" in rec and not isinstance(rec["signer"], str):
        bad = "signer"
    elif "sig" in rec and not isinstance(rec["sig"], str):
        bad = "sig"
    if bad is not None:
        raise AuditError(f"{where}: field {bad!r} has the wrong type or form")
    try:
        _dt.datetime.strptime(rec["time"], TIME_FORMAT)
    except ValueError:
        raise AuditError(f"{where}: field 'time' is not an ISO-8601 UTC time with microseconds") from None
    return rec


def _record_time(rec: Mapping[str, Any]) -> _dt.datetime:
    return _dt.datetime.strptime(rec["time"], TIME_FORMAT).replace(tzinfo=_dt.timezone.utc)


# --- file access ----------------------------------------------------------------------------------


def _flock(fd: int, exclusive: bool) -> None:
    if os.name == "posix":
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)


def _funlock(fd: int) -> None:
    if os.name == "posix":
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_UN)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def _open_for_append(path: Path) -> int:
    """The log opened O_RDWR|O_APPEND, created 0600 (and its directory 0700) if absent."""
    parent = path.parent
    if not parent.exists():
        parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            os.chmod(parent, 0o700)  # mkdir's mode is masked by the umask
    flags = os.O_RDWR | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
    while True:
        try:
            fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with contextlib.suppress(OSError):
                os.fchmod(fd, 0o600)  # the umask may have cleared bits; never widen beyond 0600
            _fsync_dir(parent)
            break
        try:
            fd = os.open(path, flags)
            break
        except FileNotFoundError:  # removed between the two opens: try again
            continue
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise AuditError(f"audit log {path} is not a regular file")
    except BaseException:
        os.close(fd)
        raise
    return fd


def _last_line(fd: int, size: int) -> bytes:
    """The last line of the file (without its newline), seeking backwards in blocks."""
    end = size - 1  # index of the final b"\n"
    chunks: list[bytes] = []
    pos = end
    while pos > 0:
        start = max(0, pos - _BLOCK)
        block = os.pread(fd, pos - start, start)
        if len(block) != pos - start:
            raise AuditError("audit log changed size while being read")
        nl = block.rfind(b"\n")
        if nl >= 0:
            chunks.append(block[nl + 1 :])
            break
        chunks.append(block)
        pos = start
    return b"".join(reversed(chunks))


def _snapshot_size(fd: int) -> int:
    """Size of the log with no append in progress (shared lock only while we fstat)."""
    _flock(fd, exclusive=False)
    try:
        return os.fstat(fd).st_size
    finally:
        _funlock(fd)


def _iter_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, line without newline) of a consistent prefix of the log.

    AuditError for a missing log or a torn (unterminated) last line.
    """
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise AuditError(f"no audit log at {path}", hint=f"set {ENV_AUDIT_LOG} or pass --log PATH") from None
    with f:
        size = _snapshot_size(f.fileno())
        remaining = size
        lineno = 0
        while remaining > 0:
            raw = f.readline(remaining)
            if not raw:
                raise AuditError(f"audit log {path} shrank while being read")
            remaining -= len(raw)
            lineno += 1
            if not raw.endswith(b"\n"):
                raise AuditError(
                    f"audit log line {lineno} is torn (no trailing newline): an interrupted write or a truncation",
                    hint="inspect the end of the log; once you have decided, remove the partial line "
                    "and re-run `sealedckpt audit verify`",
                )
            yield lineno, raw[:-1]


# --- public API -----------------------------------------------------------------------------------


def record(
    op: str,
    *,
    path: str | os.PathLike[str] | None = None,
    digest: str | None = None,
    key_ids: Sequence[str] = (),
    signer_ids: Sequence[str] = (),
    outcome: str = "ok",
    detail: Mapping[str, str] | None = None,
    log: Path | None = None,
    signing_key: SigningKey | None = None,
) -> dict[str, Any]:
    """Append one record to the log and return it (with ``seq``, ``prev``, ``hash``, ``sig``).

    Without ``signing_key``, records are signed by the keystore signing key that
    ``SEALEDCKPT_AUDIT_KEY`` names, if set."""
    if signing_key is None:
        signing_key = _env_log_key()
    _check_text(op, "op", allow_empty=False)
    _check_text(outcome, "outcome", allow_empty=False)
    abs_path = None if path is None else _check_text(os.path.abspath(os.fspath(path)), "path")
    if digest is not None:
        _check_text(digest, "digest")
    if isinstance(key_ids, str) or isinstance(signer_ids, str):
        raise AuditError("audit key_ids and signer_ids must be lists of strings, not a string")
    kids = [_check_text(k, "key id") for k in key_ids]
    sids = [_check_text(k, "signer id") for k in signer_ids]
    det: dict[str, str] = {}
    for k, v in (detail or {}).items():
        det[_check_text(k, "detail key")] = _check_text(v, f"detail {k!r}")
    signer = None if signing_key is None else textkeys.verify_key_to_text(signing_key.public)

    target = log if log is not None else log_path()
    fd = _open_for_append(target)
    try:
        _flock(fd, exclusive=True)
        size = os.fstat(fd).st_size
        if size == 0:
            seq, prev = 0, GENESIS
        else:
            if os.pread(fd, 1, size - 1) != b"\n":
                raise AuditError(
                    f"the audit log {target} ends in a torn line (an interrupted write?); refusing to append",
                    hint=_VERIFY_HINT,
                )
            try:
                last: dict[str, Any] | None = _parse(_last_line(fd, size), lineno=0)
            except AuditError:
                last = None
            if last is None or record_hash(last) != last["hash"]:
                raise AuditError(
                    f"the last record of the audit log {target} is damaged; refusing to append", hint=_VERIFY_HINT
                )
            seq, prev = last["seq"] + 1, last["hash"]
        rec: dict[str, Any] = {
            "v": FORMAT_VERSION,
            "seq": seq,
            "time": _now(),
            "op": op,
            "path": abs_path,
            "digest": digest,
            "key_ids": kids,
            "signer_ids": sids,
            "outcome": outcome,
            "host": socket.gethostname(),
            "user": _user(),
            "pid": os.getpid(),
            "detail": det,
            "prev": prev,
        }
        if signer is not None:
            rec["signer"] = signer
        rec["hash"] = record_hash(rec)
        if signing_key is not None:
            rec["sig"] = base64.b64encode(signing_key.sign(_sig_message(rec["hash"]))).decode("ascii")
        line = _line(rec)
        try:
            n = os.write(fd, line)
            if n != len(line):
                raise OSError(f"short write ({n} of {len(line)} bytes)")
            os.fsync(fd)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)  # we hold the lock: take back a partial line
            raise
        return rec
    finally:
        os.close(fd)  # also releases the lock


def read(log: Path | None = None, since: _dt.datetime | None = None) -> list[dict[str, Any]]:
    """Records for display (schema-checked, but the chain is not verified: use :func:`verify`).

    ``since`` keeps records at or after that time (a naive datetime is taken as UTC). A missing
    log reads as empty; a malformed or torn line is an AuditError.
    """
    target = log if log is not None else log_path()
    if not target.exists():
        return []
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=_dt.timezone.utc)
    out = []
    for lineno, raw in _iter_lines(target):
        rec = _parse(raw, lineno)
        if since is None or _record_time(rec) >= since:
            out.append(rec)
    return out


def verify(
    log: Path | None = None,
    *,
    trusted: Sequence[VerifyKey] | None = None,
    expect_head: str | None = None,
) -> VerifyReport:
    """Check every record's hash, the chain, ``seq`` and signatures; AuditError on the first fault.

    With ``trusted``, every record must be signed by one of those keys. With ``expect_head``
    (a head hash recorded elsewhere), the last record's hash must equal it: the only way to
    detect a removed tail, or a rewritten log of unsigned records.
    """
    target = log if log is not None else log_path()
    trust = set(trusted) if trusted is not None else None
    if expect_head is not None:
        expect_head = expect_head.strip().lower()
        if not _is_hex64(expect_head):
            raise AuditError("expected head must be 64 hex digits (a record hash)")
    head = GENESIS
    count = signed = 0
    first_time: str | None = None
    last_time: str | None = None
    signers: set[str] = set()
    key_cache: dict[str, VerifyKey] = {}
    for lineno, raw in _iter_lines(target):
        where = f"audit log line {lineno}"
        if not raw:
            raise AuditError(f"{where}: empty line")
        rec = _parse(raw, lineno)
        if record_hash(rec) != rec["hash"]:
            raise AuditError(f"{where}: record hash mismatch (the record was edited)")
        if rec["seq"] != count:
            raise AuditError(
                f"{where}: seq is {rec['seq']}, expected {count} (a record was removed, inserted, reordered "
                "or duplicated)"
            )
        if rec["prev"] != head:
            raise AuditError(
                f"{where}: prev does not match the hash of the record before it (the chain is broken: a record "
                "was removed, inserted, reordered or replaced)"
            )
        if _line(rec)[:-1] != raw:
            raise AuditError(f"{where}: not in canonical form (bytes were changed)")
        if "sig" in rec:
            vk = key_cache.get(rec["signer"])
            if vk is None:
                try:
                    vk = textkeys.verify_key_from_text(rec["signer"])
                except ValueError as exc:
                    raise AuditError(f"{where}: signer is not a verify key ({exc})") from None
                key_cache[rec["signer"]] = vk
            try:
                sig = base64.b64decode(rec["sig"], validate=True)
            except (binascii.Error, ValueError):
                raise AuditError(f"{where}: signature is not base64") from None
            if base64.b64encode(sig).decode("ascii") != rec["sig"] or textkeys.verify_key_to_text(vk) != rec["signer"]:
                raise AuditError(f"{where}: signature or signer not in canonical form (bytes were changed)")
            try:
                vk.verify(sig, _sig_message(rec["hash"]))
            except SignatureError:
                raise AuditError(f"{where}: invalid signature") from None
            if trust is not None and vk not in trust:
                raise AuditError(f"{where}: signed by {rec['signer']}, which is not trusted")
            signed += 1
            signers.add(rec["signer"])
        elif trust is not None:
            raise AuditError(f"{where}: record is not signed, but trusted signers were required")
        head = rec["hash"]
        count += 1
        if first_time is None:
            first_time = rec["time"]
        last_time = rec["time"]
    if expect_head is not None and head != expect_head:
        raise AuditError(
            f"audit log head is {head} after {count} record(s), expected {expect_head} "
            "(records were removed from the end, or the log was rewritten)"
        )
    return VerifyReport(
        records=count,
        head=head,
        signed=signed,
        first_time=first_time,
        last_time=last_time,
        signers=tuple(sorted(signers)),
    )


_CLI_SCOPE: contextvars.ContextVar[bool] = contextvars.ContextVar("sealedckpt_audit_cli", default=False)


@contextlib.contextmanager
def cli_scope() -> Iterator[None]:
    """While the CLI runs a command it records the event itself; the API stays quiet."""
    token = _CLI_SCOPE.set(True)
    try:
        yield
    finally:
        _CLI_SCOPE.reset(token)


ENV_AUDIT_KEY = "SEALEDCKPT_AUDIT_KEY"


def _env_log_key() -> SigningKey | None:
    name = os.environ.get(ENV_AUDIT_KEY, "").strip()
    if not name:
        return None
    from .keystore import Keystore

    key = Keystore().secret(Keystore().find(name))
    if not isinstance(key, SigningKey):
        raise AuditError(f"{ENV_AUDIT_KEY} names {name!r}, which is not a signing key")
    return key


def api_enabled() -> bool:
    """The library API records only when ``SEALEDCKPT_AUDIT=1`` (off by default)."""
    return not _CLI_SCOPE.get() and enabled(False)
