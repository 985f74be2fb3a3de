"""Speech recognition for the simulator: PocketSphinx when installed (its wheel ships an en-us
model), otherwise a placeholder that still makes a learner turn.

Runs in a worker thread: decoding a few seconds of audio takes longer than one loop tick.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import numpy as np

from appliance.audio.dsp import resample

log = logging.getLogger(__name__)

_decoder: Any = None
_unavailable = False


def _get_decoder() -> Any:
    global _decoder, _unavailable
    if _decoder is None and not _unavailable:
        try:
            from pocketsphinx import Decoder

            _decoder = Decoder(samprate=16000, loglevel="FATAL")
        except Exception as exc:  # not installed, or no model: fall back
            log.info("PocketSphinx unavailable (%s); transcripts will be placeholders", exc)
            _unavailable = True
    return _decoder


def _decode(samples16k: np.ndarray) -> str:
    decoder = _get_decoder()
    if decoder is None:
        return ""
    decoder.start_utt()
    decoder.process_raw(samples16k.astype("<i2").tobytes(), full_utt=True)
    decoder.end_utt()
    hyp = decoder.hyp()
    return hyp.hypstr.strip() if hyp is not None else ""


_lock = asyncio.Lock()


async def transcribe(samples48k: np.ndarray) -> str:
    """A transcript of int16 48 kHz speech (never empty: a placeholder when nothing is recognised)."""
    seconds = len(samples48k) / 48000
    async with _lock:  # one decoder, one utterance at a time
        text = await asyncio.to_thread(_decode, resample(samples48k, 48000, 16000))
    return text or f"(speech, {seconds:.1f} s)"
