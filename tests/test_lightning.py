"""Lightning through SealedCheckpointIO: train, checkpoint, resume, all sealed and pickle-free."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("lightning")
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

import sealedckpt
from sealedckpt.crypto import SigningKey, SymmetricKey
from sealedckpt.errors import IntegrityError, SealedCkptError, SignatureError, UnsupportedTypeError
from sealedckpt.lightning import SealedCheckpointIO, load_from_checkpoint


class Tiny(LightningModule):
    def __init__(self, hidden: int = 4, lr: float = 0.05, name: str = "tiny") -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Sequential(torch.nn.Linear(3, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 1))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return torch.nn.functional.mse_loss(self.net(x), y)

    def configure_optimizers(self) -> Any:
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr)
        return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)}


def _data() -> DataLoader[Any]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 3, generator=g)
    return DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=8)


def _trainer(tmp_path: Path, io: SealedCheckpointIO, epochs: int) -> tuple[Trainer, ModelCheckpoint]:
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpts", save_last=True, save_top_k=-1)
    trainer = Trainer(
        max_epochs=epochs, limit_train_batches=3, plugins=[io], callbacks=[ckpt], logger=False,
        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", devices=1,
        num_sanity_val_steps=0,
    )  # fmt: skip
    return trainer, ckpt


@pytest.fixture
def key() -> SymmetricKey:
    return SymmetricKey.generate()


def test_train_resume_last_is_sealed_and_restores_everything(tmp_path: Path, key: SymmetricKey) -> None:
    signer = SigningKey.generate()
    io = SealedCheckpointIO(key=key, sign_with=signer, trusted_signers=[signer.public])
    torch.manual_seed(0)
    trainer, ckpt = _trainer(tmp_path, io, 2)
    trainer.fit(Tiny(), _data())
    last = tmp_path / "ckpts" / "last.ckpt"
    raw = last.read_bytes()
    assert raw[:4] != b"PK\x03\x04" and raw[:1] != b"\x80"  # not torch.save's zip or a pickle
    assert [s.key_id for s in sealedckpt.verify(last, trusted_signers=[signer.public]).signers] == [signer.key_id]
    saved = sealedckpt.load(last, key=key)
    assert saved["epoch"] == 1 and saved["global_step"] == 6
    assert saved["hyper_parameters"] == {"hidden": 4, "lr": 0.05, "name": "tiny"}
    assert type(saved["hyper_parameters"]) is dict
    assert any(k.startswith("ModelCheckpoint{") for k in saved["callbacks"])
    assert sorted(os.listdir(tmp_path / "ckpts")) == ["epoch=0-step=3.ckpt", "epoch=1-step=6.ckpt", "last.ckpt"]

    resumed_model = Tiny()
    trainer2, ckpt2 = _trainer(tmp_path, SealedCheckpointIO(key=key, trusted_signers=[signer.public]), 2)
    seen: dict[str, Any] = {}

    def capture(trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        seen["checkpoint"] = checkpoint

    resumed_model.on_load_checkpoint = lambda c: capture(trainer2, resumed_model, c)  # type: ignore[method-assign]
    trainer2.fit(resumed_model, _data(), ckpt_path="last")  # max_epochs reached: restores, trains nothing more
    assert seen["checkpoint"]["global_step"] == 6
    assert trainer2.current_epoch == 2 and trainer2.global_step == 6
    for a, b in zip(trainer.model.parameters(), resumed_model.parameters(), strict=True):  # type: ignore[union-attr]
        assert torch.equal(a, b)
    sa, sb = trainer.optimizers[0].state_dict(), trainer2.optimizers[0].state_dict()
    assert sa["param_groups"] == sb["param_groups"]
    for i, st in sa["state"].items():
        assert all(torch.equal(st[k], sb["state"][i][k]) for k in st)
    assert (
        trainer2.lr_scheduler_configs[0].scheduler.state_dict()
        == trainer.lr_scheduler_configs[0].scheduler.state_dict()
    )
    assert ckpt2.state_dict() == ckpt.state_dict()
    assert ckpt2.best_model_path == ckpt.best_model_path and ckpt2.last_model_path == ckpt.last_model_path


def test_resume_continues_like_an_uninterrupted_run(tmp_path: Path, key: SymmetricKey) -> None:
    torch.manual_seed(0)
    full, _ = _trainer(tmp_path / "full", SealedCheckpointIO(key=key), 3)
    m_full = Tiny()
    full.fit(m_full, _data())
    torch.manual_seed(0)
    first, _ = _trainer(tmp_path / "split", SealedCheckpointIO(key=key), 2)
    first.fit(Tiny(), _data())
    again, _ = _trainer(tmp_path / "split", SealedCheckpointIO(key=key), 3)
    m_again = Tiny()
    again.fit(m_again, _data(), ckpt_path="last")
    assert again.global_step == full.global_step == 9
    for a, b in zip(m_full.parameters(), m_again.parameters(), strict=True):
        assert torch.equal(a, b)


def test_wrong_key_untrusted_signer_and_tampering_fail(tmp_path: Path, key: SymmetricKey) -> None:
    trainer, _ = _trainer(tmp_path, SealedCheckpointIO(key=key), 1)
    trainer.fit(Tiny(), _data())
    last = tmp_path / "ckpts" / "last.ckpt"
    with pytest.raises(SealedCkptError):
        _trainer(tmp_path, SealedCheckpointIO(key=SymmetricKey.generate()), 2)[0].fit(
            Tiny(), _data(), ckpt_path=str(last)
        )
    with pytest.raises(SignatureError):
        io = SealedCheckpointIO(key=key, trusted_signers=[SigningKey.generate().public])
        _trainer(tmp_path, io, 2)[0].fit(Tiny(), _data(), ckpt_path=str(last))
    raw = bytearray(last.read_bytes())
    raw[len(raw) // 2] ^= 1
    last.write_bytes(bytes(raw))
    with pytest.raises((IntegrityError, SealedCkptError)):
        _trainer(tmp_path, SealedCheckpointIO(key=key), 2)[0].fit(Tiny(), _data(), ckpt_path=str(last))


class Opaque:
    """Picklable (Lightning keeps it in hparams), but no type the no-pickle codec stores."""


class WithOpaque(Tiny):
    def __init__(self, fn: Any = None) -> None:
        super().__init__()
        self.save_hyperparameters()


def test_unstorable_hyperparameter_is_refused_naming_its_path(tmp_path: Path, key: SymmetricKey) -> None:
    trainer, _ = _trainer(tmp_path, SealedCheckpointIO(key=key), 1)
    with pytest.raises(UnsupportedTypeError, match=r"hyper_parameters\.fn") as info:
        trainer.fit(WithOpaque(fn=Opaque()), _data())
    assert "Opaque" in str(info.value) and "pickle" in str(info.value)
    assert not (tmp_path / "ckpts").exists() or not any(p.suffix == ".ckpt" for p in (tmp_path / "ckpts").iterdir())


def test_sealed_load_from_checkpoint_replaces_lightnings(tmp_path: Path, key: SymmetricKey) -> None:
    trainer, _ = _trainer(tmp_path, SealedCheckpointIO(key=key), 1)
    trained = Tiny(hidden=5, lr=0.1)
    trainer.fit(trained, _data())
    last = tmp_path / "ckpts" / "last.ckpt"
    with pytest.raises(Exception):  # noqa: B017 - Lightning's own loader calls torch.load: not a sealed file
        Tiny.load_from_checkpoint(last)
    model = load_from_checkpoint(Tiny, last, key=key, name="override")
    assert isinstance(model, Tiny) and model.hparams.hidden == 5 and model.hparams.name == "override"
    for a, b in zip(trained.parameters(), model.parameters(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(SealedCkptError):
        load_from_checkpoint(Tiny, last, key=SymmetricKey.generate())
    with pytest.raises(SealedCkptError):
        load_from_checkpoint(torch.nn.Linear, last, key=key)


def test_remove_and_refusals(tmp_path: Path, key: SymmetricKey) -> None:
    io = SealedCheckpointIO(key=key)
    p = tmp_path / "a" / "x.ckpt"
    io.save_checkpoint({"epoch": 1}, p)
    assert io.load_checkpoint(p) == {"epoch": 1}
    assert io.load_checkpoint(f"file://{p}", weights_only=False) == {"epoch": 1}
    io.remove_checkpoint(p)
    assert not p.exists()
    io.remove_checkpoint(p)  # absent: nothing to do, as Lightning's own
    with pytest.raises(SealedCkptError):
        io.save_checkpoint({"epoch": 1}, p, storage_options={"x": 1})
    with pytest.raises(SealedCkptError, match="local paths"):
        io.save_checkpoint({"epoch": 1}, "s3://bucket/x.ckpt")
    assert "key" not in repr(io).lower() or "SymmetricKey" not in repr(io)
