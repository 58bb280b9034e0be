"""Every parser, fed arbitrary input, either accepts it or raises a SealedCkptError."""

from __future__ import annotations

import io
import json
import struct
from typing import Any

import pytest
import torch
from helpers import assert_same, seal_raw_payload
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sealedckpt
from sealedckpt.container import format as fmt
from sealedckpt.container import sniff
from sealedckpt.payload import safetensors as payload
from sealedckpt.payload import structure

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=400))
def test_format_parsers(data: bytes) -> None:
    for parse in (fmt.parse_preamble, fmt.parse_content, fmt.parse_slots):
        try:
            parse(data)
        except sealedckpt.SealedCkptError:
            pass
    for count in (0, 1, 3):
        try:
            fmt.parse_signature_entries(data, count)
        except sealedckpt.SealedCkptError:
            pass


@FUZZ
@given(st.binary(max_size=600), st.binary(max_size=100))
def test_sniffer(head: bytes, tail: bytes) -> None:
    try:
        sniff.refuse_unsealed(head, tail)
    except sealedckpt.SealedCkptError:
        return
    assert head.startswith(fmt.MAGIC)


@FUZZ
@given(st.binary(max_size=2000))
def test_open_arbitrary_bytes_after_magic(rest: bytes) -> None:
    key = sealedckpt.SymmetricKey(bytes(32))
    for data in (fmt.MAGIC + rest, fmt.MAGIC + b"\x01\x00\x00\x00" + rest):
        try:
            sealedckpt.load(io.BytesIO(data), key=key)
        except sealedckpt.SealedCkptError:
            pass
        try:
            sealedckpt.inspect(io.BytesIO(data))
        except sealedckpt.SealedCkptError:
            pass


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=6), kids, max_size=4),
    max_leaves=25,
)


@FUZZ
@given(json_values, st.integers(0, 64))
def test_payload_header_parser(obj: Any, data_len: int) -> None:
    raw = json.dumps(obj).encode()
    try:
        payload.parse_header(raw, data_len)
    except sealedckpt.SealedCkptError:
        pass


@FUZZ
@given(st.binary(max_size=300), st.integers(0, 1 << 40))
def test_payload_header_len(prefix: bytes, total: int) -> None:
    try:
        n = payload.header_len(prefix, total)
    except sealedckpt.SealedCkptError:
        return
    assert 2 <= n <= payload.MAX_HEADER_LEN and 8 + n <= total


def _payload_with_structure(
    structure: Any, entries: dict[str, Any] | None = None, data: bytes = b"", raw: str | None = None
) -> bytes:
    header = {
        "__metadata__": {
            payload.VERSION_KEY: payload.STRUCTURE_VERSION,
            payload.STRUCTURE_KEY: raw if raw is not None else json.dumps(structure),
        },
        **(entries or {}),
    }
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + data


tagged = st.recursive(
    json_values,
    lambda kids: (
        st.fixed_dictionaries(
            {
                "t": st.sampled_from(
                    [
                        "tuple",
                        "dict",
                        "odict",
                        "float",
                        "bytes",
                        "dtype",
                        "device",
                        "size",
                        "tensor",
                        "ndarray",
                        "npscalar",
                        "set",
                        "frozenset",
                        "namespace",
                        "simplens",
                        "dataclass",
                        "complex",
                        "datetime",
                        "date",
                        "time",
                        "timedelta",
                        "decimal",
                        "uuid",
                        "path",
                        "enum",
                        "zzz",
                    ]
                )
            },
            optional={
                "v": kids,
                "e": st.sampled_from(["w", "missing", 3]),
                "dtype": st.sampled_from(["F32", "U8", "<f4", "x"]),
                "shape": st.lists(st.integers(-1, 5), max_size=3),
                "stride": st.lists(st.integers(-1, 5), max_size=3),
                "offset": st.integers(-1, 10),
                "device": st.sampled_from(["cpu", "meta", "bogus"]),
                "meta": kids,
                "cls": st.sampled_from(["PosixPath", "WindowsPath", "nope", "os:PathLike"]),
                "module": st.sampled_from(["re", "os", "enum", "not_imported_zz"]),
                "qualname": st.sampled_from(["RegexFlag", "sep", "Enum", "A.B"]),
                "name": st.sampled_from(["IGNORECASE", "X", ""]),
                "tzname": st.text(max_size=3),
                "fold": st.integers(-1, 2),
            },
        )
        | st.lists(kids, max_size=3)
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tagged)
def test_structure_decoder_through_a_sealed_file(structure: Any) -> None:
    key = sealedckpt.SymmetricKey(bytes(range(32)))
    entries = {"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}
    blob = seal_raw_payload(_payload_with_structure(structure, entries, bytes(16)), [key])
    try:
        sealedckpt.load(io.BytesIO(blob), key=key)
    except sealedckpt.SealedCkptError:
        pass


leaf = (
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8) | st.binary(max_size=8)
    | st.builds(lambda n, s: torch.arange(n, dtype=torch.float32)[s:], st.integers(0, 20), st.integers(0, 3))
    | st.sampled_from([torch.float16, torch.int64]) | st.builds(torch.Size, st.lists(st.integers(0, 5), max_size=3))
    | st.complex_numbers() | st.datetimes() | st.dates() | st.timedeltas() | st.decimals() | st.uuids()
    | st.frozensets(st.integers() | st.text(max_size=3), max_size=3)
)  # fmt: skip
keys = st.text(max_size=5) | st.integers() | st.tuples(st.integers())
checkpoints = st.recursive(
    leaf,
    lambda kids: st.lists(kids, max_size=4) | st.tuples(kids, kids) | st.dictionaries(keys, kids, max_size=4),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None)
@given(checkpoints)
def test_any_storable_object_round_trips(obj: Any) -> None:
    key = sealedckpt.SymmetricKey(bytes(32))
    buf = io.BytesIO()
    sealedckpt.save(obj, buf, key=key)
    out = sealedckpt.load(io.BytesIO(buf.getvalue()), key=key)
    assert_same(obj, out)


def test_deep_nesting_is_refused_on_both_sides() -> None:
    key = sealedckpt.SymmetricKey(bytes(32))
    deep: Any = 1
    for _ in range(structure.MAX_DEPTH + 5):
        deep = [deep]
    try:
        sealedckpt.save(deep, io.BytesIO(), key=key)
        raise AssertionError("expected UnsupportedTypeError")
    except sealedckpt.UnsupportedTypeError as exc:
        assert "nested deeper" in str(exc)
    blob = seal_raw_payload(_payload_with_structure(None, raw="[" * 5000 + "]" * 5000), [key])
    try:
        sealedckpt.load(io.BytesIO(blob), key=key)
        raise AssertionError("expected FormatError")
    except sealedckpt.FormatError:
        pass


@pytest.mark.parametrize(
    ("entry_shape", "node_shape", "node_stride"),
    [
        ([2**40, 2**40, 0], [2**40, 2**40, 0], [0, 0, 1]),  # an entry no runtime can allocate
        ([0], [2**40, 2**40, 0], [0, 0, 1]),  # a view no runtime can represent over a valid entry
        ([0, 2**61], None, None),  # within the limits: loads as an empty tensor of that shape
    ],
)
def test_zero_size_shapes_beyond_int64_are_refused(
    entry_shape: list[int], node_shape: list[int] | None, node_stride: list[int] | None
) -> None:
    """A key holder could write an empty entry whose shape overflows int64 element counts: it is
    a FormatError, never a RuntimeError from torch."""
    key = sealedckpt.SymmetricKey(bytes(range(32)))
    shape = node_shape if node_shape is not None else entry_shape
    stride = node_stride if node_stride is not None else [1] * len(shape)
    node = {"t": "tensor", "e": "w", "dtype": "F32", "shape": shape, "stride": stride, "offset": 0, "device": "cpu"}
    entries = {"w": {"dtype": "F32", "shape": entry_shape, "data_offsets": [0, 0]}}
    blob = seal_raw_payload(_payload_with_structure({"t": "dict", "v": [["w", node]]}, entries), [key])
    if node_shape is None:
        out = sealedckpt.load(io.BytesIO(blob), key=key)
        assert out["w"].shape == (0, 2**61) and out["w"].dtype == torch.float32
        return
    with pytest.raises(sealedckpt.FormatError, match=r"too large|shape"):
        sealedckpt.load(io.BytesIO(blob), key=key)
    with pytest.raises(sealedckpt.FormatError):
        with sealedckpt.open(io.BytesIO(blob), key=key) as f:
            f.get_tensor("w")
