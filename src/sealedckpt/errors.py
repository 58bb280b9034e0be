"""The one error family raised by sealedckpt: every exception class of the package is here.

Every failure is a :class:`SealedCkptError`; callers never see a raw ``ValueError``,
``KeyError`` or ``cryptography.exceptions.InvalidTag`` from us. A caller's mistake on the save
side is also a ``TypeError`` or ``ValueError`` (:class:`ArgumentTypeError`,
:class:`InvalidArgumentError`), so ``except ValueError`` in existing code keeps working.
"""

from __future__ import annotations


class SealedCkptError(Exception):
    """Root of every error sealedckpt raises on purpose."""

    #: A short, actionable suggestion shown by the CLI as ``hint: ...``.
    hint: str | None = None

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        if hint is not None:
            self.hint = hint

    def __str__(self) -> str:
        base = super().__str__()
        return f"{base} (hint: {self.hint})" if self.hint else base


class FormatError(SealedCkptError):
    """Not a sealed checkpoint, or one whose structure is malformed."""


class IntegrityError(SealedCkptError):
    """The file was tampered with, truncated, reordered or spliced."""


class DecryptionError(SealedCkptError):
    """No key slot in the file opens with the keys given."""


class NoKeyError(DecryptionError):
    """No key was given and no default key is configured."""


class SignatureError(SealedCkptError):
    """A signature is missing, invalid, or not from a trusted signer."""


class RollbackError(SignatureError):
    """The file's public model name or version is not the one required (a replayed release)."""


class UnsafePayloadError(SealedCkptError):
    """The input is a pickle, torch.save zip, TorchScript or tar archive: refused."""


class DeviceError(SealedCkptError):
    """A tensor cannot be placed on the requested (or recorded) device."""


class UnsupportedTypeError(SealedCkptError, TypeError):
    """An object handed to ``save`` cannot be stored without pickle.

    ``path`` names where it sits inside the checkpoint, e.g. ``optimizer.state.3.foo``.
    """

    def __init__(self, path: str, message: str, *, hint: str | None = None) -> None:
        self.path = path
        self._message = message
        where = path if path else "<root>"
        super().__init__(f"cannot store {where}: {message}", hint=hint)

    def __reduce__(self) -> tuple[object, ...]:  # pickled between DCP's ranks (in memory)
        return (type(self), (self.path, self._message), self.__dict__)


class ArgumentTypeError(SealedCkptError, TypeError):
    """An argument of the wrong type (a key that is not a key, a signer that is not a SigningKey)."""


class InvalidArgumentError(SealedCkptError, ValueError):
    """An argument with a value that cannot work (no key to seal for, a key given twice)."""


class KeystoreError(SealedCkptError):
    """The keystore is missing, unsafe, inconsistent, or has no such key."""


class AuditError(SealedCkptError):
    """The audit log is malformed or was tampered with, or a record was refused."""


class CliError(SealedCkptError):
    """A command-line failure with its exit code (``sealedckpt: error: ...``)."""

    def __init__(self, message: str, code: int = 1, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.code = code


class NoCheckpointError(SealedCkptError, LookupError):
    """A checkpoint manager's directory holds no checkpoint (of the step asked for)."""


class StorageError(SealedCkptError, OSError):
    """Object storage or a remote file system failed (network, permissions, a missing bucket).

    The message names the URL, never credentials. Also an ``OSError``, as a local file's failure is.
    """

    hint = "check the URL, the credentials and the endpoint (storage_options, or AWS_* / FSSPEC_* environment)"

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        SealedCkptError.__init__(self, message, hint=hint)


class StorageNotFoundError(StorageError, FileNotFoundError):
    """No object under that URL (also a ``FileNotFoundError``)."""


class SealedCkptWarning(UserWarning):
    """Something was skipped rather than failed: a foreign file beside checkpoints, a damaged
    checkpoint passed over by ``CheckpointManager.load(fallback=True)``."""
