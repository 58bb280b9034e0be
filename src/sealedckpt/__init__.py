"""sealedckpt: encrypted, signed, pickle-free checkpoints for PyTorch.

``import sealedckpt`` does not import torch; only ``save`` and ``load`` do.
"""

from .api import inspect, load, load_dir, open, save, sign, verify
from .container import PublicInfo, Signer, VerifyResult
from .crypto import Passphrase, RecipientKey, RecipientPublicKey, SigningKey, SymmetricKey, VerifyKey
from .errors import (
    ArgumentTypeError,
    AuditError,
    CliError,
    DecryptionError,
    DeviceError,
    FormatError,
    IntegrityError,
    InvalidArgumentError,
    KeystoreError,
    NoKeyError,
    RollbackError,
    SealedCkptError,
    SignatureError,
    UnsafePayloadError,
    UnsupportedTypeError,
)
from .stores.keystore import Keystore

__version__ = "0.1.0"

__all__ = [
    "ArgumentTypeError",
    "AuditError",
    "CliError",
    "DecryptionError",
    "DeviceError",
    "FormatError",
    "IntegrityError",
    "InvalidArgumentError",
    "Keystore",
    "KeystoreError",
    "NoKeyError",
    "Passphrase",
    "PublicInfo",
    "RecipientKey",
    "RecipientPublicKey",
    "RollbackError",
    "SealedCkptError",
    "SignatureError",
    "Signer",
    "SigningKey",
    "SymmetricKey",
    "UnsafePayloadError",
    "UnsupportedTypeError",
    "VerifyKey",
    "VerifyResult",
    "inspect",
    "load",
    "load_dir",
    "open",
    "save",
    "sign",
    "verify",
]
