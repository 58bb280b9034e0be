"""Helpers for the S3 tests (the server fixtures are in conftest.py): uploads, byte counting, CLI env."""

from __future__ import annotations

from typing import Any

import pytest


def s3fs_client() -> Any:
    import s3fs

    return s3fs.S3FileSystem()


def multipart_uploads(bucket: str) -> list[dict[str, Any]]:
    fs = s3fs_client()
    out = fs.call_s3("list_multipart_uploads", Bucket=bucket)
    return list(out.get("Uploads", []))


class ServedBytes:
    """Counts the object bytes s3fs received (every ranged or whole GET goes through ``_cat_file``)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import s3fs

        self.total = 0
        self.requests = 0
        original = s3fs.S3FileSystem._cat_file

        async def counting(fs: Any, path: str, *args: Any, **kwargs: Any) -> bytes:
            data: bytes = await original(fs, path, *args, **kwargs)
            self.total += len(data)
            self.requests += 1
            return data

        monkeypatch.setattr(s3fs.S3FileSystem, "_cat_file", counting)
        s3fs.S3FileSystem.clear_instance_cache()  # instances bind their sync methods when made

    def reset(self) -> None:
        self.total = 0
        self.requests = 0
