"""``sealedckpt key ...``: the keystore (the CLI records these itself; no API call does)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .._fs import atomic_write
from ..crypto import textkeys
from ..errors import CliError, InvalidArgumentError
from ..stores.keystore import KeyRecord
from .output import EXIT_ERROR, EXIT_OK, EXIT_USAGE, print_json, safe
from .parse import Session, read_passphrase, record_json
from .walk import files_naming


def cmd_key_gen(args: argparse.Namespace) -> int:
    s = Session.of(args)
    with s.recording("key.gen", None) as info:
        protect = (
            read_passphrase(args, confirm=True, what="passphrase to protect the key") if args.passphrase_protect
            else None
        )  # fmt: skip
        rec = s.keystore.generate(args.kind, args.name, default=args.default, protect=protect)
        info.update(key_ids=[rec.id], detail={"name": rec.name, "kind": rec.kind, "store": rec.backend})
    if args.json:
        print_json(record_json(rec))
    else:
        print(f"generated {rec.kind} key {rec.name} (id {rec.id}) in the {rec.backend} store"
              + (", default" if rec.default else ""))  # fmt: skip
        if rec.public:
            print(f"public key: {rec.public}")
    return EXIT_OK


def cmd_key_list(args: argparse.Namespace) -> int:
    records = Session.of(args, audited=False).keystore.records()
    if args.json:
        print_json([record_json(r) for r in records])
        return EXIT_OK
    if not records:
        print("no keys", file=sys.stderr)
        print("hint: create one with `sealedckpt key gen --default`", file=sys.stderr)
        return EXIT_OK
    for r in records:
        flags = [f for f, on in (("default", r.default), ("retired", r.retired), ("protected", r.protected),
                                 ("public-only", not r.has_secret)) if on]  # fmt: skip
        print(safe(f"{r.id}  {r.kind:<9}  {r.name:<24}  {r.backend:<7}  {' '.join(flags)}".rstrip()))
    return EXIT_OK


def cmd_key_show(args: argparse.Namespace) -> int:
    r = Session.of(args, audited=False).keystore.find(args.name)
    if args.json:
        print_json(record_json(r))
        return EXIT_OK
    for k, v in record_json(r).items():
        if v not in (None, False):
            print(safe(f"{k:<12} {v}"))
    return EXIT_OK


def cmd_key_export_public(args: argparse.Namespace) -> int:
    r = Session.of(args, audited=False).keystore.find(args.name)
    if r.public is None:
        raise CliError(f"key {r.name!r} is symmetric: it has no public half", EXIT_USAGE,
                       hint="share symmetric keys only through a secret channel")  # fmt: skip
    print(r.public)
    return EXIT_OK


def cmd_key_export(args: argparse.Namespace) -> int:
    """The public half (default), or with ``--secret`` the secret key's text form: to a 0600 file
    (``-o``), or to stdout only when it is not a terminal (unless ``--force``)."""
    if not args.secret:
        if args.output:
            raise CliError("-o goes with --secret (public keys print to stdout)", EXIT_USAGE,
                           hint="redirect stdout: sealedckpt key export NAME > NAME.pub")  # fmt: skip
        return cmd_key_export_public(args)
    if args.output is None and sys.stdout.isatty() and not args.force:
        raise CliError("refusing to print a secret key on a terminal", EXIT_USAGE,
                       hint="write it to a file with -o FILE (created 0600), or pass --force")  # fmt: skip
    s = Session.of(args)
    with s.recording("key.export", args.output) as info:
        r = s.keystore.find(args.name)
        text = textkeys.secret_to_text(s.keystore.secret(r)) + "\n"
        info.update(key_ids=[r.id], detail={"name": r.name, "kind": r.kind, "secret": "yes"})
        if args.output is None:
            sys.stdout.write(text)
        else:
            with atomic_write(args.output, mode=0o600) as f:
                f.write(text.encode("ascii"))
    where = "stdout" if args.output is None else args.output
    print(safe(f"sealedckpt: warning: {where} holds the secret of key {r.name} ({r.id}): anyone who reads it can "
               "use the key; import it where it is needed and delete the copy"), file=sys.stderr)  # fmt: skip
    return EXIT_OK


def _key_from_text(text: str) -> Any:
    low = text.lower()
    try:
        if low.startswith(("sckpt1", textkeys.HRP_VERIFY + "1", textkeys.HRP_PQ_VERIFY + "1")):
            return textkeys.public_from_text(text)
        return textkeys.secret_from_text(text)
    except InvalidArgumentError as exc:
        raise CliError(
            f"cannot import: {exc}", EXIT_USAGE, hint="keys look like sckpt1..., sckpt-vk1... or SCKPT-...-KEY-1..."
        ) from None


def cmd_key_import(args: argparse.Namespace) -> int:
    s = Session.of(args)
    with s.recording("key.import", args.file) as info:
        if args.file in (None, "-"):
            text = sys.stdin.read(4096)
        else:
            try:
                text = Path(args.file).read_text(encoding="utf-8")
            except UnicodeDecodeError:
                hint = "keys look like sckpt1..., sckpt-vk1... or SCKPT-...-KEY-1..."
                raise CliError(f"{args.file}: not a key (not UTF-8 text)", EXIT_USAGE, hint=hint) from None
        rec = s.keystore.add(_key_from_text(text.strip()), args.name, default=args.default)
        info.update(path=None, key_ids=[rec.id], detail={"name": rec.name, "kind": rec.kind})
    print(f"imported {rec.kind} key {rec.name} (id {rec.id})" + ("" if rec.has_secret else ", public only"))
    return EXIT_OK


def cmd_key_rm(args: argparse.Namespace) -> int:
    s = Session.of(args)
    with s.recording("key.rm", None) as info:
        r = s.keystore.find(args.name)
        _check_unused(s, r, args.check or [], args.force)
        if not args.yes:
            if not sys.stdin.isatty():
                raise CliError(f"refusing to delete key {r.name!r} without --yes", EXIT_USAGE)
            prompt = (
                f"Delete {r.kind} key {r.name} ({r.id})? Files sealed only for it become unreadable"
                " (see --check DIR). [y/N] "
            )
            if input(prompt).strip().lower() not in ("y", "yes"):
                print("kept", file=sys.stderr)
                return EXIT_ERROR  # recorded as "ok", as a command that ran
        s.keystore.remove(r.id)
        info.update(key_ids=[r.id], detail={"name": r.name, "kind": r.kind})
    print(f"removed key {r.name} ({r.id})")
    return EXIT_OK


def _check_unused(s: Session, r: KeyRecord, paths: list[str], force: bool) -> None:
    """Refuse (unless ``force``) while sealed files under ``paths`` have a slot for key ``r``."""
    if not paths or r.kind in ("signing", "pq-signing"):
        return
    secret = s.keystore.secret(r) if r.kind in ("recipient", "pq-recipient") and r.has_secret else None
    naming, unreadable = files_naming(r.id, paths, secret)
    where = ", ".join(paths)
    for path in naming:
        print(safe(f"sealed to {r.name}: {path}"), file=sys.stderr)
    for path in unreadable:
        print(safe(f"sealedckpt: note: could not read {path}"), file=sys.stderr)
    print(f"{len(naming)} sealed file(s) under {safe(where)} still have a key slot for {safe(r.name)} ({r.id})",
          file=sys.stderr)  # fmt: skip
    if (naming or unreadable) and not force:
        what = (
            f"{len(naming)} sealed file(s) still need key {r.name!r}"
            if naming
            else f"{len(unreadable)} file(s) could not be checked"
        )
        raise CliError(
            f"refusing to delete it: {what}", EXIT_ERROR,
            hint=f"rewrap them first (`sealedckpt rewrap -r DIR --key NEW --with {r.name}`), or pass --force",
        )  # fmt: skip


def cmd_key_rotate(args: argparse.Namespace) -> int:
    s = Session.of(args)
    with s.recording("key.rotate", None) as info:
        protect = (
            read_passphrase(args, confirm=True, what="passphrase to protect the new key")
            if args.passphrase_protect
            else None
        )
        old, new = s.keystore.rotate(args.name, protect=protect)
        info.update(key_ids=[old.id, new.id], detail={"retired": old.name, "new": new.name})
    print(f"new {new.kind} key {new.name} (id {new.id}) is now the default; {old.name} ({old.id}) is retired")
    if new.kind == "symmetric":
        print(f"hint: re-wrap existing files with `sealedckpt rewrap FILES... --key {new.name}`", file=sys.stderr)
    return EXIT_OK


def cmd_key_default(args: argparse.Namespace) -> int:
    s = Session.of(args)
    with s.recording("key.default", None):
        r = s.keystore.set_default(args.name)
    print(f"{r.name} ({r.id}) is the default {r.kind} key")
    return EXIT_OK
