"""A tamper-evident, append-only audit log of what sealedckpt did (JSON lines, hash-chained).

Each line is one record (:mod:`.audit_records` gives its fields, hash and signature).

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
import datetime as _dt
import os
import stat
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._env import switch
from .._fs import flock, fsync_dir, funlock
from ..crypto import SigningKey, VerifyKey, textkeys
from ..errors import AuditError, SignatureError
from .audit_records import GENESIS, is_hex64, line, new_record, parse, record_hash, record_time, sig_message
from .backends import default_home

if TYPE_CHECKING:
    from .keystore import Keystore

__all__ = [
    "ENV_AUDIT",
    "ENV_AUDIT_LOG",
    "GENESIS",
    "AuditError",
    "AuditLog",
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
ENV_AUDIT_KEY = "SEALEDCKPT_AUDIT_KEY"
_BLOCK = 4096
_VERIFY_HINT = "run `sealedckpt audit verify` to see what is wrong with the log"


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
    return switch(ENV_AUDIT, default, AuditError)


# --- file access ----------------------------------------------------------------------------------


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
            fsync_dir(str(parent))
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
    flock(fd, exclusive=False)
    try:
        return os.fstat(fd).st_size
    finally:
        funlock(fd)


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
    rec = new_record(
        op, path=path, digest=digest, key_ids=key_ids, signer_ids=signer_ids, outcome=outcome, detail=detail
    )
    target = log if log is not None else log_path()
    fd = _open_for_append(target)
    try:
        flock(fd, exclusive=True)
        size = os.fstat(fd).st_size
        rec["seq"], rec["prev"] = _next_link(fd, size, target)
        if signing_key is not None:
            rec["signer"] = textkeys.verify_key_to_text(signing_key.public)
        rec["hash"] = record_hash(rec)
        if signing_key is not None:
            rec["sig"] = base64.b64encode(signing_key.sign(sig_message(rec["hash"]))).decode("ascii")
        _append(fd, size, line(rec))
        return rec
    finally:
        os.close(fd)  # also releases the lock


def _next_link(fd: int, size: int, target: Path) -> tuple[int, str]:
    """``seq`` and ``prev`` of the record to append after the log's last record."""
    if size == 0:
        return 0, GENESIS
    if os.pread(fd, 1, size - 1) != b"\n":
        raise AuditError(
            f"the audit log {target} ends in a torn line (an interrupted write?); refusing to append",
            hint=_VERIFY_HINT,
        )
    try:
        last: dict[str, Any] | None = parse(_last_line(fd, size), lineno=0)
    except AuditError:
        last = None
    if last is None or record_hash(last) != last["hash"]:
        raise AuditError(f"the last record of the audit log {target} is damaged; refusing to append", hint=_VERIFY_HINT)
    return last["seq"] + 1, last["hash"]


def _append(fd: int, size: int, data: bytes) -> None:
    """Write ``data`` at the end and fsync; on failure take back a partial line (we hold the lock)."""
    try:
        n = os.write(fd, data)
        if n != len(data):
            raise OSError(f"short write ({n} of {len(data)} bytes)")
        os.fsync(fd)
    except OSError:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, size)
        raise


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
        rec = parse(raw, lineno)
        if since is None or record_time(rec) >= since:
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
        if not is_hex64(expect_head):
            raise AuditError("expected head must be 64 hex digits (a record hash)")
    head = GENESIS
    count = signed = 0
    first: str | None = None
    last: str | None = None
    signers: set[str] = set()
    key_cache: dict[str, VerifyKey] = {}
    for lineno, raw in _iter_lines(target):
        where = f"audit log line {lineno}"
        rec = _check_link(raw, lineno, count, head)
        if "sig" in rec:
            _check_signature(rec, where, key_cache, trust)
            signed += 1
            signers.add(rec["signer"])
        elif trust is not None:
            raise AuditError(f"{where}: record is not signed, but trusted signers were required")
        head = rec["hash"]
        count += 1
        first, last = first or rec["time"], rec["time"]
    if expect_head is not None and head != expect_head:
        raise AuditError(
            f"audit log head is {head} after {count} record(s), expected {expect_head} "
            "(records were removed from the end, or the log was rewritten)"
        )
    return VerifyReport(count, head, signed, first, last, tuple(sorted(signers)))


def _check_link(raw: bytes, lineno: int, seq: int, prev: str) -> dict[str, Any]:
    """One line as a record whose hash, place in the chain and bytes all check out."""
    where = f"audit log line {lineno}"
    if not raw:
        raise AuditError(f"{where}: empty line")
    rec = parse(raw, lineno)
    if record_hash(rec) != rec["hash"]:
        raise AuditError(f"{where}: record hash mismatch (the record was edited)")
    if rec["seq"] != seq:
        raise AuditError(
            f"{where}: seq is {rec['seq']}, expected {seq} (a record was removed, inserted, reordered or duplicated)"
        )
    if rec["prev"] != prev:
        raise AuditError(
            f"{where}: prev does not match the hash of the record before it (the chain is broken: a record "
            "was removed, inserted, reordered or replaced)"
        )
    if line(rec)[:-1] != raw:
        raise AuditError(f"{where}: not in canonical form (bytes were changed)")
    return rec


def _check_signature(
    rec: Mapping[str, Any], where: str, key_cache: dict[str, VerifyKey], trust: set[VerifyKey] | None
) -> None:
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
        vk.verify(sig, sig_message(rec["hash"]))
    except SignatureError:
        raise AuditError(f"{where}: invalid signature") from None
    if trust is not None and vk not in trust:
        raise AuditError(f"{where}: signed by {rec['signer']}, which is not trusted")


def _env_log_key(keystore: Keystore | None = None) -> SigningKey | None:
    name = os.environ.get(ENV_AUDIT_KEY, "").strip()
    if not name:
        return None
    if keystore is None:
        from .keystore import Keystore

        keystore = Keystore()
    key = keystore.secret(keystore.find(name))
    if not isinstance(key, SigningKey):
        raise AuditError(f"{ENV_AUDIT_KEY} names {name!r}, which is not a signing key")
    return key


@dataclass(frozen=True)
class AuditLog:
    """Where records go and who signs them: the audit context, passed explicitly."""

    path: Path
    signing_key: SigningKey | None = None

    def __repr__(self) -> str:
        signer = "unsigned" if self.signing_key is None else f"signed by {self.signing_key.key_id}"
        return f"AuditLog({str(self.path)!r}, {signer})"

    @classmethod
    def from_env(cls, *, default: bool, keystore: Keystore | None = None) -> AuditLog | None:
        """The log the environment asks for, or None when auditing is off (see :func:`enabled`):
        ``SEALEDCKPT_AUDIT_LOG`` (else the default home) signed by ``SEALEDCKPT_AUDIT_KEY``."""
        if not enabled(default):
            return None
        return cls(log_path(), _env_log_key(keystore))

    def record(
        self,
        op: str,
        *,
        path: str | os.PathLike[str] | None = None,
        digest: str | None = None,
        key_ids: Sequence[str] = (),
        signer_ids: Sequence[str] = (),
        outcome: str = "ok",
        detail: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """Append one record (see :func:`record`)."""
        return record(
            op,
            path=path,
            digest=digest,
            key_ids=key_ids,
            signer_ids=signer_ids,
            outcome=outcome,
            detail=detail,
            log=self.path,
            signing_key=self.signing_key,
        )
