"""`stella-kiosk doctor`: check everything a kiosk needs, print a pass/fail table, exit 0 only if
all checks passed.

Meant for the admin at first boot and for support over the phone: each line says what was
checked and, when it failed, what to do. Run it with the service stopped (it needs the pins and the
sound card for itself).
"""

from __future__ import annotations

import asyncio
import email.utils
import ssl
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

from appliance.common.clock import SyncSource, system_synchronized
from appliance.common.safe_text import clean_text
from appliance.config import Config, ConfigError, load_config

# A Pi without a real-time clock boots with an old date until NTP answers; TLS then fails.
EARLIEST_PLAUSIBLE = 1767225600.0  # 2026-01-01T00:00:00Z
MAX_SKEW_S = 300.0


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


class Doctor:
    def __init__(self, config: Config, *, wait_button_s: float = 15.0, use_hardware: bool = True,
                 out: Callable[[str], None] = print, synced: SyncSource = system_synchronized,
                 local: bool = False) -> None:
        self.config = config
        self.local = local
        """Only the checks that need neither the network nor the hardware a running kiosk holds (config,
        key, state directory, store): the updater's health check of a version it just switched to."""
        self.synced = synced
        self.wait_button_s = wait_button_s
        self.use_hardware = use_hardware
        self.out = out
        self.checks: list[Check] = []

    def record(self, name: str, ok: bool, detail: str) -> None:
        self.checks.append(Check(name, ok, detail))
        self.out(f"  {'PASS' if ok else 'FAIL'}  {name:<22} {detail}")

    async def run(self) -> bool:
        self.out(f"Stella Kiosk doctor — config {self.config.source}")
        self.record("config", True, "valid")
        self._check_key()
        self._check_state_dir()
        if not self.local:
            await self._check_clock_and_companion()
            await self._check_realtime()
        if self.use_hardware and not self.local:
            await self._guard("audio devices", self._check_audio)
            await self._guard("LEDs and button", self._check_gpio)
        failed = [c for c in self.checks if not c.ok]
        self.out(f"{len(self.checks) - len(failed)} passed, {len(failed)} failed")
        return not failed

    async def _guard(self, name: str, check: Callable[[], Awaitable[None]]) -> None:
        try:
            await check()
        except Exception as exc:  # a broken device must become a FAIL line, not a traceback
            self.record(name, False, f"{type(exc).__name__}: {exc}")

    def _check_key(self) -> None:
        from appliance.daemon.preflight import check_ca_file, check_device_key

        path = self.config.companion.device_key_file
        problem = check_device_key(self.config)
        detail = problem.message if problem else f"{path} present, mode {path.stat().st_mode & 0o777:04o}"
        self.record("device key", problem is None, detail)
        if self.config.companion.ca_file is not None:
            problem = check_ca_file(self.config)
            self.record("companion CA file", problem is None,
                        problem.message if problem else f"{self.config.companion.ca_file} loads")

    def _check_state_dir(self) -> None:
        from appliance.daemon.preflight import check_state_dir

        problem = check_state_dir(self.config)
        self.record("storage", problem is None,
                    problem.message if problem else f"{self.config.kiosk.state_dir} writable")
        if problem is None:
            self._check_store_repairs(Path(self.config.kiosk.state_dir))

    def _check_store_repairs(self, state_dir: Path) -> None:
        """Files the store moved aside: damaged ones (their good lessons were salvaged), and things of the
        wrong kind that stood where it keeps a file or a folder (kept unread)."""
        def listed(paths: list[Path]) -> str:
            return ", ".join(str(p) for p in paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")

        moved = sorted(p.relative_to(state_dir) for p in state_dir.rglob("*.corrupt-*"))
        in_the_way = sorted(p.relative_to(state_dir) for pattern in ("*.not-a-file-*", "*.not-a-folder-*")
                            for p in state_dir.glob(pattern))
        if moved:
            self.record("store", False, f"damaged store files were moved aside ({listed(moved)}); the lessons in "
                        "them were salvaged: check the SD card, then delete these files")
        if in_the_way:
            self.record("store", False, f"things in the store's way were moved aside ({listed(in_the_way)}); "
                        "nothing in them was read: look inside, then delete them")
        if not moved and not in_the_way:
            self.record("store", True, "no damaged store files")

    async def _check_clock_and_companion(self) -> None:
        now = time.time()
        if now < EARLIEST_PLAUSIBLE:
            self.record("clock", False, "the date is in the past: wait for network time (timedatectl) "
                        "or fit a real-time clock; TLS will fail until then" + self._sync_note())
        from appliance.common.tls import companion_ssl_context, describe_tls_error
        from appliance.uplink.client import CompanionClient, CompanionError

        url = self.config.companion.url.rstrip("/")
        try:
            context = companion_ssl_context(self.config)
        except (OSError, ssl.SSLError) as exc:
            self.record("companion health", False, f"companion.ca_file cannot be used: {exc}")
            return
        try:
            async with httpx.AsyncClient(timeout=self.config.companion.timeout_s, verify=context) as http:
                response = await http.get(f"{url}/api/health")
            body = response.json()
            body = body if isinstance(body, dict) else {}
            healthy = response.status_code == 200 and body.get("ok") is True
            reason = body.get("reason")  # e.g. no realtime model works: what the admin must fix
            self.record("companion health", healthy, f"{url} answered {response.status_code}"
                        + (f": {clean_text(reason)[:300]}" if isinstance(reason, str) and not healthy else ""))
            server_date = response.headers.get("date")
            if server_date and now >= EARLIEST_PLAUSIBLE:
                skew = abs(email.utils.parsedate_to_datetime(server_date).timestamp() - now)
                self.record("clock", skew < MAX_SKEW_S, f"{skew:.0f} s from the companion's clock" + self._sync_note())
            elif now >= EARLIEST_PLAUSIBLE:
                self._record_unverified_clock("the companion sent no Date header")
        except (httpx.HTTPError, ValueError) as exc:
            words = describe_tls_error(exc, httpx.URL(url).host) or str(exc)
            self.record("companion health", False, f"cannot reach {url}: {words}")
            if now >= EARLIEST_PLAUSIBLE:
                self._record_unverified_clock("no companion to compare with")
            return
        try:
            key = self.config.read_device_key()
        except ConfigError:
            return
        client = CompanionClient(url, key, self.config.kiosk.id, timeout_s=self.config.companion.timeout_s,
                                 ssl_context=context)
        try:
            plan = await client.plan(level=self.config.lesson.level)
            token = await client.token(plan_id=plan.plan_id)
            self.record("lesson + token", True, f"plan {plan.title!r}, token valid "
                        f"{token.remaining_s():.0f} s, model {token.model}")
        except CompanionError as exc:
            self.record("lesson + token", False, exc.message)
        finally:
            await client.aclose()

    def _sync_note(self) -> str:
        """Whether network time disciplines the clock: without it lesson dates can be stale after a boot."""
        state = self.synced()
        if state is None:
            return ""
        if state:
            return "; synchronized to network time"
        return ("; NOT synchronized to network time: check the network and `timedatectl timesync-status` "
                "(lesson dates are corrected once it is)")

    def _record_unverified_clock(self, why: str) -> None:
        """No companion clock to compare with: only network time can vouch for the date."""
        synced = self.synced() is not False
        self.record("clock", synced, f"plausible ({why})" + self._sync_note())

    async def _check_realtime(self) -> None:
        from appliance.common.tls import describe_tls_error, ssl_context

        base = self.config.realtime.base_url.rstrip("/")
        try:
            async with httpx.AsyncClient(timeout=self.config.companion.timeout_s, verify=ssl_context()) as http:
                response = await http.get(base)
            self.record("realtime reachable", True, f"{base} answered {response.status_code}")
        except httpx.HTTPError as exc:
            words = describe_tls_error(exc, httpx.URL(base).host, ca_setting=None) or str(exc)
            self.record("realtime reachable", False, f"cannot reach {base}: {words}")

    async def _check_audio(self) -> None:
        """Name a missing device and list the ones present, then play a chime and record a second."""
        from appliance.audio.base import AudioDeviceError
        from appliance.audio.dsp import rms_dbfs
        from appliance.audio.earcons import Cue, Earcons
        from appliance.daemon.parts import HardwareError, build_microphone, build_speaker

        audio = self.config.audio
        missing: dict[str, str] = {}
        if audio.input == "pyaudio" or audio.output == "pyaudio":
            from appliance.audio.devices import list_devices, missing_device_line

            devices = await asyncio.to_thread(list_devices)
            names = ", ".join(f"{d.name} (in {d.max_input_channels}/out {d.max_output_channels})"
                              for d in devices) or "none"
            self.record("sound devices", bool(devices), names)
            for kind, wanted, name, direction in (("speaker", audio.output, audio.output_device, "output"),
                                                  ("microphone", audio.input, audio.input_device, "input")):
                line = missing_device_line(kind, name, devices, direction) if wanted == "pyaudio" else None
                if line:
                    missing[kind] = line
        if "speaker" in missing:
            self.record("speaker", False, missing["speaker"])
        else:
            try:
                speaker = build_speaker(self.config)
                await speaker.start()
                speaker.write(Earcons(speaker.sample_rate)[Cue.CONNECTED])
                await speaker.close()
                self.record("speaker", True, f"chime played on {audio.output_device!r}")
            except (HardwareError, AudioDeviceError) as exc:
                self.record("speaker", False, str(exc))
        if audio.input == "wav":
            self.record("microphone", True, "scripted WAV learner (no microphone to measure)")
            return
        if "microphone" in missing:
            self.record("microphone", False, missing["microphone"])
            return
        try:
            mic = build_microphone(self.config)
            await mic.start()
            chunks = []
            deadline = time.monotonic() + 1.0
            frame = mic.sample_rate // 50
            while time.monotonic() < deadline:
                await asyncio.sleep(0.02)  # recording for a fixed second is the check itself
                chunks.append(mic.read(frame))
            await mic.close()
            level = rms_dbfs(np.concatenate(chunks))
            self.record("microphone", level > -100, f"1 s recorded, level {level:.1f} dBFS"
                        + (" (digital silence: muted or wrong device?)" if level <= -100 else ""))
        except (HardwareError, AudioDeviceError) as exc:
            self.record("microphone", False, str(exc))

    async def _check_gpio(self) -> None:
        from gpiozero import Button

        from appliance.core.state import State
        from appliance.daemon.parts import select_pin_factory
        from appliance.hardware.leds import make_status_leds

        select_pin_factory(self.config)
        leds = make_status_leds(self.config.leds)
        try:
            for state in (State.IDLE, State.CONNECTING, State.CONNECTED, State.ERROR):
                leds.show(state)
                await asyncio.sleep(0.4)  # long enough for a person to see each LED
            self.record("LEDs", True, "cycled idle, connecting, connected, error (look at them)")
        finally:
            leds.close()
        if self.wait_button_s <= 0:
            return
        button = Button(self.config.button.pin, pull_up=self.config.button.pull_up)
        pressed = threading.Event()
        button.when_pressed = pressed.set
        try:
            self.out(f"  ....  press the button within {self.wait_button_s:g} s")
            seen = await asyncio.to_thread(pressed.wait, self.wait_button_s)
            self.record("button", seen, f"pin {self.config.button.pin} " + ("pressed" if seen else "no press seen"))
        finally:
            button.close()


def run_doctor(config_path: Path, wait_button_s: float, use_hardware: bool, local: bool = False) -> int:
    from appliance.config import EX_CONFIG

    try:
        config = load_config(config_path)
    except ConfigError as exc:
        print(f"config error: {exc}")
        print("  FAIL  config")
        return EX_CONFIG
    doctor = Doctor(config, wait_button_s=wait_button_s, use_hardware=use_hardware, local=local)
    return 0 if asyncio.run(doctor.run()) else 1
