"""``sealedckpt audit show|verify``: read and check the audit log (see :mod:`sealedckpt.stores.audit`).

Registered on the main parser by :func:`add_audit_parser`. Handlers print results to stdout and
raise :class:`~sealedckpt.errors.AuditError` on failure; the main CLI prints
``sealedckpt: error: ...`` and maps it to the integrity exit code.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import sys
from pathlib import Path
from typing import Any

from .. import VerifyKey
from ..crypto import textkeys
from ..errors import InvalidArgumentError
from ..stores import audit
from .output import print_json

__all__ = ["add_audit_parser", "cmd_audit_show", "cmd_audit_verify"]


def _safe(text: str) -> str:
    """Control characters (terminal escapes) in a record shown escaped, never interpreted."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _since(text: str) -> _dt.datetime:
    s = text.strip()
    if s.endswith(("Z", "z")):
        s = s[:-1] + "+00:00"  # Python 3.10's fromisoformat has no "Z"
    try:
        when = _dt.datetime.fromisoformat(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO-8601 time: {text!r} (e.g. 2026-11-30T09:00:00Z)") from None
    return when if when.tzinfo is not None else when.replace(tzinfo=_dt.timezone.utc)


def _trust(text: str) -> VerifyKey:
    try:
        return textkeys.verify_key_from_text(text)
    except InvalidArgumentError as exc:
        raise argparse.ArgumentTypeError(
            f"not a verify key: {exc} (verify keys look like {textkeys.HRP_VERIFY}1...)"
        ) from None


def _head(text: str) -> str:
    s = text.strip().lower()
    if len(s) != 64 or any(c not in "0123456789abcdef" for c in s):
        raise argparse.ArgumentTypeError("expected a record hash: 64 hex digits")
    return s


def _log(args: argparse.Namespace) -> Path:
    return Path(args.log) if args.log else audit.log_path()


def _human(rec: dict[str, Any]) -> str:
    parts = [
        rec["time"],
        rec["op"],
        rec["outcome"],
        rec["path"] if rec["path"] is not None else "-",
        rec["digest"] if rec["digest"] is not None else "-",
        "keys=" + (",".join(rec["key_ids"]) or "-"),
    ]
    if rec["signer_ids"]:
        parts.append("signers=" + ",".join(rec["signer_ids"]))
    parts.extend(f"{k}={v}" for k, v in sorted(rec["detail"].items()))
    return "  ".join(_safe(p) for p in parts)


def cmd_audit_show(args: argparse.Namespace) -> int:
    records = audit.read(_log(args), since=args.since)
    if args.json:
        print_json(records, ensure_ascii=False)
        return 0
    if not records:
        print("no audit records", file=sys.stderr)
        return 0
    for rec in records:
        print(_human(rec))
    return 0


def cmd_audit_verify(args: argparse.Namespace) -> int:
    log = _log(args)
    trusted: list[VerifyKey] | None = list(args.trust) if args.trust else None
    report = audit.verify(log, trusted=trusted, expect_head=args.expect_head)
    if args.json:
        print_json(
            {
                "log": str(log),
                "ok": True,
                "records": report.records,
                "head": report.head,
                "signed": report.signed,
                "signers": list(report.signers),
                "first_time": report.first_time,
                "last_time": report.last_time,
                "trust_checked": trusted is not None,
                "head_checked": args.expect_head is not None,
            },
            ensure_ascii=False,
        )
        return 0
    print(f"OK: {report.records} records, chain intact, head {report.head}")
    if report.records and report.signed < report.records:
        print(
            f"note: {report.records - report.signed} of {report.records} records are unsigned: anyone who can write "
            "the log can rewrite it with fresh hashes",
            file=sys.stderr,
        )
    if args.expect_head is None:
        what = "a truncated tail" if report.fully_signed else "a truncated tail (or a rewritten unsigned log)"
        print(
            f"hint: {what} is only detectable with --expect-head HASH; keep the head hash somewhere else",
            file=sys.stderr,
        )
    if report.signed and trusted is None:
        print("hint: pass --trust PUBKEY to require a specific signer", file=sys.stderr)
    return 0


def add_audit_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``audit show`` and ``audit verify`` on the main CLI's subcommands."""
    cmds = sub.add_parser("audit", help="show or verify the tamper-evident audit log").add_subparsers(
        dest="audit_command", metavar="COMMAND", required=True
    )
    log_help = f"the audit log (default: ${audit.ENV_AUDIT_LOG} or <sealedckpt home>/audit.jsonl)"

    sp = cmds.add_parser("show", help="print audit records")
    sp.add_argument("--json", action="store_true", help="machine-readable output")
    sp.add_argument(
        "--since", type=_since, metavar="ISO8601", help="only records at or after this time (UTC if no zone)"
    )
    sp.add_argument("--log", metavar="PATH", help=log_help)
    sp.set_defaults(func=cmd_audit_show)

    sp = cmds.add_parser("verify", help="check every record's hash, the chain and signatures")
    sp.add_argument("--log", metavar="PATH", help=log_help)
    sp.add_argument(
        "--trust",
        action="append",
        type=_trust,
        metavar="PUBKEY",
        help=f"require every record to be signed by this verify key ({textkeys.HRP_VERIFY}1...); repeatable",
    )
    sp.add_argument(
        "--expect-head", type=_head, metavar="HASH", help="the head hash recorded earlier: detects a removed tail"
    )
    sp.add_argument("--json", action="store_true", help="machine-readable output")
    sp.set_defaults(func=cmd_audit_verify)
