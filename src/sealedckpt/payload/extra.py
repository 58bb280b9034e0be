"""Plain Python values beyond JSON (docs/FORMAT.md §9.2): complex, dates and times, Decimal,
UUID, paths, enum members, and the opt-in dataclass registry. No pickle, no import, no eval."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import pathlib
import sys
import types
import uuid
from typing import Any

from ..errors import FormatError, UnsupportedTypeError

PATHS: dict[str, type[pathlib.PurePath]] = {
    c.__name__: c for c in (pathlib.PurePosixPath, pathlib.PureWindowsPath, pathlib.PosixPath, pathlib.WindowsPath)
}
_PURE = {"PosixPath": pathlib.PurePosixPath, "WindowsPath": pathlib.PureWindowsPath}
_DATACLASSES: dict[str, type] = {}
LEAF_TAGS = frozenset({"complex", "datetime", "date", "time", "timedelta", "decimal", "uuid", "path", "enum"})
REGISTER_HINT = "register the class first: sealedckpt.register_dataclass(cls), in the saving and the loading process"


def class_name(cls: type) -> str:
    """``module:qualname``, the name a dataclass is registered and stored under."""
    return f"{cls.__module__}:{cls.__qualname__}"


def register_dataclass(cls: type) -> None:
    """Allow instances of the dataclass ``cls`` in ``save`` and ``load`` (like torch's
    ``add_safe_globals``). A load restores them without calling ``__init__``: the object is
    allocated and each field set, as stored. Registration lasts until ``unregister_dataclass``."""
    if not isinstance(cls, type) or not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    name = class_name(cls)
    other = _DATACLASSES.get(name)
    if other is not None and other is not cls:
        raise ValueError(f"another class is already registered as {name}")
    _DATACLASSES[name] = cls


def unregister_dataclass(cls: type) -> None:
    """Withdraw a ``register_dataclass``; unknown classes are ignored."""
    if _DATACLASSES.get(class_name(cls)) is cls:
        del _DATACLASSES[class_name(cls)]


def registered(name: str) -> type:
    """The registered dataclass stored as ``name``, or a FormatError."""
    cls = _DATACLASSES.get(name)
    if cls is None:
        raise FormatError(f"the file holds a {name} dataclass, which is not registered", hint=REGISTER_HINT)
    return cls


def dataclass_fields(obj: Any, path: str) -> tuple[str, list[tuple[str, Any]]]:
    """A dataclass instance's registered name and its fields, in declaration order."""
    cls = type(obj)
    name = class_name(cls)
    if _DATACLASSES.get(name) is not cls:
        raise UnsupportedTypeError(path, f"dataclass {name} is not registered", hint=REGISTER_HINT)
    missing = [f.name for f in dataclasses.fields(obj) if not hasattr(obj, f.name)]
    if missing:
        raise UnsupportedTypeError(path, f"dataclass {name} has no value for field {missing[0]!r}")
    return name, [(f.name, getattr(obj, f.name)) for f in dataclasses.fields(obj)]


def build_dataclass(name: str, items: list[tuple[Any, Any]]) -> Any:
    """A registered dataclass with exactly its fields set (``__init__`` is not called)."""
    cls = registered(name)
    if [k for k, _ in items] != [f.name for f in dataclasses.fields(cls)]:
        raise FormatError(f"dataclass {name} fields do not match the registered class")
    obj: Any = object.__new__(cls)
    for k, v in items:
        object.__setattr__(obj, k, v)
    return obj


def _tz(tz: dt.tzinfo | None, path: str) -> dict[str, Any]:
    if tz is None:
        return {}
    if type(tz) is not dt.timezone:
        raise UnsupportedTypeError(
            path, f"tzinfo {type(tz).__qualname__} is not a fixed offset",
            hint="store dt.astimezone(datetime.timezone.utc) or another datetime.timezone offset",
        )  # fmt: skip
    name = tz.tzname(None)
    return {} if name == dt.timezone(tz.utcoffset(None)).tzname(None) else {"tzname": name}


def encode_leaf(obj: Any, path: str) -> dict[str, Any] | None:
    """The node for a value of one of this module's types, or None."""
    t = type(obj)
    node: dict[str, Any]
    if t is complex:
        return {"t": "complex", "v": [repr(obj.real), repr(obj.imag)]}
    if t is dt.datetime or t is dt.time:
        iso = obj.isoformat()
        if t.fromisoformat(iso).isoformat() != iso:  # CPython 3.11 misparses e.g. "+00:00:00.000001"
            raise UnsupportedTypeError(
                path, f"{t.__name__} {iso!r} does not survive ISO 8601 parsing on this Python",
                hint="round the UTC offset to whole seconds",
            )  # fmt: skip
        node = {"t": t.__name__, "v": iso, **_tz(obj.tzinfo, path)}
        if obj.fold:
            node["fold"] = 1
        return node
    if t is dt.date:
        return {"t": "date", "v": obj.isoformat()}
    if t is dt.timedelta:
        return {"t": "timedelta", "v": [obj.days, obj.seconds, obj.microseconds]}
    if t is decimal.Decimal:
        return {"t": "decimal", "v": str(obj)}
    if t is uuid.UUID:
        return {"t": "uuid", "v": str(obj)}
    if t.__name__ in PATHS and PATHS[t.__name__] is t:
        return {"t": "path", "cls": t.__name__, "v": str(obj)}
    if isinstance(obj, enum.Enum):
        if obj.name is None or obj.name not in t.__members__ or t.__members__[obj.name] is not obj:
            raise UnsupportedTypeError(path, f"{t.__qualname__} member {obj!r} has no single member name")
        if "<locals>" in t.__qualname__:
            raise UnsupportedTypeError(
                path, f"enum {t.__qualname__} is defined inside a function: no loader can find it",
                hint="define the enum at module level",
            )  # fmt: skip
        return {"t": "enum", "module": t.__module__, "qualname": t.__qualname__, "name": obj.name}
    return None


def _canonical(parsed: Any, text: str, what: str) -> Any:
    if parsed is None or str(parsed) != text:
        raise FormatError(f"invalid or non-canonical {what} {text!r}")
    return parsed


def _parse(fn: Any, text: str, what: str) -> Any:
    try:
        return fn(text)
    except (ValueError, ArithmeticError):
        raise FormatError(f"invalid {what} {text!r}") from None


def _float(s: Any) -> float:
    x = _parse(float, s, "complex part") if type(s) is str else None
    if x is None or repr(x) != s:
        raise FormatError(f"invalid or non-canonical complex part {s!r}")
    return float(x)


def _datetime(node: dict[str, Any]) -> Any:
    tag, v = node["t"], node["v"]
    cls = dt.datetime if tag == "datetime" else dt.time
    x = _parse(cls.fromisoformat, v, tag)
    if x.isoformat() != v:
        raise FormatError(f"non-canonical {tag} {v!r}")
    if "tzname" in node:
        if x.tzinfo is None:
            raise FormatError(f"{tag} with a tzname but no offset")
        x = x.replace(tzinfo=_parse(lambda n: dt.timezone(x.utcoffset(), n), node["tzname"], "tzname"))
    fold = node.get("fold", 0)
    if fold not in (0, 1) or type(fold) is not int:
        raise FormatError(f"invalid {tag} fold")
    return x.replace(fold=fold)


def _timedelta(v: list[Any]) -> dt.timedelta:
    if len(v) != 3 or not all(type(n) is int for n in v):
        raise FormatError("invalid timedelta")
    days, seconds, us = v
    if not (abs(days) <= 999_999_999 and 0 <= seconds < 86_400 and 0 <= us < 1_000_000):
        raise FormatError("timedelta fields out of range")
    return dt.timedelta(days, seconds, us)


def _enum(node: dict[str, Any]) -> enum.Enum:
    """An enum member, looked up through module dicts only; the module must be imported already."""
    module, qualname, name = node["module"], node["qualname"], node["name"]
    obj: Any = sys.modules.get(module)
    if not isinstance(obj, types.ModuleType):
        raise FormatError(f"enum {module}:{qualname} needs module {module} imported before loading")
    for part in qualname.split("."):
        ns = vars(obj)  # a module's or a class's own dict: no attribute hooks run
        if part not in ns:
            raise FormatError(f"unknown enum {module}:{qualname}")
        obj = ns[part]
        if not isinstance(obj, type):
            raise FormatError(f"{module}:{qualname} is not an enum.Enum class")
    if not isinstance(obj, type) or not issubclass(obj, enum.Enum):
        raise FormatError(f"{module}:{qualname} is not an enum.Enum class")
    members = obj.__members__
    if name not in members:
        raise FormatError(f"enum {module}:{qualname} has no member {name!r}")
    return members[name]


def decode_leaf(node: dict[str, Any]) -> Any:
    """The value of a node whose tag is one of this module's leaf tags."""
    tag: str = node["t"]
    v: Any = node.get("v")
    if tag == "complex":
        if len(v) != 2:
            raise FormatError("invalid complex")
        return complex(_float(v[0]), _float(v[1]))
    if tag in ("datetime", "time"):
        return _datetime(node)
    if tag == "date":
        return _canonical(_parse(dt.date.fromisoformat, v, "date"), v, "date")
    if tag == "timedelta":
        return _timedelta(v)
    if tag == "decimal":
        return _canonical(_parse(decimal.Decimal, v, "decimal"), v, "decimal")
    if tag == "uuid":
        return _canonical(_parse(uuid.UUID, v, "uuid"), v, "uuid")
    if tag == "path":
        cls = PATHS.get(node["cls"])
        if cls is None:
            raise FormatError(f"unknown path class {node['cls']!r}")
        if cls.__name__ in _PURE and cls is not type(pathlib.Path()):
            cls = _PURE[cls.__name__]  # a concrete path of the other OS: its pure flavour
        return _canonical(_parse(cls, v, "path"), v, "path")
    return _enum(node)  # "enum", the last leaf tag here
