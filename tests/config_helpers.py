"""A kiosk.toml that passes every check, as sections a test can break one key at a time. Shared by
tests/test_preflight.py and tests/test_missing_parts.py."""

from __future__ import annotations

from pathlib import Path

from appliance.daemon.preflight import write_key_file


def good_sections(tmp: Path) -> dict[str, dict[str, str]]:
    """A config that passes every check (a key 0600, a state directory, loopback URLs)."""
    write_key_file(tmp / "device.key", "device-key-0123456789")
    return {
        "kiosk": {"state_dir": f'"{tmp / "state"}"', "control_socket": f'"{tmp / "control.sock"}"'},
        "companion": {"url": '"http://127.0.0.1:9"', "device_key_file": f'"{tmp / "device.key"}"'},
        "realtime": {"base_url": '"http://127.0.0.1:9"'},
        "audio": {"input": '"wav"', "output": '"null"'},
        "gpio": {"pin_factory": '"mock"'},
    }


def write_toml(path: Path, sections: dict[str, dict[str, str]]) -> Path:
    path.write_text("".join(f"[{name}]\n" + "".join(f"{k} = {v}\n" for k, v in values.items())
                            for name, values in sections.items()))
    return path
