"""Run one fuzz target: ``python fuzz/run.py TARGET (--seconds N | --runs N) [--engine E]``.

Engines: ``atheris`` (libFuzzer, coverage-guided: sealedckpt's modules are instrumented; prints
``cov:`` / ``exec/s``) when importable, else ``hypothesis`` (seed mutations, fixed seed; prints
example counts). A finding is any exception outside SealedCkptError, or an input over the
per-input ``--deadline``. By default the first finding stops the run (exit 1) and its input is
saved under ``fuzz/findings/``; ``--keep-going`` records each distinct finding (by exception
type and innermost frame) and continues.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import pkgutil
import shutil
import sys
import time
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent
FINDINGS = HERE / "findings"
WORK = HERE / "work"
JSON_TARGETS = {"payload", "manifest", "dir_signatures", "audit", "trust"}  # fed dicts/json.dict


def _import_targets(instrument: bool) -> ModuleType:
    """Import sealedckpt (every submodule, so lazily imported parsers are covered too) and the targets."""
    sys.path.insert(0, str(HERE))
    if instrument:
        import atheris

        with atheris.instrument_imports(include=["sealedckpt"]):
            import sealedckpt

            for mod in pkgutil.walk_packages(sealedckpt.__path__, "sealedckpt."):
                if not mod.name.endswith("__main__"):  # importing it would run the CLI
                    importlib.import_module(mod.name)
    return importlib.import_module("targets")


class Recorder:
    """Runs inputs through ``run_one``; saves and counts findings."""

    def __init__(self, targets: ModuleType, name: str, deadline: float, keep_going: bool, alarm: bool) -> None:
        self.t = targets
        self.name = name
        self.fn = targets.TARGETS[name]
        self.deadline = deadline
        self.keep_going = keep_going
        self.alarm = alarm
        self.execs = 0
        self.sites: dict[str, int] = {}
        self.start = time.monotonic()

    def __call__(self, data: bytes) -> None:
        self.execs += 1
        try:
            self.t.run_one(self.fn, data, self.deadline, alarm=self.alarm)
        except self.t.FuzzFinding as exc:
            site = self.t.finding_site(exc)
            first = site not in self.sites
            self.sites[site] = self.sites.get(site, 0) + 1
            if first:
                FINDINGS.mkdir(exist_ok=True)
                path = FINDINGS / f"{self.name}-{hashlib.sha256(data).hexdigest()[:12]}"
                path.write_bytes(data)
                print(f"\n=== FINDING {self.name} {site}: {exc} (input saved to {path})", flush=True)
                traceback.print_exception(exc.__cause__ or exc, limit=-6)
            if not self.keep_going:
                raise

    def summary(self) -> str:
        secs = time.monotonic() - self.start
        found = ", ".join(f"{s} x{n}" for s, n in self.sites.items()) or "none"
        rate = self.execs / max(secs, 1e-9)
        return f"[{self.name}] execs={self.execs} in {secs:.0f} s ({rate:.0f}/s); findings: {found}"


def run_atheris(rec: Recorder, seconds: int | None, runs: int | None, extra: list[str]) -> None:
    import atheris

    work = WORK / rec.name
    work.mkdir(parents=True, exist_ok=True)
    argv = [sys.argv[0], str(work), str(rec.t.corpus_dir(rec.name))]
    argv += [f"-timeout={max(1, int(rec.deadline * 2))}", "-rss_limit_mb=8192", "-print_final_stats=1"]
    argv += ["-max_len=65536"]
    if rec.name in JSON_TARGETS:
        argv.append(f"-dict={HERE / 'dicts' / 'json.dict'}")
    if seconds is not None:
        argv.append(f"-max_total_time={seconds}")
    if runs is not None:
        argv.append(f"-runs={runs}")
    argv += extra
    rec.t.world()  # build fixtures before libFuzzer starts timing inputs
    # libFuzzer exits the process itself: its final stats (-print_final_stats) are the summary
    atheris.Setup(argv, rec)
    atheris.Fuzz()


def run_hypothesis(rec: Recorder, seconds: int | None, runs: int | None, seed: int) -> None:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as hseed
    from hypothesis import strategies as st

    strategy = mutated(rec.t.seeds(rec.name), st)
    n = runs if runs is not None else 10**9
    deadline_at = time.monotonic() + seconds if seconds is not None else None

    class _Done(Exception):
        pass

    @hseed(seed)
    @settings(max_examples=n, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(strategy)
    def body(data: bytes) -> None:
        if deadline_at is not None and time.monotonic() > deadline_at:
            raise _Done
        rec(data)

    for s in rec.t.seeds(rec.name):
        rec(s)
    try:
        body()
    except _Done:
        pass
    except Exception as exc:  # hypothesis wraps or re-raises; a timeout surfaces as _Done
        if not isinstance(exc, _Done) and "_Done" not in repr(exc):
            raise


def mutated(seeds: list[bytes], st: Any) -> Any:
    """Hypothesis strategy: a seed with a few byte-level mutations (flip, set, insert, delete,
    truncate, splice), or arbitrary bytes."""
    pool = seeds or [b""]
    op = st.tuples(st.sampled_from("fsidtp"), st.integers(0, 1 << 16), st.integers(0, 255), st.integers(0, 64))

    def apply(base: bytes, ops: list[tuple[str, int, int, int]]) -> bytes:
        b = bytearray(base)
        for kind, pos, val, n in ops:
            p = pos % (len(b) + 1)
            if kind == "f" and b:
                b[p % len(b)] ^= 1 << (val % 8)
            elif kind == "s" and b:
                b[p % len(b)] = val
            elif kind == "i":
                b[p:p] = bytes([val]) * (1 + n % 8)
            elif kind == "d":
                del b[p : p + 1 + n]
            elif kind == "t":
                del b[p:]
            elif kind == "p":
                other = pool[val % len(pool)]
                q = (pos * 7) % (len(other) + 1)
                b[p : p + n] = other[q : q + n]
        return bytes(b)

    return st.one_of(
        st.builds(apply, st.sampled_from(pool), st.lists(op, min_size=1, max_size=4)),
        st.binary(max_size=512),
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("target")
    ap.add_argument("--seconds", type=int)
    ap.add_argument("--runs", type=int)
    ap.add_argument("--engine", choices=("auto", "atheris", "hypothesis"), default="auto")
    ap.add_argument("--deadline", type=float, default=5.0, help="per-input time bound in seconds (default 5)")
    ap.add_argument("--keep-going", action="store_true", help="record distinct findings and continue")
    ap.add_argument("--seed", type=int, default=0, help="hypothesis seed (default 0)")
    ap.add_argument("--clean", action="store_true", help="discard the target's generated work corpus first")
    args, extra = ap.parse_known_args(argv)
    if args.seconds is None and args.runs is None:
        ap.error("give --seconds N or --runs N")
    engine = args.engine
    if engine == "auto":
        try:
            import atheris  # noqa: F401

            engine = "atheris"
        except ImportError:
            engine = "hypothesis"
    targets = _import_targets(instrument=engine == "atheris")
    if args.target not in targets.TARGETS:
        ap.error(f"unknown target {args.target!r}; one of {', '.join(targets.TARGETS)}")
    if args.clean:
        shutil.rmtree(WORK / args.target, ignore_errors=True)
    rec = Recorder(targets, args.target, args.deadline, args.keep_going, alarm=engine != "atheris")
    print(f"[{args.target}] engine={engine}", flush=True)
    try:
        if engine == "atheris":
            run_atheris(rec, args.seconds, args.runs, extra)
        else:
            run_hypothesis(rec, args.seconds, args.runs, args.seed)
    except targets.FuzzFinding:
        print(rec.summary(), flush=True)
        return 1
    print(rec.summary() + " (coverage: install `coverage` or use atheris)", flush=True)
    return 1 if rec.sites else 0


if __name__ == "__main__":
    sys.exit(main())
