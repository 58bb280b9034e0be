"""The ``sealedckpt`` command line (also ``python -m sealedckpt``).

Results go to stdout; errors go to stderr as ``sealedckpt: error: ...`` plus ``hint: ...``.
Secrets are never taken from argv: passphrases come from a prompt, ``--passphrase-file FILE``
or stdin (``--passphrase-file -``); keys come from the keystore or from files.

Exit codes: 0 ok, 1 other error (I/O), 2 usage, 3 not a sealed file / unsafe input,
4 integrity failure, 5 signature failure, 6 key failure (no key, wrong key, keystore).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import getpass
import json
import mmap
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

from .. import __version__, api, container
from .._fs import atomic_write
from ..container import sniff
from ..crypto import Passphrase, RecipientKey, RecipientPublicKey, SigningKey, SymmetricKey, VerifyKey, textkeys
from ..errors import (
    CliError,
    DecryptionError,
    FormatError,
    IntegrityError,
    KeystoreError,
    SealedCkptError,
    SignatureError,
    UnsafePayloadError,
)
from ..payload import safetensors as payload
from ..stores import audit
from ..stores.audit import AuditError
from ..stores.backends import KeystoreNotice
from ..stores.keystore import KINDS, KeyRecord, Keystore, set_passphrase_provider
from ..stores.trust import TrustStore
from .audit import add_audit_parser
from .progress import Bar

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_FORMAT, EXIT_INTEGRITY, EXIT_SIGNATURE, EXIT_KEY = 0, 1, 2, 3, 4, 5, 6


def exit_code(exc: BaseException) -> int:
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


def _when(ts: int) -> str:
    return _dt.datetime.fromtimestamp(ts, tz=_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


AUDITED = {
    "seal": "seal", "unseal": "open", "rewrap": "rewrap", "verify": "verify", "sign": "sign",
    "seal-dir": "seal-dir", "verify-dir": "verify-dir", "unseal-dir": "open-dir", "sign-dir": "sign-dir",
    "key gen": "key.gen", "key import": "key.import", "key rm": "key.rm", "key rotate": "key.rotate",
    "key default": "key.default", "trust add": "trust.add", "trust rm": "trust.rm",
}  # fmt: skip


def _note(args: argparse.Namespace, path: str | None = None, **info: Any) -> None:
    """Details for this command's audit record (the CLI records every state-changing command)."""
    events: list[tuple[str | None, dict[str, Any]]] = args.__dict__.setdefault("audit_events", [])
    events.append((path, info))


def _command_name(args: argparse.Namespace) -> str:
    sub = getattr(args, "key_command", None) or getattr(args, "trust_command", None)
    return f"{args.command} {sub}" if sub else str(args.command)


def _command_path(args: argparse.Namespace) -> str | None:
    for attr in ("file", "input", "dir"):
        v = getattr(args, attr, None)
        if isinstance(v, str):
            return os.path.abspath(v)
    return None


def _record_audit(args: argparse.Namespace, outcome: str) -> None:
    op = AUDITED.get(_command_name(args))
    if op is None or not audit.enabled(True):
        return
    events = getattr(args, "audit_events", None) or [(_command_path(args), {})]
    for path, info in events:
        own = info.pop("outcome", None)  # an event that knows its own outcome (rewrap of many files)
        audit.record(op, path=path, outcome=own or outcome, **info)


def _signer_rows(signers: Sequence[container.Signer]) -> list[dict[str, Any]]:
    return [
        {"key_id": s.key_id, "public_key": textkeys.public_to_text(s.public_key), "signed_at": _when(s.signed_at),
         "trusted": s.trusted}
        for s in signers
    ]  # fmt: skip


def _print_verified(
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


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True))


# --- secrets from the user ------------------------------------------------------------------------


def _read_passphrase(args: argparse.Namespace, confirm: bool, what: str = "passphrase") -> Passphrase:
    """From --passphrase-file FILE (``-`` = stdin), else a prompt on a terminal, else stdin."""
    source = getattr(args, "passphrase_file", None)
    if source == "-" or (source is None and not sys.stdin.isatty()):
        text = sys.stdin.readline().rstrip("\r\n")
    elif source is not None:
        try:
            text = Path(source).read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise CliError(f"cannot read passphrase file: {exc.strerror}") from None
    else:
        text = getpass.getpass(f"Enter {what}: ")
        if confirm and getpass.getpass(f"Confirm {what}: ") != text:
            raise CliError("the passphrases do not match", EXIT_USAGE)
    if not text:
        raise CliError("empty passphrase", EXIT_USAGE)
    log2n = getattr(args, "work_factor", None)
    return Passphrase(text, log2n=log2n) if log2n else Passphrase(text)


def _keystore() -> Keystore:
    return Keystore()


def _secret(ks: Keystore, ref: str, args: argparse.Namespace) -> Any:
    return ks.secret(ks.find(ref))  # a protected key asks the passphrase provider set in main()


def _public_from_arg(ks: Keystore, ref: str) -> RecipientPublicKey | VerifyKey:
    """A public key given as text, as a file holding the text, or as a keystore name."""
    low = ref.strip().lower()
    if low.startswith((textkeys.HRP_RECIPIENT + "1", textkeys.HRP_VERIFY + "1")):
        try:
            return textkeys.public_from_text(ref)
        except ValueError as exc:
            raise CliError(f"invalid public key: {exc}", EXIT_USAGE) from None
    if os.path.isfile(ref):
        text = Path(ref).read_text(encoding="utf-8").strip()
        try:
            return textkeys.public_from_text(text)
        except ValueError as exc:
            raise CliError(f"{ref}: not a public key: {exc}", EXIT_USAGE) from None
    try:
        rec = ks.find(ref)
    except KeystoreError:
        rec = None
    if rec is not None:
        if rec.public is None:
            raise CliError(
                f"key {ref!r} is symmetric: it has no public key", EXIT_USAGE, hint="use --key for symmetric keys"
            )
        return ks.public(rec)
    raise CliError(
        f"not a public key, a file or a key name: {ref!r}",
        EXIT_USAGE,
        hint=f"public keys look like {textkeys.HRP_RECIPIENT}1... or {textkeys.HRP_VERIFY}1...",
    )


def _record_json(r: KeyRecord) -> dict[str, Any]:
    return {
        "id": r.id, "name": r.name, "kind": r.kind, "created": r.created, "store": r.backend,
        "public": r.public, "default": r.default, "retired": r.retired, "replaced_by": r.replaced_by,
        "protected": r.protected,
    }  # fmt: skip


@contextlib.contextmanager
def _bar(label: str, total: int) -> Iterator[Bar]:
    bar = Bar(label, total)
    try:
        yield bar
    finally:
        bar.close()


# --- key commands -----------------------------------------------------------------------------------


def cmd_key_gen(args: argparse.Namespace) -> int:
    ks = _keystore()
    protect = (
        _read_passphrase(args, confirm=True, what="passphrase to protect the key") if args.passphrase_protect else None
    )
    rec = ks.generate(args.kind, args.name, default=args.default, protect=protect)
    _note(args, key_ids=[rec.id], detail={"name": rec.name, "kind": rec.kind, "store": rec.backend})
    if args.json:
        _print_json(_record_json(rec))
    else:
        print(f"generated {rec.kind} key {rec.name} (id {rec.id}) in the {rec.backend} store"
              + (", default" if rec.default else ""))  # fmt: skip
        if rec.public:
            print(f"public key: {rec.public}")
    return EXIT_OK


def cmd_key_list(args: argparse.Namespace) -> int:
    records = _keystore().records()
    if args.json:
        _print_json([_record_json(r) for r in records])
        return EXIT_OK
    if not records:
        print("no keys", file=sys.stderr)
        print("hint: create one with `sealedckpt key gen --default`", file=sys.stderr)
        return EXIT_OK
    for r in records:
        flags = [f for f, on in (("default", r.default), ("retired", r.retired), ("protected", r.protected),
                                 ("public-only", not r.has_secret)) if on]  # fmt: skip
        print(f"{r.id}  {r.kind:<9}  {r.name:<24}  {r.backend:<7}  {' '.join(flags)}".rstrip())
    return EXIT_OK


def cmd_key_show(args: argparse.Namespace) -> int:
    r = _keystore().find(args.name)
    if args.json:
        _print_json(_record_json(r))
        return EXIT_OK
    for k, v in _record_json(r).items():
        if v not in (None, False):
            print(f"{k:<12} {v}")
    return EXIT_OK


def cmd_key_export_public(args: argparse.Namespace) -> int:
    ks = _keystore()
    r = ks.find(args.name)
    if r.public is None:
        raise CliError(f"key {r.name!r} is symmetric: it has no public half", EXIT_USAGE,
                       hint="share symmetric keys only through a secret channel")  # fmt: skip
    print(r.public)
    return EXIT_OK


def cmd_key_import(args: argparse.Namespace) -> int:
    ks = _keystore()
    if args.file in (None, "-"):
        text = sys.stdin.read(4096)
    else:
        text = Path(args.file).read_text(encoding="utf-8")
    text = text.strip()
    key: Any
    try:
        key = textkeys.public_from_text(text) if text.lower().startswith("sckpt1") or text.lower().startswith(
            textkeys.HRP_VERIFY + "1") else textkeys.secret_from_text(text)  # fmt: skip
    except ValueError as exc:
        raise CliError(
            f"cannot import: {exc}", EXIT_USAGE, hint="keys look like sckpt1..., sckpt-vk1... or SCKPT-...-KEY-1..."
        ) from None
    rec = ks.add(key, args.name, default=args.default)
    _note(args, key_ids=[rec.id], detail={"name": rec.name, "kind": rec.kind})
    print(f"imported {rec.kind} key {rec.name} (id {rec.id})" + ("" if rec.has_secret else ", public only"))
    return EXIT_OK


def cmd_key_rm(args: argparse.Namespace) -> int:
    ks = _keystore()
    r = ks.find(args.name)
    if not args.yes:
        if not sys.stdin.isatty():
            raise CliError(f"refusing to delete key {r.name!r} without --yes", EXIT_USAGE)
        answer = input(f"Delete {r.kind} key {r.name} ({r.id})? Files sealed only for it become unreadable. [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("kept", file=sys.stderr)
            return EXIT_ERROR
    ks.remove(r.id)
    _note(args, key_ids=[r.id], detail={"name": r.name, "kind": r.kind})
    print(f"removed key {r.name} ({r.id})")
    return EXIT_OK


def cmd_key_rotate(args: argparse.Namespace) -> int:
    ks = _keystore()
    protect = (
        _read_passphrase(args, confirm=True, what="passphrase to protect the new key")
        if args.passphrase_protect
        else None
    )
    old, new = ks.rotate(args.name, protect=protect)
    _note(args, key_ids=[old.id, new.id], detail={"retired": old.name, "new": new.name})
    print(f"new {new.kind} key {new.name} (id {new.id}) is now the default; {old.name} ({old.id}) is retired")
    if new.kind == "symmetric":
        print(f"hint: re-wrap existing files with `sealedckpt rewrap FILES... --key {new.name}`", file=sys.stderr)
    return EXIT_OK


def cmd_key_default(args: argparse.Namespace) -> int:
    r = _keystore().set_default(args.name)
    print(f"{r.name} ({r.id}) is the default {r.kind} key")
    return EXIT_OK


# --- file commands ----------------------------------------------------------------------------------


def _seal_keys(ks: Keystore, args: argparse.Namespace) -> list[container.SealKey]:
    keys: list[container.SealKey] = []
    for ref in args.key or []:
        k = _secret(ks, ref, args)
        if not isinstance(k, SymmetricKey):
            raise CliError(f"--key {ref}: not a symmetric key (use --to for recipients)", EXIT_USAGE)
        keys.append(k)
    for ref in args.to or []:
        pub = _public_from_arg(ks, ref)
        if not isinstance(pub, RecipientPublicKey):
            raise CliError(f"--to {ref}: not a recipient public key", EXIT_USAGE)
        keys.append(pub)
    if getattr(args, "passphrase", False):
        if keys:
            raise CliError("a passphrase must be the only key of a file (like age)", EXIT_USAGE)
        keys.append(_read_passphrase(args, confirm=True))
    return keys


def _open_keys(ks: Keystore, args: argparse.Namespace, refs: Sequence[str]) -> container.KeySource:
    if getattr(args, "open_passphrase", False):
        if getattr(args, "passphrase", False) and getattr(args, "passphrase_file", None):
            raise CliError("two passphrases (old and new) cannot come from one --passphrase-file", EXIT_USAGE,
                           hint="run it on a terminal and answer both prompts")  # fmt: skip
        return [_read_passphrase(args, confirm=False, what="current passphrase")]
    keys: list[container.OpenKey] = []
    for ref in refs:
        k = _secret(ks, ref, args)
        if not isinstance(k, (SymmetricKey, RecipientKey)):
            raise CliError(f"key {ref}: a signing key cannot open files", EXIT_USAGE)
        keys.append(k)
    for path in getattr(args, "identity", None) or []:
        try:
            ident = textkeys.secret_from_text(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CliError(f"--identity {path}: {exc}", EXIT_USAGE) from None
        if isinstance(ident, SigningKey):
            raise CliError(f"--identity {path}: a signing key cannot open files", EXIT_USAGE)
        keys.append(ident)
    if keys:
        return keys
    return api._load_keys(None)


def _parse_meta(items: Sequence[str]) -> dict[str, str]:
    meta: dict[str, str] = {}
    for item in items:
        k, sep, v = item.partition("=")
        if not sep or not k:
            raise CliError(f"--meta takes KEY=VALUE, got {item!r}", EXIT_USAGE)
        meta[k] = v
    return meta


def _head(path: str) -> tuple[bytes, bytes]:
    with open(path, "rb") as f:
        head = f.read(sniff.HEAD_SIZE)
        size = f.seek(0, os.SEEK_END)
        f.seek(max(0, size - sniff.TAIL_SIZE))
        return head, f.read(sniff.TAIL_SIZE)


def cmd_seal(args: argparse.Namespace) -> int:
    ks = _keystore()
    keys = _seal_keys(ks, args) or [api.default_key()]
    signers: list[SigningKey] = []
    for ref in args.sign or []:
        s = _secret(ks, ref, args)
        if not isinstance(s, SigningKey):
            raise CliError(f"--sign {ref}: not a signing key", EXIT_USAGE)
        signers.append(s)
    meta = _parse_meta(args.meta or [])
    kind = sniff.classify(*_head(args.input))
    if kind == "sealed":
        raise CliError(
            f"{args.input} is already sealed", EXIT_FORMAT, hint="use `sealedckpt rewrap` to change its keys"
        )
    if kind == "safetensors":
        summary = _seal_safetensors(args.input, args.output, keys, signers, meta)
    elif kind in sniff.LEGACY_KINDS:
        if not args.allow_pickle:
            raise CliError(
                f"{args.input} is a pickle-based file (torch.save, TorchScript or legacy); refusing to unpickle it",
                EXIT_FORMAT,
                hint="if you trust this file, convert it with --allow-pickle (it is unpickled with weights_only=True)",
            )
        summary = _seal_legacy(args.input, args.output, keys, signers, meta)
    else:
        raise CliError(
            f"{args.input}: not a safetensors or torch checkpoint file (content looks like: {kind})", EXIT_FORMAT
        )
    _note(args, os.path.abspath(args.output), digest=summary.digest, key_ids=summary.key_ids,
          signer_ids=summary.signer_ids, detail={"input": os.path.abspath(args.input)})  # fmt: skip
    if args.json:
        _print_json({"output": args.output, "key_slots": summary.key_ids, "signers": summary.signer_ids,
                     "content_digest": None if summary.root is None else container.root_label(summary.root),
                     "bytes": summary.bytes_written})  # fmt: skip
    else:
        signed = f"; signed by {', '.join(summary.signer_ids)}" if signers else ""
        slots = ", ".join(summary.key_ids)
        print(f"sealed {args.input} -> {args.output} ({summary.bytes_written:,} bytes; key slots {slots}{signed})")
    return EXIT_OK


def _seal_safetensors(
    src: str, dst: str, keys: list[container.SealKey], signers: list[SigningKey], meta: dict[str, str]
) -> container.SealSummary:
    """Stream a plain safetensors file into a sealed one; no torch, no copy of the tensor data."""
    with open(src, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(8)
        hlen = payload.header_len(head, size)
        raw = f.read(hlen)
        data_start = 8 + hlen
        layout = payload.reframe(raw, size - data_start)
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size > data_start else None
        try:
            view = memoryview(mm)[data_start:] if mm is not None else memoryview(b"")
            segments = [memoryview(layout.header), view]
            with _bar("seal", layout.payload_len) as bar, atomic_write(dst) as out:
                summary = container.seal(out, layout.payload_len, segments, keys=keys, signers=signers,
                                         metadata=meta, progress=bar)  # fmt: skip
            view.release()
            return summary
        finally:
            if mm is not None:
                mm.close()


def _seal_legacy(
    src: str, dst: str, keys: list[container.SealKey], signers: list[SigningKey], meta: dict[str, str]
) -> container.SealSummary:
    """The explicit, opt-in legacy converter: unpickles (weights_only=True) a trusted file."""
    import torch

    from ..payload.codec import plan_payload

    print(f"sealedckpt: warning: unpickling {src} (weights_only=True) because of --allow-pickle; "
          "do this only for files you trust", file=sys.stderr)  # fmt: skip
    obj = torch.load(src, map_location="cpu", weights_only=True)  # pickle-ok: explicit --allow-pickle opt-in
    plan = plan_payload(obj)
    with _bar("seal", plan.payload_len) as bar, atomic_write(dst) as out:
        return container.seal(out, plan.payload_len, plan.segments(), keys=keys, signers=signers, metadata=meta,
                              progress=bar)  # fmt: skip


def cmd_unseal(args: argparse.Namespace) -> int:
    ks = _keystore()
    keys = _open_keys(ks, args, args.key or [])
    trusted = _trust_args(ks, args.trust)
    with open(args.input, "rb") as f:
        reader = container.open_sealed(f, keys, trusted_signers=trusted)
        api.check_release(reader.content.metadata, args.min_version, args.model)
        _note(
            args,
            os.path.abspath(args.input),
            digest=container.content_digest(reader.trailer.root, reader.content.commitment),
            key_ids=[s for s in container.slot_ids(reader.header) if not s.startswith("#")],
            signer_ids=[s.key_id for s in reader.signers],
            detail={"output": os.path.abspath(args.output)},
        )
        with _bar("unseal", reader.content.payload_len) as bar, atomic_write(args.output) as out:
            n = reader.write_plaintext(out, bar)
    print(f"unsealed {args.input} -> {args.output} ({n:,} bytes, plain safetensors)")
    return EXIT_OK


def cmd_rewrap(args: argparse.Namespace) -> int:
    ks = _keystore()
    add = _seal_keys(ks, args)
    if not add and not args.keep:
        raise CliError(
            "rewrap needs the new keys: --key, --to or --passphrase (or --keep with --remove-slot)", EXIT_USAGE
        )
    opener = _open_keys(ks, args, args.with_key or [])
    failures = 0
    last: BaseException | None = None
    for path in args.files:
        try:
            size = os.path.getsize(path)
            with open(path, "rb") as f, _bar(f"rewrap {path}", size) as bar, atomic_write(path) as out:
                labels = container.rewrap(f, out, opener, add, keep=args.keep, remove=args.remove_slot or [],
                                          progress=bar)  # fmt: skip
            print(f"rewrapped {path}: key slots {', '.join(labels)}")
            _note(args, os.path.abspath(path), key_ids=[x for x in labels if not x.startswith("#")], outcome="ok")
        except (SealedCkptError, CliError, OSError, ValueError) as exc:
            failures += 1
            msg, hint = _message(exc)
            _note(args, os.path.abspath(path), outcome=f"error: {type(exc).__name__}")
            print(f"sealedckpt: error: {path}: {msg}", file=sys.stderr)
            if hint:
                print(f"hint: {hint}", file=sys.stderr)
            last = exc
    if failures:
        raise CliError(
            f"{failures} of {len(args.files)} file(s) not rewrapped", exit_code(last) if last else EXIT_ERROR
        )
    return EXIT_OK


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


def _trust_args(ks: Keystore, refs: Sequence[str] | None) -> list[VerifyKey] | None:
    """--trust values: a key (text, file, keystore or trust-store name) or ``store`` (all trusted)."""
    if not refs:
        from ..stores.trust import signature_required

        return TrustStore().keys() if signature_required() else None
    out: list[VerifyKey] = []
    for ref in refs:
        if ref == "store":
            out.extend(TrustStore().keys())
            continue
        named = next((p for p in TrustStore().publishers() if p.name == ref), None)
        out.append(named.key if named is not None else _verify_key(ks, ref))
    return out


def _verify_key(ks: Keystore, ref: str) -> VerifyKey:
    pub = _public_from_arg(ks, ref)
    if not isinstance(pub, VerifyKey):
        raise CliError(f"{ref}: a recipient key cannot verify signatures", EXIT_USAGE,
                       hint=f"verify keys look like {textkeys.HRP_VERIFY}1...")  # fmt: skip
    return pub


def cmd_verify(args: argparse.Namespace) -> int:
    ks = _keystore()
    trusted = _trust_args(ks, args.trust)
    size = os.path.getsize(args.file)
    with _bar("verify", size) as bar:
        res = api.verify(
            args.file, trusted_signers=trusted, progress=bar, min_version=args.min_version, expect_model=args.model
        )
    _note(
        args,
        os.path.abspath(args.file),
        digest=container.root_label(res.root),
        signer_ids=[s.key_id for s in res.signers],
    )
    signers = _signer_rows(res.signers)
    if args.json:
        _print_json(
            {
                "file": args.file,
                "ok": True,
                "content_digest": container.root_label(res.root),
                "signers": signers,
                "metadata": res.metadata,
                "trust_checked": trusted is not None,
            }
        )
        return EXIT_OK
    _print_verified(signers, trusted is not None, "signed", "content digest " + container.root_label(res.root),
                    res.metadata, f"{args.file}: every signature and every chunk verified")  # fmt: skip
    return EXIT_OK


# --- distribution ---------------------------------------------------------------------------------


def cmd_trust_add(args: argparse.Namespace) -> int:
    key = _verify_key(_keystore(), args.pubkey)
    pub = TrustStore().add(args.name, key)
    _note(args, signer_ids=[key.key_id], detail={"name": pub.name})
    print(f"trusting {pub.name}: {pub.public} (key id {key.key_id})")
    return EXIT_OK


def cmd_trust_list(args: argparse.Namespace) -> int:
    pubs = TrustStore().publishers()
    if args.json:
        _print_json([{"name": p.name, "public_key": p.public, "key_id": p.key.key_id, "added": p.added} for p in pubs])
    elif not pubs:
        print("no trusted publishers", file=sys.stderr)
    else:
        for p in pubs:
            print(f"{p.key.key_id}  {p.name:<24}  {p.public}  added {p.added}")
    return EXIT_OK


def cmd_trust_rm(args: argparse.Namespace) -> int:
    p = TrustStore().remove(args.name)
    print(f"no longer trusting {p.name} ({p.public})")
    return EXIT_OK


def _signing_keys(ks: Keystore, refs: Sequence[str], args: argparse.Namespace) -> list[SigningKey]:
    out = []
    for ref in refs:
        s = _secret(ks, ref, args)
        if not isinstance(s, SigningKey):
            raise CliError(f"{ref}: not a signing key", EXIT_USAGE)
        out.append(s)
    return out


def cmd_sign(args: argparse.Namespace) -> int:
    ks = _keystore()
    signers = _signing_keys(ks, args.key, args)
    trusted = _trust_args(ks, args.trust) if args.trust else None
    res = api.sign(args.file, signers, trusted_signers=trusted)
    _note(
        args, os.path.abspath(args.file), digest=container.root_label(res.root), signer_ids=[s.key_id for s in signers]
    )
    ids = ", ".join(s.key_id for s in res.signers)
    print(f"signed {args.file}: content digest {container.root_label(res.root)}; signers now {ids}")
    return EXIT_OK


def cmd_seal_dir(args: argparse.Namespace) -> int:
    from ..release import directory as distdir

    ks = _keystore()
    keys = _seal_keys(ks, args) or [api.default_key()]
    signers = _signing_keys(ks, args.sign or [], args)
    entries = distdir.seal_dir(
        args.input, args.output, keys=keys, signers=signers, keep_public=args.keep_public,
        metadata=_parse_meta(args.meta or []),
    )  # fmt: skip
    manifest = distdir.verify_dir(args.output, check_files=False)
    _note(args, os.path.abspath(args.output), digest=f"sha256:{manifest.manifest_sha256}",
          key_ids=[getattr(k, "key_id", "passphrase") for k in keys], signer_ids=[s.key_id for s in signers],
          detail={"input": os.path.abspath(args.input), "files": str(len(entries))})  # fmt: skip
    if args.json:
        _print_json({"output": args.output, "files": [e.__dict__ for e in entries], "signed": bool(signers)})
        return EXIT_OK
    for e in entries:
        print(f"{e.kind:<11}  {e.source} -> {e.path}")
    print(f"sealed {len(entries)} file(s) into {args.output}" + ("; manifest signed" if signers else ""))
    if not signers:
        print("hint: without --sign nobody can check who published this directory", file=sys.stderr)
    return EXIT_OK


def cmd_verify_dir(args: argparse.Namespace) -> int:
    from ..release import directory as distdir

    trusted = _trust_args(_keystore(), args.trust)
    res = distdir.verify_dir(args.dir, trusted_signers=trusted)
    _note(args, os.path.abspath(args.dir), digest=f"sha256:{res.manifest_sha256}",
          signer_ids=[s.key_id for s in res.signers])  # fmt: skip
    api.check_release(res.metadata, args.min_version, args.model)
    if not res.signers:
        raise CliError("the manifest is not signed: nothing proves who published it", EXIT_SIGNATURE,
                       hint="sign it with `sealedckpt sign-dir DIR --key NAME`")  # fmt: skip
    signers = _signer_rows(res.signers)
    if args.json:
        _print_json({"dir": args.dir, "ok": True, "manifest_sha256": res.manifest_sha256, "signers": signers,
                     "metadata": res.metadata, "files": [e.__dict__ for e in res.entries],
                     "trust_checked": trusted is not None})  # fmt: skip
        return EXIT_OK
    ok = f"{args.dir}: {len(res.entries)} file(s), exactly as listed, every digest verified"
    _print_verified(
        signers, trusted is not None, "manifest signed", f"manifest sha256:{res.manifest_sha256}", res.metadata, ok
    )
    return EXIT_OK


def cmd_sign_dir(args: argparse.Namespace) -> int:
    from ..release import directory as distdir

    ks = _keystore()
    signers = _signing_keys(ks, args.key, args)
    res = distdir.verify_dir(args.dir, trusted_signers=_trust_args(ks, args.trust) if args.trust else None)
    distdir.add_dir_signatures(args.dir, signers)
    _note(
        args, os.path.abspath(args.dir), digest=f"sha256:{res.manifest_sha256}", signer_ids=[s.key_id for s in signers]
    )
    print(f"signed the manifest of {args.dir} with {', '.join(s.key_id for s in signers)}")
    return EXIT_OK


def cmd_unseal_dir(args: argparse.Namespace) -> int:
    from ..release import directory as distdir

    ks = _keystore()
    keys = _open_keys(ks, args, args.key or [])
    trusted = _trust_args(ks, args.trust)
    res = distdir.verify_dir(args.dir, trusted_signers=trusted, check_files=False)
    _note(args, os.path.abspath(args.dir), digest=f"sha256:{res.manifest_sha256}",
          signer_ids=[s.key_id for s in res.signers], detail={"output": os.path.abspath(args.output)})  # fmt: skip
    api.check_release(res.metadata, args.min_version, args.model)
    written = distdir.unseal_dir(args.dir, args.output, keys, trusted_signers=trusted)
    print(f"unsealed {len(written)} file(s) into {args.output}")
    return EXIT_OK


# --- parser -------------------------------------------------------------------------------------


def _passphrase_source(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--passphrase-file", metavar="FILE", help="read passphrases from FILE ('-' = stdin), never argv")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sealedckpt", description="Encrypted, signed, pickle-free PyTorch checkpoints.")
    p.add_argument("--version", action="version", version=f"sealedckpt {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    key = sub.add_parser("key", help="manage keys in the keystore").add_subparsers(
        dest="key_command", required=True, metavar="ACTION"
    )
    sp = key.add_parser("gen", help="generate a key")
    sp.add_argument("--name")
    sp.add_argument("--kind", choices=KINDS, default="symmetric")
    sp.add_argument("--default", action="store_true", help="make it the default key of its kind")
    sp.add_argument("--passphrase-protect", action="store_true", help="encrypt the stored key under a passphrase")
    sp.add_argument("--json", action="store_true")
    _passphrase_source(sp)
    sp.set_defaults(func=cmd_key_gen)
    sp = key.add_parser("list", help="list keys (public facts only)")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_key_list)
    sp = key.add_parser("show", help="show one key's public facts")
    sp.add_argument("name")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_key_show)
    sp = key.add_parser("export-public", help="print a recipient or signing key's public half")
    sp.add_argument("name")
    sp.set_defaults(func=cmd_key_export_public)
    sp = key.add_parser("import", help="import a key (secret or public text form) from FILE or stdin")
    sp.add_argument("name")
    sp.add_argument("file", nargs="?", help="file holding the key; '-' or absent: stdin")
    sp.add_argument("--default", action="store_true")
    sp.set_defaults(func=cmd_key_import)
    sp = key.add_parser("rm", help="delete a key and its secret")
    sp.add_argument("name")
    sp.add_argument("--yes", action="store_true", help="do not ask")
    sp.set_defaults(func=cmd_key_rm)
    sp = key.add_parser("rotate", help="new key of the same kind becomes the default; the old one is retired")
    sp.add_argument("name")
    sp.add_argument("--passphrase-protect", action="store_true")
    _passphrase_source(sp)
    sp.set_defaults(func=cmd_key_rotate)
    sp = key.add_parser("default", help="make a key the default of its kind")
    sp.add_argument("name")
    sp.set_defaults(func=cmd_key_default)

    sp = sub.add_parser("seal", help="seal a safetensors file (or, with --allow-pickle, a trusted torch.save file)")
    sp.add_argument("input")
    sp.add_argument("-o", "--output", required=True)
    sp.add_argument("--key", action="append", metavar="NAME", help="symmetric key from the keystore; repeatable")
    sp.add_argument(
        "--to", action="append", metavar="PUBKEY", help="recipient public key, file or key name; repeatable"
    )
    sp.add_argument("--passphrase", action="store_true", help="seal with a passphrase (alone)")
    sp.add_argument("--work-factor", type=int, metavar="LOG2N", help="scrypt work factor for --passphrase (default 18)")
    sp.add_argument("--sign", action="append", metavar="NAME", help="signing key from the keystore")
    sp.add_argument("--meta", action="append", metavar="K=V", help="public, authenticated metadata")
    sp.add_argument("--allow-pickle", action="store_true", help="convert a TRUSTED torch.save file (unpickles it)")
    sp.add_argument("--json", action="store_true")
    _passphrase_source(sp)
    sp.set_defaults(func=cmd_seal)

    sp = sub.add_parser("unseal", help="decrypt to a plain safetensors file")
    sp.add_argument("input")
    sp.add_argument("-o", "--output", required=True)
    sp.add_argument(
        "--key", action="append", metavar="NAME", help="key from the keystore (default: look up the file's slots)"
    )
    sp.add_argument("--identity", action="append", metavar="FILE", help="file holding a secret key")
    sp.add_argument("--passphrase", dest="open_passphrase", action="store_true", help="open with a passphrase")
    _trust_options(sp)
    _passphrase_source(sp)
    sp.set_defaults(func=cmd_unseal)

    sp = sub.add_parser("rewrap", help="change who can open files, without re-encrypting or re-signing")
    sp.add_argument("files", nargs="+", metavar="FILE")
    sp.add_argument("--key", action="append", metavar="NAME", help="new symmetric key slot")
    sp.add_argument("--to", action="append", metavar="PUBKEY", help="new recipient slot")
    sp.add_argument("--passphrase", action="store_true", help="new passphrase slot (alone)")
    sp.add_argument("--work-factor", type=int, metavar="LOG2N")
    sp.add_argument("--keep", action="store_true", help="keep the existing slots (default: replace them)")
    sp.add_argument("--remove-slot", action="append", metavar="ID", help="with --keep: drop this slot (see inspect)")
    sp.add_argument("--with", dest="with_key", action="append", metavar="NAME", help="key that opens the files now")
    sp.add_argument("--identity", action="append", metavar="FILE", help="file holding a key that opens the files now")
    sp.add_argument(
        "--with-passphrase", dest="open_passphrase", action="store_true", help="the files are sealed with a passphrase"
    )
    _passphrase_source(sp)
    sp.set_defaults(func=cmd_rewrap)

    sp = sub.add_parser("inspect", help="show a sealed file's public header (no key needed)")
    sp.add_argument("file")
    sp.add_argument("--json", action="store_true", help="machine-readable output")
    sp.set_defaults(func=cmd_inspect)

    sp = sub.add_parser("verify", help="check signatures and every chunk without a decryption key")
    sp.add_argument("file")
    _trust_options(sp)
    sp.add_argument("--json", action="store_true", help="machine-readable output")
    sp.set_defaults(func=cmd_verify)

    sp = sub.add_parser("sign", help="add a (counter-)signature to a sealed file; no decryption key needed")
    sp.add_argument("file")
    sp.add_argument("--key", action="append", required=True, metavar="NAME", help="signing key from the keystore")
    sp.add_argument(
        "--trust", action="append", metavar="PUBKEY", help="require an existing signature by this key first"
    )
    _passphrase_source(sp)
    sp.set_defaults(func=cmd_sign)

    trust = sub.add_parser("trust", help="manage trusted publishers").add_subparsers(
        dest="trust_command", required=True, metavar="ACTION"
    )
    sp = trust.add_parser("add", help="trust a publisher's verify key")
    sp.add_argument("name")
    sp.add_argument("pubkey", help="sckpt-vk1..., a file holding it, or a keystore signing key name")
    sp.set_defaults(func=cmd_trust_add)
    sp = trust.add_parser("list", help="list trusted publishers")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_trust_list)
    sp = trust.add_parser("rm", help="stop trusting a publisher")
    sp.add_argument("name")
    sp.set_defaults(func=cmd_trust_rm)

    sp = sub.add_parser("seal-dir", help="seal a model directory (shards, config, tokenizer) with a signed manifest")
    sp.add_argument("input")
    sp.add_argument("-o", "--output", required=True)
    sp.add_argument("--key", action="append", metavar="NAME")
    sp.add_argument("--to", action="append", metavar="PUBKEY")
    sp.add_argument("--sign", action="append", metavar="NAME")
    sp.add_argument("--meta", action="append", metavar="K=V", help="public metadata, e.g. model=NAME version=N")
    sp.add_argument(
        "--keep-public", action="store_true", help="copy non-safetensors files (config, tokenizer) as they are"
    )
    sp.add_argument("--json", action="store_true")
    _passphrase_source(sp)
    sp.set_defaults(func=cmd_seal_dir)

    sp = sub.add_parser("verify-dir", help="check a sealed directory's manifest and every file, no key needed")
    sp.add_argument("dir")
    _trust_options(sp)
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_verify_dir)

    sp = sub.add_parser("sign-dir", help="add a (counter-)signature to a sealed directory's manifest")
    sp.add_argument("dir")
    sp.add_argument("--key", action="append", required=True, metavar="NAME")
    sp.add_argument("--trust", action="append", metavar="PUBKEY", help="require an existing trusted signature first")
    _passphrase_source(sp)
    sp.set_defaults(func=cmd_sign_dir)

    sp = sub.add_parser("unseal-dir", help="verify and decrypt a sealed directory")
    sp.add_argument("dir")
    sp.add_argument("-o", "--output", required=True)
    sp.add_argument("--key", action="append", metavar="NAME")
    sp.add_argument("--identity", action="append", metavar="FILE")
    sp.add_argument("--passphrase", dest="open_passphrase", action="store_true", help="open with a passphrase")
    _trust_options(sp)
    _passphrase_source(sp)
    sp.set_defaults(func=cmd_unseal_dir)

    add_audit_parser(sub)
    return p


def _trust_options(sp: argparse.ArgumentParser) -> None:
    sp.add_argument(
        "--trust", action="append", metavar="PUBKEY",
        help="require a signature by this key (sckpt-vk1..., file, key or publisher name, or 'store'); repeatable",
    )  # fmt: skip
    sp.add_argument("--min-version", type=int, metavar="N", help="refuse a public 'version' below N (rollback)")
    sp.add_argument("--model", metavar="NAME", help="require the public 'model' metadata to be NAME")


def _message(exc: BaseException) -> tuple[str, str | None]:
    hint = getattr(exc, "hint", None)
    msg = str(exc)
    if isinstance(exc, SealedCkptError) and hint and msg.endswith(f" (hint: {hint})"):
        msg = msg[: -len(f" (hint: {hint})")]
    return msg, hint


def _fail(exc: BaseException, as_json: bool) -> NoReturn:
    code = exit_code(exc)
    msg, hint = _message(exc)
    if as_json:
        _print_json({"ok": False, "error": msg, "kind": type(exc).__name__, "exit_code": code})
    print(f"sealedckpt: error: {msg}", file=sys.stderr)
    if hint:
        print(f"hint: {hint}", file=sys.stderr)
    raise SystemExit(code)


def _show_notice(message: Warning | str, category: type[Warning], *_: object, **__: object) -> None:
    print(f"sealedckpt: note: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    set_passphrase_provider(lambda rec: _read_passphrase(args, confirm=False, what=f"passphrase for key {rec.name}"))
    with warnings.catch_warnings(), audit.cli_scope():
        warnings.simplefilter("once", KeystoreNotice)
        warnings.showwarning = _show_notice
        try:
            code = int(args.func(args))
            _record_audit(args, "ok")
            return code
        except (SealedCkptError, CliError, OSError, ValueError) as exc:
            with contextlib.suppress(SealedCkptError, OSError):
                _record_audit(args, f"error: {type(exc).__name__}")
            _fail(exc, bool(getattr(args, "json", False)))
        except KeyboardInterrupt:
            print("sealedckpt: error: interrupted", file=sys.stderr)
            return 130
        finally:
            set_passphrase_provider(None)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
