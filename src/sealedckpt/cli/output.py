"""What the CLI prints: results, ``--json``, errors with their exit codes, progress bars."""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import sys
from collections.abc import Iterator, Sequence
from typing import Any, NoReturn, TextIO

from .. import Signer, api
from ..api import ProgressStart
from ..crypto import textkeys
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


def when(ts: int) -> str:
    """A Unix time as ``YYYY-MM-DDTHH:MM:SSZ``."""
    return _dt.datetime.fromtimestamp(ts, tz=_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def print_json(obj: Any, *, ensure_ascii: bool = True) -> None:
    """``obj`` as indented JSON with sorted keys on stdout."""
    print(json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=ensure_ascii))


def signer_rows(signers: Sequence[Signer]) -> list[dict[str, Any]]:
    """Verified signers (:class:`sealedckpt.Signer`) as report rows."""
    return [
        {"key_id": s.key_id, "public_key": textkeys.public_to_text(s.public_key), "signed_at": when(s.signed_at),
         "trusted": s.trusted}
        for s in signers
    ]  # fmt: skip


def print_verified(
    rows: list[dict[str, Any]], trust_checked: bool, what: str, digest: str, metadata: dict[str, str], ok: str
) -> None:
    """The human report of a successful verify / verify-dir (the only place that prints OK)."""
    for s in rows:
        mark = "trusted" if s["trusted"] else "not in --trust" if trust_checked else "no --trust given"
        print(f"{what} by {s['public_key']} (key id {s['key_id']}) at {s['signed_at']} [{mark}]")
    print(digest)
    for k, v in metadata.items():
        print(f"metadata {k} = {v}")
    print(f"OK: {ok}")
    if not trust_checked:
        print("hint: pass --trust PUBKEY to require a specific publisher", file=sys.stderr)


def message(exc: BaseException) -> tuple[str, str | None]:
    """An error's message (without the ``(hint: ...)`` suffix) and its hint."""
    hint = getattr(exc, "hint", None)
    msg = str(exc)
    if isinstance(exc, SealedCkptError) and hint and msg.endswith(f" (hint: {hint})"):
        msg = msg[: -len(f" (hint: {hint})")]
    return msg, hint


def print_error(exc: BaseException, prefix: str = "") -> None:
    """``sealedckpt: error: PREFIXmessage`` and ``hint: ...`` on stderr."""
    msg, hint = message(exc)
    print(f"sealedckpt: error: {prefix}{msg}", file=sys.stderr)
    if hint:
        print(f"hint: {hint}", file=sys.stderr)


def fail(exc: BaseException, as_json: bool) -> NoReturn:
    """Report ``exc`` (also as JSON on stdout with ``--json``) and exit with its code."""
    code = exit_code(exc)
    if as_json:
        print_json({"ok": False, "error": message(exc)[0], "kind": type(exc).__name__, "exit_code": code})
    print_error(exc)
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
