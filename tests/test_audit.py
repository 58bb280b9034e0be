"""The audit log: hash chain, tamper detection, signatures, concurrency, secrets, CLI."""

from __future__ import annotations

import argparse
import base64
import datetime as _dt
import json
import multiprocessing
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sealedckpt.cli import audit as cli_audit
from sealedckpt.crypto import SigningKey, SymmetricKey, textkeys
from sealedckpt.errors import SealedCkptError
from sealedckpt.stores import audit, audit_records
from sealedckpt.stores.audit import AuditError

FIELDS = audit_records.FIELDS


# --- helpers --------------------------------------------------------------------------------------


def write_log(log: Path, n: int, signing_key: SigningKey | None = None) -> list[dict[str, Any]]:
    return [
        audit.record(
            "seal" if i % 2 == 0 else "open",
            path=f"/models/ckpt-{i}.sckpt",
            digest=f"sha256:{i:064x}",
            key_ids=[f"{i:016x}"],
            signer_ids=[f"{i + 1:016x}"] if i % 3 == 0 else [],
            outcome="ok" if i % 5 else "error",
            detail={"n": str(i), "note": "ünïcode ✓"},
            log=log,
            signing_key=signing_key,
        )
        for i in range(n)
    ]


def lines(log: Path) -> list[bytes]:
    return log.read_bytes().splitlines(keepends=True)


def put(log: Path, parts: list[bytes]) -> None:
    log.write_bytes(b"".join(parts))


def loads(raw: bytes) -> dict[str, Any]:
    rec: dict[str, Any] = json.loads(raw)
    return rec


def dumps(rec: dict[str, Any]) -> bytes:
    return audit_records.line(rec)


def mutate(value: Any) -> Any:
    """A different value of the same JSON type."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if value is None:
        return "x"
    if isinstance(value, str):
        if len(value) == 64 and all(c in "0123456789abcdef" for c in value):
            return ("1" if value[0] != "1" else "2") + value[1:]
        if value.endswith("Z") and "T" in value:  # a time: still a valid time
            return value[:-2] + ("1" if value[-2] != "1" else "2") + "Z"
        return value + "x"
    if isinstance(value, list):
        return [*value, "x"]
    if isinstance(value, dict):
        return {**value, "x": "y"}
    raise AssertionError(value)


def rehash(rec: dict[str, Any], signing_key: SigningKey | None = None) -> dict[str, Any]:
    rec = {k: v for k, v in rec.items() if k not in ("hash", "sig")}
    if signing_key is not None:
        rec["signer"] = textkeys.verify_key_to_text(signing_key.public)
    rec["hash"] = audit.record_hash(rec)
    if signing_key is not None:
        rec["sig"] = base64.b64encode(signing_key.sign(audit_records.sig_message(rec["hash"]))).decode()
    return rec


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return tmp_path / "audit.jsonl"


@pytest.fixture
def log20(log: Path) -> Path:
    write_log(log, 20)
    return log


# --- the chain ------------------------------------------------------------------------------------


def test_chain_of_20_verifies(log: Path) -> None:
    recs = write_log(log, 20)
    report = audit.verify(log)
    assert report.records == 20
    assert report.head == recs[-1]["hash"]
    assert report.signed == 0 and not report.fully_signed
    assert report.first_time == recs[0]["time"] and report.last_time == recs[-1]["time"]
    assert [r["seq"] for r in recs] == list(range(20))
    assert recs[0]["prev"] == audit.GENESIS
    assert all(recs[i]["prev"] == recs[i - 1]["hash"] for i in range(1, 20))
    assert audit.read(log) == recs


def test_record_fields(log: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    rec = audit.record("seal", path="rel/x.sckpt", digest="sha256:ab", key_ids=["k1"], log=log)
    assert list(rec) == list(FIELDS)
    assert rec["v"] == 1 and rec["seq"] == 0 and rec["outcome"] == "ok"
    assert rec["path"] == str(tmp_path / "rel" / "x.sckpt")
    assert rec["pid"] == os.getpid() and rec["host"] and rec["user"]
    assert rec["detail"] == {} and rec["signer_ids"] == []
    when = _dt.datetime.strptime(rec["time"], "%Y-%m-%dT%H:%M:%S.%fZ")
    assert abs(when - _dt.datetime.now(_dt.timezone.utc).replace(tzinfo=None)) < _dt.timedelta(minutes=1)
    assert rec["hash"] == audit.record_hash(rec)
    # the line on disk is exactly the returned record, in field order
    assert log.read_bytes() == dumps(rec)
    assert audit.record("check", log=log)["path"] is None


def test_untouched_log_passes(log20: Path) -> None:
    """The detector can fail: everything below raises only because something was changed."""
    before = log20.read_bytes()
    audit.verify(log20)
    audit.verify(log20, expect_head=loads(lines(log20)[-1])["hash"])
    assert log20.read_bytes() == before


@pytest.mark.parametrize("field", FIELDS)
def test_editing_any_field_of_any_record_is_detected(log20: Path, field: str) -> None:
    original = lines(log20)
    for i in range(len(original)):
        rec = loads(original[i])
        rec[field] = mutate(rec[field])
        put(log20, [*original[:i], dumps(rec), *original[i + 1 :]])
        with pytest.raises(AuditError, match=f"line {i + 1}"):
            audit.verify(log20)
    put(log20, original)
    audit.verify(log20)


def test_edit_with_recomputed_hash_is_detected_by_the_next_record(log20: Path) -> None:
    original = lines(log20)
    for i in range(19):
        rec = loads(original[i])
        rec["outcome"] = "forged"
        put(log20, [*original[:i], dumps(rehash(rec)), *original[i + 1 :]])
        with pytest.raises(AuditError, match=f"line {i + 2}: prev does not match"):
            audit.verify(log20)


def test_rewritten_last_record_needs_the_head(log20: Path) -> None:
    original = lines(log20)
    head = loads(original[-1])["hash"]
    rec = loads(original[-1])
    rec["path"] = "/elsewhere"
    put(log20, [*original[:-1], dumps(rehash(rec))])
    audit.verify(log20)  # a self-consistent unsigned rewrite: only an anchor catches it
    with pytest.raises(AuditError, match="expected " + head):
        audit.verify(log20, expect_head=head)


@pytest.mark.parametrize("i", [0, 1, 10, 18])
def test_deleting_a_record_is_detected(log20: Path, i: int) -> None:
    original = lines(log20)
    put(log20, original[:i] + original[i + 1 :])
    with pytest.raises(AuditError, match=f"line {i + 1}: seq is {i + 1}, expected {i}"):
        audit.verify(log20)


@pytest.mark.parametrize("i", [0, 7, 18])
def test_swapping_two_records_is_detected(log20: Path, i: int) -> None:
    parts = lines(log20)
    parts[i], parts[i + 1] = parts[i + 1], parts[i]
    put(log20, parts)
    with pytest.raises(AuditError, match=f"line {i + 1}: seq"):
        audit.verify(log20)


def test_swapping_distant_records_is_detected(log20: Path) -> None:
    parts = lines(log20)
    parts[3], parts[15] = parts[15], parts[3]
    put(log20, parts)
    with pytest.raises(AuditError, match="line 4"):
        audit.verify(log20)


@pytest.mark.parametrize("i", [0, 9, 19])
def test_duplicating_a_record_is_detected(log20: Path, i: int) -> None:
    parts = lines(log20)
    put(log20, [*parts[: i + 1], parts[i], *parts[i + 1 :]])
    with pytest.raises(AuditError, match=f"line {i + 2}: seq is {i}, expected {i + 1}"):
        audit.verify(log20)


def test_inserting_a_forged_record_is_detected(log20: Path) -> None:
    parts = lines(log20)
    # a forged record with a correct own hash, claiming the next seq and chaining to record 9
    forged = loads(parts[9])
    forged.update(seq=10, op="unseal", prev=loads(parts[9])["hash"])
    forged = rehash(forged)
    assert audit.record_hash(forged) == forged["hash"]
    put(log20, [*parts[:10], dumps(forged), *parts[10:]])
    with pytest.raises(AuditError, match="line 12: seq is 10, expected 11"):
        audit.verify(log20)
    # ... even if it reuses a free seq
    forged = rehash({**forged, "seq": 99})
    put(log20, [*parts[:10], dumps(forged), *parts[10:]])
    with pytest.raises(AuditError, match="line 11: seq is 99"):
        audit.verify(log20)


def test_inserting_a_forged_record_at_the_end_needs_the_head(log20: Path) -> None:
    parts = lines(log20)
    head = loads(parts[-1])["hash"]
    forged = rehash({**loads(parts[-1]), "seq": 20, "prev": head, "op": "unseal"})
    put(log20, [*parts, dumps(forged)])
    audit.verify(log20)
    with pytest.raises(AuditError, match="head"):
        audit.verify(log20, expect_head=head)


@pytest.mark.parametrize("cut", [1, 10, 100])
def test_torn_final_line_is_detected(log20: Path, cut: int) -> None:
    data = log20.read_bytes()
    log20.write_bytes(data[:-cut])
    with pytest.raises(AuditError, match="line 20 is torn"):
        audit.verify(log20)
    with pytest.raises(AuditError, match="line 20 is torn"):
        audit.read(log20)
    with pytest.raises(AuditError, match="torn line") as exc:
        audit.record("seal", log=log20)
    assert "sealedckpt audit verify" in str(exc.value)
    assert log20.read_bytes() == data[:-cut]  # nothing appended


def test_record_refuses_after_a_damaged_last_record(log20: Path) -> None:
    parts = lines(log20)
    rec = loads(parts[-1])
    rec["op"] = "edited"
    put(log20, [*parts[:-1], dumps(rec)])
    with pytest.raises(AuditError, match="damaged") as exc:
        audit.record("seal", log=log20)
    assert "audit verify" in str(exc.value)
    log20.write_bytes(b"not json\n")
    with pytest.raises(AuditError, match="damaged"):
        audit.record("seal", log=log20)


def test_expect_head_catches_a_removed_tail(log20: Path) -> None:
    head = audit.verify(log20).head
    parts = lines(log20)
    put(log20, parts[:-3])
    report = audit.verify(log20)  # the prefix is a valid log by itself
    assert report.records == 17
    with pytest.raises(AuditError, match=f"head is {report.head} after 17 record"):
        audit.verify(log20, expect_head=head)
    log20.write_bytes(b"")
    assert audit.verify(log20).head == audit.GENESIS
    with pytest.raises(AuditError, match="head"):
        audit.verify(log20, expect_head=head)
    with pytest.raises(AuditError, match="64 hex"):
        audit.verify(log20, expect_head="abc")


def test_missing_log(tmp_path: Path) -> None:
    with pytest.raises(AuditError, match="no audit log"):
        audit.verify(tmp_path / "nope.jsonl")
    assert audit.read(tmp_path / "nope.jsonl") == []


@pytest.mark.parametrize(
    "bad",
    [
        b"{",
        b"[]",
        b'"x"',
        b"\xff\xfe garbage",
        b"",
        b'{"v":2}',
        b'{"v":1}',
        b'{"v":1,"v":1}',
        b"NaN",
    ],
)
def test_malformed_lines_are_audit_errors(log20: Path, bad: bytes) -> None:
    parts = lines(log20)
    put(log20, [*parts[:5], bad + b"\n", *parts[5:]])
    with pytest.raises(AuditError, match="line 6"):
        audit.verify(log20)
    if bad:  # read() checks the schema of each line too, never a raw ValueError/KeyError
        with pytest.raises(AuditError, match="line 6"):
            audit.read(log20)


@pytest.mark.parametrize(
    "field,value",
    [("seq", "3"), ("seq", True), ("seq", -1), ("pid", 1.5), ("key_ids", "abc"), ("detail", {"a": 1}),
     ("time", "yesterday"), ("prev", "ABC"), ("extra", 1)],
)  # fmt: skip
def test_wrong_types_are_audit_errors(log20: Path, field: str, value: Any) -> None:
    parts = lines(log20)
    rec = loads(parts[4])
    rec[field] = value
    raw = json.dumps(rec, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
    put(log20, [*parts[:4], raw, *parts[5:]])
    with pytest.raises(AuditError, match="line 5"):
        audit.verify(log20)


def test_whitespace_or_reordered_keys_are_detected(log20: Path) -> None:
    parts = lines(log20)
    rec = loads(parts[4])
    for raw in (
        json.dumps(rec, separators=(",", ":"), ensure_ascii=False, sort_keys=True).encode(),
        json.dumps(rec, ensure_ascii=False).encode(),
        json.dumps(rec, separators=(",", ":")).encode(),  # \u escapes instead of UTF-8
    ):
        put(log20, [*parts[:4], raw + b"\n", *parts[5:]])
        with pytest.raises(AuditError, match="line 5: not in canonical form"):
            audit.verify(log20)


@pytest.fixture(scope="module")
def small_logs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    d = tmp_path_factory.mktemp("audit-bytes")
    out = {}
    for name, key in (("unsigned", None), ("signed", SigningKey.generate())):
        write_log(d / name, 4, signing_key=key)
        out[name] = (d / name).read_bytes()
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), which=st.sampled_from(["unsigned", "signed"]))
def test_any_single_byte_change_is_detected(
    small_logs: dict[str, bytes], tmp_path: Path, data: st.DataObject, which: str
) -> None:
    blob = bytearray(small_logs[which])
    i = data.draw(st.integers(0, len(blob) - 1), label="offset")
    b = data.draw(st.integers(0, 255).filter(lambda x: x != blob[i]), label="byte")
    blob[i] = b
    p = tmp_path / f"{which}.jsonl"
    p.write_bytes(bytes(blob))
    with pytest.raises(AuditError):
        audit.verify(p)


# --- signatures -----------------------------------------------------------------------------------


def test_signed_records_verify_with_the_right_key(log: Path, signer: SigningKey) -> None:
    recs = write_log(log, 10, signing_key=signer)
    assert all(r["signer"] == textkeys.verify_key_to_text(signer.public) for r in recs)
    assert all(len(base64.b64decode(r["sig"])) == 64 for r in recs)
    report = audit.verify(log, trusted=[signer.public])
    assert report.signed == 10 and report.fully_signed
    assert report.signers == (textkeys.verify_key_to_text(signer.public),)
    other = SigningKey.generate()
    audit.verify(log, trusted=[other.public, signer.public])
    with pytest.raises(AuditError, match=r"line 1: signed by .* not trusted"):
        audit.verify(log, trusted=[other.public])


def test_trust_requires_every_record_signed(log: Path, signer: SigningKey) -> None:
    write_log(log, 3, signing_key=signer)
    audit.record("seal", log=log)
    assert audit.verify(log).signed == 3
    with pytest.raises(AuditError, match="line 4: record is not signed"):
        audit.verify(log, trusted=[signer.public])


def test_resigned_rewrite_is_caught_by_trust(log: Path, signer: SigningKey) -> None:
    recs = write_log(log, 5, signing_key=signer)
    attacker = SigningKey.generate()
    prev = audit.GENESIS
    forged = []
    for r in recs:
        f = rehash({**r, "prev": prev, "outcome": "rewritten"}, attacker)
        forged.append(dumps(f))
        prev = f["hash"]
    put(log, forged)
    audit.verify(log)  # self-consistent
    with pytest.raises(AuditError, match="not trusted"):
        audit.verify(log, trusted=[signer.public])


def test_bad_signature_is_detected(log: Path, signer: SigningKey) -> None:
    write_log(log, 3, signing_key=signer)
    parts = lines(log)
    rec = loads(parts[1])
    rec["sig"] = base64.b64encode(SigningKey.generate().sign(audit_records.sig_message(rec["hash"]))).decode()
    put(log, [parts[0], dumps(rec), parts[2]])
    with pytest.raises(AuditError, match="line 2: invalid signature"):
        audit.verify(log)
    rec["sig"] = "!!!"
    put(log, [parts[0], dumps(rec), parts[2]])
    with pytest.raises(AuditError, match="line 2: signature is not base64"):
        audit.verify(log)


# --- concurrency ----------------------------------------------------------------------------------


def _writer(log: str, n: int, who: int) -> None:
    for i in range(n):
        audit.record("seal", path=f"/w{who}/{i}", detail={"writer": str(who), "i": str(i)}, log=Path(log))


def test_concurrent_writers(log: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(log), 50, w)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    report = audit.verify(log)
    assert report.records == 200
    raw = lines(log)
    assert len(raw) == 200 and all(line.endswith(b"\n") and line.count(b"\n") == 1 for line in raw)
    recs = audit.read(log)
    assert [r["seq"] for r in recs] == list(range(200))
    for w in range(4):  # each writer's records all there, in its own order
        mine = [int(r["detail"]["i"]) for r in recs if r["detail"]["writer"] == str(w)]
        assert mine == list(range(50))
    assert len({r["pid"] for r in recs}) == 4


# --- secrets, configuration, permissions ----------------------------------------------------------


def _secrets() -> Iterator[str]:
    yield textkeys.secret_to_text(SymmetricKey.generate())
    yield textkeys.secret_to_text(SigningKey.generate())
    yield textkeys.secret_to_text(SymmetricKey.generate()).lower()  # also parses as a secret
    yield "prefix SCKPT-ANYTHING"


@pytest.mark.parametrize(
    "call",
    [
        lambda s, log: audit.record("seal", detail={"k": s}, log=log),
        lambda s, log: audit.record("seal", path=f"/tmp/{s}", log=log),
        lambda s, log: audit.record("seal", key_ids=[s], log=log),
        lambda s, log: audit.record("seal", digest=s, log=log),
        lambda s, log: audit.record(s, log=log),
    ],
)
def test_secrets_are_refused(log: Path, call: Callable[[str, Path], object]) -> None:
    for secret in _secrets():
        with pytest.raises(AuditError, match="secret"):
            call(secret, log)
    assert not log.exists()
    # public keys are fine
    audit.record("seal", detail={"signer": textkeys.verify_key_to_text(SigningKey.generate().public)}, log=log)


def test_bad_arguments(log: Path) -> None:
    with pytest.raises(AuditError):
        audit.record("", log=log)
    with pytest.raises(AuditError):
        audit.record("seal", key_ids="abc", log=log)
    with pytest.raises(AuditError):
        audit.record("seal", detail={"n": 1}, log=log)  # type: ignore[dict-item]
    with pytest.raises(AuditError):
        audit.record("seal", detail={"bad": "\ud800"}, log=log)
    assert issubclass(AuditError, SealedCkptError)


def test_enabled_env_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(audit.ENV_AUDIT, raising=False)
    assert audit.enabled(False) is False and audit.enabled(True) is True
    monkeypatch.setenv(audit.ENV_AUDIT, "1")
    assert audit.enabled(False) is True and audit.enabled(True) is True
    monkeypatch.setenv(audit.ENV_AUDIT, "0")
    assert audit.enabled(False) is False and audit.enabled(True) is False
    monkeypatch.setenv(audit.ENV_AUDIT, "")
    assert audit.enabled(True) is True
    monkeypatch.setenv(audit.ENV_AUDIT, "maybe")
    with pytest.raises(AuditError, match="SEALEDCKPT_AUDIT"):
        audit.enabled(True)


def test_log_location(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(audit.ENV_AUDIT_LOG, raising=False)
    assert audit.log_path() == Path(os.environ["SEALEDCKPT_HOME"]) / "audit.jsonl"
    monkeypatch.setenv(audit.ENV_AUDIT_LOG, str(tmp_path / "elsewhere.jsonl"))
    assert audit.log_path() == tmp_path / "elsewhere.jsonl"
    audit.record("seal")
    assert audit.verify().records == 1
    assert (tmp_path / "elsewhere.jsonl").exists()


@pytest.mark.skipif(os.name != "posix", reason="POSIX modes")
@pytest.mark.parametrize("umask", [0o022, 0o000])
def test_log_file_mode_0600(tmp_path: Path, umask: int) -> None:
    log = tmp_path / "new" / "dir" / "audit.jsonl"
    old = os.umask(umask)
    try:
        audit.record("seal", log=log)
        audit.record("seal", log=log)
    finally:
        os.umask(old)
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    assert stat.S_IMODE(log.parent.stat().st_mode) == 0o700


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs mkfifo")
def test_not_a_regular_file(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(AuditError, match="not a regular file"):
        audit.record("seal", log=fifo)
    with pytest.raises(OSError):  # I/O failures stay OSError (the CLI's exit 1), not integrity errors
        audit.record("seal", log=tmp_path)


def test_read_since(log: Path) -> None:
    recs = write_log(log, 5)
    cut = _dt.datetime.strptime(recs[2]["time"], "%Y-%m-%dT%H:%M:%S.%fZ")
    assert audit.read(log, since=cut) == recs[2:]  # naive = UTC
    assert audit.read(log, since=cut.replace(tzinfo=_dt.timezone.utc)) == recs[2:]
    assert audit.read(log, since=_dt.datetime(2999, 1, 1, tzinfo=_dt.timezone.utc)) == []


# --- CLI ------------------------------------------------------------------------------------------


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    p = argparse.ArgumentParser(prog="sealedckpt")
    sub = p.add_subparsers(dest="command", required=True)
    cli_audit.add_audit_parser(sub)
    try:
        args = p.parse_args(list(argv))
        code = int(args.func(args))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_show(capsys: pytest.CaptureFixture[str], log: Path) -> None:
    audit.record("seal", path="/m/a.sckpt", digest="sha256:ab", key_ids=["k1", "k2"], detail={"bytes": "10"}, log=log)
    audit.record("open", outcome="error", signer_ids=["s1"], log=log)
    code, out, err = run(capsys, "audit", "show", "--log", str(log))
    assert code == 0 and err == ""
    first, second = out.splitlines()
    t, *rest = first.split("  ")
    assert _dt.datetime.strptime(t, "%Y-%m-%dT%H:%M:%S.%fZ")
    assert rest == ["seal", "ok", "/m/a.sckpt", "sha256:ab", "keys=k1,k2", "bytes=10"]
    assert second.split("  ")[1:] == ["open", "error", "-", "-", "keys=-", "signers=s1"]

    code, out, _ = run(capsys, "audit", "show", "--log", str(log), "--json")
    assert code == 0 and json.loads(out) == audit.read(log)

    code, out, err = run(capsys, "audit", "show", "--log", str(log), "--since", "2999-01-01T00:00:00Z")
    assert code == 0 and out == "" and "no audit records" in err
    code, out, _ = run(capsys, "audit", "show", "--log", str(log), "--since", "2000-01-01")
    assert code == 0 and len(out.splitlines()) == 2
    code, _, err = run(capsys, "audit", "show", "--log", str(log), "--since", "last tuesday")
    assert code == 2 and "ISO-8601" in err


def test_cli_show_escapes_control_characters(capsys: pytest.CaptureFixture[str], log: Path) -> None:
    audit.record("seal", path="/m/\x1b[2Jevil", detail={"x": "a\nb"}, log=log)
    code, out, _ = run(capsys, "audit", "show", "--log", str(log))
    assert code == 0 and "\x1b" not in out and "\\x1b[2Jevil" in out and "x=a\\nb" in out
    assert len(out.splitlines()) == 1


def test_cli_show_default_log(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, err = run(capsys, "audit", "show")
    assert code == 0 and out == "" and "no audit records" in err
    audit.record("seal")
    code, out, _ = run(capsys, "audit", "show")
    assert code == 0 and "  seal  ok  " in out


def test_cli_verify(capsys: pytest.CaptureFixture[str], log20: Path) -> None:
    head = audit.verify(log20).head
    code, out, err = run(capsys, "audit", "verify", "--log", str(log20))
    assert code == 0
    assert out == f"OK: 20 records, chain intact, head {head}\n"
    assert "--expect-head" in err and "unsigned" in err
    code, out, err = run(capsys, "audit", "verify", "--log", str(log20), "--expect-head", head.upper())
    assert code == 0 and out.startswith("OK: 20 records") and "--expect-head" not in err
    code, out, _ = run(capsys, "audit", "verify", "--log", str(log20), "--json")
    doc = json.loads(out)
    assert code == 0 and doc["ok"] is True and doc["records"] == 20 and doc["head"] == head
    assert doc["signed"] == 0 and doc["trust_checked"] is False and doc["head_checked"] is False


def test_cli_verify_failures_raise_audit_error(capsys: pytest.CaptureFixture[str], log20: Path) -> None:
    head = audit.verify(log20).head
    parts = lines(log20)
    put(log20, parts[:-1])
    with pytest.raises(AuditError, match="head"):
        run(capsys, "audit", "verify", "--log", str(log20), "--expect-head", head)
    put(log20, [parts[1], parts[0], *parts[2:]])
    with pytest.raises(AuditError, match="line 1"):
        run(capsys, "audit", "verify", "--log", str(log20))
    assert capsys.readouterr().out == ""
    with pytest.raises(AuditError, match="no audit log"):
        run(capsys, "audit", "verify", "--log", str(log20) + ".missing")


def test_cli_verify_trust(capsys: pytest.CaptureFixture[str], log: Path, signer: SigningKey) -> None:
    write_log(log, 4, signing_key=signer)
    pub = textkeys.verify_key_to_text(signer.public)
    code, out, err = run(capsys, "audit", "verify", "--log", str(log), "--trust", pub)
    assert code == 0 and out.startswith("OK: 4 records") and "unsigned" not in err and "--trust" not in err
    code, out, err = run(capsys, "audit", "verify", "--log", str(log))
    assert code == 0 and "--trust" in err
    other = textkeys.verify_key_to_text(SigningKey.generate().public)
    with pytest.raises(AuditError, match="not trusted"):
        run(capsys, "audit", "verify", "--log", str(log), "--trust", other)
    typo = pub[:-1] + ("p" if pub.endswith("q") else "q")  # always differs from pub
    code, out, err = run(capsys, "audit", "verify", "--log", str(log), "--trust", typo)
    assert code == 2 and "not a verify key" in err and out == ""
    code, _, err = run(capsys, "audit", "verify", "--log", str(log), "--expect-head", "abc")
    assert code == 2 and "64 hex" in err


def test_cli_requires_a_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "audit")
    assert code == 2 and "COMMAND" in err


def test_audit_log_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The audit context is a value: off unless asked, its path and signer from the environment."""
    monkeypatch.delenv(audit.ENV_AUDIT, raising=False)
    monkeypatch.setenv(audit.ENV_AUDIT_LOG, str(tmp_path / "env.jsonl"))
    assert audit.AuditLog.from_env(default=False) is None
    on = audit.AuditLog.from_env(default=True)
    assert on == audit.AuditLog(tmp_path / "env.jsonl", None)
    monkeypatch.setenv(audit.ENV_AUDIT, "0")
    assert audit.AuditLog.from_env(default=True) is None
    monkeypatch.setenv(audit.ENV_AUDIT, "sometimes")
    with pytest.raises(AuditError, match="must be 1 or 0"):
        audit.AuditLog.from_env(default=True)


def test_audit_log_records_where_it_points(tmp_path: Path) -> None:
    key = SigningKey.generate()
    log = audit.AuditLog(tmp_path / "a.jsonl", key)
    assert key.key_id in repr(log) and "SCKPT-" not in repr(log)
    rec = log.record("seal", path="x.sealed", digest="blake3:" + "0" * 64, key_ids=["ab"])
    assert rec["seq"] == 0 and rec["op"] == "seal" and rec["signer"] == textkeys.verify_key_to_text(key.public)
    assert log.record("load")["prev"] == rec["hash"]
    report = audit.verify(tmp_path / "a.jsonl", trusted=[key.public])
    assert report.records == 2 and report.signed == 2
