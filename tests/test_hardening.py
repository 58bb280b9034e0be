"""Hardening: security switches fail closed; protected keystore keys are unlocked once."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import sealedckpt


@pytest.fixture
def unsigned(tmp_path: Path, key: sealedckpt.SymmetricKey) -> Path:
    p = tmp_path / "u.sealed"
    sealedckpt.save({"w": torch.ones(2)}, p, key=key)
    return p


@pytest.mark.parametrize("value", ["required", "enabled", "always", "y", "2", "ON please"])
def test_require_signature_unknown_value_fails_closed(
    monkeypatch: pytest.MonkeyPatch, unsigned: Path, key: sealedckpt.SymmetricKey, value: str
) -> None:
    monkeypatch.setenv("SEALEDCKPT_REQUIRE_SIGNATURE", value)
    with pytest.raises(sealedckpt.SignatureError, match="SEALEDCKPT_REQUIRE_SIGNATURE must be 1 or 0"):
        sealedckpt.load(unsigned, key=key)
    with pytest.raises(sealedckpt.SignatureError, match="must be 1 or 0"):
        sealedckpt.open(unsigned, key=key)
    with pytest.raises(sealedckpt.SignatureError, match="must be 1 or 0"):
        sealedckpt.verify(unsigned)


@pytest.mark.parametrize("value", ["0", "off", "no", "false", ""])
def test_require_signature_off_values(
    monkeypatch: pytest.MonkeyPatch, unsigned: Path, key: sealedckpt.SymmetricKey, value: str
) -> None:
    monkeypatch.setenv("SEALEDCKPT_REQUIRE_SIGNATURE", value)
    assert torch.equal(sealedckpt.load(unsigned, key=key)["w"], torch.ones(2))
