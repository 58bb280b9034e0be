from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator

import pytest

import sealedckpt


@pytest.fixture
def key() -> sealedckpt.SymmetricKey:
    return sealedckpt.SymmetricKey.generate()


@pytest.fixture
def signer() -> sealedckpt.SigningKey:
    return sealedckpt.SigningKey.generate()


@pytest.fixture(autouse=True)
def _isolated_keystore(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never touch the developer's real keystore or keyring."""
    monkeypatch.setenv("SEALEDCKPT_HOME", str(tmp_path_factory.mktemp("sealedckpt-home")))
    monkeypatch.setenv("SEALEDCKPT_KEYSTORE", "file")
    monkeypatch.delenv("SEALEDCKPT_KEY", raising=False)
    monkeypatch.delenv("SEALEDCKPT_KEYSTORE_PASSPHRASE_FILE", raising=False)


# -- object storage: a real S3 protocol server on loopback (moto's ThreadedMotoServer) ------

S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing-not-a-real-key",
    "AWS_SECRET_ACCESS_KEY": "testing-not-a-real-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """``http://127.0.0.1:PORT`` of a moto S3 server on a random port (no network)."""
    pytest.importorskip("s3fs")
    server_mod = pytest.importorskip("moto.server")

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket; the environment points s3fs (and the CLI) at the loopback server."""
    s3fs = pytest.importorskip("s3fs")
    for k, v in S3_ENV.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    s3fs.S3FileSystem.clear_instance_cache()
    name = f"b-{secrets.token_hex(6)}"
    s3fs.S3FileSystem().mkdir(name)
    return name
