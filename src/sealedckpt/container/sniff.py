"""Recognise what a non-sealed input is, by content only (never by file name)."""

from __future__ import annotations

import json
import re
import struct

from ..errors import FormatError, UnsafePayloadError
from .format import MAGIC

#: How many leading bytes :func:`classify` wants to see.
HEAD_SIZE = 1024
#: How many trailing bytes it wants (a zip's end-of-central-directory record lives there).
TAIL_SIZE = 65536 + 22

_PICKLE_PROTO0_FIRST = set(b"(}])cNIJKLMFSVUXTGhjq0123456789abdelrstu.")
# Opcode shapes that open protocol 0/1 pickles: GLOBAL "c<module>\n<name>\n", MARK+DICT/LIST,
# EMPTY_DICT/LIST + BINPUT, INT/NONE+POP prefixes. A heuristic for the message only: unknown
# content is refused either way.
_PICKLE_PROTO0 = re.compile(rb"c[A-Za-z_][\w.]*\n[A-Za-z_][\w.]*\n|\A\((dp|lp|t|i|c)|\A[}\]]q\x00|\A(N0|I-?\d+\n)")

_CONVERT = "sealedckpt seal --allow-pickle IN -o OUT (only for a file you trust)"


def classify(head: bytes, tail: bytes) -> str:
    """One of: sealed, empty, pickle, zip, torchscript, tar, npy, safetensors, unknown."""
    if head.startswith(MAGIC):
        return "sealed"
    if not head:
        return "empty"
    if _looks_like_safetensors(head):  # first: a header length of 0x??80 starts with a pickle-like 0x80
        return "safetensors"
    if head[0] == 0x80 and len(head) > 1 and head[1] <= 5:
        return "pickle"
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")) or b"PK\x05\x06" in tail:
        return "torchscript" if b"constants.pkl" in head or b"code/" in head else "zip"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if head[0] in _PICKLE_PROTO0_FIRST and (tail.rstrip(b"\n").endswith(b".") or _PICKLE_PROTO0.search(head)):
        return "pickle"
    return "unknown"


#: Kinds that ``seal --allow-pickle`` may convert (after unpickling with weights_only=True).
LEGACY_KINDS = ("pickle", "zip", "torchscript", "tar")


def refuse_unsealed(head: bytes, tail: bytes) -> None:
    """Raise the right error for an input that does not start with the sealed magic.

    Anything that is not a sealed checkpoint is refused: pickles, zips (``torch.save``,
    TorchScript), tar archives and ``.npy`` files with :class:`UnsafePayloadError`, a plain
    safetensors file with :class:`FormatError`. Nothing here ever parses the payload.
    """
    kind = classify(head, tail)
    if kind == "sealed":
        return
    if kind == "empty":
        raise FormatError("not a sealed checkpoint: the file is empty")
    if kind == "pickle":
        what = f"a pickle (protocol {head[1]})" if head[0] == 0x80 else "what looks like a protocol 0/1 pickle"
        raise UnsafePayloadError(
            f"refusing {what}: it can run arbitrary code when loaded; this includes legacy torch.save files",
            hint=f"convert a trusted legacy file explicitly: {_CONVERT}",
        )
    if kind in ("zip", "torchscript"):
        looks = "TorchScript archive" if kind == "torchscript" else "torch.save zip"
        raise UnsafePayloadError(
            f"refusing a zip archive (looks like a {looks}): it holds pickled data",
            hint=f"convert a trusted torch.save file explicitly: {_CONVERT}",
        )
    if kind == "tar":
        raise UnsafePayloadError(
            "refusing a tar archive (legacy torch.save tar format holds pickles)",
            hint=f"convert a trusted legacy file explicitly: {_CONVERT}",
        )
    if kind == "npy":
        raise UnsafePayloadError(
            "refusing a numpy .npy file (it may hold pickled objects)",
            hint="load it with numpy.load(allow_pickle=False) and save it with sealedckpt.save",
        )
    if kind == "safetensors":
        raise FormatError(
            "this is a plain (unencrypted, unsigned) safetensors file, not a sealed checkpoint",
            hint="seal it: sealedckpt seal IN.safetensors -o OUT.sealed",
        )
    raise UnsafePayloadError(
        "not a sealed checkpoint (unknown content); sealedckpt.load only opens sealed files",
        hint="seal the checkpoint with sealedckpt.save or `sealedckpt seal`",
    )


def _looks_like_safetensors(head: bytes) -> bool:
    if len(head) < 10:
        return False
    (n,) = struct.unpack_from("<Q", head, 0)
    if not 2 <= n <= 100_000_000 or head[8:9] != b"{":
        return False
    if n + 8 <= len(head):
        try:
            return isinstance(json.loads(head[8 : 8 + n]), dict)
        except (ValueError, RecursionError):  # deeply nested JSON overflows the decoder's stack
            return False
    return True
