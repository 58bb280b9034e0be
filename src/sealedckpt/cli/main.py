"""The ``sealedckpt`` command line (also ``python -m sealedckpt``): a client of the public API.

Results go to stdout; errors go to stderr as ``sealedckpt: error: ...`` plus ``hint: ...``.
Secrets are never taken from argv (see :mod:`sealedckpt.cli.parse`).

Exit codes: 0 ok, 1 other error (I/O), 2 usage, 3 not a sealed file / unsafe input,
4 integrity failure, 5 signature failure, 6 key failure (no key, wrong key, keystore),
130 interrupted (Ctrl-C). Every failure, an unexpected one too, is reported this way (and as a
JSON object on stdout with ``--json``); no traceback is ever printed.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

from .. import api
from ..stores.backends import KeystoreNotice
from .args import build_parser
from .output import fail, show_warning


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``sealedckpt ARGV``; returns the exit code (or exits with it on failure)."""
    as_json = False
    with warnings.catch_warnings():
        warnings.simplefilter("once", KeystoreNotice)
        warnings.simplefilter("always", api.UnpicklingWarning)  # never hidden by -W or PYTHONWARNINGS
        warnings.showwarning = show_warning
        try:
            args = build_parser().parse_args(argv)  # usage errors exit 2 from here (SystemExit)
            as_json = bool(getattr(args, "json", False))
            return int(args.func(args))
        except (Exception, KeyboardInterrupt) as exc:  # every failure: a message, never a traceback
            fail(exc, as_json)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
