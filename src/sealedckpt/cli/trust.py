"""``sealedckpt trust ...``: trusted publishers (the CLI records these itself)."""

from __future__ import annotations

import argparse
import sys

from ..stores.trust import TrustStore
from .output import EXIT_OK, print_json, safe
from .parse import Session


def cmd_trust_add(args: argparse.Namespace) -> int:
    s = Session.of(args)
    with s.recording("trust.add", None) as info:
        key = s.verify_key(args.pubkey)
        pub = TrustStore().add(args.name, key)
        info.update(signer_ids=[key.key_id], detail={"name": pub.name})
    print(safe(f"trusting {pub.name}: {pub.public} (key id {key.key_id})"))
    return EXIT_OK


def cmd_trust_list(args: argparse.Namespace) -> int:
    pubs = TrustStore().publishers()
    if args.json:
        print_json([{"name": p.name, "public_key": p.public, "key_id": p.key.key_id, "added": p.added} for p in pubs])
    elif not pubs:
        print("no trusted publishers", file=sys.stderr)
    else:
        for p in pubs:
            print(safe(f"{p.key.key_id}  {p.name:<24}  {p.public}  added {p.added}"))
    return EXIT_OK


def cmd_trust_rm(args: argparse.Namespace) -> int:
    with Session.of(args).recording("trust.rm", None):
        p = TrustStore().remove(args.name)
    print(safe(f"no longer trusting {p.name} ({p.public})"))
    return EXIT_OK
