"""The sealed container: byte layout, key slots, the chunk stream, sealed files (no torch)."""

from .sealed import *  # noqa: F403
