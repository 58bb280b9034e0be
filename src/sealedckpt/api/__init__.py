"""The public entry points: checkpoints in code, files on disk, sealed model directories.

A ``keystore`` argument is where keys come from when ``key=None`` (default ``Keystore()``).
Functions with an ``audit`` argument record their operation, with its outcome, into that log
(default: the log ``SEALEDCKPT_AUDIT`` switches on; off unless set).
"""

from ..container import root_label
from ..release.directory import DirEntry, DirVerifyResult
from ..release.files import ProgressStart, UnpicklingWarning
from ..release.policy import check_release
from ._common import PathOrFile
from ._keys import LoadKey, RawKey, SaveKey, Trusted, default_key
from .checkpoint import inspect, load, open, safe_open, save, sign, verify
from .dirs import load_dir, seal_dir, sign_dir, unseal_dir, verify_dir
from .files import rewrap_file, seal_file, unseal_file
from .manager import CheckpointManager

__all__ = [
    "CheckpointManager",
    "DirEntry",
    "DirVerifyResult",
    "LoadKey",
    "PathOrFile",
    "ProgressStart",
    "RawKey",
    "SaveKey",
    "Trusted",
    "UnpicklingWarning",
    "check_release",
    "default_key",
    "inspect",
    "load",
    "load_dir",
    "open",
    "rewrap_file",
    "root_label",
    "safe_open",
    "save",
    "seal_dir",
    "seal_file",
    "sign",
    "sign_dir",
    "unseal_dir",
    "unseal_file",
    "verify",
    "verify_dir",
]
