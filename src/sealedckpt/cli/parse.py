"""Turning arguments into keys, trust lists, metadata and secrets (never from argv).

Passphrases come from ``--passphrase-file FILE`` (``-`` = stdin), else a prompt on a terminal,
else stdin; keys come from the keystore or from files. A key reference is a path only when it
contains a ``/`` (``./pub.txt``); a bare word is a key name (and one that is also a file in the
working directory is refused as ambiguous).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import getpass
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NoReturn

from .. import Passphrase, RecipientKey, RecipientPublicKey, SigningKey, SymmetricKey, VerifyKey
from ..crypto import textkeys
from ..errors import CliError, InvalidArgumentError, KeystoreError
from ..stores.audit import AuditLog
from ..stores.keystore import KeyRecord, Keystore
from ..stores.trust import TrustStore
from .output import EXIT_USAGE

SealKey = SymmetricKey | RecipientPublicKey | Passphrase
OpenKey = SymmetricKey | RecipientKey | Passphrase


def read_passphrase(args: argparse.Namespace, confirm: bool, what: str = "passphrase") -> Passphrase:
    """From --passphrase-file FILE (``-`` = stdin), else a prompt on a terminal, else stdin."""
    source = getattr(args, "passphrase_file", None)
    if source == "-" or (source is None and not sys.stdin.isatty()):
        text = sys.stdin.readline().rstrip("\r\n")
    elif source is not None:
        try:
            text = Path(source).read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise CliError(f"cannot read passphrase file: {getattr(exc, 'strerror', None) or exc}") from None
    else:
        text = getpass.getpass(f"Enter {what}: ")
        if confirm and getpass.getpass(f"Confirm {what}: ") != text:
            raise CliError("the passphrases do not match", EXIT_USAGE)
    if not text:
        raise CliError("empty passphrase", EXIT_USAGE)
    log2n = getattr(args, "work_factor", None)
    return Passphrase(text, log2n=log2n) if log2n else Passphrase(text)


@dataclass(frozen=True)
class Session:
    """One command's keystore (asking for key passphrases as ``args`` says) and audit log."""

    keystore: Keystore
    audit: AuditLog | None

    @classmethod
    def of(cls, args: argparse.Namespace, *, audited: bool = True) -> Session:
        """The session of a command; ``audited=False`` for commands that record nothing."""

        def ask(rec: KeyRecord) -> Passphrase:
            return read_passphrase(args, confirm=False, what=f"passphrase for key {rec.name}")

        ks = Keystore(passphrase=ask)
        return cls(ks, AuditLog.from_env(default=True, keystore=ks) if audited else None)

    @contextlib.contextmanager
    def recording(self, op: str, path: str | None, *, success: bool = True) -> Iterator[dict[str, Any]]:
        """Record ``op`` with its outcome (only a failure unless ``success``); the caller fills
        the yielded dict with the record's fields (``path`` there replaces ``path``)."""
        info: dict[str, Any] = {}
        if self.audit is None:
            yield info
            return
        try:
            yield info
        except Exception as exc:
            with contextlib.suppress(Exception):
                self.audit.record(op, **{"path": path, **info, "outcome": f"error: {type(exc).__name__}"})
            raise
        if success:
            self.audit.record(op, **{"path": path, **info, "outcome": "ok"})

    def secret(self, ref: str, option: str = "") -> Any:
        """The secret key named ``ref`` in the keystore (a protected one asks for its passphrase);
        a path is refused: only ``--identity`` reads secret keys from files."""
        if is_path(ref):
            raise CliError(
                f"{option}{ref}: a path, but this option takes a keystore name or key id", EXIT_USAGE,
                hint="import the key with `sealedckpt key import NAME FILE` (or pass it as --identity)",
            )  # fmt: skip
        rec = self.keystore.find(ref) if not os.path.isfile(ref) else self._bare_file(ref, option)
        return self.keystore.secret(rec)

    def public(self, ref: str, option: str = "") -> RecipientPublicKey | VerifyKey:
        """A public key given as text (``sckpt1...``, ``sckpt-vk1...``), as a path holding the text
        (it must contain a ``/``: ``./NAME``), or as a keystore name (a bare word, never a file)."""
        if (
            ref.strip()
            .lower()
            .startswith((textkeys.HRP_RECIPIENT + "1", textkeys.HRP_VERIFY + "1", textkeys.HRP_PQ_VERIFY + "1"))
        ):
            try:
                return textkeys.public_from_text(ref)
            except InvalidArgumentError as exc:
                raise CliError(f"invalid public key: {exc}", EXIT_USAGE) from None
        if is_path(ref):
            try:
                text = Path(ref).read_text(encoding="utf-8").strip()
                return textkeys.public_from_text(text)
            except (OSError, UnicodeDecodeError) as exc:
                raise CliError(f"{option}{ref}: cannot read the key file: {getattr(exc, 'strerror', None) or exc}",
                               EXIT_USAGE) from None  # fmt: skip
            except InvalidArgumentError as exc:
                raise CliError(f"{ref}: not a public key: {exc}", EXIT_USAGE) from None
        return self._public_record(ref, option)

    def _bare_file(self, ref: str, option: str, known: bool | None = None) -> NoReturn:
        """A bare word that is also a file in the working directory: refused, either way."""
        if known is None:
            try:
                self.keystore.find(ref)
                known = True
            except KeystoreError:
                known = False
        if known:
            raise CliError(f"{option}{ref!r} is both a key name and a file in the current directory", EXIT_USAGE,
                           hint=f"write ./{ref} for the file, or use the key's id (`sealedckpt key list`)")  # fmt: skip
        raise CliError(f"{option}no key named {ref!r} (a file of that name is read only as ./{ref})", EXIT_USAGE,
                       hint=f"a bare word is a key name; write ./{ref} to use the file")  # fmt: skip

    def _public_record(self, ref: str, option: str) -> RecipientPublicKey | VerifyKey:
        if os.path.isfile(ref):
            self._bare_file(ref, option)
        try:
            rec = self.keystore.find(ref)
        except KeystoreError:
            rec = None
        if rec is not None:
            if rec.public is None:
                raise CliError(f"key {ref!r} is symmetric: it has no public key", EXIT_USAGE,
                               hint="use --key for symmetric keys")  # fmt: skip
            return self.keystore.public(rec)
        raise CliError(
            f"not a public key, a file or a key name: {ref!r}",
            EXIT_USAGE,
            hint=f"public keys look like {textkeys.HRP_RECIPIENT}1..., {textkeys.HRP_PQ_RECIPIENT}1... (recipients), "
            f"{textkeys.HRP_VERIFY}1... or {textkeys.HRP_PQ_VERIFY}1... (signers)",
        )

    def verify_key(self, ref: str, option: str = "") -> VerifyKey:
        """A verify key given as text, a path or a keystore signing key name."""
        pub = self.public(ref, option)
        if not isinstance(pub, VerifyKey):
            raise CliError(f"{ref}: a recipient key cannot verify signatures", EXIT_USAGE,
                           hint=f"verify keys look like {textkeys.HRP_VERIFY}1...")  # fmt: skip
        return pub

    def trusted(self, refs: Sequence[str] | None) -> list[VerifyKey] | Literal["store"] | None:
        """--trust values: keys (text, path, keystore or trust-store name), or ``store`` alone (the
        trust store and its policy); None without --trust (the API then applies its default)."""
        if not refs:
            return None
        if "store" in refs:
            if len(refs) > 1:
                raise CliError("--trust store applies the stored policy; it cannot be mixed with other --trust keys",
                               EXIT_USAGE, hint="give either --trust store or a list of keys")  # fmt: skip
            TrustStore().policy()  # an empty or damaged store fails here, before any work
            return "store"
        out: list[VerifyKey] = []
        for ref in refs:
            named = None if is_path(ref) else next((p for p in TrustStore().publishers() if p.name == ref), None)
            if named is not None and os.path.isfile(ref):
                self._bare_file(ref, "--trust ", known=True)
            if named is not None and named.revoked:
                raise CliError(f"--trust {ref}: that key is revoked", EXIT_USAGE, hint="see `sealedckpt trust show`")
            key = named.key if named is not None else self.verify_key(ref, "--trust ")
            if not isinstance(key, VerifyKey):
                raise CliError(f"--trust {ref}: a {named.kind if named else '?'} key; use --trust store", EXIT_USAGE)
            out.append(key)
        return out

    def signing_keys(self, refs: Sequence[str], option: str = "") -> list[SigningKey]:
        """Signing keys from the keystore (``option``, e.g. ``--sign ``, prefixes errors)."""
        out = []
        for ref in refs:
            s = self.secret(ref, option)
            if not isinstance(s, SigningKey):
                raise CliError(f"{option}{ref}: not a signing key", EXIT_USAGE)
            out.append(s)
        return out

    def seal_keys(self, args: argparse.Namespace) -> list[SealKey]:
        """The keys to seal for: --key, --to, or --passphrase (alone); [] when none is given."""
        keys: list[SealKey] = []
        for ref in args.key or []:
            k = self.secret(ref, "--key ")
            if not isinstance(k, SymmetricKey):
                raise CliError(f"--key {ref}: not a symmetric key (use --to for recipients)", EXIT_USAGE)
            keys.append(k)
        for ref in args.to or []:
            pub = self.public(ref, "--to ")
            if not isinstance(pub, RecipientPublicKey):
                raise CliError(f"--to {ref}: not a recipient public key", EXIT_USAGE)
            keys.append(pub)
        if getattr(args, "passphrase", False):
            if keys:
                raise CliError("a passphrase must be the only key of a file (like age)", EXIT_USAGE)
            keys.append(read_passphrase(args, confirm=True))
        return keys

    def open_keys(self, args: argparse.Namespace, refs: Sequence[str], option: str = "--key ") -> list[OpenKey] | None:
        """The keys to open with; None (the API then asks the keystore) when none is given."""
        if getattr(args, "open_passphrase", False):
            if getattr(args, "passphrase", False) and getattr(args, "passphrase_file", None):
                raise CliError("two passphrases (old and new) cannot come from one --passphrase-file", EXIT_USAGE,
                               hint="run it on a terminal and answer both prompts")  # fmt: skip
            return [read_passphrase(args, confirm=False, what="current passphrase")]
        keys: list[OpenKey] = []
        for ref in refs:
            k = self.secret(ref, option)
            if not isinstance(k, (SymmetricKey, RecipientKey)):
                raise CliError(f"key {ref}: a signing key cannot open files", EXIT_USAGE)
            keys.append(k)
        for path in getattr(args, "identity", None) or []:
            try:
                ident = textkeys.secret_from_text(Path(path).read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, InvalidArgumentError) as exc:
                raise CliError(f"--identity {path}: {exc}", EXIT_USAGE) from None
            if isinstance(ident, SigningKey):
                raise CliError(f"--identity {path}: a signing key cannot open files", EXIT_USAGE)
            keys.append(ident)
        return keys or None


def is_path(ref: str) -> bool:
    """Whether a key reference is a path: it contains a ``/`` (``./NAME``, ``/abs``, ``dir/NAME``);
    a bare word is only ever a key name, an id or a key's text form."""
    return "/" in ref or (os.sep != "/" and os.sep in ref)


def parse_meta(items: Sequence[str]) -> dict[str, str]:
    """--meta KEY=VALUE items as a dict."""
    meta: dict[str, str] = {}
    for item in items:
        k, sep, v = item.partition("=")
        if not sep or not k:
            raise CliError(f"--meta takes KEY=VALUE, got {item!r}", EXIT_USAGE)
        meta[k] = v
    return meta


def record_json(r: KeyRecord) -> dict[str, Any]:
    """A key record's public facts (``key list/show --json``)."""
    return {
        "id": r.id, "name": r.name, "kind": r.kind, "created": r.created, "store": r.backend,
        "public": r.public, "default": r.default, "retired": r.retired, "replaced_by": r.replaced_by,
        "protected": r.protected,
    }  # fmt: skip


def parse_date(text: str | None, option: str = "--expires") -> int | None:
    """A date (``YYYY-MM-DD``, or ``YYYY-MM-DDTHH:MM:SSZ``; UTC) as Unix seconds; None when not given."""
    if text is None:
        return None
    try:
        when = _dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise CliError(f"{option} {text!r}: not a date", EXIT_USAGE,
                       hint="write YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ (UTC)") from None  # fmt: skip
    if when.tzinfo is None:
        when = when.replace(tzinfo=_dt.timezone.utc)
    t = int(when.timestamp())
    if not 0 < t <= 253_402_300_799:
        raise CliError(f"{option} {text!r}: out of range", EXIT_USAGE)
    return t
