"""Is the kiosk's side of the install here? `pip install .` alone brings what the companion and the
simulator need; the kiosk's hardware libraries come with the `[kiosk]` extra.

Why a check before anything starts: without it the first ``import gpiozero`` deep inside the demo or
the daemon ends in a traceback, after servers were started and files written. A missing library is
an install step to take, said in one line; restarting never fixes it.
"""

from __future__ import annotations

import importlib

from appliance.config import Config

INSTALL = ("pip install 'stella-kiosk[kiosk]' (a kiosk: scripts/install-pi.sh; "
           "development: scripts/setup.sh, which installs everything)")

KIOSK_MODULES = {"gpiozero": "gpiozero", "pyaudio": "PyAudio"}
"""Import name → package name of what `run` and `demo` import from the kiosk extra."""


def missing_kiosk_part(config: Config | None = None) -> str | None:
    """One line naming the first kiosk library that cannot be imported and how to install it, or None.

    gpiozero is always needed (mock pins too); PyAudio only when ``config`` uses a real sound card.
    """
    needed = ["gpiozero"]
    if config is not None and "pyaudio" in (config.audio.input, config.audio.output):
        needed.append("pyaudio")
    for module in needed:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            if isinstance(exc, ModuleNotFoundError) and exc.name == module:
                return f"{KIOSK_MODULES[module]} is not installed; the kiosk needs it: {INSTALL}"
            # Present but broken: a dependency of its own missing, or built for another Python.
            return f"{KIOSK_MODULES[module]} cannot be loaded ({exc}); reinstall it: {INSTALL}"
    return None
