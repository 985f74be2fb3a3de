"""What the kiosk benchmarks share: the simulator and the companion as child processes, the kiosk's
device key provisioned through a 0600 file (never the command line), and a kiosk config pointing at
both (WAV microphone, no speaker, mock pins, loopback ICE).

One place, so a change to how the companion is started or provisioned cannot leave one benchmark
broken while the others follow.
"""

from __future__ import annotations

import secrets
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from appliance.daemon.preflight import write_key_file  # noqa: E402
from appliance.daemon.services import ChildServer  # noqa: E402


class BenchServices:
    """Simulator + companion children in ``workdir``, and the kiosk's device key file."""

    def __init__(self, workdir: Path, kiosk_id: str = "bench", *, api_key: str | None = None,
                 simulator_url: str | None = None, companion_args: tuple[str, ...] = ()) -> None:
        self.workdir = workdir
        self.kiosk_id = kiosk_id
        self.api_key = api_key or "sk-bench-" + secrets.token_hex(8)
        self.device_key = secrets.token_urlsafe(24)
        self.device_key_file = workdir / "device.key"
        self._given_simulator = simulator_url.rstrip("/") if simulator_url else None
        provision = workdir / "provision.txt"
        write_key_file(provision, f"{kiosk_id}={self.device_key}")
        self.simulator = ChildServer("simulator", ["simulator", "--port", "0", "--api-key", self.api_key],
                                     workdir / "simulator.log")
        self.companion = ChildServer("companion", ["companion", "serve", "--port", "0", "--db",
                                                   str(workdir / "companion.db"), "--provision-file", str(provision),
                                                   *companion_args],
                                     workdir / "companion.log", env={"OPENAI_API_KEY": self.api_key})
        self.simulator_url = ""
        self.companion_url = ""

    async def start(self) -> None:
        self.simulator_url = self._given_simulator or await self.simulator.start()
        self.companion.args += ["--openai-base-url", self.simulator_url]
        self.companion_url = await self.companion.start()
        write_key_file(self.device_key_file, self.device_key)  # 0600, as the kiosk requires

    async def stop(self) -> None:
        await self.companion.stop()
        await self.simulator.stop()

    def kiosk_settings(self, log_level: str = "warning") -> dict[str, Any]:
        """The kiosk's config as a dict (for ``config_from_dict`` or :meth:`write_kiosk_toml`)."""
        return {
            "kiosk": {"id": self.kiosk_id, "state_dir": str(self.workdir / "state"),
                      "control_socket": str(self.workdir / "control.sock"), "log_level": log_level},
            "companion": {"url": self.companion_url, "device_key_file": str(self.device_key_file)},
            "realtime": {"base_url": self.simulator_url, "allow_loopback_ice": True},
            "audio": {"input": "wav", "output": "null"},
            "gpio": {"pin_factory": "mock"},
        }

    def write_kiosk_toml(self, path: Path, **sections: dict[str, Any]) -> Path:
        """kiosk.toml for a daemon process; ``sections`` add to or override keys per section."""
        settings = self.kiosk_settings()
        for name, values in sections.items():
            settings.setdefault(name, {}).update(values)
        lines = []
        for name, values in settings.items():
            lines.append(f"[{name}]")
            lines += [f"{key} = {_toml_value(value)}" for key, value in values.items()]
        path.write_text("\n".join(lines) + "\n")
        return path


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'
