"""What the CLI prints: results, ``--json``, errors with their exit codes, progress bars."""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import json
import re
import sys
from collections.abc import Iterator, Sequence
from typing import Any, NoReturn, TextIO

from .. import Signer, api
from ..api import ProgressStart
from ..crypto import VerifyKey, textkeys
from ..errors import (
    AuditError,
    CliError,
    DecryptionError,
    FormatError,
    IntegrityError,
    KeystoreError,
    SealedCkptError,
    SignatureError,
    UnsafePayloadError,
)
from .progress import Bar

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_FORMAT, EXIT_INTEGRITY, EXIT_SIGNATURE, EXIT_KEY = 0, 1, 2, 3, 4, 5, 6


def exit_code(exc: BaseException) -> int:
    """The exit code of a failure (see the module docstring of :mod:`sealedckpt.cli.main`)."""
    if isinstance(exc, CliError):
        return exc.code
    if isinstance(exc, AuditError):
        return EXIT_INTEGRITY
    if isinstance(exc, SignatureError):
        return EXIT_SIGNATURE
    if isinstance(exc, IntegrityError):
        return EXIT_INTEGRITY
    if isinstance(exc, (DecryptionError, KeystoreError)):
        return EXIT_KEY
    if isinstance(exc, (FormatError, UnsafePayloadError)):
        return EXIT_FORMAT
    return EXIT_ERROR


_UNSAFE = re.compile("[\\x00-\\x1f\\x7f-\\x9f\\u061c\\u200e\\u200f\\u2028-\\u202e\\u2066-\\u2069\\ufeff]")


def safe(text: object) -> str:
    """``text`` for a terminal: control characters (C0, DEL, C1, so ESC/CSI/OSC sequences) and
    bidi/line-separator characters shown escaped (``\\x1b``, ``\\u202e``), never interpreted."""
    s = str(text)
    return _UNSAFE.sub(lambda m: f"\\x{ord(m[0]):02x}" if ord(m[0]) < 0x100 else f"\\u{ord(m[0]):04x}", s)


_LAST_DATE = 253_402_300_799  # 9999-12-31T23:59:59Z


def when(ts: int) -> str:
    """A Unix time as ``YYYY-MM-DDTHH:MM:SSZ``, or the raw number where no date can show it."""
    if not 0 <= ts <= _LAST_DATE:
        return f"{ts} (out of range)"
    return _dt.datetime.fromtimestamp(ts, tz=_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def print_json(obj: Any, *, ensure_ascii: bool = True) -> None:
    """``obj`` as indented JSON with sorted keys on stdout."""
    print(json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=ensure_ascii))


def signer_rows(signers: Sequence[Signer]) -> list[dict[str, Any]]:
    """Verified signers (:class:`sealedckpt.Signer`) as report rows."""
    return [
        {"key_id": s.key_id, "alg": s.alg, "statement": s.statement.type, "signed_at": when(s.signed_at),
         "expires_at": None if s.statement.expires_at is None else when(s.statement.expires_at),
         "public_key": textkeys.public_to_text(s.public_key) if isinstance(s.public_key, VerifyKey)
         else f"{s.alg}:{s.public_key.to_bytes().hex()}", "trusted": s.trusted}
        for s in signers
    ]  # fmt: skip


def print_verified(
    rows: list[dict[str, Any]], trust_checked: bool, what: str, digest: str, metadata: dict[str, str], ok: str
) -> None:
    """The human report of a successful verify / verify-dir (the only place that prints OK);
    control characters in it are escaped."""
    lines = []
    for s in rows:
        mark = "trusted" if s["trusted"] else "not in --trust" if trust_checked else "no --trust given"
        until = f", expires {s['expires_at']}" if s["expires_at"] else ""
        key = s["public_key"] if len(s["public_key"]) <= 100 else s["public_key"][:24] + "…"  # a composite key
        lines.append(f"{what} ({s['statement']}) by {key} (key id {s['key_id']}) at {s['signed_at']}"
                     f"{until} [{mark}]")  # fmt: skip
    lines.append(digest)
    lines.extend(f"metadata {k} = {v}" for k, v in metadata.items())
    lines.append(f"OK: {ok}")
    for line in lines:
        print(safe(line))
    if not trust_checked:
        print("hint: pass --trust PUBKEY to require a specific publisher", file=sys.stderr)


EXIT_INTERRUPTED = 130
_OS_HINTS = {
    errno.EISDIR: "this command takes a file; sealed directories have seal-dir, verify-dir, sign-dir and unseal-dir",
    errno.ENOTDIR: "a part of the path is not a directory",
    errno.EEXIST: "a file is in the way of a directory the output needs",
    errno.EACCES: "check the permissions of the file and of its directory",
    errno.EPERM: "check the permissions of the file and of its directory",
    errno.EROFS: "the file system is read-only; write the output somewhere else",
    errno.ENOSPC: "the disk is full; free space or write the output somewhere else",
}


def message(exc: BaseException) -> tuple[str, str | None]:
    """An error's message (without the ``(hint: ...)`` suffix) and its hint, as they are."""
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted", "an output is replaced only once complete: the one being written was discarded"
    hint = getattr(exc, "hint", None)
    if isinstance(exc, OSError) and exc.strerror:
        where = f"{exc.filename}: " if exc.filename is not None else ""
        msg, hint = f"{where}{exc.strerror}", _OS_HINTS.get(exc.errno or 0, hint)
    elif isinstance(exc, SealedCkptError):
        msg = str(exc)
        if hint and msg.endswith(f" (hint: {hint})"):
            msg = msg[: -len(f" (hint: {hint})")]
    else:
        msg = f"{type(exc).__name__}: {exc}" if not isinstance(exc, OSError) else str(exc) or type(exc).__name__
        hint = hint or "this is a bug in sealedckpt; please report it with the command you ran"
    return msg, hint


def print_error(exc: BaseException, prefix: str = "") -> None:
    """``sealedckpt: error: PREFIXmessage`` and ``hint: ...`` on stderr (control characters escaped)."""
    msg, hint = message(exc)
    print(f"sealedckpt: error: {safe(prefix + msg)}", file=sys.stderr)
    if hint:
        print(f"hint: {safe(hint)}", file=sys.stderr)


def fail(exc: BaseException, as_json: bool) -> NoReturn:
    """Report ``exc`` (also as JSON on stdout with ``--json``) and exit with its code."""
    code = EXIT_INTERRUPTED if isinstance(exc, KeyboardInterrupt) else exit_code(exc)
    if as_json:
        print_json({"ok": False, "error": message(exc)[0], "kind": type(exc).__name__, "exit_code": code})
    print_error(exc)
    sys.stdout.flush()
    raise SystemExit(code)


def show_warning(
    message: Warning | str, category: type[Warning], filename: str, lineno: int, file: TextIO | None = None,
    line: str | None = None,
) -> None:  # fmt: skip
    """Warnings on stderr: ``sealedckpt: warning: ...`` for unpickling, else ``sealedckpt: note: ...``."""
    level = "warning" if issubclass(category, api.UnpicklingWarning) else "note"
    print(f"sealedckpt: {level}: {message}", file=sys.stderr)


@contextlib.contextmanager
def bars(label: str) -> Iterator[ProgressStart]:
    """A progress factory for the API (called with the total, it returns a :class:`Bar`);
    every bar it made is closed on exit."""
    made: list[Bar] = []

    def start(total: int) -> Bar:
        made.append(Bar(label, total))
        return made[-1]

    try:
        yield start
    finally:
        for bar in made:
            bar.close()
