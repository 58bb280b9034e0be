"""The structure: a checkpoint's non-tensor part as tagged JSON (docs/FORMAT.md §9.2).

Node builders, the field table and the one walker every reader uses. No torch, no numpy.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Protocol

from ..errors import FormatError

MAX_DEPTH = 100

# tag -> {field: (type, required)}; every node also has "t". ``object`` admits any node.
FIELDS: dict[str, dict[str, tuple[type, bool]]] = {
    "tuple": {"v": (list, True)},
    "dict": {"v": (list, True)},
    "odict": {"v": (list, True), "meta": (object, False)},
    "float": {"v": (str, True)},
    "bytes": {"v": (str, True)},
    "dtype": {"v": (str, True)},
    "device": {"v": (str, True)},
    "size": {"v": (list, True)},
    "npscalar": {"dtype": (str, True), "v": (str, True)},
    "ndarray": {"e": (str, True), "dtype": (str, True), "shape": (list, True)},
    "tensor": {
        "e": (str, True), "dtype": (str, True), "shape": (list, True), "stride": (list, True),
        "offset": (int, True), "device": (str, True), "rg": (bool, False), "param": (bool, False),
    },
    "set": {"v": (list, True)},
    "frozenset": {"v": (list, True)},
    "namespace": {"v": (list, True)},
    "simplens": {"v": (list, True)},
    "dataclass": {"cls": (str, True), "v": (list, True)},
    "complex": {"v": (list, True)},
    "datetime": {"v": (str, True), "tzname": (str, False), "fold": (int, False)},
    "date": {"v": (str, True)},
    "time": {"v": (str, True), "tzname": (str, False), "fold": (int, False)},
    "timedelta": {"v": (list, True)},
    "decimal": {"v": (str, True)},
    "uuid": {"v": (str, True)},
    "path": {"cls": (str, True), "v": (str, True)},
    "enum": {"module": (str, True), "qualname": (str, True), "name": (str, True)},
}  # fmt: skip
SET_TAGS = frozenset({"set", "frozenset"})
NAMED_TAGS = frozenset({"namespace", "simplens", "dataclass"})  # string-keyed fields, in order
_LEAF_TAGS = frozenset(FIELDS) - {"tuple", "dict", "odict"} - SET_TAGS - NAMED_TAGS


def tagged(tag: str, v: Any) -> dict[str, Any]:
    """A node holding one value: ``{"t": tag, "v": v}``."""
    return {"t": tag, "v": v}


def contiguous_strides(shape: Sequence[int]) -> list[int]:
    """Row-major strides of ``shape`` (a zero dimension counts as one)."""
    strides, acc = [], 1
    for d in reversed(shape):
        strides.append(acc)
        acc *= max(d, 1)
    return strides[::-1]


def tensor_node(
    entry: str,
    dtype: str,
    shape: list[int],
    stride: list[int],
    offset: int,
    device: str,
    *,
    requires_grad: bool = False,
    param: bool = False,
) -> dict[str, Any]:
    """A tensor: ``entry`` viewed as safetensors ``dtype``, then ``as_strided(shape, stride, offset)``."""
    node: dict[str, Any] = {
        "t": "tensor", "e": entry, "dtype": dtype, "shape": shape, "stride": stride, "offset": offset,
        "device": device,
    }  # fmt: skip
    if requires_grad:
        node["rg"] = True
    if param:
        node["param"] = True
    return node


def state_dict(entries: Sequence[tuple[str, str, tuple[int, ...]]]) -> dict[str, Any]:
    """A dict of whole, contiguous CPU tensors, one per ``(name, dtype, shape)`` entry."""
    items = [
        [name, tensor_node(name, dtype, list(shape), contiguous_strides(shape), 0, "cpu")]
        for name, dtype, shape in entries
    ]
    return tagged("dict", items)


def dumps(structure: Any) -> str:
    """The structure's JSON text, as written into the payload metadata."""
    return json.dumps(structure, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def invalid(what: str) -> FormatError:
    """The error for a structure node that breaks a rule."""
    return FormatError(f"invalid structure: {what}")


class Visitor(Protocol):
    """What ``walk`` calls, children first; plain JSON scalars are passed through as they are."""

    def leaf(self, node: dict[str, Any], path: str | None) -> Any: ...

    def sequence(self, items: list[Any], is_tuple: bool) -> Any: ...

    def mapping(self, items: list[tuple[Any, Any]], node: dict[str, Any], meta: Any) -> Any: ...

    def composite(self, node: dict[str, Any], items: list[Any]) -> Any:
        """A set (items: values) or a namespace or dataclass (items: ``(name, value)`` pairs)."""


# tag -> (every allowed field with "t", the required ones with "t", (field, type) of the typed ones)
_RULES: dict[str, tuple[frozenset[str], frozenset[str], tuple[tuple[str, type], ...]]] = {
    tag: (
        frozenset(f) | {"t"},
        frozenset(k for k, (_, req) in f.items() if req) | {"t"},
        tuple((k, typ) for k, (typ, _) in f.items() if typ is not object),
    )
    for tag, f in FIELDS.items()
}


def _check_fields(node: object) -> str:
    """Validate a tagged node's field names and field types; return its tag."""
    if type(node) is not dict or type(node.get("t")) is not str:
        raise FormatError("structure node is not a tagged object")
    tag: str = node["t"]
    rules = _RULES.get(tag)
    if rules is None:
        raise FormatError(f"structure node {tag!r} has unexpected fields")
    allowed, required, typed = rules
    keys = node.keys()
    if not (keys <= allowed and required <= keys):
        raise FormatError(f"structure node {tag!r} has unexpected fields")
    get = node.get
    for name, typ in typed:
        v = get(name, _ABSENT)
        if type(v) is not typ and v is not _ABSENT:
            raise invalid(f"{tag} {name}")
    return tag


_ABSENT = object()  # a field a node does not have


def _child(path: str | None, key: object) -> str | None:
    if path is None:
        return None
    return f"{path}.{key}" if path else str(key)


def find(node: Any, path: str) -> Any:
    """The node at dotted ``path`` (as :func:`walk` names them; keys may hold dots), or KeyError.
    ``node`` must have been walked (validated) before."""
    if path == "":
        return node
    items: list[tuple[Any, Any]]
    if isinstance(node, list):
        items = list(enumerate(node))
    elif isinstance(node, dict) and node.get("t") == "tuple":
        items = list(enumerate(node["v"]))
    elif isinstance(node, dict) and node.get("t") in ("dict", "odict", "namespace", "simplens", "dataclass"):
        items = [(k, v) for k, v in node["v"] if k is None or type(k) in (bool, str, int, float)]
    else:
        raise KeyError(path)
    for key, child in items:
        name = str(key)
        if path == name:
            return child
        if path.startswith(name + "."):
            try:
                return find(child, path[len(name) + 1 :])
            except KeyError:
                continue
    raise KeyError(path)


def _field(kv: Any, visitor: Visitor, path: str | None, depth: int) -> tuple[str, Any]:
    if type(kv) is not list or len(kv) != 2 or type(kv[0]) is not str:
        raise invalid("named field")
    return kv[0], walk(kv[1], visitor, _child(path, kv[0]), depth + 1)


def walk(node: Any, visitor: Visitor, path: str | None = "", depth: int = 0) -> Any:
    """Validate ``node`` (fields, types, depth) and fold it through ``visitor``. ``path`` is the
    dotted name of the node (None under a key that is not a plain JSON scalar, and under meta)."""
    if depth > MAX_DEPTH:
        raise FormatError("structure nested too deeply")
    if node is None or type(node) in (bool, str, int, float):
        return node
    if type(node) is list:
        return visitor.sequence([walk(v, visitor, _child(path, i), depth + 1) for i, v in enumerate(node)], False)
    tag = _check_fields(node)
    if tag in _LEAF_TAGS:
        return visitor.leaf(node, path)
    if tag == "tuple":
        items = [walk(v, visitor, _child(path, i), depth + 1) for i, v in enumerate(node["v"])]
        return visitor.sequence(items, True)
    if tag in SET_TAGS:
        return visitor.composite(node, [walk(v, visitor, None, depth + 1) for v in node["v"]])
    if tag in NAMED_TAGS:
        return visitor.composite(node, [_field(kv, visitor, path, depth) for kv in node["v"]])
    pairs = []
    inner = depth + 1
    for kv in node["v"]:
        if type(kv) is not list or len(kv) != 2:
            raise invalid("dict item")
        k, v = kv
        plain = k is None or type(k) in (bool, str, int, float)
        key = k if plain and inner <= MAX_DEPTH else walk(k, visitor, None, inner)  # what walk(k) returns
        pairs.append((key, walk(v, visitor, _child(path, k) if plain else None, inner)))
    meta = walk(node["meta"], visitor, None, depth + 1) if "meta" in node else None
    return visitor.mapping(pairs, node, meta)
