"""``sealedckpt seal-dir|verify-dir|sign-dir|unseal-dir``: sealed model directories."""

from __future__ import annotations

import argparse
import sys

from .. import api
from ..errors import CliError
from .output import EXIT_OK, EXIT_USAGE, print_json, print_verified, safe, signer_rows
from .parse import Session, parse_date, parse_meta


def cmd_seal_dir(args: argparse.Namespace) -> int:
    s = Session.of(args)
    with s.recording("seal-dir", args.input, success=False):
        keys = s.seal_keys(args) or None
        signers = s.signing_keys(args.sign or [], "--sign ")
        meta = parse_meta(args.meta or [])
        expires = parse_date(args.expires)
        if expires is not None and not signers:
            raise CliError("--expires dates a signed statement; it needs --sign", EXIT_USAGE)
    entries = api.seal_dir(args.input, args.output, key=keys, sign_with=signers, keep_public=args.keep_public,
                           metadata=meta, keystore=s.keystore, audit=s.audit, expires_at=expires)  # fmt: skip
    if args.json:
        print_json({"output": args.output, "files": [e.__dict__ for e in entries], "signed": bool(signers)})
        return EXIT_OK
    for e in entries:
        print(safe(f"{e.kind:<11}  {e.source} -> {e.path}"))
    print(safe(f"sealed {len(entries)} file(s) into {args.output}" + ("; manifest signed" if signers else "")))
    if not signers:
        print("hint: without --sign nobody can check who published this directory", file=sys.stderr)
    return EXIT_OK


def cmd_verify_dir(args: argparse.Namespace) -> int:
    s = Session.of(args)
    with s.recording("verify-dir", args.dir, success=False):
        trusted = s.trusted(args.trust)
    res = api.verify_dir(args.dir, trusted_signers=trusted, min_version=args.min_version, expect_model=args.model,
                         require_signed=True, audit=s.audit, allow_rollback=args.allow_rollback)  # fmt: skip
    signers = signer_rows(res.signers)
    trust_checked = any(r.trusted for r in res.signers)  # with a trust list, at least one signer is trusted
    if args.json:
        print_json({"dir": args.dir, "ok": True, "manifest_sha256": res.manifest_sha256, "signers": signers,
                    "metadata": res.metadata, "files": [e.__dict__ for e in res.entries],
                    "trust_checked": trust_checked})  # fmt: skip
        return EXIT_OK
    ok = f"{args.dir}: {len(res.entries)} file(s), exactly as listed, every digest verified"
    print_verified(
        signers, trust_checked, "manifest signed", f"manifest sha256:{res.manifest_sha256}", res.metadata, ok
    )
    return EXIT_OK


def cmd_sign_dir(args: argparse.Namespace) -> int:
    s = Session.of(args)
    with s.recording("sign-dir", args.dir, success=False):
        signers = s.signing_keys(args.key, "--key ")
        trusted = s.trusted(args.trust)
        expires = parse_date(args.expires)
    api.sign_dir(args.dir, signers, trusted_signers=trusted, audit=s.audit, statement=args.statement,
                 expires_at=expires)  # fmt: skip
    print(safe(f"signed the manifest of {args.dir} with {', '.join(signer.key_id for signer in signers)}"))
    return EXIT_OK


def cmd_unseal_dir(args: argparse.Namespace) -> int:
    s = Session.of(args)
    with s.recording("open-dir", args.dir, success=False):
        keys = s.open_keys(args, args.key or [])
        trusted = s.trusted(args.trust)
    written = api.unseal_dir(args.dir, args.output, key=keys, trusted_signers=trusted, min_version=args.min_version,
                             expect_model=args.model, keystore=s.keystore, audit=s.audit,
                             allow_rollback=args.allow_rollback)  # fmt: skip
    print(safe(f"unsealed {len(written)} file(s) into {args.output}"))
    return EXIT_OK
