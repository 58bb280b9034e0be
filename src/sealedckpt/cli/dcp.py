"""``sealedckpt inspect|verify DIR`` for a sealed DCP checkpoint directory (no key, no torch)."""

from __future__ import annotations

import argparse

from .. import dcp
from ..errors import CliError
from .output import EXIT_OK, EXIT_USAGE, print_json, print_verified, safe, signer_rows, when
from .parse import Session


def is_dcp_dir(path: str) -> bool:
    return dcp.is_dcp_dir(path)


def cmd_inspect(args: argparse.Namespace) -> int:
    info, files = dcp.inspect(args.file)
    if args.json:
        print_json({"dir": args.file, "kind": "dcp", "version": info.version, "metadata_file_size": info.file_size,
                    "key_slots": info.key_slots, "signatures": info.signatures, "signatures_verified": False,
                    "files": [f.__dict__ for f in files]})  # fmt: skip
        return EXIT_OK
    lines = [f"{args.file}: sealed DCP checkpoint, format v{info.version}, {len(files)} data file(s)"]
    for slot in info.key_slots:
        lines.append(f"  key slot    {slot['type']}" + (f" (key id {slot['key_id']})" if "key_id" in slot else ""))
    for sig in info.signatures:
        lines.append(f"  signature   key id {sig['key_id']} at {when(int(str(sig['signed_at'])))} (not verified)")
    lines.extend(f"  data file   {f.name}  {f.size:,} bytes  {f.root}" for f in files)
    for line in lines:
        print(safe(line))
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    s = Session.of(args)
    with s.recording("verify", args.file) as info:
        if args.min_version is not None or args.model is not None:
            raise CliError("--min-version / --model do not apply to a DCP checkpoint directory", EXIT_USAGE,
                           hint="drop them; a DCP checkpoint carries no release metadata")  # fmt: skip
        res = dcp.verify(args.file, trusted_signers=s.trusted(args.trust))
        info.update(digest=res.root, signer_ids=[x.key_id for x in res.signers])
    signers = signer_rows(res.signers)
    trust_checked = any(r.trusted for r in res.signers)
    if args.json:
        print_json({"dir": args.file, "kind": "dcp", "ok": True, "content_digest": res.root, "signers": signers,
                    "metadata": res.metadata, "files": [f.__dict__ for f in res.files],
                    "trust_checked": trust_checked})  # fmt: skip
        return EXIT_OK
    ok = f"{args.file}: metadata and {len(res.files)} data file(s), exactly as listed, every chunk verified"
    print_verified(signers, trust_checked, "metadata signed", "metadata content digest " + res.root, res.metadata, ok)
    return EXIT_OK
