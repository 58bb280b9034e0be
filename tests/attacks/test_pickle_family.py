"""sealedckpt must refuse every pickle-family file, by content, without unpickling.

The corpus comes from the sibling ``make_corpus.py``.  Every pickle payload in
it is a live gadget that would create ``PWNED`` next to the corpus if it were
ever unpickled, so "the marker does not exist" is checked after every call.
"""

from __future__ import annotations

import contextlib
import io
import json
import pickle
import pickletools
import random
import re
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from make_corpus import FILE_SUFFIXES, Case, case_names, make_corpus, payload_specs

import sealedckpt

MAGIC = b"\x89SCKPT\r\n"

# What the error message must mention, per looks_like (case-insensitive).
MESSAGE_PATTERNS = {
    "pickle": r"pickle",
    "zip": r"zip|torch\.save|torchscript",
    "tar": r"\btar",
    "safetensors": r"safetensors",
}

PAYLOAD_IDS = [spec[0] for spec in payload_specs()]


def _expected_error(case: Case) -> tuple[type[BaseException], type[BaseException]]:
    """(class that must be raised, class that must NOT be raised)."""
    if case.looks_like == "safetensors":
        return sealedckpt.FormatError, sealedckpt.UnsafePayloadError
    return sealedckpt.UnsafePayloadError, sealedckpt.FormatError


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """(marker, {case name: Case}); built once per module in a fresh tmp dir."""
    root = tmp_path_factory.mktemp("pickle_family")
    marker = root / "PWNED"
    cases = make_corpus(root / "corpus", marker)
    assert [c.name for c in cases] == case_names()
    assert not marker.exists()
    return marker, {c.name: c for c in cases}


@pytest.fixture(scope="module")
def key():
    return sealedckpt.SymmetricKey.generate()


def _clear_stale_marker(marker: Path) -> None:
    # A marker left behind by an earlier test (which has already failed for it)
    # would fail every later test as well; clear it so that each failure points
    # at the payload that actually ran.
    marker.unlink(missing_ok=True)


def _refusal(label: str, fn, marker: Path) -> BaseException:
    """Run fn, require a SealedCkptError, and require that the marker is absent."""
    try:
        try:
            result = fn()
        except sealedckpt.SealedCkptError as exc:
            return exc
        except Exception as exc:  # anything else is a failure too
            pytest.fail(
                f"{label}: raised {type(exc).__module__}.{type(exc).__qualname__}, not a SealedCkptError: {exc!r}"
            )
        pytest.fail(f"{label}: returned {type(result).__name__} instead of raising")
    finally:
        assert not marker.exists(), f"{label}: payload was executed (marker {marker} exists)"


def _check_class(label: str, exc: BaseException, case: Case) -> None:
    must, must_not = _expected_error(case)
    assert isinstance(exc, must), f"{label}: expected {must.__name__}, got {type(exc).__name__}: {exc}"
    assert not isinstance(exc, must_not), f"{label}: {type(exc).__name__} must not be a {must_not.__name__}: {exc}"


def _check_message(label: str, exc: BaseException, case: Case) -> None:
    # str() of a SealedCkptError already carries its hint; add .hint anyway in
    # case a later version keeps the hint out of str().
    msg = f"{exc} {getattr(exc, 'hint', None) or ''}"
    pattern = MESSAGE_PATTERNS[case.looks_like]
    assert re.search(pattern, msg, re.IGNORECASE), (
        f"{label}: message should say the file looks like {case.looks_like} (/{pattern}/i): {msg!r}"
    )
    if case.looks_like == "safetensors":
        # A hint to seal the file; the package name alone does not count.
        without_pkg = re.sub(r"sealedckpt", "", msg, flags=re.IGNORECASE)
        assert re.search(r"seal", without_pkg, re.IGNORECASE), (
            f"{label}: message should hint at sealing the file: {msg!r}"
        )


def test_error_hierarchy():
    assert issubclass(sealedckpt.UnsafePayloadError, sealedckpt.SealedCkptError)
    assert issubclass(sealedckpt.FormatError, sealedckpt.SealedCkptError)
    assert not issubclass(sealedckpt.UnsafePayloadError, sealedckpt.FormatError)
    assert not issubclass(sealedckpt.FormatError, sealedckpt.UnsafePayloadError)


@pytest.mark.parametrize("name", case_names())
def test_load_refuses(corpus, key, name):
    marker, cases = corpus
    _clear_stale_marker(marker)
    case = cases[name]
    data = case.path.read_bytes()

    def via_file_object():
        with open(case.path, "rb") as fh:
            return sealedckpt.load(fh, key=key)

    attempts = [
        ("load(Path)", lambda: sealedckpt.load(case.path, key=key)),
        ("load(str)", lambda: sealedckpt.load(str(case.path), key=key)),
        ("load(open file)", via_file_object),
        ("load(BytesIO)", lambda: sealedckpt.load(io.BytesIO(data), key=key)),
    ]
    for how, fn in attempts:
        label = f"{case.name} [{case.description}] via {how}"
        exc = _refusal(label, fn, marker)
        _check_class(label, exc, case)
        _check_message(label, exc, case)

    assert case.path.read_bytes() == data, "the input file must not be modified"


@pytest.mark.parametrize("name", case_names())
def test_inspect_refuses(corpus, name):
    marker, cases = corpus
    _clear_stale_marker(marker)
    case = cases[name]
    label = f"{case.name} [{case.description}] via inspect(Path)"
    exc = _refusal(label, lambda: sealedckpt.inspect(case.path), marker)
    _check_class(label, exc, case)


@pytest.mark.parametrize("payload", PAYLOAD_IDS)
def test_never_unpickles(corpus, key, payload, monkeypatch):
    """Detection must be static: no unpickler is even constructed."""
    marker, cases = corpus
    _clear_stale_marker(marker)
    calls: list[str] = []

    def tripwire(what):
        def trap(*args, **kwargs):
            calls.append(what)
            raise AssertionError(f"sealedckpt called {what} on untrusted input")

        return trap

    def trap_class(what, base):
        # A subclass (not a function) so that code subclassing pickle.Unpickler
        # at import time still imports; only instantiation trips.
        class Trap(base):
            def __init__(self, *args, **kwargs):
                calls.append(what)
                raise AssertionError(f"sealedckpt constructed {what} on untrusted input")

        return Trap

    monkeypatch.setattr(pickle, "load", tripwire("pickle.load"))
    monkeypatch.setattr(pickle, "loads", tripwire("pickle.loads"))
    monkeypatch.setattr(pickle, "Unpickler", trap_class("pickle.Unpickler", pickle.Unpickler))
    monkeypatch.setattr(pickle, "_Unpickler", trap_class("pickle._Unpickler", pickle._Unpickler))
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(torch, "load", tripwire("torch.load"))
    monkeypatch.setattr(torch.jit, "load", tripwire("torch.jit.load"))

    case = cases[payload + ".pt"]
    # The refusal itself is checked by test_load_refuses; here only the calls.
    with contextlib.suppress(Exception):
        sealedckpt.load(case.path, key=key)
    assert calls == [], f"{case.name}: {calls}"
    assert not marker.exists()


# --------------------------------------------------------------------------
# Files that start with the sealedckpt magic but are garbage afterwards:
# a (format) error, never UnsafePayloadError, never executed.
# --------------------------------------------------------------------------


def _magic_garbage_variants(marker: Path) -> dict[str, bytes]:
    specs = {pid: build for pid, _looks, _desc, build in payload_specs()}
    return {
        "magic_only": MAGIC,
        "magic_zeros": MAGIC + b"\x00" * 64,
        "magic_ff": MAGIC + b"\xff" * 64,
        "magic_random": MAGIC + random.Random(0).randbytes(4096),
        "magic_then_pickle": MAGIC + specs["pickle_p2_gadget"](marker),
        "magic_then_torch_zip": MAGIC + specs["torch_save_gadget"](marker),
        "magic_then_safetensors": MAGIC + specs["safetensors_plain"](marker),
    }


MAGIC_VARIANTS = [
    "magic_only",
    "magic_zeros",
    "magic_ff",
    "magic_random",
    "magic_then_pickle",
    "magic_then_torch_zip",
    "magic_then_safetensors",
]


@pytest.mark.parametrize("variant", MAGIC_VARIANTS)
def test_magic_then_garbage(tmp_path, key, variant):
    marker = tmp_path / "PWNED"
    variants = _magic_garbage_variants(marker)
    assert sorted(variants) == sorted(MAGIC_VARIANTS)
    data = variants[variant]
    path = tmp_path / f"{variant}.sealed"
    path.write_bytes(data)

    attempts = [
        ("load(Path)", lambda: sealedckpt.load(path, key=key)),
        ("load(BytesIO)", lambda: sealedckpt.load(io.BytesIO(data), key=key)),
        ("inspect(Path)", lambda: sealedckpt.inspect(path)),
    ]
    for how, fn in attempts:
        label = f"{variant} via {how}"
        exc = _refusal(label, fn, marker)
        assert not isinstance(exc, sealedckpt.UnsafePayloadError), (
            f"{label}: a file with the sealedckpt magic is a (corrupt) sealed file, not an unsafe payload: {exc!r}"
        )


def test_corpus_covers_every_suffix(corpus):
    _marker, cases = corpus
    by_payload: dict[str, set[str]] = {}
    for case in cases.values():
        by_payload.setdefault(case.payload, set()).add(case.path.name[len(case.payload) :])
    assert set(by_payload) == set(PAYLOAD_IDS)
    assert all(sfx == set(FILE_SUFFIXES) for sfx in by_payload.values())


@pytest.mark.parametrize("payload", PAYLOAD_IDS)
def test_corpus_is_well_formed(corpus, payload):
    """Static check of the generator itself (nothing is unpickled)."""
    _marker, cases = corpus
    case = cases[payload + ".pt"]
    data = case.path.read_bytes()
    if case.looks_like == "pickle":
        if data.startswith(b"\x93NUMPY"):
            assert data[6] == 1, "expected .npy format version 1.0"
            data = data[10 + int.from_bytes(data[8:10], "little") :]
        ops = [op.name for op, _arg, _pos in pickletools.genops(data)]
        assert ops[-1] == "STOP"
    elif case.looks_like == "zip":
        assert zipfile.is_zipfile(io.BytesIO(data))
        assert not data.startswith(MAGIC)
    elif case.looks_like == "tar":
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            assert tar.getnames() == ["sys_info", "pickle", "storages", "tensors"]
    else:
        header_len = int.from_bytes(data[:8], "little")
        assert "weight" in json.loads(data[8 : 8 + header_len])


def test_marker_never_created(corpus):
    marker, _cases = corpus
    assert not marker.exists()
