"""A small progress bar on stderr, shown only on a terminal and only for long work."""

from __future__ import annotations

import sys
import time
from typing import TextIO

MIN_BYTES = 64 << 20


class Bar:
    """Call with byte counts; draws ``label [#####.....] 42% 1.2 GB/s`` at most 10 times a second."""

    def __init__(self, label: str, total: int, stream: TextIO | None = None, force: bool = False) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = force or (total >= MIN_BYTES and self.stream.isatty())
        self.label, self.total, self.done = label, max(total, 1), 0
        self._start = self._last = time.monotonic()

    def __call__(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if self.enabled and (now - self._last >= 0.1 or self.done >= self.total):
            self._last = now
            frac = min(1.0, self.done / self.total)
            rate = self.done / max(now - self._start, 1e-9) / 1e9
            bar = "#" * int(frac * 30)
            self.stream.write(f"\r{self.label} [{bar:<30}] {frac:4.0%} {rate:.2f} GB/s")
            self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()
