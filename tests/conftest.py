from __future__ import annotations

import pytest

import sealedckpt


@pytest.fixture
def key() -> sealedckpt.SymmetricKey:
    return sealedckpt.SymmetricKey.generate()


@pytest.fixture
def signer() -> sealedckpt.SigningKey:
    return sealedckpt.SigningKey.generate()


@pytest.fixture(autouse=True)
def _isolated_keystore(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never touch the developer's real keystore or keyring."""
    monkeypatch.setenv("SEALEDCKPT_HOME", str(tmp_path_factory.mktemp("sealedckpt-home")))
    monkeypatch.setenv("SEALEDCKPT_KEYSTORE", "file")
    monkeypatch.delenv("SEALEDCKPT_KEY", raising=False)
    monkeypatch.delenv("SEALEDCKPT_KEYSTORE_PASSPHRASE_FILE", raising=False)
