"""Deterministic generator for the pickle-family attack corpus.

Every file written here is something ``sealedckpt.load`` must refuse *by
content* (never by file name): raw pickles of every protocol, torch zip and
legacy formats, TorchScript archives, legacy tar checkpoints, zip tricks,
numpy object arrays, scanner-bypass gadgets, and a plain (unsealed)
safetensors file.

Every pickle-based payload is a real gadget: if it were ever unpickled it
would create the file ``marker``.  Most use ``open(marker, "w")`` so that no
shell is needed; the ``torch.utils.collect_env.run`` variant runs
``touch <marker>`` through a shell.

This module NEVER unpickles anything.  Pickles are produced either with
``pickle.dumps`` of objects whose ``__reduce__`` names the gadget callable, or
assembled opcode by opcode.

Usage::

    python tests/attacks/make_corpus.py OUT_DIR [MARKER]

MARKER defaults to ``OUT_DIR/../PWNED`` (outside the corpus directory).
"""

from __future__ import annotations

import io
import pickle
import shlex
import struct
import sys
import tarfile
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "FILE_SUFFIXES",
    "LOOKS_LIKE",
    "Case",
    "case_names",
    "make_corpus",
    "payload_specs",
]

LOOKS_LIKE = ("pickle", "zip", "tar", "safetensors")

# Every payload is written once per suffix ("" = no extension), so a loader
# that dispatches on the file name instead of the content gets caught.
FILE_SUFFIXES = ("", ".pt", ".bin", ".ckpt", ".safetensors", ".sealed")

# Fixed timestamp for every archive member (zip cannot go below 1980).
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class Case:
    """One corpus file."""

    name: str  # unique, e.g. "pickle_p2_gadget.ckpt" or "pickle_p2_gadget[noext]"
    path: Path
    looks_like: str  # one of LOOKS_LIKE
    description: str  # one line
    payload: str = ""  # payload id shared by all file names of the same bytes


# --------------------------------------------------------------------------
# Gadget objects.  Only ever pickled, never unpickled.
# --------------------------------------------------------------------------


class OpenGadget:
    """Pickles as ``io.open(marker, "w")`` -> creates the marker, no shell."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


# --------------------------------------------------------------------------
# Hand-assembled pickle opcodes (protocol 2 unless stated).
# --------------------------------------------------------------------------


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _str(s: str) -> bytes:
    data = s.encode("utf-8")
    return b"X" + struct.pack("<I", len(data)) + data  # BINUNICODE


def _short_str(s: str) -> bytes:
    data = s.encode("utf-8")
    assert len(data) < 256
    return b"\x8c" + bytes([len(data)]) + data  # SHORT_BINUNICODE (proto 4)


_PROTO2 = b"\x80\x02"
_MARK, _TUPLE, _TUPLE1, _TUPLE2 = b"(", b"t", b"\x85", b"\x86"
_REDUCE, _STOP, _EMPTY_DICT = b"R", b".", b"}"


def _call(callable_ops: bytes, *args: str) -> bytes:
    """callable(*args) where every arg is a str."""
    return callable_ops + _MARK + b"".join(_str(a) for a in args) + _TUPLE + _REDUCE


def _open_source(marker: Path) -> str:
    return f"open({str(marker)!r}, 'w').close()"


def _pickle_builtins_open(marker: Path) -> bytes:
    # builtins.open(marker, "w")
    return _PROTO2 + _call(_global("builtins", "open"), str(marker), "w") + _STOP


def _pickle_builtins_exec(marker: Path) -> bytes:
    # builtins.exec("open(marker, 'w').close()")
    return _PROTO2 + _call(_global("builtins", "exec"), _open_source(marker)) + _STOP


def _pickle_importlib_getattr(marker: Path) -> bytes:
    # builtins.getattr(importlib.import_module("io"), "open")(marker, "w")
    return (
        _PROTO2
        + _global("builtins", "getattr")
        + _call(_global("importlib", "import_module"), "io")
        + _str("open")
        + _TUPLE2
        + _REDUCE
        + _MARK
        + _str(str(marker))
        + _str("w")
        + _TUPLE
        + _REDUCE
        + _STOP
    )


def _pickle_getattr_chain(marker: Path) -> bytes:
    # builtins.getattr(builtins.__import__("builtins"), "open")(marker, "w")
    return (
        _PROTO2
        + _global("builtins", "getattr")
        + _call(_global("builtins", "__import__"), "builtins")
        + _str("open")
        + _TUPLE2
        + _REDUCE
        + _MARK
        + _str(str(marker))
        + _str("w")
        + _TUPLE
        + _REDUCE
        + _STOP
    )


def _pickle_numpy_runstring(marker: Path) -> bytes:
    # numpy.testing._private.utils.runstring(code, {}) == exec(code, {})
    return (
        _PROTO2
        + _global("numpy.testing._private.utils", "runstring")
        + _MARK
        + _str(_open_source(marker))
        + _EMPTY_DICT
        + _TUPLE
        + _REDUCE
        + _STOP
    )


def _pickle_collect_env_run(marker: Path) -> bytes:
    # torch.utils.collect_env.run("touch <marker>") -> subprocess with shell=True
    cmd = "touch " + shlex.quote(str(marker))
    return _PROTO2 + _call(_global("torch.utils.collect_env", "run"), cmd) + _STOP


def _pickle_stack_global_memo(marker: Path) -> bytes:
    # Protocol 4, STACK_GLOBAL whose module/name strings come from the memo
    # (MEMOIZE + BINGET) rather than appearing right before the opcode.
    return (
        b"\x80\x04"
        + _short_str("sealedckpt")  # decoy string
        + b"\x94"  # MEMOIZE -> 0
        + b"0"  # POP
        + _short_str("builtins")
        + b"\x94"  # MEMOIZE -> 1
        + b"0"  # POP
        + _short_str("open")
        + b"\x94"  # MEMOIZE -> 2
        + b"0"  # POP
        + b"h\x01"  # BINGET 1 -> "builtins"
        + b"h\x02"  # BINGET 2 -> "open"
        + b"\x93"  # STACK_GLOBAL
        + _short_str(str(marker))
        + _short_str("w")
        + _TUPLE2
        + _REDUCE
        + _STOP
    )


def _pickle_p0_none_pop_prefix(marker: Path) -> bytes:
    # Protocol 0 that starts with "N0" (push None, pop it), then the gadget.
    # Starts with neither \x80 nor the usual c/(/]/} opcodes.
    return b"N0" + pickle.dumps(OpenGadget(marker), protocol=0)


def _pickle_p0_int_prefix(marker: Path) -> bytes:
    # Protocol 0 starting with an INT opcode ("I1\n0") followed by the gadget.
    return b"I1\n0" + pickle.dumps(OpenGadget(marker), protocol=0)


def _pickle_p0_trailing_junk(marker: Path) -> bytes:
    # Protocol 0 gadget followed by bytes after STOP: unpicklers ignore them, so
    # the file does not end with "." (defeats an "ends with STOP" heuristic).
    return pickle.dumps({"state_dict": OpenGadget(marker)}, protocol=0) + b"\x00" * 8 + b"trailing junk\n"


# --------------------------------------------------------------------------
# Container helpers
# --------------------------------------------------------------------------


def _torch():
    import torch

    return torch


def _torch_save(obj, **kwargs) -> bytes:
    # Save into memory so the archive root name does not depend on the
    # output file name (torch derives it from the path otherwise).
    torch = _torch()
    buf = io.BytesIO()
    torch.save(obj, buf, **kwargs)
    return buf.getvalue()


def _torch_save_gadget(marker: Path) -> bytes:
    torch = _torch()
    return _torch_save({"weight": torch.zeros(2), "evil": OpenGadget(marker)})


def _torch_save_benign(marker: Path) -> bytes:
    torch = _torch()
    return _torch_save(torch.arange(4, dtype=torch.float32))


def _torch_save_legacy(marker: Path) -> bytes:
    torch = _torch()
    weight = torch.zeros(2)
    data = _torch_save(
        {"weight": weight, "evil": OpenGadget(marker)},
        _use_new_zipfile_serialization=False,
    )
    # The legacy format keys storages by their memory address; rewrite that
    # key to "0" so the output is deterministic.  Protocol 2 has no frames and
    # BINUNICODE carries its own length, so the stream stays valid.
    key_op = _str(str(weight.untyped_storage()._cdata))
    assert data.count(key_op) == 2, "unexpected legacy storage-key layout"
    return data.replace(key_op, _str("0"))


def _torchscript(marker: Path) -> bytes:
    torch = _torch()

    class Small(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(torch.ones(3))

        def forward(self, x):
            return x * self.weight

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(Small()), buf)
    return buf.getvalue()


def _tar_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


def _legacy_tar(marker: Path) -> bytes:
    sys_info = {
        "protocol_version": 1001,
        "little_endian": True,
        "type_sizes": {"short": 2, "int": 4, "long": 4},
    }
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        _tar_member(tar, "sys_info", pickle.dumps(sys_info, protocol=2))
        _tar_member(tar, "pickle", pickle.dumps({"evil": OpenGadget(marker)}, protocol=2))
        _tar_member(tar, "storages", pickle.dumps(0, protocol=2))
        _tar_member(tar, "tensors", pickle.dumps(0, protocol=2))
    return buf.getvalue()


def _zip_prefixed(prefix: bytes) -> Callable[[Path], bytes]:
    def build(marker: Path) -> bytes:
        return prefix + _torch_save_gadget(marker)

    return build


class _Unseekable(io.RawIOBase):
    """Write-only, non-seekable sink: forces zipfile to use data descriptors."""

    def __init__(self) -> None:
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        self.data += b
        return len(b)


def _zip_deflated_descriptor(marker: Path) -> bytes:
    sink = _Unseekable()
    with zipfile.ZipFile(sink, "w") as zf:
        for name, data in (
            (
                "archive/data.pkl",
                pickle.dumps({"evil": OpenGadget(marker)}, protocol=2),
            ),
            ("archive/version", b"3\n"),
        ):
            info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            with zf.open(info, "w") as fh:
                fh.write(data)
    data = bytes(sink.data)
    assert data[6] & 0x08, "expected general-purpose flag bit 3 (data descriptor)"
    return data


def _zip_empty(marker: Path) -> bytes:
    # Just the end-of-central-directory record, no entries.
    return b"PK\x05\x06" + b"\x00" * 18


def _npy_bytes(array) -> bytes:
    import numpy as np

    buf = io.BytesIO()
    np.lib.format.write_array(buf, array, allow_pickle=True)
    return buf.getvalue()


def _npy_object_array(marker: Path) -> bytes:
    import numpy as np

    arr = np.empty(2, dtype=object)
    arr[0] = "benign"
    arr[1] = OpenGadget(marker)
    return _npy_bytes(arr)


def _npz_object_array(marker: Path) -> bytes:
    # Built by hand: np.savez stamps members with the current time.
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        info = zipfile.ZipInfo("arr_0.npy", date_time=_ZIP_DATE)
        info.external_attr = 0o644 << 16
        zf.writestr(info, _npy_object_array(marker))
    return buf.getvalue()


def _safetensors_plain(marker: Path) -> bytes:
    import torch
    from safetensors.torch import save

    return save({"weight": torch.arange(6, dtype=torch.float32).reshape(2, 3)})


def _raw(protocol: int, wrap: str = "bare") -> Callable[[Path], bytes]:
    def build(marker: Path) -> bytes:
        obj = OpenGadget(marker)
        if wrap == "dict":
            obj = {"state_dict": obj}
        elif wrap == "list":
            obj = [obj]
        return pickle.dumps(obj, protocol=protocol)

    return build


# --------------------------------------------------------------------------
# The payload table.
# --------------------------------------------------------------------------

_Spec = tuple[str, str, str, Callable[[Path], bytes]]


def payload_specs() -> list[_Spec]:
    """(payload id, looks_like, description, builder) for every payload."""
    specs: list[_Spec] = []
    for proto in range(6):
        desc = f"raw pickle protocol {proto}: io.open(marker, 'w') via __reduce__"
        specs.append((f"pickle_p{proto}_gadget", "pickle", desc, _raw(proto)))
    specs += [
        (
            "pickle_p0_dict_gadget",
            "pickle",
            "protocol 0 dict holding the gadget (starts with '(')",
            _raw(0, "dict"),
        ),
        (
            "pickle_p0_list_gadget",
            "pickle",
            "protocol 0 list holding the gadget (starts with '(')",
            _raw(0, "list"),
        ),
        (
            "pickle_p1_dict_gadget",
            "pickle",
            "protocol 1 dict holding the gadget (starts with '}')",
            _raw(1, "dict"),
        ),
        (
            "pickle_p1_list_gadget",
            "pickle",
            "protocol 1 list holding the gadget (starts with ']')",
            _raw(1, "list"),
        ),
        (
            "pickle_p0_none_pop_prefix",
            "pickle",
            "protocol 0 gadget behind a NONE+POP prefix (starts with 'N0')",
            _pickle_p0_none_pop_prefix,
        ),
        (
            "pickle_p0_int_prefix",
            "pickle",
            "protocol 0 gadget behind an INT+POP prefix (starts with 'I1')",
            _pickle_p0_int_prefix,
        ),
        (
            "pickle_p0_trailing_junk",
            "pickle",
            "protocol 0 gadget followed by junk after STOP (file does not end with '.')",
            _pickle_p0_trailing_junk,
        ),
        (
            "pickle_builtins_open",
            "pickle",
            "hand-made protocol 2: builtins.open(marker, 'w')",
            _pickle_builtins_open,
        ),
        (
            "pickle_builtins_exec",
            "pickle",
            "hand-made protocol 2: builtins.exec(source that creates marker)",
            _pickle_builtins_exec,
        ),
        (
            "pickle_importlib_getattr",
            "pickle",
            "getattr(importlib.import_module('io'), 'open')(marker, 'w')",
            _pickle_importlib_getattr,
        ),
        (
            "pickle_getattr_import_chain",
            "pickle",
            "getattr(builtins.__import__('builtins'), 'open')(marker, 'w')",
            _pickle_getattr_chain,
        ),
        (
            "pickle_numpy_runstring",
            "pickle",
            "numpy.testing._private.utils.runstring(source, {}) == exec",
            _pickle_numpy_runstring,
        ),
        (
            "pickle_torch_collect_env_run",
            "pickle",
            "torch.utils.collect_env.run('touch marker') (shell)",
            _pickle_collect_env_run,
        ),
        (
            "pickle_p4_stack_global_memo",
            "pickle",
            "protocol 4 STACK_GLOBAL with module/name fetched from the memo",
            _pickle_stack_global_memo,
        ),
        (
            "torch_save_gadget",
            "zip",
            "torch.save zip of a dict containing the gadget",
            _torch_save_gadget,
        ),
        (
            "torch_save_benign_tensor",
            "zip",
            "benign torch.save zip of a plain tensor (any torch zip is refused)",
            _torch_save_benign,
        ),
        (
            "torch_save_legacy_gadget",
            "pickle",
            "legacy torch.save (_use_new_zipfile_serialization=False): magic-number pickle + gadget",
            _torch_save_legacy,
        ),
        (
            "torchscript_archive",
            "zip",
            "torch.jit.save(torch.jit.script(module)) TorchScript zip",
            _torchscript,
        ),
        (
            "torch_legacy_tar",
            "tar",
            "legacy tar checkpoint (sys_info, pickle, storages, tensors); 'pickle' holds the gadget",
            _legacy_tar,
        ),
        (
            "zip_prefixed_zeros",
            "zip",
            "64 NUL bytes then a gadget torch.save zip (prepended data)",
            _zip_prefixed(b"\x00" * 64),
        ),
        (
            "zip_prefixed_junk",
            "zip",
            "64 bytes of text junk then a gadget torch.save zip (prepended data)",
            _zip_prefixed((b"#!junk header " * 5)[:64]),
        ),
        (
            "zip_deflated_data_descriptor",
            "zip",
            "zip with deflated members and data descriptors; archive/data.pkl holds the gadget",
            _zip_deflated_descriptor,
        ),
        (
            "zip_empty",
            "zip",
            "empty zip: only an end-of-central-directory record",
            _zip_empty,
        ),
        (
            "npy_object_array",
            "pickle",
            "numpy .npy object array (allow_pickle) holding the gadget",
            _npy_object_array,
        ),
        (
            "npz_object_array",
            "zip",
            "numpy .npz (zip) whose .npy member is an object array holding the gadget",
            _npz_object_array,
        ),
        (
            "safetensors_plain",
            "safetensors",
            "plain, unsealed safetensors file (must be sealed first)",
            _safetensors_plain,
        ),
    ]
    for pid, looks_like, _desc, _build in specs:
        assert looks_like in LOOKS_LIKE, (pid, looks_like)
    return specs


def _file_name(payload_id: str, suffix: str) -> str:
    return payload_id + suffix


def _case_name(payload_id: str, suffix: str) -> str:
    return payload_id + (suffix if suffix else "[noext]")


def case_names() -> list[str]:
    """All case names, without building anything (for test parametrization)."""
    return [_case_name(pid, sfx) for pid, *_ in payload_specs() for sfx in FILE_SUFFIXES]


def make_corpus(out_dir: Path, marker: Path) -> list[Case]:
    """Write every payload under every file name into out_dir.  Never unpickles."""
    out_dir = Path(out_dir)
    marker = Path(marker).absolute()
    out_dir.mkdir(parents=True, exist_ok=True)
    cases: list[Case] = []
    for pid, looks_like, desc, build in payload_specs():
        data = build(marker)
        for sfx in FILE_SUFFIXES:
            path = out_dir / _file_name(pid, sfx)
            path.write_bytes(data)
            cases.append(Case(_case_name(pid, sfx), path, looks_like, desc, pid))
    return cases


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print(f"usage: {argv[0]} OUT_DIR [MARKER]", file=sys.stderr)
        return 2
    out_dir = Path(argv[1])
    marker = Path(argv[2]) if len(argv) == 3 else out_dir.absolute().parent / "PWNED"
    cases = make_corpus(out_dir, marker)
    seen: set[str] = set()
    for case in cases:
        if case.payload in seen:
            continue
        seen.add(case.payload)
        head = case.path.read_bytes()[:16].hex()
        print(f"{case.payload:32} {case.looks_like:12} {head}  {case.description}")
    print(f"{len(cases)} files ({len(seen)} payloads x {len(FILE_SUFFIXES)} names) in {out_dir}; marker={marker}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
