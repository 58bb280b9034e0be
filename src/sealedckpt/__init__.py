"""sealedckpt: encrypted, signed, pickle-free checkpoints for PyTorch.

``import sealedckpt`` does not import torch; only ``save``, ``load``, ``open`` and ``load_dir``
do (and ``seal_file`` with ``allow_pickle``).
"""

from .api import (
    CheckpointManager,
    inspect,
    load,
    load_dir,
    open,
    rewrap_file,
    safe_open,
    save,
    seal_dir,
    seal_file,
    sign,
    sign_dir,
    unseal_dir,
    unseal_file,
    verify,
    verify_dir,
)
from .container import PublicInfo, Signer, VerifyResult, allow_classical_recipients
from .crypto import (
    CompositeSigningKey,
    CompositeVerifyKey,
    Passphrase,
    PQRecipientKey,
    PQRecipientPublicKey,
    RecipientKey,
    RecipientPublicKey,
    SigningKey,
    SymmetricKey,
    VerifyKey,
)
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
    NoCheckpointError,
    NoKeyError,
    RollbackError,
    SealedCkptError,
    SealedCkptWarning,
    SignatureError,
    UnsafePayloadError,
    UnsupportedTypeError,
)
from .payload.extra import register_dataclass as register_dataclass
from .payload.extra import unregister_dataclass as unregister_dataclass
from .stores import audit
from .stores.audit import AuditLog
from .stores.keystore import Keystore

__version__ = "0.1.0"

__all__ = [
    "ArgumentTypeError",
    "AuditError",
    "AuditLog",
    "CheckpointManager",
    "CliError",
    "CompositeSigningKey",
    "CompositeVerifyKey",
    "DecryptionError",
    "DeviceError",
    "FormatError",
    "IntegrityError",
    "InvalidArgumentError",
    "Keystore",
    "KeystoreError",
    "NoCheckpointError",
    "NoKeyError",
    "PQRecipientKey",
    "PQRecipientPublicKey",
    "Passphrase",
    "PublicInfo",
    "RecipientKey",
    "RecipientPublicKey",
    "RollbackError",
    "SealedCkptError",
    "SealedCkptWarning",
    "SignatureError",
    "Signer",
    "SigningKey",
    "SymmetricKey",
    "UnsafePayloadError",
    "UnsupportedTypeError",
    "VerifyKey",
    "VerifyResult",
    "allow_classical_recipients",
    "audit",
    "inspect",
    "load",
    "load_dir",
    "open",
    "rewrap_file",
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
