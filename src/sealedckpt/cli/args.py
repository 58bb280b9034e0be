"""The argument parser, one function per command group; each command's ``func`` is its handler."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, NoReturn, cast

from .. import __version__
from ..stores.keystore import KINDS
from . import dirs, files, keys, trust
from .audit import add_audit_parser

if TYPE_CHECKING:
    Sub = argparse._SubParsersAction[argparse.ArgumentParser]


class Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors read ``sealedckpt: error: ...`` plus a hint (exit 2)."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        cmd = self.prog.removeprefix("sealedckpt").strip()
        print(f"sealedckpt: error: {cmd + ': ' if cmd else ''}{message}", file=sys.stderr)
        print(f"hint: see `{self.prog} --help`", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    """The ``sealedckpt`` parser with every command."""
    p = Parser(prog="sealedckpt", description="Encrypted, signed, pickle-free PyTorch checkpoints.")
    p.add_argument("--version", action="version", version=f"sealedckpt {__version__}")
    sub = cast("Sub", p.add_subparsers(dest="command", required=True, metavar="COMMAND"))  # Parser all the way down
    _key_parsers(sub)
    _seal_parsers(sub)
    _check_parsers(sub)
    _trust_parsers(sub)
    _dir_parsers(sub)
    add_audit_parser(sub)
    return p


def _passphrase_source(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--passphrase-file", metavar="FILE", help="read passphrases from FILE ('-' = stdin), never argv")


def _trust_options(sp: argparse.ArgumentParser) -> None:
    sp.add_argument(
        "--trust", action="append", metavar="PUBKEY",
        help="require a signature by this key (sckpt-vk1..., file, key or publisher name, or 'store'); repeatable",
    )  # fmt: skip
    sp.add_argument("--min-version", type=int, metavar="N", help="refuse a public 'version' below N (rollback)")
    sp.add_argument("--model", metavar="NAME", help="require the public 'model' metadata to be NAME")
    sp.add_argument("--allow-rollback", action="store_true",
                    help="accept a version older than one already loaded under --trust store")  # fmt: skip


def _statement_options(sp: argparse.ArgumentParser, default: str | None) -> None:
    if default is not None:
        sp.add_argument("--as", dest="statement", choices=("counter-signature", "audit", "release"), default=default,
                        help=f"the type of statement signed (default {default})")  # fmt: skip
    sp.add_argument("--expires", metavar="DATE", help="the signed statement expires at DATE (YYYY-MM-DD[THH:MM:SSZ])")


def _key_parsers(sub: Sub) -> None:
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
    sp.set_defaults(func=keys.cmd_key_gen)
    sp = key.add_parser("list", help="list keys (public facts only)")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=keys.cmd_key_list)
    sp = key.add_parser("show", help="show one key's public facts")
    sp.add_argument("name")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=keys.cmd_key_show)
    sp = key.add_parser("export-public", help="print a recipient or signing key's public half")
    sp.add_argument("name")
    sp.set_defaults(func=keys.cmd_key_export_public)
    sp = key.add_parser("export", help="print a key's public half, or (--secret) write its secret to a 0600 file")
    sp.add_argument("name")
    sp.add_argument("--secret", action="store_true", help="export the secret key (to -o FILE, created 0600)")
    sp.add_argument("-o", "--output", metavar="FILE", help="with --secret: write it here (0600) instead of stdout")
    sp.add_argument("--force", action="store_true", help="with --secret: allow printing it on a terminal")
    sp.set_defaults(func=keys.cmd_key_export)
    sp = key.add_parser("import", help="import a key (secret or public text form) from FILE or stdin")
    sp.add_argument("name")
    sp.add_argument("file", nargs="?", help="file holding the key; '-' or absent: stdin")
    sp.add_argument("--default", action="store_true")
    sp.set_defaults(func=keys.cmd_key_import)
    sp = key.add_parser("rm", help="delete a key and its secret")
    sp.add_argument("name")
    sp.add_argument("--yes", action="store_true", help="do not ask")
    sp.add_argument(
        "--check", action="append", metavar="PATH",
        help="refuse while a *.sealed file here (a directory: searched recursively) has a slot for the key",
    )  # fmt: skip
    sp.add_argument("--force", action="store_true", help="delete it even though --check found files sealed to it")
    sp.set_defaults(func=keys.cmd_key_rm)
    sp = key.add_parser("rotate", help="new key of the same kind becomes the default; the old one is retired")
    sp.add_argument("name")
    sp.add_argument("--passphrase-protect", action="store_true")
    _passphrase_source(sp)
    sp.set_defaults(func=keys.cmd_key_rotate)
    sp = key.add_parser("default", help="make a key the default of its kind")
    sp.add_argument("name")
    sp.set_defaults(func=keys.cmd_key_default)


def _allow_classical(sp: argparse.ArgumentParser) -> None:
    sp.add_argument(
        "--allow-classical", action="store_true",
        help="allow classical X25519 recipients next to post-quantum ones (undoes the PQ protection)",
    )  # fmt: skip


def _seal_parsers(sub: Sub) -> None:
    sp = sub.add_parser("seal", help="seal a safetensors file (or, with --allow-pickle, a trusted torch.save file)")
    sp.add_argument("input")
    sp.add_argument("-o", "--output", required=True)
    sp.add_argument("--key", action="append", metavar="NAME", help="symmetric key from the keystore; repeatable")
    sp.add_argument(
        "--to", action="append", metavar="PUBKEY", help="recipient public key, file or key name; repeatable"
    )
    sp.add_argument("--passphrase", action="store_true", help="seal with a passphrase (alone)")
    _allow_classical(sp)
    sp.add_argument("--work-factor", type=int, metavar="LOG2N", help="scrypt work factor for --passphrase (default 18)")
    sp.add_argument("--sign", action="append", metavar="NAME", help="signing key from the keystore")
    sp.add_argument("--meta", action="append", metavar="K=V", help="public, authenticated metadata")
    sp.add_argument("--allow-pickle", action="store_true", help="convert a TRUSTED torch.save file (unpickles it)")
    sp.add_argument("--json", action="store_true")
    _statement_options(sp, None)
    _passphrase_source(sp)
    sp.set_defaults(func=files.cmd_seal)

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
    sp.set_defaults(func=files.cmd_unseal)

    sp = sub.add_parser("rewrap", help="change who can open files, without re-encrypting or re-signing")
    sp.add_argument("files", nargs="+", metavar="FILE", help="sealed files (with -r: directories too)")
    sp.add_argument(
        "-r", "--recursive", action="store_true", help="every *.sealed file under each DIR (symlinks skipped)"
    )
    sp.add_argument("--key", action="append", metavar="NAME", help="new symmetric key slot")
    sp.add_argument("--to", action="append", metavar="PUBKEY", help="new recipient slot")
    sp.add_argument("--passphrase", action="store_true", help="new passphrase slot (alone)")
    _allow_classical(sp)
    sp.add_argument("--work-factor", type=int, metavar="LOG2N")
    sp.add_argument("--keep", action="store_true", help="keep the existing slots (default: replace them)")
    sp.add_argument("--remove-slot", action="append", metavar="ID", help="with --keep: drop this slot (see inspect)")
    sp.add_argument("--with", dest="with_key", action="append", metavar="NAME", help="key that opens the files now")
    sp.add_argument("--identity", action="append", metavar="FILE", help="file holding a key that opens the files now")
    sp.add_argument(
        "--with-passphrase", dest="open_passphrase", action="store_true", help="the files are sealed with a passphrase"
    )
    _passphrase_source(sp)
    sp.set_defaults(func=files.cmd_rewrap)


def _check_parsers(sub: Sub) -> None:
    sp = sub.add_parser(
        "inspect", help="show a sealed file's (or DCP checkpoint directory's) public header (no key needed)"
    )
    sp.add_argument("file")
    sp.add_argument("--json", action="store_true", help="machine-readable output")
    sp.set_defaults(func=files.cmd_inspect)

    sp = sub.add_parser(
        "verify",
        help="check signatures and every chunk (a file, or a DCP checkpoint directory) without a decryption key",
    )
    sp.add_argument("file")
    _trust_options(sp)
    sp.add_argument("--json", action="store_true", help="machine-readable output")
    sp.set_defaults(func=files.cmd_verify)

    sp = sub.add_parser("sign", help="add a (counter-)signature to a sealed file; no decryption key needed")
    sp.add_argument("file")
    sp.add_argument("--key", action="append", required=True, metavar="NAME", help="signing key from the keystore")
    sp.add_argument(
        "--trust", action="append", metavar="PUBKEY", help="require an existing signature by this key first"
    )
    _statement_options(sp, "counter-signature")
    _passphrase_source(sp)
    sp.set_defaults(func=files.cmd_sign)


def _trust_parsers(sub: Sub) -> None:
    cmds = sub.add_parser("trust", help="trusted keys, their roles and scopes, the policy").add_subparsers(
        dest="trust_command", required=True, metavar="ACTION"
    )
    sp = cmds.add_parser("add", help="trust a verify key with roles and a model-name scope")
    sp.add_argument("name")
    sp.add_argument("pubkey", help="sckpt-vk1..., a file holding it, or a keystore signing key name")
    sp.add_argument("--role", action="append", metavar="ROLE", help="publisher (default), auditor, ...; repeatable")
    sp.add_argument("--scope", action="append", metavar="GLOB", help="model names it may sign for (default '*')")
    sp.add_argument("--expires", metavar="DATE", help="stop counting its signatures after DATE")
    sp.set_defaults(func=trust.cmd_trust_add)
    shows = (("list", "list trusted keys"), ("show", "show trusted keys, the policy and remembered versions"))
    for name, what in shows:
        sp = cmds.add_parser(name, help=what)
        sp.add_argument("--json", action="store_true")
        sp.set_defaults(func=trust.cmd_trust_show)
    sp = cmds.add_parser("rm", help="stop trusting a key")
    sp.add_argument("name")
    sp.set_defaults(func=trust.cmd_trust_rm)
    sp = cmds.add_parser("revoke", help="revoke a trusted key: everything it signed is refused")
    sp.add_argument("name")
    sp.set_defaults(func=trust.cmd_trust_revoke)
    sp = cmds.add_parser("sign-revocation", help="(publisher) sign a revocation of a key, to hand to customers")
    sp.add_argument("pubkey", help="the key to revoke: sckpt-vk1..., a file, or a key or trust-store name")
    sp.add_argument("--key", required=True, metavar="NAME", help="your signing key from the keystore")
    sp.add_argument("-o", "--output", required=True)
    _passphrase_source(sp)
    sp.set_defaults(func=trust.cmd_trust_sign_revocation)
    sp = cmds.add_parser("import-revocation", help="apply a publisher's signed revocation")
    sp.add_argument("file")
    sp.set_defaults(func=trust.cmd_trust_import_revocation)
    pol = cmds.add_parser("policy", help="what a load requires").add_subparsers(
        dest="policy_command", required=True, metavar="ACTION"
    )
    sp = pol.add_parser("set", help="require ROLE=N distinct keys per role for models matching GLOB")
    sp.add_argument("models", metavar="GLOB")
    sp.add_argument("require", nargs="+", metavar="ROLE=N")
    sp.add_argument("--require-alg", action="append", metavar="ALG", dest="algs",
                    help="count only signatures made with ALG (ed25519, ed25519+mldsa65); repeatable")  # fmt: skip
    sp.set_defaults(func=trust.cmd_policy_set)
    sp = pol.add_parser("rm", help="remove the rule for GLOB")
    sp.add_argument("models", metavar="GLOB")
    sp.set_defaults(func=trust.cmd_policy_rm)
    sp = pol.add_parser("clock-skew", help="seconds of clock difference allowed for dates (default 300)")
    sp.add_argument("seconds", type=int)
    sp.set_defaults(func=trust.cmd_policy_skew)
    ver = cmds.add_parser("versions", help="the highest version of each model loaded under the policy")
    ver.add_argument("--json", action="store_true")
    ver.add_argument("--reset", metavar="MODEL", help="forget MODEL's remembered version")
    ver.add_argument("--reset-all", action="store_true", help="forget every remembered version")
    ver.set_defaults(func=trust.cmd_trust_versions)


def _dir_parsers(sub: Sub) -> None:
    sp = sub.add_parser("seal-dir", help="seal a model directory (shards, config, tokenizer) with a signed manifest")
    sp.add_argument("input")
    sp.add_argument("-o", "--output", required=True)
    sp.add_argument("--key", action="append", metavar="NAME")
    sp.add_argument("--to", action="append", metavar="PUBKEY")
    _allow_classical(sp)
    sp.add_argument("--sign", action="append", metavar="NAME")
    sp.add_argument("--meta", action="append", metavar="K=V", help="public metadata, e.g. model=NAME version=N")
    sp.add_argument(
        "--keep-public", action="store_true", help="copy non-safetensors files (config, tokenizer) as they are"
    )
    sp.add_argument("--json", action="store_true")
    _statement_options(sp, None)
    _passphrase_source(sp)
    sp.set_defaults(func=dirs.cmd_seal_dir)

    sp = sub.add_parser("verify-dir", help="check a sealed directory's manifest and every file, no key needed")
    sp.add_argument("dir")
    _trust_options(sp)
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=dirs.cmd_verify_dir)

    sp = sub.add_parser("sign-dir", help="add a (counter-)signature to a sealed directory's manifest")
    sp.add_argument("dir")
    sp.add_argument("--key", action="append", required=True, metavar="NAME")
    sp.add_argument("--trust", action="append", metavar="PUBKEY", help="require an existing trusted signature first")
    _statement_options(sp, "counter-signature")
    _passphrase_source(sp)
    sp.set_defaults(func=dirs.cmd_sign_dir)

    sp = sub.add_parser("unseal-dir", help="verify and decrypt a sealed directory")
    sp.add_argument("dir")
    sp.add_argument("-o", "--output", required=True)
    sp.add_argument("--key", action="append", metavar="NAME")
    sp.add_argument("--identity", action="append", metavar="FILE")
    sp.add_argument("--passphrase", dest="open_passphrase", action="store_true", help="open with a passphrase")
    _trust_options(sp)
    _passphrase_source(sp)
    sp.set_defaults(func=dirs.cmd_unseal_dir)
