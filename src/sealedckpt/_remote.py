"""Storage behind ``scheme://`` URLs (fsspec): the one seam between sealedckpt and remote stores.

A plain path never reaches this module (and fsspec is imported only for a URL). The API, for
every caller (the checkpoint API, the manager, sealed directories, torch.distributed storage):

- :func:`is_url` ``(path) -> bool``: ``scheme://...`` (``file://`` included).
- :func:`open_read` ``(url, storage_options=None, *, whole=False) -> RemoteReader``: a seekable,
  read-only binary file (``read``/``readinto``/``seek``) plus ``size`` and ``pread_into(offset,
  buf)``, safe from several threads at once. By default each read is one ranged GET of exactly
  that byte range (no read-ahead, no cache: lazy reads fetch only what they need); ``whole=True``
  (a reader that reads every byte) fetches aligned 32 MiB blocks instead, a few kept at a time.
  Close it (or use ``with``).
- :func:`atomic_write` ``(url, storage_options=None)``: a context manager giving a write-only
  binary file; the object appears under ``url`` only when the block exits without an exception,
  whole. S3: one PUT (below :data:`PART_SIZE`), else a multipart upload whose parts go up in the
  background while the caller writes, completed only after the last part and aborted on any
  exception, ``KeyboardInterrupt`` included (a killed process leaves an incomplete upload, which
  no reader sees; a bucket lifecycle rule removes it). Local file systems: temp file, fsync,
  rename (``sealedckpt._fs.atomic_write``). Others: a hidden temp object, then a move.
- :func:`listdir` ``(url, so) -> list[str]`` (names directly under a "directory"; a missing one is
  empty), :func:`find` (every object under it, relative paths), :func:`delete`, :func:`exists`,
  :func:`size`, :func:`join` ``(url, *names)``.
- :func:`reader` / :func:`writer` ``(path_or_url, so)``: the same for a local path or a URL
  (a local path gets ``open`` and ``sealedckpt._fs.atomic_write``; fsspec is not imported).
- :func:`redact` ``(url)``: the URL without user info (for messages); :func:`storage_errors`
  ``(url)``: a context manager that turns storage failures into :class:`~sealedckpt.StorageError`
  (a missing object into :class:`~sealedckpt.StorageNotFoundError`, also a ``FileNotFoundError``).

Credentials and endpoints come from ``storage_options`` or the store's usual environment
(``AWS_ACCESS_KEY_ID``, ``AWS_ENDPOINT_URL``, ... for s3fs; ``FSSPEC_S3_*`` for fsspec's config).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import secrets
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, BinaryIO

from .errors import SealedCkptError, StorageError, StorageNotFoundError

_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]+://")
_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+://)[^/@]*@")
#: Below this a write is one PUT; above it, parts of this size (S3 needs >= 5 MiB but the last).
PART_SIZE = 16 << 20
#: Parts uploading at once (memory held: about (this + 1) * PART_SIZE).
UPLOADS_IN_FLIGHT = 4
#: Whole-object readers (load, verify) fetch blocks of this size, keeping this many.
READ_BLOCK = 32 << 20
BLOCKS_KEPT = 4
_MEMORY_LOCK = threading.Lock()  # memory:// hands every reader the same BytesIO


def is_url(path: object) -> bool:
    """Whether ``path`` is a ``scheme://...`` URL string (a PathLike never is)."""
    return isinstance(path, str) and _URL.match(path) is not None


def redact(url: str) -> str:
    """``url`` without the ``user:password@`` part, if any."""
    return _USERINFO.sub(r"\1***@", url)


def join(url: str, *names: str) -> str:
    return "/".join([url.rstrip("/"), *names])


@contextlib.contextmanager
def storage_errors(url: str) -> Iterator[None]:
    """Storage failures inside the block as :class:`StorageError` naming ``url`` (never credentials)."""
    try:
        yield
    except SealedCkptError:
        raise
    except FileNotFoundError as exc:
        raise StorageNotFoundError(f"{redact(url)}: no such object") from exc
    except (OSError, ValueError, RuntimeError, TimeoutError, ImportError) as exc:
        raise _wrapped(url, exc) from exc
    except Exception as exc:  # botocore/aiohttp errors are not OSErrors
        if type(exc).__module__.split(".")[0] in ("botocore", "aiobotocore", "aiohttp", "s3fs", "fsspec"):
            raise _wrapped(url, exc) from exc
        raise


def _wrapped(url: str, exc: BaseException) -> StorageError:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return StorageError(f"{redact(url)}: {type(exc).__name__}" + (f": {text}" if text else ""))


def filesystem(url: str, storage_options: dict[str, Any] | None = None) -> tuple[Any, str]:
    """The fsspec file system of ``url`` and the path inside it."""
    with storage_errors(url):
        try:
            import fsspec  # type: ignore[import-untyped,unused-ignore]
        except ImportError:
            raise StorageError(
                f"{redact(url)}: URLs need fsspec", hint="pip install 'sealedckpt[remote]' (fsspec, s3fs)"
            ) from None
        fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
        return fs, path


def _is_local(fs: Any) -> bool:
    return "file" in _protocols(fs)


def _is_s3(fs: Any) -> bool:
    return "s3" in _protocols(fs) and hasattr(fs, "call_s3")


def _protocols(fs: Any) -> tuple[str, ...]:
    p = fs.protocol
    return (p,) if isinstance(p, str) else tuple(p)


# -- reading -------------------------------------------------------------------------------


class RemoteReader(io.RawIOBase):
    """A read-only, seekable view of one object; every read is a ranged read of exactly the
    bytes asked for (see the module docstring)."""

    def __init__(self, url: str, fs: Any, path: str, whole: bool = False) -> None:
        super().__init__()
        self.url, self._fs, self._path = url, fs, path
        self._blocks = _Blocks(self._fetch) if whole else None
        self._pos = 0
        self._handle: Any = None
        self._lock = _MEMORY_LOCK if "memory" in _protocols(fs) else threading.Lock()
        self._ranged = _is_s3(fs) or hasattr(fs, "_cat_file")
        with storage_errors(url):
            info = fs.info(path)
            if info.get("type") == "directory":
                raise StorageError(f"{redact(url)}: is a directory, not an object")
            self.size = int(info["size"])
            if not self._ranged:
                self._handle = fs.open(path, "rb")

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def fileno(self) -> int:
        raise io.UnsupportedOperation("a remote object has no file descriptor")

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._pos = base + offset
        return self._pos

    def readinto(self, b: Any) -> int:
        n = self.pread_into(self._pos, memoryview(b).cast("B"))
        self._pos += n
        return n

    def pread_into(self, offset: int, buf: memoryview) -> int:
        """Read bytes ``[offset, offset + len(buf))`` (fewer at the end) into ``buf``; thread-safe."""
        end = min(self.size, offset + len(buf))
        if end <= offset:
            return 0
        if self._blocks is not None:
            return self._blocks.read_into(offset, buf[: end - offset])
        data = self._fetch(offset, end)
        buf[: len(data)] = data
        return len(data)

    def _fetch(self, start: int, end: int) -> bytes:
        end = min(self.size, end)
        with storage_errors(self.url):
            if self._ranged:
                return bytes(self._fs.cat_file(self._path, start=start, end=end))
            with self._lock:
                self._handle.seek(start)
                return bytes(self._handle.read(end - start))

    def close(self) -> None:
        if self._handle is not None and not isinstance(self._handle, io.BytesIO):
            with contextlib.suppress(Exception):
                self._handle.close()
        self._handle = None
        super().close()


class _Blocks:
    """Reads served from aligned blocks of :data:`READ_BLOCK` bytes, each fetched once (one ranged
    GET) and kept while :data:`BLOCKS_KEPT` newer ones are not needed: for a reader that reads the
    whole object (load, verify), few large requests instead of one per chunk."""

    def __init__(self, fetch: Any) -> None:
        self._fetch = fetch
        self._lock = threading.Lock()
        self._blocks: dict[int, Future[bytes]] = {}

    def _block(self, i: int) -> bytes:
        with self._lock:
            fut = self._blocks.get(i)
            mine = fut is None
            if fut is None:
                fut = self._blocks[i] = Future()
                while len(self._blocks) > BLOCKS_KEPT:
                    del self._blocks[next(iter(self._blocks))]
        if mine:
            try:
                fut.set_result(self._fetch(i * READ_BLOCK, (i + 1) * READ_BLOCK))
            except BaseException as exc:
                fut.set_exception(exc)
                with self._lock:
                    self._blocks.pop(i, None)
        return fut.result()

    def read_into(self, offset: int, buf: memoryview) -> int:
        got = 0
        while got < len(buf):
            i, at = divmod(offset + got, READ_BLOCK)
            block = self._block(i)
            n = min(len(buf) - got, len(block) - at)
            if n <= 0:
                break
            buf[got : got + n] = block[at : at + n]
            got += n
        return got


def open_read(url: str, storage_options: dict[str, Any] | None = None, *, whole: bool = False) -> RemoteReader:
    """A reader of ``url``; ``whole=True`` for one that will read (nearly) every byte: reads then go
    through :data:`READ_BLOCK`-sized ranged GETs (memory held: ``BLOCKS_KEPT * READ_BLOCK``)."""
    fs, path = filesystem(url, storage_options)
    return RemoteReader(url, fs, path, whole)


# -- writing -------------------------------------------------------------------------------


@contextlib.contextmanager
def atomic_write(url: str, storage_options: dict[str, Any] | None = None) -> Iterator[BinaryIO]:
    """A file whose bytes appear under ``url`` only when the block completes (see the module docstring)."""
    fs, path = filesystem(url, storage_options)
    if _is_local(fs):
        from ._fs import atomic_write as local_write

        # a URL names an object: its "directories" need not exist; errors stay OSErrors, as for a path
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with local_write(path) as f:
            yield f
        return
    if _is_s3(fs):
        with storage_errors(url):
            up = _S3Upload(url, fs, path)
        try:
            yield up  # type: ignore[misc]
            with storage_errors(url):
                up.finish()
        except BaseException:
            up.abort()
            raise
        return
    with _moved_into_place(url, fs, path) as f:
        yield f


@contextlib.contextmanager
def _moved_into_place(url: str, fs: Any, path: str) -> Iterator[BinaryIO]:
    parent, _, name = path.rstrip("/").rpartition("/")
    temp = f"{parent}/.{name}.{secrets.token_hex(6)}.tmp"
    try:
        with storage_errors(url):
            handle = fs.open(temp, "wb")
        with handle as f:
            yield f
        with storage_errors(url):
            fs.mv(temp, path)
    except BaseException:
        with contextlib.suppress(Exception):
            fs.rm(temp)
        raise


class _S3Upload(io.RawIOBase):
    """A write-only file uploading to S3: one PUT if small, else background multipart parts."""

    def __init__(self, url: str, fs: Any, path: str) -> None:
        super().__init__()
        self.url, self._fs = url, fs
        self._bucket, self._key, _ = fs.split_path(path)
        self._buf = bytearray()
        self._upload_id: str | None = None
        self._parts: list[Future[dict[str, Any]]] = []
        self._pool: ThreadPoolExecutor | None = None
        self._written = 0

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._written

    def write(self, b: Any) -> int:
        view = memoryview(b).cast("B")
        self._buf += view
        self._written += len(view)
        while len(self._buf) >= PART_SIZE:
            part = bytes(self._buf[:PART_SIZE])
            del self._buf[:PART_SIZE]
            self._send(part)
        return len(view)

    def _call(self, method: str, **kw: Any) -> Any:
        return self._fs.call_s3(method, Bucket=self._bucket, Key=self._key, **kw)

    def _send(self, part: bytes) -> None:
        with storage_errors(self.url):
            if self._upload_id is None:
                self._upload_id = self._call("create_multipart_upload")["UploadId"]
                self._pool = ThreadPoolExecutor(UPLOADS_IN_FLIGHT, thread_name_prefix="sealedckpt-upload")
            assert self._pool is not None
            number = len(self._parts) + 1
            if len(self._parts) >= UPLOADS_IN_FLIGHT:  # bound the memory held by parts in flight
                self._parts[-UPLOADS_IN_FLIGHT].result()
            self._parts.append(self._pool.submit(self._put_part, number, part))

    def _put_part(self, number: int, data: bytes) -> dict[str, Any]:
        out = self._call("upload_part", PartNumber=number, UploadId=self._upload_id, Body=data)
        return {"PartNumber": number, "ETag": out["ETag"]}

    def finish(self) -> None:
        """Upload what is left, then make the object visible (PUT, or complete the upload)."""
        if self._upload_id is None:
            self._call("put_object", Body=bytes(self._buf))
        else:
            if self._buf:
                self._send(bytes(self._buf))
            parts = [f.result() for f in self._parts]
            self._call("complete_multipart_upload", UploadId=self._upload_id, MultipartUpload={"Parts": parts})
            self._upload_id = None
        self._buf = bytearray()
        self._shutdown()
        self._fs.invalidate_cache(f"{self._bucket}/{self._key}")

    def abort(self) -> None:
        """Drop the upload: cancel parts not started, wait for those running, abort it on the server."""
        for f in self._parts:
            f.cancel()
        self._shutdown()
        if self._upload_id is not None:
            with contextlib.suppress(Exception):
                self._call("abort_multipart_upload", UploadId=self._upload_id)
            self._upload_id = None
        self._buf = bytearray()

    def _shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


# -- listing and deleting ------------------------------------------------------------------


def listdir(url: str, storage_options: dict[str, Any] | None = None) -> list[str]:
    """The names directly under ``url`` (files and "directories"); none if it does not exist."""
    fs, path = filesystem(url, storage_options)
    with storage_errors(url):
        try:
            entries = fs.ls(path, detail=False, refresh=True) if _is_s3(fs) else fs.ls(path, detail=False)
        except FileNotFoundError:
            return []
    base = path.rstrip("/")
    return sorted({e.rstrip("/").rpartition("/")[2] for e in entries if e.rstrip("/") != base})


def find(url: str, storage_options: dict[str, Any] | None = None) -> dict[str, int]:
    """Every object under ``url`` (any depth): ``/``-separated path relative to it -> size, sorted."""
    fs, path = filesystem(url, storage_options)
    base = path.rstrip("/") + "/"
    with storage_errors(url):
        if _is_s3(fs):
            fs.invalidate_cache(path)
        found = fs.find(base, detail=True)
    return {p[len(base) :]: int(info.get("size") or 0)
            for p, info in sorted(found.items()) if p.startswith(base) and not p.endswith("/")}  # fmt: skip


def delete(url: str, storage_options: dict[str, Any] | None = None) -> None:
    """Remove one object; a missing one is :class:`StorageNotFoundError`."""
    fs, path = filesystem(url, storage_options)
    with storage_errors(url):
        if _is_s3(fs) and not fs.exists(path):
            raise FileNotFoundError(path)
        fs.rm_file(path)


def exists(url: str, storage_options: dict[str, Any] | None = None) -> bool:
    fs, path = filesystem(url, storage_options)
    with storage_errors(url):
        return bool(fs.exists(path))


def size(url: str, storage_options: dict[str, Any] | None = None) -> int:
    fs, path = filesystem(url, storage_options)
    with storage_errors(url):
        return int(fs.size(path))


def reader(
    path: str | os.PathLike[str], storage_options: dict[str, Any] | None = None, *, whole: bool = False
) -> BinaryIO:
    """``path`` opened for reading: a URL through :func:`open_read`, a local path with ``open``."""
    if is_url(path):
        return open_read(str(path), storage_options, whole=whole)  # type: ignore[return-value]
    return open(path, "rb")


def writer(
    path: str | os.PathLike[str], storage_options: dict[str, Any] | None = None, *, mode: int = 0o666
) -> contextlib.AbstractContextManager[BinaryIO]:
    """:func:`atomic_write` for a URL, ``sealedckpt._fs.atomic_write`` (with ``mode``) for a local path."""
    if is_url(path):
        return atomic_write(str(path), storage_options)
    from ._fs import atomic_write as local_write

    return local_write(path, mode=mode)
