"""Start-up checks: `check-config`, `run` and `sync` refuse the same bad setups with the same lines.

Each row was once accepted by `check-config` (it said OK) while `run` then failed with exit 78 or 1,
or was accepted by both (a password in a URL, plain http:// across the network).
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from appliance.config import EX_CONFIG, ConfigError, check_url, config_from_dict, is_loopback_host
from appliance.daemon.preflight import check_device_key, check_state_dir, preflight, write_key_file
from tests.config_helpers import good_sections, write_toml

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "hunter2-Secret-pw"


def cli(*args: str, user: int | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "appliance.cli", *args], capture_output=True, text=True,
                          timeout=60, env=env, cwd="/", user=user)


def make_dir_key(tmp: Path, sections: dict[str, dict[str, str]]) -> None:
    (tmp / "device.key").unlink()
    (tmp / "device.key").mkdir()


def write_bad_ca(tmp: Path, sections: dict[str, dict[str, str]]) -> None:
    (tmp / "ca.pem").write_text("not a certificate\n")
    sections["companion"]["ca_file"] = f'"{tmp / "ca.pem"}"'


def socket_at(tmp: Path, sections: dict[str, dict[str, str]], *parts: str) -> None:
    """control_socket at ``tmp/parts...`` where ``tmp/parts[0]`` is a regular file (a teacher's notes)."""
    (tmp / parts[0]).write_text("notes\n")
    sections["kiosk"]["control_socket"] = f'"{tmp.joinpath(*parts)}"'


# Each row: how to break the good setup, the key the one line must name, and a fragment of what to do.
BAD: dict[str, tuple[Callable[[Path, dict[str, dict[str, str]]], None], str, str]] = {
    "key missing": (lambda t, s: (t / "device.key").unlink(), "companion.device_key_file", "does not exist"),
    "key empty": (lambda t, s: write_key_file(t / "device.key", "  "), "companion.device_key_file", "is empty"),
    "key is a directory": (make_dir_key, "companion.device_key_file", "not a regular file"),
    "key mode 0644": (lambda t, s: (t / "device.key").chmod(0o644), "companion.device_key_file", "chmod 600"),
    "key mode 0640": (lambda t, s: (t / "device.key").chmod(0o640), "companion.device_key_file", "chmod 600"),
    "state dir is a file": (lambda t, s: s["kiosk"].update(state_dir='"/etc/passwd"'), "kiosk.state_dir",
                            "/etc/passwd is not a directory"),
    "state dir under a file": (lambda t, s: s["kiosk"].update(state_dir='"/etc/passwd/lessons"'),
                               "kiosk.state_dir", "cannot create /etc/passwd/lessons"),
    "socket folder is a file": (lambda t, s: socket_at(t, s, "notes.txt", "control.sock"),
                                "kiosk.control_socket", "notes.txt is not a directory"),
    "socket folder under a file": (lambda t, s: socket_at(t, s, "notes.txt", "run", "control.sock"),
                                   "kiosk.control_socket", "notes.txt/run: "),
    "socket path is a file": (lambda t, s: socket_at(t, s, "notes.txt"), "kiosk.control_socket",
                              "notes.txt exists and is not a socket"),
    "socket path too long": (lambda t, s: s["kiosk"].update(control_socket=f'"{t / ("s" * 120)}.sock"'),
                             "kiosk.control_socket", "too long for a UNIX socket"),
    "ca file not PEM": (write_bad_ca, "companion.ca_file", "no PEM"),
    "ca file missing": (lambda t, s: s["companion"].update(ca_file=f'"{t / "nope.pem"}"'), "companion.ca_file",
                        "is not a file"),
    "password in companion url": (lambda t, s: s["companion"].update(url=f'"https://admin:{PASSWORD}@c.example.org"'),
                                  "companion.url", "must not contain a user name or password"),
    "password in realtime url": (lambda t, s: s["realtime"].update(base_url=f'"https://k:{PASSWORD}@r.example.org"'),
                                 "realtime.base_url", "must not contain a user name or password"),
    "http to another machine": (lambda t, s: s["companion"].update(url='"http://192.0.2.10:8700"'),
                                "companion.url", "use https://"),
    "http realtime to another machine": (lambda t, s: s["realtime"].update(base_url='"http://realtime.example.org"'),
                                         "realtime.base_url", "realtime.allow_insecure_http"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_check_config_and_run_refuse_the_same_way(tmp_path: Path, case: str) -> None:
    """check-config once said OK for these; run then failed (exit 78 or 1) or ran with them."""
    sections = good_sections(tmp_path)
    breaker, key, fragment = BAD[case]
    breaker(tmp_path, sections)
    path = write_toml(tmp_path / "kiosk.toml", sections)
    check = cli("check-config", str(path))
    run = cli("run", "--config", str(path))
    for result in (check, run):
        assert result.returncode == EX_CONFIG, (result.stdout, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith(f"config error: {path}: {key}: ") and fragment in lines[0], lines[0]
        assert "Traceback" not in result.stderr and result.stdout == ""
        assert PASSWORD not in result.stdout + result.stderr
    assert check.stderr == run.stderr
    for notes in tmp_path.glob("notes.txt"):  # what a bad path points at is never replaced
        assert notes.read_text() == "notes\n"


def test_check_config_lists_every_problem_and_run_the_same(tmp_path: Path) -> None:
    """Machine problems are all reported at once, one line each, by both commands."""
    sections = good_sections(tmp_path)
    (tmp_path / "device.key").chmod(0o644)
    sections["kiosk"]["state_dir"] = '"/etc/passwd"'
    path = write_toml(tmp_path / "kiosk.toml", sections)
    check, run = cli("check-config", str(path)), cli("run", "--config", str(path))
    assert check.returncode == run.returncode == EX_CONFIG
    assert check.stderr == run.stderr
    lines = check.stderr.strip().splitlines()
    assert [line.split(": ")[2] for line in lines] == ["companion.device_key_file", "kiosk.state_dir"]


def test_good_setup_passes_and_a_missing_state_dir_is_created(tmp_path: Path) -> None:
    sections = good_sections(tmp_path)
    sections["kiosk"]["state_dir"] = f'"{tmp_path / "new" / "state"}"'
    path = write_toml(tmp_path / "kiosk.toml", sections)
    result = cli("check-config", str(path))
    assert result.returncode == 0 and result.stdout.strip() == f"{path}: OK", result.stderr
    assert (tmp_path / "new" / "state").is_dir()
    assert list((tmp_path / "new" / "state").iterdir()) == []  # the write probe is removed


def test_static_check_skips_the_machine(tmp_path: Path) -> None:
    """`check-config --static` (for a config not installed yet) checks the text only."""
    example = ROOT / "config" / "kiosk.example.toml"
    static = cli("check-config", "--static", str(example))
    assert static.returncode == 0 and "OK" in static.stdout, static.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text(f'[companion]\nurl = "https://a:{PASSWORD}@h.example.org"\n')
    refused = cli("check-config", "--static", str(bad))
    assert refused.returncode == EX_CONFIG and "companion.url" in refused.stderr
    assert PASSWORD not in refused.stderr


def test_sync_refuses_a_loose_key_like_check_config(tmp_path: Path) -> None:
    """`sync` without a running kiosk reads the key itself: the same check, exit 78 (was 1 or silent)."""
    sections = good_sections(tmp_path)
    (tmp_path / "device.key").chmod(0o604)
    path = write_toml(tmp_path / "kiosk.toml", sections)
    sync, check = cli("sync", "--config", str(path)), cli("check-config", str(path))
    assert sync.returncode == EX_CONFIG, sync.stderr
    assert sync.stderr == check.stderr and "chmod 600" in sync.stderr


def test_key_owner_rule(tmp_path: Path) -> None:
    """Owner must be the user running the kiosk or root; root checking accepts any owner."""
    if os.geteuid() != 0:
        pytest.skip("needs root to give the key file to another user")
    config = config_from_dict({"companion": {"device_key_file": str(tmp_path / "device.key")}}, source="k.toml")
    write_key_file(tmp_path / "device.key", "k" * 20)
    assert check_device_key(config, euid=1000) is None  # owned by root: fine for anyone
    os.chown(tmp_path / "device.key", 4242, 4242)
    problem = check_device_key(config, euid=1000)
    assert problem is not None and problem.key == "companion.device_key_file"
    assert "belongs to uid 4242" in problem.message and "chown" in problem.message
    assert check_device_key(config, euid=4242) is None
    assert check_device_key(config, euid=0) is None


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory another user can enter (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="stella-preflight-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def preflight_as(uid: int, config_path: Path) -> list[str]:
    """preflight() run by another user, in a forked child that drops root (as the service does)."""
    from appliance.config import load_config

    config = load_config(config_path)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        code = 1
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            text = "\n".join(str(p) for p in preflight(config))
            os.write(write_end, text.encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        output = pipe.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return [line for line in output.splitlines() if line]


def test_service_user_refuses_a_key_owned_by_someone_else(shared_dir: Path) -> None:
    """Run as an unprivileged user (as the service is): another user's key file is refused, and a
    state directory that user cannot write is named."""
    if os.geteuid() != 0:
        pytest.skip("needs root to run the check as another user")
    nobody = 65534
    sections = good_sections(shared_dir)
    os.chown(shared_dir / "device.key", 4242, 4242)
    (shared_dir / "state").mkdir(mode=0o755)  # root's, not writable by nobody
    (shared_dir / "run").mkdir(mode=0o755)
    os.chown(shared_dir / "run", nobody, nobody)  # as systemd's RuntimeDirectory= gives it to the service
    sections["kiosk"]["control_socket"] = f'"{shared_dir / "run" / "control.sock"}"'
    path = write_toml(shared_dir / "kiosk.toml", sections)
    lines = preflight_as(nobody, path)
    assert len(lines) == 2, lines
    assert "companion.device_key_file" in lines[0] and "belongs to uid 4242, not to nobody" in lines[0]
    assert "kiosk.state_dir" in lines[1] and "cannot write" in lines[1] and "chown nobody" in lines[1]
    os.chown(shared_dir / "device.key", 0, 0)
    (shared_dir / "device.key").chmod(0o600)
    lines = preflight_as(nobody, path)
    assert "companion.device_key_file" in lines[0] and "cannot read" in lines[0]  # root's 0600: not readable
    os.chown(shared_dir / "device.key", nobody, nobody)
    os.chown(shared_dir / "state", nobody, nobody)
    assert preflight_as(nobody, path) == []
    os.chown(shared_dir / "run", 0, 0)  # a socket folder the service cannot write is named too
    [line] = preflight_as(nobody, path)
    assert "kiosk.control_socket" in line and "permission denied" in line and "chown nobody" in line


def test_write_key_file_makes_a_private_file(tmp_path: Path) -> None:
    """The helpers that write device.key (demo, tests, benchmarks) give it mode 0600, even over a
    file that was world-readable."""
    path = tmp_path / "device.key"
    path.write_text("old")
    path.chmod(0o644)
    write_key_file(path, "new-key")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == "new-key\n"
    config = config_from_dict({"companion": {"device_key_file": str(path)},
                               "kiosk": {"state_dir": str(tmp_path / "s")}})
    assert preflight(config) == []
    assert check_state_dir(config) is None


@pytest.mark.parametrize(("url", "ok"), [
    ("https://companion.example.org", True),
    ("http://127.0.0.1:8700", True),
    ("http://127.10.0.3:8700", True),
    ("http://[::1]:8700", True),
    ("http://localhost:8700", True),
    ("http://LOCALHOST.", True),
    ("http://[::ffff:127.0.0.1]:1", True),
    ("http://10.0.0.5:8700", False),
    ("http://companion.school.example", False),
    ("http://localhost.evil.example", False),
    ("http://127.0.0.1.nip.io", False),
])
def test_http_only_to_loopback(url: str, ok: bool) -> None:
    if ok:
        check_url("k.toml", "companion.url", url)
    else:
        with pytest.raises(ConfigError, match="allow_insecure_http"):
            check_url("k.toml", "companion.url", url)
        check_url("k.toml", "companion.url", url, allow_insecure_http=True)


def test_allow_insecure_http_key_loads() -> None:
    config = config_from_dict({"companion": {"url": "http://10.0.0.5:8700", "allow_insecure_http": True},
                               "realtime": {"base_url": "http://10.0.0.6", "allow_insecure_http": True}})
    assert config.companion.allow_insecure_http and config.realtime.allow_insecure_http
    with pytest.raises(ConfigError) as info:
        config_from_dict({"companion": {"url": "http://10.0.0.5:8700"},
                          "realtime": {"base_url": "http://10.0.0.6", "allow_insecure_http": True}})
    assert info.value.key == "companion.url"


def test_is_loopback_host_never_raises_on_odd_names() -> None:
    for host in ("", ".", "%", "::1%lo", "127.0.0.1%eth0", "0x7f.1", "::"):
        assert isinstance(is_loopback_host(host), bool)


URL_TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(url=st.one_of(
    URL_TEXT,
    st.builds(lambda scheme, middle, rest: f"{scheme}://{middle}{rest}",
              st.sampled_from(["http", "https", "ftp", "HTTP", ""]),
              st.sampled_from(["", "user@", "u:p@", "[", "[::1", "h:99999", "h:-1", "h:x"]),
              URL_TEXT),
), allow=st.booleans())
def test_url_check_only_ever_raises_config_error(url: str, allow: bool) -> None:
    """Any text: the check passes or says ConfigError (urlsplit's ValueError once escaped as a traceback)."""
    try:
        check_url("k.toml", "companion.url", url, allow)
    except ConfigError as exc:
        assert exc.key == "companion.url"


@settings(max_examples=200, deadline=None)
@given(scheme=st.sampled_from(["http", "https", "ftp", ""]),
       user=st.text(alphabet="abcdefghij:%/", max_size=8),
       secret=st.text(alphabet="KLMNOPQRSTUVWXYZ:/?#[]", min_size=1, max_size=12),
       host=st.text(alphabet="abcdefghij.[]:0123456789@", max_size=20))
@example(scheme="", user="", secret="://", host="")  # a '://' in a scheme-less URL's password
def test_url_errors_never_show_the_password(scheme: str, user: str, secret: str, host: str) -> None:
    """Whatever surrounds it, a password before '@' never appears in the error."""
    password = "PW" + secret
    url = f"{scheme}://{user}:{password}@{host}" if scheme else f"{user}:{password}@{host}"
    with pytest.raises(ConfigError) as info:
        check_url("k.toml", "companion.url", url)
    assert password not in str(info.value)
