"""Start/stop: graceful shutdown, the `tagllm serve` process (port file, config, SIGTERM), TLS, config."""

from __future__ import annotations

import concurrent.futures
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from click.testing import CliRunner

from features.errors import ConfigError
from serving.client import TagLLMClient, TagLLMClientError
from tagllm.cli import cli
from tests.serving.conftest import TitleTagger, start

REPO = Path(__file__).resolve().parents[2]


def test_graceful_stop_finishes_in_flight_calls_and_refuses_new_ones(serving_run):
    served = start(serving_run, tagger=TitleTagger(delay_s=1.0), features=None)
    cat = str(served.running.core.rec.catalog.categories[0])
    client = TagLLMClient(served.target, timeout=20)
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            slow = pool.submit(client.tag_notes, [{"note_id": "n-slow", "category": cat, "title": "a:b"}])
            time.sleep(0.5)  # the call is in the tagger now
            served.loop.run(served.running.stop(grace=5.0))
            assert slow.result(20).notes[0].note_id == "n-slow"
        with pytest.raises(TagLLMClientError) as err:
            client.note_tags(["n-slow"], timeout=2)
        assert err.value.code == "UNAVAILABLE"
    finally:
        client.close()
        served.loop.close()


def _wait_for(path: Path, proc: subprocess.Popen, seconds: float = 180) -> str:
    deadline = time.monotonic() + seconds
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            _, err = proc.communicate()
            pytest.fail(f"server did not start (exit {proc.returncode}): {err[-3000:]}")
        time.sleep(0.2)
    return path.read_text().strip()


@pytest.mark.integration
def test_cli_serve_port_file_config_and_sigterm(serving_run, tmp_path):
    port_file = tmp_path / "port"
    token_file = tmp_path / "token"
    token_file.write_text("tok-123\n")
    config = tmp_path / "serve.yaml"
    config.write_text(
        f"run_dir: {serving_run}\nport: 1\ngrace-s: 2\nmax_k: 7\nopen_writes: true\n"
    )  # --port 0 wins
    env = {**os.environ, "TAGLLM_QUIET": ""}
    env.pop("TAGLLM_TOKEN", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tagllm.cli", "serve", "--config", str(config), "--port", "0",
         "--port-file", str(port_file), "--token-file", str(token_file)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        port = int(_wait_for(port_file, proc))
        with TagLLMClient(f"127.0.0.1:{port}", token="tok-123", timeout=10) as c:
            assert c.health()["tagllm.v1.Tagging"] == "NOT_SERVING"  # the tiny run has no student
            user = c.user_interests(["u00000"])[0].user_id
            with pytest.raises(TagLLMClientError) as err:
                c.recommend(user, k=8)
            assert err.value.code == "INVALID_ARGUMENT" and "max_k" in err.value.details  # from the config
            with pytest.raises(TagLLMClientError) as err:
                c.tag_notes([{"note_id": "x", "category": "beauty"}])
            assert err.value.code == "FAILED_PRECONDITION" and "student" in err.value.details
        result = CliRunner().invoke(
            cli, ["client", "health", "--target", f"127.0.0.1:{port}", "--token-file", str(token_file)]
        )
        assert result.exit_code == 0, result.output
        assert json.loads(result.output)[""] == "SERVING"
        result = CliRunner().invoke(cli, ["client", "note-tags", "n000001", "--target", f"127.0.0.1:{port}"])
        assert result.exit_code == 1 and "UNAUTHENTICATED" in result.output
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-3000:]
    assert f"listening on 127.0.0.1:{port}" in out
    assert "stopped" in err and "Traceback" not in err
    assert not port_file.exists()


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    try:
        from cryptography import x509  # noqa: F401  (preferred when installed)
    except ImportError:
        if shutil.which("openssl") is None:
            pytest.skip("neither the cryptography package nor the openssl CLI is available for a test cert")
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
             "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
            check=True, capture_output=True,
        )  # fmt: skip
        return cert, key
    return _cryptography_cert(cert, key)


def _cryptography_cert(cert: Path, key: Path) -> tuple[Path, Path]:
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    k = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    c = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(k.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(k, hashes.SHA256())
    )  # fmt: skip
    cert.write_bytes(c.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(
        k.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert, key


def test_tls_with_token(serving_run, tmp_path):
    cert, key = _self_signed(tmp_path)
    served = start(serving_run, tls_cert=cert, tls_key=key, token="tls-tok", tagger=None, features=None)
    try:
        port = served.running.port
        with TagLLMClient(f"localhost:{port}", token="tls-tok", tls_ca=cert, timeout=10) as c:
            assert c.note_tags(["n000001"])[0].note_id == "n000001"
        with TagLLMClient(f"localhost:{port}", token="wrong", tls_ca=cert, timeout=10) as c:
            with pytest.raises(TagLLMClientError) as err:
                c.note_tags(["n000001"])
            assert err.value.code == "UNAUTHENTICATED"
        with TagLLMClient(f"127.0.0.1:{port}", timeout=3) as plain:  # plaintext to a TLS port fails
            with pytest.raises(TagLLMClientError) as err:
                plain.note_tags(["n000001"])
            assert err.value.code == "UNAVAILABLE"
    finally:
        served.stop()


def test_config_mapping_validation(tmp_path):
    from serving.server import ServerConfig, load_config

    path = tmp_path / "c.yaml"
    path.write_text("run_dir: r\nmax-ids-per-call: 5\nport: 0\n")
    cfg = ServerConfig.from_mapping({**load_config(path), "port": 9})
    assert cfg.limits.max_ids_per_call == 5 and cfg.port == 9 and cfg.host == "127.0.0.1"
    with pytest.raises(ConfigError, match="unknown key"):
        ServerConfig.from_mapping({"run_dir": "r", "prot": 1})
    with pytest.raises(ConfigError, match="max_k: got 0"):
        ServerConfig.from_mapping({"run_dir": "r", "max_k": 0})
    with pytest.raises(ConfigError, match="tls_cert, tls_key"):
        ServerConfig.from_mapping({"run_dir": "r", "tls_cert": "c.pem"})
    path.write_text("run_dir: r\ntoken: abc\n")
    with pytest.raises(ConfigError, match="token"):
        load_config(path)


def test_port_in_use_is_a_clear_startup_error(server, serving_run):
    from serving.server import start_server
    from tests.serving.conftest import LoopThread

    loop = LoopThread()
    try:
        with pytest.raises(ConfigError, match="cannot bind"):
            loop.run(start_server(serving_run, port=server.running.port, tagger=None, features=None))
    finally:
        loop.close()


def test_channel_to_health_after_stop_is_unavailable(serving_run):
    served = start(serving_run, tagger=None, features=None)
    target = served.target
    served.stop()
    with grpc.insecure_channel(target) as channel:
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        with pytest.raises(grpc.RpcError) as err:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
        assert err.value.code() in {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
