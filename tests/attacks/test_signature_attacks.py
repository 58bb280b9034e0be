"""Signature and key-slot attacks (corpus from the sibling ``make_sig_corpus.py``): every entry
point that opens a case raises exactly the expected class, and none reports the publisher."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from make_sig_corpus import Case, make_sig_corpus

import sealedckpt
from sealedckpt import container

CASES = {c.name: c for c in make_sig_corpus()}


def _raises(case: Case, fn) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(sealedckpt.SealedCkptError) as info:
        fn()
    assert type(info.value) is case.error, f"{case.name}: {info.value!r}"


@pytest.mark.parametrize("name", list(CASES))
def test_load_refuses(name: str) -> None:
    case = CASES[name]
    _raises(case, lambda: sealedckpt.load(io.BytesIO(case.data), key=case.keys, trusted_signers=case.trusted))


@pytest.mark.parametrize("name", list(CASES))
def test_container_reader_never_reports_the_publisher(name: str) -> None:
    """open_sealed, then a full decrypt: it fails, and no signer was ever reported as verified."""
    case = CASES[name]

    def run() -> None:
        reader = container.open_sealed(io.BytesIO(case.data), case.keys, trusted_signers=case.trusted)
        assert reader.signers == []  # nothing checked yet
        try:
            reader.decrypt_regions([])
        finally:
            assert reader.signature_status != "verified" and reader.signers == []

    _raises(case, run)


@pytest.mark.parametrize("name", [n for n in CASES if n.startswith(("coreceipient", "identity"))])
def test_keyless_entry_points_refuse(name: str) -> None:
    case = CASES[name]
    _raises(case, lambda: container.verify_file(io.BytesIO(case.data), case.trusted))
    signer = sealedckpt.SigningKey.generate()
    _raises(case, lambda: container.add_signatures(io.BytesIO(case.data), io.BytesIO(), [signer]))


def test_lazy_open_refuses_the_forged_tensor_only() -> None:
    case = CASES["coreceipient_reencrypted_no_policy"]
    with sealedckpt.open(io.BytesIO(case.data), key=case.keys) as f:
        assert f.get_tensor("a").sum().item() == 0  # untouched chunks are vouched for
        with pytest.raises(sealedckpt.IntegrityError, match="signed digest"):
            f.get_tensor("c")
