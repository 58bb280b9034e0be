from __future__ import annotations

import pytest

import sealedckpt


@pytest.fixture
def key() -> sealedckpt.SymmetricKey:
    return sealedckpt.SymmetricKey.generate()


@pytest.fixture
def signer() -> sealedckpt.SigningKey:
    return sealedckpt.SigningKey.generate()
