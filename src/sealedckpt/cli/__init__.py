"""The ``sealedckpt`` command line: a client of the public API."""

from .main import (
    EXIT_ERROR,
    EXIT_FORMAT,
    EXIT_INTEGRITY,
    EXIT_KEY,
    EXIT_OK,
    EXIT_SIGNATURE,
    EXIT_USAGE,
    main,
)

__all__ = ["EXIT_ERROR", "EXIT_FORMAT", "EXIT_INTEGRITY", "EXIT_KEY", "EXIT_OK", "EXIT_SIGNATURE", "EXIT_USAGE", "main"]
