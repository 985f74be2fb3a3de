"""https to the companion with a school's own CA: a real companion served over TLS on 127.0.0.1,
certificates made by trustme. Each failure must read as what to do, not as an OpenSSL code."""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trustme
from aiohttp import web

from appliance.common.httpserve import start_http
from appliance.common.tls import companion_ssl_context, describe_tls_error, ssl_context
from appliance.companion.server import CompanionConfig, CompanionServer
from appliance.config import config_from_dict
from appliance.daemon.preflight import write_key_file
from appliance.uplink.client import CompanionClient, CompanionError

KEY = "device-key-0123456789abcdef"
KIOSK = "kiosk-tls"
NOW = dt.datetime.now(dt.UTC)


@asynccontextmanager
async def https_companion(tmp: Path, cert: trustme.LeafCert) -> AsyncIterator[int]:
    """The real companion app behind TLS with ``cert``; yields the port."""
    server = CompanionServer(CompanionConfig(db_path=tmp / "companion.db"))
    await server.provision(KIOSK, KEY)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    runner = web.AppRunner(server.app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    assert site._server is not None
    try:
        yield site._server.sockets[0].getsockname()[1]
    finally:
        await runner.cleanup()
        await server.stop()


async def companion_error(port: int, context: ssl.SSLContext) -> str:
    client = CompanionClient(f"https://127.0.0.1:{port}", KEY, KIOSK, timeout_s=5, ssl_context=context)
    try:
        with pytest.raises(CompanionError) as info:
            await client.sessions()
    finally:
        await client.aclose()
    assert info.value.code == "tls" and info.value.retryable
    return info.value.message


async def test_unknown_ca_then_ca_file_works(tmp_path: Path) -> None:
    """A school CA not in the OS store: a readable 'unknown CA' error; companion.ca_file fixes it."""
    ca = trustme.CA()
    async with https_companion(tmp_path, ca.issue_cert("127.0.0.1")) as port:
        message = await companion_error(port, ssl_context())
        assert "unknown CA" in message and "companion.ca_file" in message and "update-ca-certificates" in message
        ca.cert_pem.write_to_path(str(tmp_path / "school-ca.pem"))
        config = config_from_dict({"companion": {"url": f"https://127.0.0.1:{port}",
                                                 "ca_file": str(tmp_path / "school-ca.pem")}})
        client = CompanionClient(config.companion.url, KEY, KIOSK, ssl_context=companion_ssl_context(config))
        try:
            assert await client.sessions() == []
            assert await client.health()
        finally:
            await client.aclose()


async def test_os_store_is_trusted_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without ca_file the client trusts what OpenSSL's default paths hold (here pointed at the CA)."""
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "os-store.pem"))
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "os-store.pem"))
    async with https_companion(tmp_path, ca.issue_cert("127.0.0.1")) as port:
        client = CompanionClient(f"https://127.0.0.1:{port}", KEY, KIOSK)
        try:
            assert await client.sessions() == []
        finally:
            await client.aclose()


@pytest.mark.parametrize(("make_cert", "words"), [
    (lambda ca: ca.issue_cert("wrong.example.org"), "wrong name"),
    (lambda ca: ca.issue_cert("127.0.0.1", not_before=NOW - dt.timedelta(days=30),
                              not_after=NOW - dt.timedelta(days=1)), "has expired"),
    (lambda ca: ca.issue_cert("127.0.0.1", not_before=NOW + dt.timedelta(days=1),
                              not_after=NOW + dt.timedelta(days=30)), "not valid yet"),
], ids=["wrong-name", "expired", "not-yet-valid"])
async def test_certificate_problems_in_words(tmp_path: Path, make_cert, words: str) -> None:
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    async with https_companion(tmp_path, make_cert(ca)) as port:
        message = await companion_error(port, ssl_context(tmp_path / "ca.pem"))
    assert words in message, message
    assert "[SSL" not in message  # no raw OpenSSL text


async def test_plain_http_port_and_refused_port() -> None:
    """https to a plain-HTTP server is a TLS failure in words; a refused port is not a TLS failure."""
    app = web.Application()

    async def sessions(request: web.Request) -> web.Response:
        return web.json_response({"sessions": []})

    app.router.add_get("/api/sessions", sessions)
    runner, port = await start_http(app, "127.0.0.1", 0)
    try:
        message = await companion_error(port, ssl_context())
        assert "TLS handshake" in message and "really https" in message
    finally:
        await runner.cleanup()
    assert describe_tls_error(ConnectionRefusedError(111, "refused")) is None


async def run_doctor(config: Path) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "appliance.cli", "doctor", "--config", str(config), "--no-hardware",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return out.decode()


async def test_doctor_names_the_certificate_problem(tmp_path: Path) -> None:
    """doctor's companion line says 'unknown CA' and what to do; with ca_file it passes."""
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "school-ca.pem"))
    write_key_file(tmp_path / "device.key", KEY)
    async with https_companion(tmp_path, ca.issue_cert("127.0.0.1")) as port:
        base = (f'[kiosk]\nstate_dir = "{tmp_path / "state"}"\n'
                f'[companion]\nurl = "https://127.0.0.1:{port}"\ndevice_key_file = "{tmp_path / "device.key"}"\n'
                'timeout_s = 3.0\n')
        (tmp_path / "kiosk.toml").write_text(base)
        out = await run_doctor(tmp_path / "kiosk.toml")
        line = next(x for x in out.splitlines() if "companion health" in x)
        assert "FAIL" in line and "unknown CA" in line and "companion.ca_file" in line, out
        (tmp_path / "kiosk.toml").write_text(base + f'ca_file = "{tmp_path / "school-ca.pem"}"\n')
        out = await run_doctor(tmp_path / "kiosk.toml")
        assert "PASS  companion health" in out and "PASS  companion CA file" in out, out
