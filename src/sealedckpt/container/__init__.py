"""The sealed container: byte layout, key slots, the chunk stream, sealed files (no torch)."""

from . import format, sniff
from .header import Header, slot_ids
from .ops import (
    PublicInfo,
    VerifyResult,
    add_signatures,
    compute_root,
    compute_roots,
    read_public_info,
    rewrap,
    verify_file,
)
from .reader import KeySource, SealedReader, SignatureStatus, open_sealed
from .signatures import Signer, Verifier, content_digest, root_label
from .slots import KeySlot, OpenKey, SealKey, allow_classical_recipients
from .stream import default_workers
from .writer import SealSummary, seal

__all__ = [
    "Header",
    "KeySlot",
    "KeySource",
    "OpenKey",
    "PublicInfo",
    "SealKey",
    "SealSummary",
    "SealedReader",
    "SignatureStatus",
    "Signer",
    "Verifier",
    "VerifyResult",
    "add_signatures",
    "allow_classical_recipients",
    "compute_root",
    "compute_roots",
    "content_digest",
    "default_workers",
    "format",
    "open_sealed",
    "read_public_info",
    "rewrap",
    "root_label",
    "seal",
    "slot_ids",
    "sniff",
    "verify_file",
]
