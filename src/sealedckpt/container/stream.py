"""The chunk stream: positional reads of a sealed file and its STREAM-encrypted chunks.

Chunk ``i`` is read into a caller's buffer, its BLAKE3 digest checked against the signed table
when asked, and decrypted into a caller's buffer (docs/FORMAT.md §7, §8). No chunk byte is
copied on the way.
"""

from __future__ import annotations

import functools
import io
import os
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import BinaryIO

from .. import crypto
from ..crypto import DIGEST_SIZE, TAG_SIZE, ChunkCipher
from ..errors import FormatError, IntegrityError
from .format import Content

GROUP_BYTES = 4 << 20  # plaintext bytes of consecutive chunks one pool job handles


@functools.cache
def default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


class Source:
    """Positional reads from a path-backed fd, from a file with a thread-safe
    ``pread_into(offset, buf)`` (a remote object: ranged reads, no lock), or from any seekable
    binary file object."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._pread: Callable[[int, memoryview], int] | None = getattr(f, "pread_into", None)
        try:
            fd = f.fileno()
            os.fstat(fd)
            self._fd = fd
        except (AttributeError, OSError, io.UnsupportedOperation):
            self._fd = None
        try:
            if not f.seekable():
                raise FormatError(
                    "sealedckpt.load needs a seekable file", hint="pass a path or read it into io.BytesIO"
                )
            self.size = f.seek(0, io.SEEK_END)
        except (AttributeError, OSError) as exc:
            raise FormatError("sealedckpt.load needs a seekable file") from exc

    def read_into(self, offset: int, buf: memoryview) -> int:
        n = len(buf)
        if self._fd is not None:
            got = 0
            while got < n:
                k = os.preadv(self._fd, [buf[got:]], offset + got)
                if k == 0:
                    break
                got += k
            return got
        if self._pread is not None:
            return self._pread(offset, buf)
        with self._lock:
            self._f.seek(offset)
            got = 0
            while got < n:
                k = self._f.readinto(buf[got:])  # type: ignore[attr-defined]
                if not k:
                    break
                got += k
            return got

    def read(self, offset: int, n: int) -> bytes:
        buf = bytearray(n)
        got = self.read_into(offset, memoryview(buf))
        return bytes(buf[:got])

    def read_exact(self, offset: int, n: int, what: str) -> bytes:
        data = self.read(offset, n)
        if len(data) != n:
            raise IntegrityError(f"file truncated inside the {what}")
        return data


class ChunkStream:
    """The chunks of one sealed file: read, digest-check and decrypt chunk ``i``.

    ``table`` is the signed digest table (empty when unsigned); ``cipher`` is needed only to
    decrypt. Safe to use from several threads with a buffer each.
    """

    def __init__(
        self, src: Source, offset: int, content: Content, table: bytes, cipher: ChunkCipher | None = None
    ) -> None:
        self._src = src
        self._offset = offset  # of chunk 0: the header size
        self.content = content
        self._table = table
        self._cipher = cipher

    def scratch(self) -> memoryview:
        """A buffer for one chunk's ciphertext and tag, no larger than the largest chunk."""
        return memoryview(bytearray(self.content.max_plain_len + TAG_SIZE))

    def read(self, i: int, buf: memoryview) -> memoryview:
        """Read chunk ``i`` (ciphertext and tag) into the start of ``buf``; return that view."""
        c = self.content
        ct = buf[: c.plain_len(i) + TAG_SIZE]
        if self._src.read_into(self._offset + c.chunk_offset(i), ct) != len(ct):
            raise IntegrityError(f"file truncated inside chunk {i}")
        return ct

    def digest(self, i: int, ct: memoryview, check: bool) -> bytes:
        """BLAKE3 of chunk ``i``'s bytes; with ``check``, compared with its signed table entry."""
        d = crypto.content_hash(ct)
        if check and not crypto.equal(d, self._table[i * DIGEST_SIZE : (i + 1) * DIGEST_SIZE]):
            raise IntegrityError(f"chunk {i} does not match its signed digest")
        return d

    def decrypt(self, i: int, ct: memoryview, out: memoryview | None = None) -> memoryview:
        """Decrypt chunk ``i`` into ``out`` (or in place in ``ct``); return the plaintext view."""
        assert self._cipher is not None
        c = self.content
        plen = c.plain_len(i)
        plain = ct[:plen] if out is None else out[:plen]
        if not self._cipher.decrypt_into(i, i == c.n_chunks - 1, ct, plain):
            raise IntegrityError(f"chunk {i} of {c.n_chunks} failed authentication (tampered, reordered or spliced)")
        return plain

    def scan(self, check: bool) -> Iterator[tuple[memoryview, bytes]]:
        """Every chunk in order, as (ciphertext view, digest); the view is reused for the next."""
        buf = self.scratch()
        for i in range(self.content.n_chunks):
            ct = self.read(i, buf)
            yield ct, self.digest(i, ct, check)

    def digests(
        self, check: bool, workers: int | None = None, progress: Callable[[int], None] | None = None
    ) -> list[bytes]:
        """Every chunk's digest, in order (checked against the signed table with ``check``); see
        :func:`hash_streams`."""
        return hash_streams([(self, check)], workers, progress)[0]


def hash_streams(
    streams: Sequence[tuple[ChunkStream, bool]],
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[list[bytes]]:
    """Every chunk's digest of every ``(stream, check)``, in order (checked against the stream's
    signed table where ``check``), on one pool for all the streams: the files of a directory keep
    every core busy to the end instead of each file waiting for its own last run.

    Runs of consecutive chunks (about 4 MiB each) are read and hashed on ``workers`` threads
    (BLAKE3 releases the GIL), each with one scratch buffer: at most ``workers`` chunks are in
    memory, and at most ``2 * workers`` runs are queued. Raises the failure of the first failing
    run in order (stream, then chunk) among those run; ``progress`` is called from this thread,
    once per chunk, in that order.
    """
    jobs = [
        (k, g) for k, (s, _) in enumerate(streams) for g in s.content.groups(range(s.content.n_chunks), GROUP_BYTES)
    ]
    if not jobs:
        return [[] for _ in streams]
    widest = max((s for s, _ in streams), key=lambda s: s.content.max_plain_len)  # its scratch fits any chunk
    workers = max(1, min(workers or default_workers(), len(jobs)))
    local = threading.local()

    def job(k: int, group: list[int]) -> list[bytes]:
        buf = getattr(local, "buf", None)
        if buf is None:
            buf = local.buf = widest.scratch()
        s, check = streams[k]
        return [s.digest(i, s.read(i, buf), check) for i in group]

    out: list[list[bytes]] = [[] for _ in streams]

    def take(k: int, digests: list[bytes]) -> None:
        for d in digests:
            out[k].append(d)
            if progress is not None:
                progress(streams[k][0].content.plain_len(len(out[k]) - 1) + TAG_SIZE)

    if workers == 1:
        for k, group in jobs:
            take(k, job(k, group))
        return out
    pending: deque[tuple[int, Future[list[bytes]]]] = deque()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sealedckpt-hash") as pool:
        try:
            for k, group in jobs:
                pending.append((k, pool.submit(job, k, group)))
                if len(pending) > 2 * workers:
                    k0, fut = pending.popleft()
                    take(k0, fut.result())
            while pending:
                k0, fut = pending.popleft()
                take(k0, fut.result())
        finally:
            for _, fut in pending:
                fut.cancel()
    return out
