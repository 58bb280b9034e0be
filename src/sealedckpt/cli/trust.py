"""``sealedckpt trust ...``: trusted keys (roles, scopes, expiry, revocation), the policy, and the
remembered versions (the CLI records these itself)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .._fs import atomic_write
from ..errors import CliError
from ..stores.trust import Publisher, TrustStore, revocation_statement
from ..stores.versions import VersionMemory
from .output import EXIT_OK, EXIT_USAGE, print_json, safe, when
from .parse import Session, parse_date


def _row(p: Publisher) -> dict[str, Any]:
    return {"name": p.name, "kind": p.kind, "public_key": p.public, "key_id": p.key.key_id, "roles": p.roles,
            "scope": p.scope, "expires": None if p.expires is None else when(p.expires), "revoked": p.revoked,
            "revoked_by": p.revoked_by, "added": p.added}  # fmt: skip


def cmd_trust_add(args: argparse.Namespace) -> int:
    s = Session.of(args)
    with s.recording("trust.add", None) as info:
        key = s.verify_key(args.pubkey)
        expires = parse_date(args.expires)
        pub = TrustStore().add(args.name, key, roles=args.role or ["publisher"], scope=args.scope or ["*"],
                               expires=expires)  # fmt: skip
        info.update(signer_ids=[key.key_id], detail={"name": pub.name, "roles": ",".join(pub.roles),
                                                     "scope": ",".join(pub.scope)})  # fmt: skip
    until = f", until {when(pub.expires)}" if pub.expires is not None else ""
    print(safe(f"trusting {pub.name} ({key.key_id}) as {', '.join(pub.roles)} for {', '.join(pub.scope)}{until}"))
    return EXIT_OK


def cmd_trust_show(args: argparse.Namespace) -> int:
    store = TrustStore()
    pubs, rules, skew = store.publishers(), store.rules(), store.clock_skew()
    versions = VersionMemory(store.home).all()
    if args.json and args.trust_command == "list":
        print_json([_row(p) for p in pubs])
        return EXIT_OK
    if args.json:
        rows = [{"models": r.models, "require": r.require, "algs": r.algs} for r in rules]
        print_json({"keys": [_row(p) for p in pubs], "rules": rows, "clock_skew": skew, "versions": versions})
        return EXIT_OK
    if not pubs:
        print("no trusted keys", file=sys.stderr)
    for p in pubs:
        state = " REVOKED" + (f" (by {p.revoked_by})" if p.revoked_by else "") if p.revoked else ""
        until = f" until {when(p.expires)}" if p.expires is not None else ""
        print(safe(f"{p.key.key_id}  {p.name:<16} {','.join(p.roles):<18} scope {','.join(p.scope)}{until}{state}"))
    if args.trust_command == "show":
        print("policy (every load also needs publisher>=1):")
        for r in rules:
            print(safe(f"  {r.models}: " + " ".join(f"{k}>={v}" for k, v in r.require.items()) + _algs(r.algs)))
        print(f"clock skew allowance: {skew}s")
        for model, v in sorted(versions.items()):
            print(safe(f"remembered: {model} version {v}"))
    return EXIT_OK


def cmd_trust_rm(args: argparse.Namespace) -> int:
    with Session.of(args).recording("trust.rm", None):
        p = TrustStore().remove(args.name)
    print(safe(f"no longer trusting {p.name} ({p.public})"))
    return EXIT_OK


def cmd_trust_revoke(args: argparse.Namespace) -> int:
    with Session.of(args).recording("trust.revoke", None) as info:
        p = TrustStore().revoke(args.name)
        info.update(signer_ids=[p.key.key_id], detail={"name": p.name})
    print(safe(f"revoked {p.name} ({p.key.key_id}): files and directories it signed are refused"))
    return EXIT_OK


def cmd_trust_sign_revocation(args: argparse.Namespace) -> int:
    s = Session.of(args)
    with s.recording("trust.sign-revocation", None) as info:
        (signer,) = s.signing_keys([args.key], "--key ")
        named = next((p for p in TrustStore().publishers() if p.name == args.pubkey), None)
        target = named.key if named is not None else s.verify_key(args.pubkey)
        raw = revocation_statement(signer, target)
        with atomic_write(Path(args.output), mode=0o644) as f:
            f.write(raw)
        info.update(signer_ids=[signer.key_id], detail={"revoked": target.key_id})
    print(safe(f"wrote a revocation of {target.key_id} signed by {signer.key_id} to {args.output}"))
    return EXIT_OK


def cmd_trust_import_revocation(args: argparse.Namespace) -> int:
    with Session.of(args).recording("trust.import-revocation", None) as info:
        try:
            with open(args.file, "rb") as f:
                raw = f.read(1 << 20)
        except OSError as exc:
            raise CliError(f"{args.file}: cannot read it: {exc.strerror or exc}", EXIT_USAGE) from None
        p = TrustStore().import_revocation(raw)
        info.update(signer_ids=[p.key.key_id], detail={"name": p.name, "revoked_by": p.revoked_by or ""})
    print(safe(f"revoked {p.name} ({p.key.key_id}), as {p.revoked_by} signed"))
    return EXIT_OK


def _thresholds(items: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items:
        role, sep, n = item.partition("=")
        if not sep or not role or not n.isdigit():
            raise CliError(f"a requirement is ROLE=N (e.g. publisher=1), got {item!r}", EXIT_USAGE)
        out[role] = int(n)
    return out


def _algs(algs: list[str] | None) -> str:
    return f" (signed with {' or '.join(algs)})" if algs else ""


def cmd_policy_set(args: argparse.Namespace) -> int:
    with Session.of(args).recording("trust.policy", None):
        rule = TrustStore().set_rule(args.models, _thresholds(args.require), args.algs or ())
    print(safe(f"models {rule.models}: require " + " and ".join(f"{k}>={v}" for k, v in rule.require.items())
               + _algs(rule.algs)))  # fmt: skip
    return EXIT_OK


def cmd_policy_rm(args: argparse.Namespace) -> int:
    with Session.of(args).recording("trust.policy", None):
        TrustStore().remove_rule(args.models)
    print(safe(f"removed the rule for {args.models}"))
    return EXIT_OK


def cmd_policy_skew(args: argparse.Namespace) -> int:
    with Session.of(args).recording("trust.policy", None):
        TrustStore().set_clock_skew(args.seconds)
    print(f"clock skew allowance: {args.seconds}s")
    return EXIT_OK


def cmd_trust_versions(args: argparse.Namespace) -> int:
    mem = VersionMemory(TrustStore().home)
    if args.reset is not None or args.reset_all:
        if args.reset is not None and args.reset_all:
            raise CliError("give --reset MODEL or --reset-all, not both", EXIT_USAGE)
        with Session.of(args).recording("trust.versions-reset", None):
            gone = mem.reset(None if args.reset_all else args.reset)
        print(safe(f"forgot the remembered version of {', '.join(gone) if gone else 'nothing'}"))
        return EXIT_OK
    versions = mem.all()
    if args.json:
        print_json(versions)
    elif not versions:
        print("no remembered versions", file=sys.stderr)
    for model, v in sorted(versions.items()) if not args.json else ():
        print(safe(f"{model}  {v}"))
    return EXIT_OK
