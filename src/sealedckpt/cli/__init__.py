"""The ``sealedckpt`` command line: a client of the public API.

``args`` parses, ``parse`` resolves keys, trust and secrets, ``output`` prints results and
errors; ``keys``, ``files``, ``dirs``, ``trust`` and ``audit`` hold one command group each.
"""

from .main import main
from .output import EXIT_ERROR, EXIT_FORMAT, EXIT_INTEGRITY, EXIT_KEY, EXIT_OK, EXIT_SIGNATURE, EXIT_USAGE

__all__ = ["EXIT_ERROR", "EXIT_FORMAT", "EXIT_INTEGRITY", "EXIT_KEY", "EXIT_OK", "EXIT_SIGNATURE", "EXIT_USAGE", "main"]
