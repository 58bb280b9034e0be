"""Every CLI command fails as ``sealedckpt: error: ...`` (+ ``hint: ...``) with its documented exit
code, in ``--json`` mode too, and never with a traceback: bad input, unwritable output, Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import run_cli
from safetensors.torch import save_file

import sealedckpt
from sealedckpt import cli

Capsys = pytest.CaptureFixture[str]
DOCUMENTED = {1, 2, 3, 4, 5, 6}
SRC = str(Path(sealedckpt.__file__).resolve().parents[1])  # the sealedckpt under test, for subprocesses


def fails(capsys: Capsys, *argv: str) -> tuple[int, str, str]:
    """Run a command that must fail the documented way: exit code, stderr prefix, no traceback."""
    code, out, err = run_cli(capsys, *argv)
    assert code in DOCUMENTED, (argv, code, err)
    lines = [ln for ln in err.splitlines() if not ln.startswith("sealedckpt: note: ")]
    assert lines[0].startswith("sealedckpt: error: "), (argv, err)
    assert all(ln.startswith(("sealedckpt: error: ", "hint: ")) for ln in lines), (argv, err)
    assert "Traceback" not in err and "Traceback" not in out
    return code, out, err


@pytest.fixture
def world(capsys: Capsys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A keystore (symmetric k default, symmetric other, signing s), a sealed file and directory,
    a garbage file and a plain file; the working directory is ``tmp_path``."""
    monkeypatch.chdir(tmp_path)
    for argv in (["--name", "k", "--default"], ["--name", "other"], ["--name", "s", "--kind", "signing"]):
        assert run_cli(capsys, "key", "gen", *argv)[0] == 0
    (tmp_path / "model").mkdir()
    save_file({"w": torch.ones(3)}, str(tmp_path / "model" / "m.safetensors"))
    assert run_cli(capsys, "seal", "model/m.safetensors", "-o", "good.sealed", "--sign", "s")[0] == 0
    assert run_cli(capsys, "seal-dir", "model", "-o", "sealed-dir", "--sign", "s")[0] == 0
    (tmp_path / "garbage").write_bytes(os.urandom(3000))
    (tmp_path / "afile").write_text("x")
    return tmp_path


# (command, argument template with {} for the bad input, exit codes for: missing, directory, garbage)
FILE_COMMANDS = [
    ("inspect", "{}", (1, 1, 3)),
    ("verify", "{}", (1, 1, 3)),
    ("sign", "{} --key s", (1, 1, 3)),
    ("unseal", "{} -o out", (1, 1, 3)),
    ("rewrap", "{} --key other", (1, 2, 3)),
    ("seal", "{} -o out", (1, 1, 3)),
    ("key import", "n {}", (1, 1, 2)),
    ("trust add", "p ./{}", (2, 2, 2)),
    ("audit verify", "--log {}", (4, 1, 4)),
    ("audit show", "--log {}", (None, 1, 4)),
]
DIR_COMMANDS = [
    ("seal-dir", "{} -o out"),
    ("verify-dir", "{}"),
    ("sign-dir", "{} --key s"),
    ("unseal-dir", "{} -o out"),
]


@pytest.mark.parametrize(("command", "template", "codes"), FILE_COMMANDS, ids=[c[0] for c in FILE_COMMANDS])
def test_file_commands_bad_input(capsys: Capsys, world: Path, command: str, template: str, codes: tuple) -> None:
    for bad, code in zip(("missing", "model", "garbage"), codes, strict=True):
        argv = [*command.split(), *template.format(bad).split()]
        if code is None:  # `audit show` of a missing log: no records, not a failure
            assert run_cli(capsys, *argv)[0] == 0
            continue
        got, out, err = fails(capsys, *argv)
        assert got == code, (argv, err)
        if bad == "model" and code == 1:  # a directory where a file belongs: named, with a hint
            assert err.splitlines()[:2] == [
                "sealedckpt: error: model: Is a directory",
                "hint: this command takes a file; sealed directories have seal-dir, verify-dir, sign-dir and "
                "unseal-dir",
            ], argv
        if "--json" not in argv and command in ("inspect", "verify"):
            got, out, err = fails(capsys, *argv, "--json")
            assert json.loads(out)["exit_code"] == code and json.loads(out)["ok"] is False
    assert not (world / "out").exists()


@pytest.mark.parametrize(("command", "template"), DIR_COMMANDS, ids=[c[0] for c in DIR_COMMANDS])
def test_dir_commands_bad_input(capsys: Capsys, world: Path, command: str, template: str) -> None:
    for bad in ("missing", "afile", "garbage", "good.sealed"):
        code, _, err = fails(capsys, command, *template.format(bad).split())
        if command == "seal-dir":  # none of these is a directory to read
            assert code == cli.EXIT_ERROR and err.startswith(f"sealedckpt: error: {bad}: "), err
        else:
            assert code == cli.EXIT_FORMAT, (bad, err)
    assert not (world / "out").exists()


def test_keystore_commands_unknown_key(capsys: Capsys, world: Path) -> None:
    for argv in (["key", "show", "nobody"], ["key", "export-public", "nobody"], ["key", "rm", "nobody", "--yes"],
                 ["key", "rotate", "nobody"], ["key", "default", "nobody"], ["trust", "rm", "nobody"],
                 ["key", "gen", "--name", "k"]):  # fmt: skip
        code, _, _ = fails(capsys, *argv)
        assert code == cli.EXIT_KEY, argv
    code, out, _ = fails(capsys, "key", "show", "nobody", "--json")
    assert json.loads(out)["kind"] == "KeystoreError"


def test_wrong_key(capsys: Capsys, world: Path) -> None:
    for argv in (["unseal", "good.sealed", "-o", "out", "--key", "other"],
                 ["rewrap", "good.sealed", "--key", "other", "--with", "other"],
                 ["unseal-dir", "sealed-dir", "-o", "out", "--key", "other"]):  # fmt: skip
        code, _, _ = fails(capsys, *argv)
        assert code == cli.EXIT_KEY, argv
    assert not (world / "out").is_file()
    assert not any(p.is_file() for p in (world / "out").rglob("*"))  # (unseal-dir leaves an empty directory)


def test_unwritable_output(capsys: Capsys, world: Path) -> None:
    """An output whose directory cannot hold it: the output is named (not a temp file), with a hint."""
    for argv, out_path in ((["seal", "model/m.safetensors", "-o"], "afile/x.sealed"),
                           (["unseal", "good.sealed", "-o"], "afile/x"),
                           (["seal-dir", "model", "-o"], "afile/x"),
                           (["unseal-dir", "sealed-dir", "-o"], "afile/x"),
                           (["seal", "model/m.safetensors", "-o"], "no-such-dir/x.sealed")):  # fmt: skip
        code, _, err = fails(capsys, *argv, out_path)
        assert code == cli.EXIT_ERROR
        assert err.startswith(f"sealedckpt: error: {out_path}: ") or (
            out_path == "afile/x" and err.startswith("sealedckpt: error: afile: ")  # a parent it must create
        ), err
        assert "\nhint: " in err or "No such file" in err
    code, out, err = fails(capsys, "seal", "model/m.safetensors", "-o", "afile/x.sealed", "--json")
    assert json.loads(out) == {"ok": False, "error": "afile/x.sealed: Not a directory", "kind": "NotADirectoryError",
                               "exit_code": 1}  # fmt: skip
    assert sorted(os.listdir(world)) == ["afile", "garbage", "good.sealed", "model", "sealed-dir"]


def test_unexpected_exception_is_reported_not_traced(
    capsys: Capsys, world: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sealedckpt import api

    def boom(*a: object, **k: object) -> None:
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(api, "inspect", boom)
    code, out, err = run_cli(capsys, "inspect", "good.sealed", "--json")
    assert code == cli.EXIT_ERROR
    assert err == ("sealedckpt: error: ZeroDivisionError: boom\n"
                   "hint: this is a bug in sealedckpt; please report it with the command you ran\n")  # fmt: skip
    assert json.loads(out)["kind"] == "ZeroDivisionError"


def test_usage_error_format(capsys: Capsys) -> None:
    code, out, err = run_cli(capsys, "seal", "x")
    assert code == cli.EXIT_USAGE and out == ""
    lines = err.splitlines()
    assert lines[-2] == "sealedckpt: error: seal: the following arguments are required: -o/--output"
    assert lines[-1] == "hint: see `sealedckpt seal --help`"


def test_allow_pickle_refused_by_weights_only(capsys: Capsys, tmp_path: Path) -> None:
    """A pickle that weights_only refuses: UnsafePayloadError (exit 3), not torch's traceback."""
    assert run_cli(capsys, "key", "gen", "--default")[0] == 0
    p = tmp_path / "evil.pt"
    torch.save({"w": torch.ones(2), "opt": _Custom()}, p)
    code, out, err = run_cli(capsys, "seal", str(p), "-o", str(tmp_path / "o.sealed"), "--allow-pickle")
    assert code == cli.EXIT_FORMAT and out == ""
    lines = [ln for ln in err.splitlines() if not ln.startswith("sealedckpt: warning:")]
    assert lines[0].startswith(f"sealedckpt: error: {p}: the weights_only unpickler refused it or could not read it")
    assert lines[1].startswith("hint: only tensors and plain containers can be converted")
    assert not (tmp_path / "o.sealed").exists()


class _Custom:
    """Not in weights_only's allow-list."""


def _cli(*argv: str, **kw: object) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": SRC}
    return subprocess.Popen(
        [sys.executable, "-m", "sealedckpt", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=env, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL), **kw,  # type: ignore[call-overload]
    )  # fmt: skip


def _writing_into(pid: int, directory: Path) -> bool:
    """Whether process ``pid`` has a file open in ``directory`` (its unnamed or hidden temp output)."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith(f"{directory}/"):
            return True
    return False


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ~200 MB safetensors file: sealing it takes long enough to interrupt."""
    p = tmp_path_factory.mktemp("big") / "big.safetensors"
    save_file({"w": torch.zeros(50_000_000)}, str(p))
    return p


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="watches /proc/PID/fd")
@pytest.mark.parametrize("json_mode", [False, True], ids=["text", "json"])
@pytest.mark.parametrize("command", ["seal", "seal-dir"])
def test_sigint_mid_seal(tmp_path: Path, big: Path, command: str, json_mode: bool) -> None:
    """Ctrl-C while the output is being written: exit 130, one error line and hint, no traceback,
    nothing left in the output directory."""
    assert subprocess.run([sys.executable, "-m", "sealedckpt", "key", "gen", "--default"], capture_output=True,
                          env={**os.environ, "PYTHONPATH": SRC}).returncode == 0  # fmt: skip
    outdir = tmp_path / "out"
    outdir.mkdir()
    src = str(big) if command == "seal" else str(big.parent)
    target = outdir / ("m.sealed" if command == "seal" else "d")
    proc = _cli(command, src, "-o", str(target), *(["--json"] if json_mode else []))
    deadline = time.monotonic() + 60
    while proc.poll() is None and not _writing_into(proc.pid, outdir) and time.monotonic() < deadline:
        time.sleep(0.002)
    assert proc.poll() is None, "the command finished before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "Traceback" not in out
    assert err.splitlines() == [
        "sealedckpt: error: interrupted",
        "hint: an output is replaced only once complete: the one being written was discarded",
    ]
    if json_mode:
        assert json.loads(out) == {"ok": False, "error": "interrupted", "kind": "KeyboardInterrupt", "exit_code": 130}
    else:
        assert out == ""
    left = [p.name for p in outdir.rglob("*") if p.is_file()]
    assert left == [], left
    assert not target.is_file()


def test_subprocess_failures_have_no_traceback(tmp_path: Path) -> None:
    """The reported reproductions, as a user runs them: directory inputs and an unwritable output."""
    env = {**os.environ, "PYTHONPATH": SRC}
    st = tmp_path / "m.safetensors"
    save_file({"w": torch.ones(3)}, str(st))
    (tmp_path / "f").write_text("x")
    subprocess.run([sys.executable, "-m", "sealedckpt", "key", "gen", "--default"], env=env, check=True,
                   capture_output=True)  # fmt: skip
    for argv, code in (
        (["inspect", str(tmp_path)], 1),
        (["verify", str(tmp_path)], 1),
        (["unseal", str(tmp_path), "-o", str(tmp_path / "o")], 1),
        (["seal", str(st), "-o", str(tmp_path / "f" / "o.sealed")], 1),
        (["seal", str(st), "-o", str(tmp_path / "f" / "o.sealed"), "--json"], 1),
    ):
        r = subprocess.run([sys.executable, "-m", "sealedckpt", *argv], capture_output=True, text=True, env=env)
        assert r.returncode == code, (argv, r.stderr)
        assert "Traceback" not in r.stderr and r.stderr.startswith("sealedckpt: error: "), (argv, r.stderr)
        assert "\nhint: " in r.stderr
        if "--json" in argv:
            assert json.loads(r.stdout)["exit_code"] == code


def test_list_commands_with_damaged_stores(capsys: Capsys, world: Path) -> None:
    """``key list`` / ``trust list`` (which take no input) fail cleanly on a damaged store."""
    home = Path(os.environ["SEALEDCKPT_HOME"])
    assert run_cli(capsys, "trust", "add", "x", "./" + _pub_file(capsys, world))[0] == 0
    (home / "registry.json").write_text("garbage")
    (home / "trust.json").write_text('{"x":')
    for argv in (["key", "list"], ["trust", "list"], ["key", "list", "--json"], ["trust", "list", "--json"]):
        code, out, _ = fails(capsys, *argv)
        assert code == cli.EXIT_KEY, argv
        if "--json" in argv:
            assert json.loads(out)["kind"] == "KeystoreError"


def _pub_file(capsys: Capsys, world: Path) -> str:
    code, out, _ = run_cli(capsys, "key", "export-public", "s")
    assert code == 0
    (world / "s.pub").write_text(out)
    return "s.pub"
