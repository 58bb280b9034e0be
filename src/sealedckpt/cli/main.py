"""The ``sealedckpt`` command line (also ``python -m sealedckpt``): a client of the public API.

Results go to stdout; errors go to stderr as ``sealedckpt: error: ...`` plus ``hint: ...``.
Secrets are never taken from argv (see :mod:`sealedckpt.cli.parse`).

Exit codes: 0 ok, 1 other error (I/O), 2 usage, 3 not a sealed file / unsafe input,
4 integrity failure, 5 signature failure, 6 key failure (no key, wrong key, keystore),
130 interrupted (Ctrl-C). Every failure, an unexpected one too, is reported this way (and as a
JSON object on stdout with ``--json``); no traceback is ever printed.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import warnings
from collections.abc import Sequence

from .. import api
from ..container import allow_classical_recipients
from ..stores.backends import KeystoreNotice
from .args import build_parser
from .output import fail, show_warning

_SECRET_ON_ARGV = (
    "hint: --passphrase takes no value: secrets are never read from the command line (other users "
    "can see it, shells keep it in history); sealedckpt asks on the terminal, or reads it from "
    "--passphrase-file FILE ('-' = stdin)"
)


def _secret_after_flag(argv: Sequence[str]) -> str | None:
    """The value of ``--passphrase VALUE`` / ``--passphrase=VALUE``: a secret tried on argv."""
    for i, a in enumerate(argv):
        if a.startswith("--passphrase="):
            return a.removeprefix("--passphrase=")
        if a == "--passphrase" and i + 1 < len(argv) and not argv[i + 1].startswith("-"):
            return argv[i + 1]
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``sealedckpt ARGV``; returns the exit code (or exits with it on failure)."""
    args = list(sys.argv[1:] if argv is None else argv)
    said = io.StringIO()
    try:
        with contextlib.redirect_stderr(said):  # a usage error is printed after the secret check
            parsed = build_parser().parse_args(args)
    except SystemExit as exc:
        text, secret = said.getvalue(), _secret_after_flag(args)
        if exc.code == 2 and secret:  # never echo it back
            text = text.replace(secret, "***") + _SECRET_ON_ARGV + "\n"
        sys.stderr.write(text)
        raise
    sys.stderr.write(said.getvalue())
    return _run(parsed)


def _run(args: argparse.Namespace) -> int:
    as_json = False
    with warnings.catch_warnings():
        warnings.simplefilter("once", KeystoreNotice)
        warnings.simplefilter("always", api.UnpicklingWarning)  # never hidden by -W or PYTHONWARNINGS
        warnings.showwarning = show_warning
        try:
            as_json = bool(getattr(args, "json", False))
            with allow_classical_recipients(bool(getattr(args, "allow_classical", False))):
                return int(args.func(args))
        except (Exception, KeyboardInterrupt) as exc:  # every failure: a message, never a traceback
            fail(exc, as_json)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
