"""Run the examples in README.md and docs/*.md (used by tests/test_docs.py).

The convention (also in docs/CLI.md, "How the examples are tested"):

- A ```` ```console ```` block is a transcript: lines starting with ``$ `` are commands (a line
  ending in ``\\`` continues on the next), the lines after a command are its expected output,
  stdout and stderr together, in order. ``[exit N]`` as the last output line means the command
  exits with N; otherwise it must exit 0. Before comparing, both sides are masked (see ``mask``):
  key ids -> ``<id>``, 64-hex digests -> ``<digest>``, times -> ``<time>``, key texts ->
  ``sckpt1<key>`` / ``sckpt-vk1<key>`` / ``SCKPT-...-KEY-1<key>``, the test's scratch directory ->
  ``<dir>``. A line that is just ``...`` stands for any run of lines (also none); a line ending
  in ``...`` matches any line that starts with what comes before.
- A ```` ```sh ```` block is run as it stands and must succeed (``set -e -o pipefail``); its
  output is not compared.
- ```` ```python ```` blocks of one document run in order in one interpreter (one namespace),
  with the shell's current directory and environment at that point. A line ``EXPR  # -> TEXT``
  checks ``repr(EXPR)`` (masked) against ``TEXT``; ``# -> raises NAME`` expects that exception.
- Fences with any other language (or none) are not examples (synopses, layouts) and never run.
- ``<!-- docs-test: sh`` ... ``-->`` and ``<!-- docs-test: python`` ... ``-->`` are hidden setup
  run at that point (a reader never needs them: building a tiny model, switching to another
  machine's home with ``export SEALEDCKPT_HOME=...``).
- ``<!-- docs-test: skip REASON -->`` right before a block means it is not run; test_docs.py
  pins how many blocks each document skips.

Every document runs top to bottom in one bash session, from a throwaway HOME / SEALEDCKPT_HOME
(file keystore, no OS keyring) with the current directory in a scratch directory.

``python tests/docs_runner.py DOC...`` prints every command with its actual (masked) output.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import select
import shlex
import subprocess
import sys
import tempfile
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RUN_LANGS = ("console", "sh", "python")
STEP_TIMEOUT = 60.0

_B32 = "[qpzry9x8gf2tvdw0s3jn54khce6mua7l]"
_MASKS: list[tuple[re.Pattern[str], str]] = [
    (
        re.compile(r"SCKPT-PQ-(SIGNING|SECRET)-KEY-1[QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L]{20,}"),
        r"SCKPT-PQ-\1-KEY-1<key>",
    ),
    (re.compile(rf"sckpt-pqvk1{_B32}{{20,}}"), "sckpt-pqvk1<key>"),
    (re.compile(rf"sckpt1pq1{_B32}{{20,}}"), "sckpt1pq1<key>"),
    (
        re.compile(r"SCKPT-(SYMMETRIC|SIGNING|SECRET)-KEY-1[QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L]{20,}"),
        r"SCKPT-\1-KEY-1<key>",
    ),
    (re.compile(rf"sckpt-vk1{_B32}{{20,}}"), "sckpt-vk1<key>"),
    (re.compile(rf"sckpt1{_B32}{{20,}}"), "sckpt1<key>"),
    (re.compile(r"\b[0-9a-f]{64}\b"), "<digest>"),
    (re.compile(r"\b[0-9a-f]{16}\b"), "<id>"),
    (re.compile(r"\b\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z"), "<time>"),
    (re.compile(r"\b\d{8}T\d{6}\b"), "<time>"),
]


def mask(text: str, scratch: str | None = None) -> str:
    if scratch:
        text = text.replace(scratch, "<dir>")
    for pat, repl in _MASKS:
        text = pat.sub(repl, text)
    return text


def matches(expected: list[str], actual: list[str]) -> bool:
    """Line-wise match; ``...`` alone = any run of lines, ``X...`` = a line starting with X."""
    parts = []
    for line in expected:
        if line.strip() == "...":
            parts.append(r"(?:[^\n]*\n)*?")
        elif line.endswith("...") and len(line) > 3:
            parts.append(re.escape(line[:-3]) + r"[^\n]*\n")
        else:
            parts.append(re.escape(line) + r"\n")
    return re.fullmatch("".join(parts), "".join(a + "\n" for a in actual)) is not None


# -- parsing ---------------------------------------------------------------------------------


@dataclass
class Command:
    text: str
    line: int
    expected: list[str] = field(default_factory=list)
    exit: int = 0


@dataclass
class Block:
    lang: str
    text: str
    line: int  # 1-based line of the opening fence
    hidden: bool = False
    skip: str | None = None
    commands: list[Command] = field(default_factory=list)


_SKIP = re.compile(r"^<!--\s*docs-test:\s*skip\s+(.+?)\s*-->\s*$")
_HIDDEN = re.compile(r"^<!--\s*docs-test:\s*(sh|python)\s*$")
_FENCE = re.compile(r"^```\s*([\w-]*)")


def parse(path: Path) -> list[Block]:
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    skip: str | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        if m := _SKIP.match(line):
            skip = m.group(1)
        elif m := _HIDDEN.match(line):
            j = i + 1
            while lines[j].strip() != "-->":
                j += 1
            blocks.append(Block(m.group(1), "\n".join(lines[i + 1 : j]) + "\n", i + 1, hidden=True))
            i = j
        elif m := _FENCE.match(line):
            j = i + 1
            while not lines[j].startswith("```"):
                j += 1
            lang = m.group(1)
            if lang in RUN_LANGS:
                block = Block(lang, "\n".join(lines[i + 1 : j]) + "\n", i + 1, skip=skip)
                if lang == "console":
                    block.commands = _parse_console(lines[i + 1 : j], i + 2, path)
                blocks.append(block)
            elif skip is not None:
                raise ValueError(f"{path.name}:{i + 1}: docs-test: skip before a block that never runs")
            skip = None
            i = j
        elif line.strip() and skip is not None:
            raise ValueError(f"{path.name}:{i + 1}: docs-test: skip must come right before a block")
        i += 1
    return blocks


def _parse_console(lines: list[str], first: int, path: Path) -> list[Command]:
    cmds: list[Command] = []
    k = 0
    while k < len(lines):
        line = lines[k]
        if line.startswith("$ "):
            text, start = line[2:], first + k
            while text.endswith("\\") and k + 1 < len(lines):
                k += 1
                text += "\n" + lines[k]
            cmds.append(Command(text, start))
        elif not cmds:
            raise ValueError(f"{path.name}:{first + k}: console block output before any `$ ` command")
        else:
            cmds[-1].expected.append(line)
        k += 1
    for c in cmds:
        if c.expected and (m := re.fullmatch(r"\[exit (\d+)\]", c.expected[-1])):
            c.exit = int(m.group(1))
            c.expected.pop()
    return cmds


# -- running ---------------------------------------------------------------------------------


class DocFailure(AssertionError):
    pass


@dataclass
class Result:
    where: str
    command: str
    expected: list[str]
    actual: list[str]
    exit: int
    want_exit: int

    @property
    def ok(self) -> bool:
        return self.exit == self.want_exit and matches(self.expected, self.actual)


class Session:
    """One bash process (and, on demand, one python process) for one document."""

    def __init__(self, scratch: Path) -> None:
        self.scratch = str(scratch.resolve())
        base = Path(self.scratch)
        (base / "bin").mkdir()
        home, work = base / "home", base / "work"
        home.mkdir()
        work.mkdir()
        for name, args in (("sealedckpt", "-m sealedckpt"), ("python", ""), ("python3", "")):
            exe = base / "bin" / name
            exe.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} {args} "$@"\n')
            exe.chmod(0o755)
        import sealedckpt

        src = str(Path(sealedckpt.__file__).resolve().parent.parent)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SEALEDCKPT_", "DBUS_"))}
        env.update(
            HOME=str(home),
            SEALEDCKPT_HOME=str(home / ".local/share/sealedckpt"),
            SEALEDCKPT_KEYSTORE="file",
            PYTHON_KEYRING_BACKEND="keyring.backends.fail.Keyring",
            PATH=f"{base / 'bin'}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}",
            PYTHONPATH=os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p),
            PYTHONUNBUFFERED="1",
            PYTHONDONTWRITEBYTECODE="1",
            TZ="UTC",
            LC_ALL="C.UTF-8",
        )
        self.env = env
        self.nonce = secrets.token_hex(8)
        self.bash = subprocess.Popen(
            ["bash", "--noprofile", "--norc"],
            cwd=work,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self._buf = b""
        self.py: subprocess.Popen[bytes] | None = None
        self._py_err = tempfile.TemporaryFile()

    def close(self) -> None:
        for p in (self.bash, self.py):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
        self._py_err.close()

    # bash

    def _read_until(self, proc: subprocess.Popen[bytes], marker: bytes) -> bytes:
        import time

        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        deadline = time.monotonic() + STEP_TIMEOUT
        while marker not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise DocFailure(f"timed out after {STEP_TIMEOUT:.0f}s; output so far:\n{self._buf.decode()}")
            chunk = os.read(fd, 65536)
            if not chunk:
                out = self._buf.decode(errors="replace")
                raise DocFailure(f"the shell exited (status {proc.wait()}); output:\n{out}")
            self._buf += chunk
        out, _, self._buf = self._buf.partition(marker)
        return out

    def shell(self, script: str, strict: bool = False) -> tuple[str, int]:
        assert self.bash.stdin is not None
        marker = f"@@docs-test-end-{self.nonce}"
        if strict:
            script = f"set -e -o pipefail\n{script}\nset +e +o pipefail"
        self.bash.stdin.write(f"{{ {script}\n}} </dev/null 2>&1; printf '\\n{marker} %d\\n' $?\n".encode())
        self.bash.stdin.flush()
        out = self._read_until(self.bash, marker.encode() + b" ")
        status, _, self._buf = self._buf.partition(b"\n")
        while not status.strip():  # defensive: wait for the status line
            status = self._read_until(self.bash, b"\n")
        text = out.decode(errors="replace")
        text = text[:-1] if text.endswith("\n") else text
        return text, int(status)

    # python

    def start_python(self) -> None:
        """Start the interpreter early: it imports torch while the shell runs the first commands."""
        if self.py is None:
            self.py = subprocess.Popen(
                [sys.executable, __file__, "--serve"],
                cwd=Path(self.scratch) / "work",
                env=self.env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._py_err,
            )

    def python(self, code: str, where: str, first: int) -> list[Result]:
        out, _ = self.shell("pwd; env -0")
        cwd, _, envs = out.partition("\n")
        env = dict(e.split("=", 1) for e in envs.split("\0") if "=" in e)
        self.start_python()
        assert self.py.stdin is not None and self.py.stdout is not None
        self.py.stdin.write(
            (
                json.dumps(
                    {
                        "code": code,
                        "cwd": cwd,
                        "env": env,
                        "where": where,
                        "first": first,
                        "name": where.rpartition(":")[0],
                    }
                )
                + "\n"
            ).encode()
        )
        self.py.stdin.flush()
        line = self.py.stdout.readline()
        if not line:
            self._py_err.seek(0)
            raise DocFailure(f"{where}: python exited:\n{self._py_err.read().decode(errors='replace')}")
        reply = json.loads(line)
        if reply["error"]:
            raise DocFailure(f"{where}: python block failed:\n{reply['error']}")
        return [
            Result(f"{where.rpartition(':')[0]}:{n}", src, [mask(want, self.scratch)], [mask(got, self.scratch)], 0, 0)
            for n, src, want, got in reply["checks"]
        ]


def run_document(path: Path, scratch: Path, *, stop: bool = True) -> tuple[list[Result], list[Block]]:
    """Run every block of a document; returns the compared results and the skipped blocks."""
    blocks = parse(path)
    session = Session(scratch)
    results: list[Result] = []
    skipped: list[Block] = []
    try:
        if any(b.lang == "python" and b.skip is None for b in blocks):
            session.start_python()
        for b in blocks:
            where = f"{path.name}:{b.line}"
            if b.skip is not None:
                skipped.append(b)
                continue
            if b.lang == "python":
                got = session.python(b.text, where, b.line)
            elif b.lang == "sh":
                out, status = session.shell(b.text, strict=True)
                got = [Result(where, b.text, [], [], status, 0)] if status else []
                if status:
                    got[0].actual = out.splitlines()
            else:
                got = []
                for c in b.commands:
                    out, status = session.shell(c.text)
                    actual = mask(out, session.scratch).splitlines() if out else []
                    expected = [mask(e, session.scratch) for e in c.expected]
                    got.append(Result(f"{path.name}:{c.line}", c.text, expected, actual, status, c.exit))
            results.extend(got)
            if stop and any(not r.ok for r in got):
                break
    finally:
        session.close()
    return results, skipped


def describe(r: Result) -> str:
    exp = "\n".join("    " + e for e in r.expected) or "    (nothing)"
    act = "\n".join("    " + a for a in r.actual) or "    (nothing)"
    return (
        f"{r.where}: $ {r.command}\n  exit {r.exit} (documented {r.want_exit})\n"
        f"  documented output:\n{exp}\n  actual output (masked):\n{act}"
    )


# -- the python side ---------------------------------------------------------------------------


def _serve() -> None:
    import ast
    import io
    from contextlib import redirect_stderr, redirect_stdout

    proto = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # anything written straight to fd 1 must not corrupt the protocol
    ns: dict[str, Any] = {"__name__": "__main__"}
    try:  # every document with Python examples uses torch: import it while the shell works
        import torch  # noqa: F401
    except ImportError:
        pass
    for line in sys.stdin:
        req = json.loads(line)
        os.chdir(req["cwd"])
        os.environ.clear()
        os.environ.update(req["env"])
        req["code"] = "\n" * req["first"] + req["code"]  # line numbers are the document's
        lines = req["code"].splitlines()
        checks: list[tuple[int, str, str, str]] = []
        error = None
        sink = io.StringIO()
        try:
            tree = ast.parse(req["code"])
            with redirect_stdout(sink), redirect_stderr(sink):
                for stmt in tree.body:
                    last = lines[(stmt.end_lineno or stmt.lineno) - 1]
                    m = re.search(r"#\s*->\s*(.*?)\s*$", last)
                    if m and isinstance(stmt, ast.Expr):
                        want = m.group(1)
                        src = ast.get_source_segment(req["code"], stmt) or ""
                        try:
                            got = repr(eval(compile(ast.Expression(stmt.value), req["name"], "eval"), ns))
                        except Exception as e:  # reported and compared
                            got = f"raises {type(e).__name__}"
                            if not want.startswith("raises "):
                                got += f": {e}"
                        checks.append((stmt.lineno, src, want, got))
                    else:
                        exec(compile(ast.Module([stmt], []), req["name"], "exec"), ns)
        except BaseException:
            error = traceback.format_exc() + sink.getvalue()[-2000:]
        proto.write(json.dumps({"checks": checks, "error": error}) + "\n")
        proto.flush()


def main(argv: list[str]) -> int:
    if argv == ["--serve"]:
        _serve()
        return 0
    bad = 0
    for doc in argv:
        with tempfile.TemporaryDirectory() as tmp:
            results, skipped = run_document(Path(doc), Path(tmp), stop=False)
        for r in results:
            if r.ok:
                print(f"{r.where}: ok")
            else:
                bad += 1
                print(describe(r))
        print(f"{doc}: {len(results)} checks, {bad} wrong, {len(skipped)} blocks skipped")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
