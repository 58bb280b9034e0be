"""Lightning: sealed checkpoints through ``Trainer(plugins=[SealedCheckpointIO(key=...)])``.

Every checkpoint the Trainer writes or reads (``ModelCheckpoint``, ``trainer.save_checkpoint``,
``fit(ckpt_path=...)``, ``validate``/``test``/``predict`` with ``ckpt_path``) goes through the
plugin: sealed with :func:`sealedckpt.save`, read with :func:`sealedckpt.load`, never pickled.
Lightning's checkpoint dict (``state_dict``, ``optimizer_states``, ``lr_schedulers``, ``loops``,
``callbacks``, ``hyper_parameters``) is stored by the no-pickle codec; a value it cannot hold is
refused at save with an :class:`~sealedckpt.errors.UnsupportedTypeError` naming its path in the
dict (``hyper_parameters.fn: type ... cannot be stored without pickle``).

``LightningModule.load_from_checkpoint`` (and ``LightningDataModule.load_from_checkpoint``)
does NOT go through the plugin: it calls ``torch.load`` itself. Use :func:`load_from_checkpoint`
here instead.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .api import load, save
from .api._keys import LoadKey, SaveKey, Trusted
from .crypto import SigningKey
from .errors import InvalidArgumentError
from .stores.audit import AuditLog
from .stores.keystore import Keystore

try:
    from lightning.fabric.plugins.io.checkpoint_io import CheckpointIO
    from lightning.fabric.utilities.data import AttributeDict
except ImportError as exc:  # pragma: no cover - the optional extra
    raise ImportError("sealedckpt.lightning needs Lightning: pip install 'sealedckpt[lightning]'") from exc

_HPARAMS_KEYS = ("hyper_parameters", "datamodule_hyper_parameters")


def _local(path: Any) -> str:
    """A local filesystem path (``file://`` accepted); other URLs are refused, not guessed."""
    text = str(os.fspath(path))
    if text.startswith("file://"):
        return text[len("file://") :]
    if "://" in text:
        raise InvalidArgumentError(f"{text}: SealedCheckpointIO writes local paths only", hint="use a local dirpath")
    return text


def _plain(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    """Lightning's ``AttributeDict`` hyper-parameters as plain dicts (what they load back as;
    ``LightningModule`` accepts either). Nothing else is converted: the codec decides."""
    out = dict(checkpoint)
    for k in _HPARAMS_KEYS:
        if type(out.get(k)) is AttributeDict:
            out[k] = dict(out[k])
    return out


class SealedCheckpointIO(CheckpointIO):
    """Lightning ``CheckpointIO`` writing sealed checkpoints (AES-256-GCM, optional signatures).

    ``key``: what :func:`sealedckpt.save` takes (a key, a recipient, a keystore name; ``None`` =
    the keystore's default key); ``load_key``: what loads take when it differs (a recipient's
    secret key). ``sign_with`` signs every checkpoint; ``trusted_signers`` makes every load
    require a signature by one of them."""

    def __init__(
        self,
        key: SaveKey | Sequence[SaveKey] | None = None,
        *,
        load_key: LoadKey | Sequence[LoadKey] | None = None,
        sign_with: SigningKey | Sequence[SigningKey] | None = None,
        trusted_signers: Trusted = None,
        keystore: Keystore | None = None,
        audit: AuditLog | None = None,
    ) -> None:
        super().__init__()
        self._key = key
        self._load_key: Any = load_key if load_key is not None else key
        self._sign_with = sign_with
        self._trusted = trusted_signers
        self._keystore = keystore
        self._audit = audit

    def __repr__(self) -> str:  # never the key
        return (
            f"{type(self).__name__}(signed={self._sign_with is not None}, trusted_signers={self._trusted is not None})"
        )

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise InvalidArgumentError("storage_options is not supported by SealedCheckpointIO")
        target = _local(path)
        os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
        save(_plain(checkpoint), target, key=self._key, sign_with=self._sign_with, keystore=self._keystore,
             audit=self._audit)  # fmt: skip

    def load_checkpoint(
        self, path: Any, map_location: Any | None = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        """Every sealed load is weights-only (no pickle): ``weights_only`` changes nothing."""
        obj = load(_local(path), map_location, key=self._load_key, trusted_signers=self._trusted,
                   keystore=self._keystore, audit=self._audit)  # fmt: skip
        if not isinstance(obj, dict):
            raise InvalidArgumentError(f"{os.fspath(path)} does not hold a Lightning checkpoint (a dict)")
        return obj

    def remove_checkpoint(self, path: Any) -> None:
        target = _local(path)
        if os.path.isdir(target) and not os.path.islink(target):
            raise InvalidArgumentError(f"{target} is a directory, not a sealed checkpoint")
        if os.path.lexists(target):
            os.unlink(target)


def load_from_checkpoint(
    cls: Any,
    path: str | os.PathLike[str],
    *,
    key: LoadKey | Sequence[LoadKey] | None = None,
    trusted_signers: Trusted = None,
    map_location: Any = None,
    strict: bool | None = None,
    keystore: Keystore | None = None,
    audit: AuditLog | None = None,
    **kwargs: Any,
) -> Any:
    """The sealed ``cls.load_from_checkpoint(path, ...)`` for a ``LightningModule`` or
    ``LightningDataModule`` subclass: the module is built from the checkpoint's hyper-parameters
    (``kwargs`` override them, as in Lightning), its ``on_load_checkpoint`` runs, its state is
    loaded (``strict``) and it is moved to the device of the loaded weights."""
    import torch
    from lightning.pytorch import LightningDataModule, LightningModule
    from lightning.pytorch.core.saving import _load_state
    from lightning.pytorch.utilities.migration.utils import _pl_migrate_checkpoint

    if not (isinstance(cls, type) and issubclass(cls, (LightningModule, LightningDataModule))):
        raise InvalidArgumentError(f"expected a LightningModule or LightningDataModule class, got {cls!r}")
    checkpoint = load(path, map_location, key=key, trusted_signers=trusted_signers, keystore=keystore, audit=audit)
    if not isinstance(checkpoint, dict):
        raise InvalidArgumentError(f"{os.fspath(path)} does not hold a Lightning checkpoint (a dict)")
    checkpoint = _pl_migrate_checkpoint(checkpoint, checkpoint_path=Path(path))
    checkpoint.setdefault(cls.CHECKPOINT_HYPER_PARAMS_KEY, {})
    checkpoint[cls.CHECKPOINT_HYPER_PARAMS_KEY].update(kwargs)
    if issubclass(cls, LightningDataModule):
        return _load_state(cls, checkpoint, **kwargs)
    model: Any = _load_state(cls, checkpoint, strict=strict, **kwargs)
    state_dict = checkpoint.get("state_dict") or {}
    device = next((t.device for t in state_dict.values() if isinstance(t, torch.Tensor)), None)
    return model.to(device) if device is not None else model
