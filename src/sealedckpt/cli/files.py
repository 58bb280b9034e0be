"""``sealedckpt seal|unseal|rewrap|inspect|verify|sign``: single sealed files.

Each command resolves its arguments (recording a failure there itself), then makes one API
call, which records the operation.
"""

from __future__ import annotations

import argparse
import os

from .. import _remote, api
from ..errors import CliError, SealedCkptError
from . import dcp as dcp_cli
from .output import (
    EXIT_ERROR,
    EXIT_OK,
    EXIT_USAGE,
    bars,
    exit_code,
    print_error,
    print_json,
    print_verified,
    safe,
    signer_rows,
    when,
)
from .parse import Session, parse_date, parse_meta
from .walk import sealed_files


def cmd_seal(args: argparse.Namespace) -> int:
    s = Session.of(args)
    with s.recording("seal", args.input, success=False):
        keys = s.seal_keys(args) or None
        signers = s.signing_keys(args.sign or [], "--sign ")
        meta = parse_meta(args.meta or [])
        expires = parse_date(args.expires)
        if expires is not None and not signers:
            raise CliError("--expires dates a signed statement; it needs --sign", EXIT_USAGE)
    with bars("seal") as progress:
        summary = api.seal_file(args.input, args.output, key=keys, sign_with=signers, metadata=meta,
                                allow_pickle=args.allow_pickle, progress=progress, keystore=s.keystore,
                                audit=s.audit, expires_at=expires)  # fmt: skip
    if args.json:
        print_json({"output": args.output, "key_slots": summary.key_ids, "signers": summary.signer_ids,
                    "content_digest": None if summary.root is None else api.root_label(summary.root),
                    "bytes": summary.bytes_written})  # fmt: skip
    else:
        signed = f"; signed by {', '.join(summary.signer_ids)}" if signers else ""
        slots = ", ".join(summary.key_ids)
        print(
            safe(f"sealed {args.input} -> {args.output} ({summary.bytes_written:,} bytes; key slots {slots}{signed})")
        )
    return EXIT_OK


def cmd_unseal(args: argparse.Namespace) -> int:
    s = Session.of(args)
    with s.recording("open", args.input, success=False):
        keys = s.open_keys(args, args.key or [])
        trusted = s.trusted(args.trust)
    with bars("unseal") as progress:
        n = api.unseal_file(args.input, args.output, key=keys, trusted_signers=trusted, min_version=args.min_version,
                            expect_model=args.model, progress=progress, keystore=s.keystore, audit=s.audit,
                            allow_rollback=args.allow_rollback)  # fmt: skip
    print(safe(f"unsealed {args.input} -> {args.output} ({n:,} bytes, plain safetensors)"))
    return EXIT_OK


def cmd_rewrap(args: argparse.Namespace) -> int:
    s = Session.of(args)
    with s.recording("rewrap", None, success=False):
        add = s.seal_keys(args)
        if not add and not args.keep:
            raise CliError(
                "rewrap needs the new keys: --key, --to or --passphrase (or --keep with --remove-slot)", EXIT_USAGE
            )
        opener = s.open_keys(args, args.with_key or [], "--with ")
    paths = rewrap_targets(args.files, args.recursive)
    failures = 0
    last: BaseException | None = None
    for path in paths:
        try:
            with bars(f"rewrap {path}") as progress:
                labels = api.rewrap_file(path, key=opener, add=add or None, keep=args.keep,
                                         remove=args.remove_slot or [], progress=progress, keystore=s.keystore,
                                         audit=s.audit)  # fmt: skip
            print(safe(f"rewrapped {path}: key slots {', '.join(labels)}"))
        except (SealedCkptError, OSError) as exc:
            failures += 1
            print_error(exc, "" if getattr(exc, "filename", None) == path else f"{path}: ")
            last = exc
    if failures:
        raise CliError(f"{failures} of {len(paths)} file(s) not rewrapped", exit_code(last) if last else EXIT_ERROR)
    return EXIT_OK


def rewrap_targets(items: list[str], recursive: bool) -> list[str]:
    """The files ``rewrap`` works on: the named files, and with ``-r`` every ``*.sealed`` file under
    each named directory (symlinks skipped); a directory without ``-r`` is a usage error."""
    if not recursive:
        for item in items:
            if os.path.isdir(item):
                hint = f"rewrap every *.sealed file under it with `sealedckpt rewrap -r {item} ...`"
                raise CliError(f"{item} is a directory", EXIT_USAGE, hint=hint)
        return list(items)
    paths = list(sealed_files(items))
    if not paths:
        raise CliError(f"no *.sealed files under {', '.join(items)}", EXIT_ERROR, hint="check the path")
    return paths


def cmd_inspect(args: argparse.Namespace) -> int:
    if dcp_cli.is_dcp_dir(args.file):
        return dcp_cli.cmd_inspect(args)
    info = api.inspect(args.file)
    n_chunks = info.chunks
    if args.json:
        print_json({"file": args.file, "version": info.version, "payload_type": info.payload_type,
                    "payload_len": info.payload_len, "payload_header_len": info.head_len,
                    "file_size": info.file_size, "chunk_size": info.chunk_size, "chunks": n_chunks,
                    "metadata": info.metadata, "key_slots": info.key_slots,
                    "signatures": info.signatures, "signatures_verified": False})  # fmt: skip
        return EXIT_OK
    lines = [f"{args.file}: sealed checkpoint, format v{info.version}, {info.payload_type} payload",
             f"  payload     {info.payload_len:,} bytes in {n_chunks} chunk(s) of {info.chunk_size:,}"
             f" (its header: {info.head_len:,})",
             f"  file size   {info.file_size:,} bytes"]  # fmt: skip
    for slot in info.key_slots:
        lines.append(f"  key slot    {slot['type']}" + (f" (key id {slot['key_id']})" if "key_id" in slot else ""))
    for sig in info.signatures:
        at = f" at {when(int(str(sig['signed_at'])))}" if "signed_at" in sig else ""
        kind = f" ({sig['type']})" if "type" in sig else " (unreadable statement)"
        lines.append(f"  signature   {sig['alg']}{kind} key id {sig['key_id']}{at} (not verified)")
    lines.extend(f"  metadata    {k} = {v}" for k, v in info.metadata.items())
    for line in lines:
        print(safe(line))  # public metadata is anyone's text: no terminal escapes
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    if dcp_cli.is_dcp_dir(args.file):
        return dcp_cli.cmd_verify(args)
    s = Session.of(args)
    with s.recording("verify", args.file, success=False):
        trusted = s.trusted(args.trust)
        size = _remote.size(args.file) if _remote.is_url(args.file) else os.path.getsize(args.file)
    with bars("verify") as progress:
        res = api.verify(args.file, trusted_signers=trusted, progress=progress(size), min_version=args.min_version,
                         expect_model=args.model, audit=s.audit, allow_rollback=args.allow_rollback)  # fmt: skip
    signers = signer_rows(res.signers)
    trust_checked = any(r.trusted for r in res.signers)  # with a trust list, at least one signer is trusted
    digest = api.root_label(res.root)
    if args.json:
        print_json({"file": args.file, "ok": True, "content_digest": digest, "signers": signers,
                    "metadata": res.metadata, "trust_checked": trust_checked})  # fmt: skip
        return EXIT_OK
    print_verified(signers, trust_checked, "signed", "content digest " + digest, res.metadata,
                   f"{args.file}: every signature and every chunk verified")  # fmt: skip
    return EXIT_OK


def cmd_sign(args: argparse.Namespace) -> int:
    s = Session.of(args)
    with s.recording("sign", args.file, success=False):
        signers = s.signing_keys(args.key, "--key ")
        trusted = s.trusted(args.trust)
        expires = parse_date(args.expires)
    res = api.sign(args.file, signers, trusted_signers=trusted, audit=s.audit, statement=args.statement,
                   expires_at=expires)  # fmt: skip
    ids = ", ".join(signer.key_id for signer in res.signers)
    print(safe(f"signed {args.file}: content digest {api.root_label(res.root)}; signers now {ids}"))
    return EXIT_OK
