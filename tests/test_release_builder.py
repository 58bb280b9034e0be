"""Sealed directories built from memory (release.builder): names checked, complete or absent."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import sealedckpt
from sealedckpt.crypto import SymmetricKey
from sealedckpt.errors import FormatError, InvalidArgumentError
from sealedckpt.payload.flat import plan_flat
from sealedckpt.release.builder import Item, blob_item, seal_items


def _shard(name: str, tensors: dict[str, torch.Tensor]) -> Item:
    plan = plan_flat(tensors, {"format": "pt"})
    return Item(name, "safetensors", plan.payload_len, plan.segments())


def test_in_memory_files_load_and_unseal_like_seal_dir(tmp_path: Path) -> None:
    key = SymmetricKey.generate()
    t = torch.arange(12, dtype=torch.bfloat16).reshape(3, 4).t()  # not contiguous: laid out contiguously
    seal_items(tmp_path / "d", [blob_item("config.json", b'{"a": 1}'), _shard("w.safetensors", {"t": t})], keys=[key])
    assert torch.equal(sealedckpt.load_dir(tmp_path / "d", key=key)["t"], t)
    sealedckpt.unseal_dir(tmp_path / "d", tmp_path / "u", key=key)
    assert (tmp_path / "u" / "config.json").read_bytes() == b'{"a": 1}'
    import safetensors.torch as st

    assert torch.equal(st.load_file(tmp_path / "u" / "w.safetensors")["t"], t)


@pytest.mark.parametrize(
    "items",
    [
        [blob_item("../x.json", b"{}")],
        [blob_item("sealedckpt-manifest.json", b"{}")],
        [blob_item("a.json", b"{}"), blob_item("a.json", b"{}")],
        [blob_item("model.safetensors", b"{}")],
        [],
    ],
)
def test_bad_names_are_refused_and_nothing_is_left(tmp_path: Path, items: list[Item]) -> None:
    with pytest.raises((InvalidArgumentError, FormatError)):
        seal_items(tmp_path / "d", items, keys=[SymmetricKey.generate()])
    assert list(tmp_path.iterdir()) == []


def test_a_non_empty_target_is_refused(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x").write_text("x")
    with pytest.raises(FormatError, match="not empty"):
        seal_items(tmp_path / "d", [blob_item("a.json", b"{}")], keys=[SymmetricKey.generate()])
