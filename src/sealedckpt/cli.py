"""The ``sealedckpt`` command line (also ``python -m sealedckpt``).

Results go to stdout; errors go to stderr as ``sealedckpt: error: ...`` plus ``hint: ...``.
Exit codes: 0 ok, 1 other error (I/O), 2 usage, 3 not a sealed file / unsafe input,
4 integrity failure, 5 signature failure, 6 key failure (no key, wrong key).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from . import __version__, api, textkeys
from .crypto import VerifyKey
from .errors import (
    DecryptionError,
    FormatError,
    IntegrityError,
    SealedCkptError,
    SignatureError,
    UnsafePayloadError,
)

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_FORMAT, EXIT_INTEGRITY, EXIT_SIGNATURE, EXIT_KEY = 0, 1, 2, 3, 4, 5, 6


class CliError(Exception):
    """A user-facing failure with its exit code and an optional hint."""

    def __init__(self, message: str, code: int = EXIT_ERROR, hint: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.hint = hint


def exit_code(exc: BaseException) -> int:
    if isinstance(exc, CliError):
        return exc.code
    if isinstance(exc, SignatureError):
        return EXIT_SIGNATURE
    if isinstance(exc, IntegrityError):
        return EXIT_INTEGRITY
    if isinstance(exc, DecryptionError):
        return EXIT_KEY
    if isinstance(exc, (FormatError, UnsafePayloadError)):
        return EXIT_FORMAT
    return EXIT_ERROR


def _when(ts: int) -> str:
    return _dt.datetime.fromtimestamp(ts, tz=_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_verify_key(text: str) -> VerifyKey:
    """A verify key from its text form, or from a file holding it."""
    candidate = text
    if not text.lower().startswith(textkeys.HRP_VERIFY + "1"):
        try:
            with open(text, encoding="utf-8") as f:
                candidate = f.read(1024).strip()
        except OSError:
            raise CliError(f"not a public key and not a readable file: {text!r}", EXIT_USAGE) from None
    try:
        return textkeys.verify_key_from_text(candidate)
    except ValueError as exc:
        raise CliError(
            f"invalid public key: {exc}", EXIT_USAGE, hint=f"a verify key looks like {textkeys.HRP_VERIFY}1..."
        ) from None


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True))


def cmd_inspect(args: argparse.Namespace) -> int:
    info = api.inspect(args.file)
    n_chunks = max(1, -(-info.payload_len // info.chunk_size))
    if args.json:
        _print_json(
            {
                "file": args.file,
                "version": info.version,
                "payload_type": info.payload_type,
                "payload_len": info.payload_len,
                "file_size": info.file_size,
                "chunk_size": info.chunk_size,
                "chunks": n_chunks,
                "metadata": info.metadata,
                "key_slots": info.key_slots,
                "signatures": info.signatures,
                "signatures_verified": False,
            }
        )
        return EXIT_OK
    print(f"{args.file}: sealed checkpoint, format v{info.version}, {info.payload_type} payload")
    print(f"  payload     {info.payload_len:,} bytes in {n_chunks} chunk(s) of {info.chunk_size:,}")
    print(f"  file size   {info.file_size:,} bytes")
    for slot in info.key_slots:
        print(f"  key slot    {slot['type']}" + (f" (key id {slot['key_id']})" if "key_id" in slot else ""))
    for sig in info.signatures:
        print(f"  signature   key id {sig['key_id']} at {_when(int(str(sig['signed_at'])))} (not verified)")
    for k, v in info.metadata.items():
        print(f"  metadata    {k} = {v}")
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    trusted = [_parse_verify_key(t) for t in args.trust] if args.trust else None
    res = api.verify(args.file, trusted_signers=trusted)
    signers = [
        {
            "key_id": s.key_id,
            "public_key": textkeys.verify_key_to_text(s.public_key),
            "signed_at": _when(s.signed_at),
            "trusted": s.trusted,
        }
        for s in res.signers
    ]
    if args.json:
        _print_json(
            {
                "file": args.file,
                "ok": True,
                "content_digest": "sha256:" + res.root.hex(),
                "signers": signers,
                "metadata": res.metadata,
                "trust_checked": trusted is not None,
            }
        )
        return EXIT_OK
    for s in signers:
        mark = "trusted" if s["trusted"] else "not in --trust" if trusted is not None else "no --trust given"
        print(f"signed by {s['public_key']} (key id {s['key_id']}) at {s['signed_at']} [{mark}]")
    print(f"content digest sha256:{res.root.hex()}")
    for k, v in res.metadata.items():
        print(f"metadata {k} = {v}")
    print(f"OK: {args.file}: every signature and every chunk verified")
    if trusted is None:
        print("hint: pass --trust PUBKEY to require a specific publisher", file=sys.stderr)
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sealedckpt", description="Encrypted, signed, pickle-free PyTorch checkpoints.")
    p.add_argument("--version", action="version", version=f"sealedckpt {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sp = sub.add_parser("inspect", help="show a sealed file's public header (no key needed)")
    sp.add_argument("file")
    sp.add_argument("--json", action="store_true", help="machine-readable output")
    sp.set_defaults(func=cmd_inspect)

    sp = sub.add_parser("verify", help="check signatures and every chunk without a decryption key")
    sp.add_argument("file")
    sp.add_argument("--trust", action="append", metavar="PUBKEY", help="trusted verify key (text or file); repeatable")
    sp.add_argument("--json", action="store_true", help="machine-readable output")
    sp.set_defaults(func=cmd_verify)
    return p


def _fail(exc: BaseException, as_json: bool) -> NoReturn:
    code = exit_code(exc)
    hint = getattr(exc, "hint", None)
    msg = str(exc)
    if isinstance(exc, SealedCkptError) and hint and msg.endswith(f" (hint: {hint})"):
        msg = msg[: -len(f" (hint: {hint})")]
    if as_json:
        _print_json({"ok": False, "error": msg, "kind": type(exc).__name__, "exit_code": code})
    print(f"sealedckpt: error: {msg}", file=sys.stderr)
    if hint:
        print(f"hint: {hint}", file=sys.stderr)
    raise SystemExit(code)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except (SealedCkptError, CliError, OSError) as exc:
        _fail(exc, bool(getattr(args, "json", False)))
    except KeyboardInterrupt:
        print("sealedckpt: error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
