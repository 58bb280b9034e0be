"""The payload parsers, called directly (no catch-all around them), raise only SealedCkptError on
crafted headers and structure JSON: errors are typed where they are detected."""

from __future__ import annotations

import io
import json
import struct
from typing import Any

import pytest
import torch
from helpers import seal_raw_payload
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sealedckpt
from sealedckpt import container
from sealedckpt.payload import safetensors as payload
from sealedckpt.payload.codec import decode_payload, plan_payload
from sealedckpt.payload.lazy import SealedFile

KEY = sealedckpt.SymmetricKey(bytes(range(32)))
FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _reader(blob: bytes) -> container.SealedReader:
    return container.open_sealed(io.BytesIO(blob), [KEY])


def _raw(header: dict[str, Any], data: bytes) -> bytes:
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + data


def _both_readers(blob: bytes) -> None:
    """Full decode, and every tensor of the lazy reader: only a SealedCkptError may escape."""
    try:
        decode_payload(_reader(blob))
    except sealedckpt.SealedCkptError:
        pass
    try:
        f = SealedFile(_reader(blob), "cpu", None)
        for name in f.keys():
            f.get_tensor(name)
            f.get_slice(name)[:1]
    except sealedckpt.SealedCkptError:
        pass


def _template() -> tuple[dict[str, Any], Any, bytes]:
    """A real payload: its header (without structure), its structure, its data section."""
    obj = {
        "w": torch.arange(6, dtype=torch.float32).reshape(2, 3),
        "tied": torch.arange(4, dtype=torch.int64)[1:],
        "flags": torch.tensor([True, False]),
        "t": (1, b"x", float("inf"), torch.float16, torch.device("cpu"), torch.Size([2])),
    }
    plan = plan_payload(obj)
    raw = b"".join(bytes(s) for s in plan.segments())
    hlen = payload.header_len(raw[:8], len(raw))
    header = json.loads(raw[8 : 8 + hlen])
    structure = json.loads(header["__metadata__"].pop(payload.STRUCTURE_KEY))
    return header, structure, raw[8 + hlen :]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=6),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=6), kids, max_size=3),
    max_leaves=8,
)


def _nodes(node: Any, out: list[Any]) -> list[Any]:
    if isinstance(node, dict):
        out.append(node)
        for v in node.values():
            _nodes(v, out)
    elif isinstance(node, list):
        out.append(node)
        for v in node:
            _nodes(v, out)
    return out


@FUZZ
@given(st.data())
def test_mutated_structure(data: st.DataObject) -> None:
    header, structure, body = _template()
    target = data.draw(st.sampled_from(_nodes(structure, [])))
    if isinstance(target, dict):
        field = data.draw(st.sampled_from([*target, "zz"]))
        if data.draw(st.booleans()) and field in target:
            del target[field]
        else:
            target[field] = data.draw(json_values)
    elif target:
        target[data.draw(st.integers(0, len(target) - 1))] = data.draw(json_values)
    header["__metadata__"][payload.STRUCTURE_KEY] = json.dumps(structure)
    _both_readers(seal_raw_payload(_raw(header, body), [KEY]))


@FUZZ
@given(st.data())
def test_mutated_header(data: st.DataObject) -> None:
    header, structure, body = _template()
    header["__metadata__"][payload.STRUCTURE_KEY] = json.dumps(structure)
    name = data.draw(st.sampled_from(sorted(header)))
    info = header[name]
    field = data.draw(st.sampled_from([*info, "zz"]))
    info[field] = data.draw(json_values)
    _both_readers(seal_raw_payload(_raw(header, body), [KEY]))


def _tensor_file(**fields: Any) -> bytes:
    node = {"t": "tensor", "e": "a", "dtype": "I32", "shape": [2], "stride": [1], "offset": 0, "device": "cpu"}
    node.update(fields)
    structure = {"t": "dict", "v": [["x", node]]}
    header = {
        "__metadata__": {payload.VERSION_KEY: payload.STRUCTURE_VERSION, payload.STRUCTURE_KEY: json.dumps(structure)},
        "a": {"dtype": "I32", "shape": [2], "data_offsets": [0, 8]},
    }
    return seal_raw_payload(_raw(header, bytes(8)), [KEY])


@pytest.mark.parametrize(
    "fields",
    [{"dtype": []}, {"dtype": {}}, {"rg": True}, {"param": True, "rg": True}, {"rg": "yes"}, {"offset": True}],
)
def test_known_crafted_tensor_nodes(fields: dict[str, Any]) -> None:
    blob = _tensor_file(**fields)
    with pytest.raises(sealedckpt.FormatError):
        sealedckpt.load(io.BytesIO(blob), key=KEY)
    with pytest.raises(sealedckpt.FormatError):
        with sealedckpt.open(io.BytesIO(blob), key=KEY) as f:
            f.get_tensor("x")


def test_unknown_saved_device() -> None:
    """A device torch knows the name of but cannot use: a DeviceError when loading onto it; the
    lazy reader places tensors on the device it was opened with, so it reads them."""
    blob = _tensor_file(device="hpu:0")
    with pytest.raises(sealedckpt.DeviceError):
        sealedckpt.load(io.BytesIO(blob), key=KEY)
    assert sealedckpt.load(io.BytesIO(blob), key=KEY, map_location="cpu")["x"].dtype == torch.int32
    with sealedckpt.open(io.BytesIO(blob), key=KEY) as f:
        assert f.get_tensor("x").device.type == "cpu"


def test_save_of_an_unencodable_string() -> None:
    with pytest.raises(sealedckpt.UnsupportedTypeError, match="surrogate"):
        sealedckpt.save({"a": "\ud800"}, io.BytesIO(), key=KEY)


def test_map_location_mistakes_are_typed() -> None:
    blob = _tensor_file()
    with pytest.raises(sealedckpt.ArgumentTypeError):
        sealedckpt.load(io.BytesIO(blob), key=KEY, map_location=3)  # type: ignore[arg-type]
    with pytest.raises(sealedckpt.ArgumentTypeError):
        sealedckpt.load(io.BytesIO(blob), key=KEY, map_location=lambda s, loc: None)
