"""Sealing: header, the parallel chunk encryption pipeline, and the trailer."""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import BinaryIO

from .. import crypto
from ..crypto import SALT_SIZE, TAG_SIZE, ChunkCipher, FileKeys, SigningKey
from ..errors import InvalidArgumentError
from . import format as fmt
from .reader import Progress
from .signatures import content_digest, content_root, sign
from .slots import KeySlot, SealKey, make_slots, seal_label
from .stream import default_workers


@dataclass(frozen=True)
class SealSummary:
    bytes_written: int
    key_ids: list[str]
    signer_ids: list[str]
    root: bytes | None
    commitment: bytes = b""

    @property
    def digest(self) -> str:
        return content_digest(self.root, self.commitment)


def seal(
    out: BinaryIO,
    payload_len: int,
    segments: Iterable[memoryview],
    *,
    keys: Sequence[SealKey],
    signers: Sequence[SigningKey] = (),
    metadata: dict[str, str] | None = None,
    chunk_log2: int = fmt.DEFAULT_CHUNK_LOG2,
    random_bytes: Callable[[int], bytes] = os.urandom,
    now: Callable[[], float] = time.time,
    workers: int | None = None,
    progress: Progress | None = None,
    want_root: bool = False,
    expires_at: int | None = None,
) -> SealSummary:
    """Encrypt ``segments`` (exactly ``payload_len`` bytes in total) into ``out``.

    The summary's ``root`` is set when signing, or when ``want_root`` (a manifest lists it)."""
    if len({s.key_id for s in signers}) != len(signers):
        raise InvalidArgumentError("the same signing key was given twice")
    dek = random_bytes(crypto.KEY_SIZE)
    salt = random_bytes(SALT_SIZE)
    fk = crypto.derive_file_keys(dek, salt)
    content = fmt.Content(fmt.PAYLOAD_SAFETENSORS, chunk_log2, payload_len, salt, fk.commitment, dict(metadata or {}))
    content_bytes = fmt.build_content(content)
    written = _write_header(out, content_bytes, make_slots(dek, salt, keys, random_bytes), fk)
    hashing = bool(signers) or want_root
    pipeline = _Pipeline(out, content, ChunkCipher(fk.payload_key), hashing, workers, progress)
    written += pipeline.run(segments)
    root = content_root(content_bytes, content.n_chunks, b"".join(pipeline.digests)) if hashing else None
    if signers:
        assert root is not None
        trailer = fmt.build_trailer(b"".join(pipeline.digests), sign(signers, root, content.metadata, now,
                                                                     expires_at=expires_at))  # fmt: skip
    else:
        trailer = fmt.build_trailer(b"", [])
    out.write(trailer)
    written += len(trailer)
    return SealSummary(written, [seal_label(k) for k in keys], [s.key_id for s in signers], root, fk.commitment)


def _write_header(out: BinaryIO, content_bytes: bytes, slots: Sequence[KeySlot], fk: FileKeys) -> int:
    """Preamble, content header, key slots and header MAC; returns the bytes written."""
    authenticated = fmt.build_preamble(len(content_bytes)) + content_bytes + fmt.build_slots(slots)
    out.write(authenticated)
    out.write(crypto.header_mac(fk.header_mac_key, authenticated))
    return len(authenticated) + fmt.MAC_SIZE


class _Pipeline:
    """Encrypt chunks in a thread pool and write them in order, a bounded window in flight.

    One buffer per chunk in flight: a chunk made of several pieces is gathered into it and
    encrypted in place; a chunk inside one segment is encrypted from the caller's memory.
    """

    def __init__(
        self,
        out: BinaryIO,
        content: fmt.Content,
        cipher: ChunkCipher,
        hashing: bool,
        workers: int | None,
        progress: Progress | None,
    ) -> None:
        self._out = out
        self._content = content
        self._cipher = cipher
        self._progress = progress
        n = content.n_chunks
        self._hashing = hashing
        self.digests: list[bytes] = [b""] * n if hashing else []
        self._workers = min(workers or default_workers(), n)
        bufsize = min(content.chunk_size, content.payload_len) + TAG_SIZE
        self._bufs = [memoryview(bytearray(bufsize)) for _ in range(min(self._workers + 1, n))]
        self._pending: deque[Future[memoryview]] = deque()
        self._written = 0

    def _job(self, i: int, plain: memoryview, ct: memoryview) -> memoryview:
        self._cipher.encrypt_into(i, i == self._content.n_chunks - 1, plain, ct)
        if self._hashing:
            self.digests[i] = crypto.content_hash(ct)
        return ct

    def _write_oldest(self) -> None:
        ct = self._pending.popleft().result()
        self._out.write(ct)
        self._written += len(ct)
        if self._progress is not None:
            self._progress(len(ct))

    def run(self, segments: Iterable[memoryview]) -> int:
        """Encrypt and write every chunk; returns the bytes written."""
        c = self._content
        total = 0
        pool = None
        if self._workers > 1:
            pool = ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="sealedckpt-seal")
        try:
            for i, pieces in enumerate(_chunk_pieces(segments, c.chunk_size)):
                if i >= c.n_chunks:
                    raise InvalidArgumentError("payload is longer than declared")
                if len(self._pending) == len(self._bufs):
                    self._write_oldest()
                plen = sum(len(p) for p in pieces)
                total += plen
                if plen != c.plain_len(i):
                    raise InvalidArgumentError("payload is shorter than declared")
                ct = self._bufs[i % len(self._bufs)][: plen + TAG_SIZE]
                plain = pieces[0] if len(pieces) == 1 else _gather(pieces, ct)
                if pool is None:
                    fut: Future[memoryview] = Future()
                    fut.set_result(self._job(i, plain, ct))
                else:
                    fut = pool.submit(self._job, i, plain, ct)
                self._pending.append(fut)
            while self._pending:
                self._write_oldest()
        finally:
            for fut in self._pending:
                fut.cancel()
            if pool is not None:
                pool.shutdown(wait=True)
        if total != c.payload_len:
            raise InvalidArgumentError(f"payload is {total} bytes, declared {c.payload_len}")
        return self._written


def _gather(pieces: list[memoryview], buf: memoryview) -> memoryview:
    """Copy ``pieces`` to the start of ``buf``; return the filled view."""
    pos = 0
    for p in pieces:
        buf[pos : pos + len(p)] = p
        pos += len(p)
    return buf[:pos]


def _chunk_pieces(segments: Iterable[memoryview], chunk_size: int) -> Iterator[list[memoryview]]:
    """Group the payload's segments into chunk-sized lists of views (no copying here)."""
    pieces: list[memoryview] = []
    have = 0
    yielded = False
    for seg in segments:
        mv = seg.cast("B") if seg.format != "B" or seg.ndim != 1 else seg
        pos = 0
        while pos < len(mv):
            take = min(chunk_size - have, len(mv) - pos)
            pieces.append(mv[pos : pos + take])
            have += take
            pos += take
            if have == chunk_size:
                yield pieces
                pieces, have, yielded = [], 0, True
    if pieces or not yielded:
        yield pieces  # the final partial chunk, or the single empty chunk of an empty payload
