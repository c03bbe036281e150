"""Waveforms for every format the page can decode, and a reason where it cannot."""

from __future__ import annotations

import io
import math
import wave
from array import array
from pathlib import Path

import pytest

from batchgen.listen.waveform import NoWaveform, columns, wav_columns

soundfile = pytest.importorskip("soundfile", reason="decoding MP3, Ogg and FLAC is the deliver extra's")
np = pytest.importorskip("numpy")


def _tone(seconds: float = 2.0, rate: int = 16000) -> bytes:
    """A 440 Hz tone whose level rises from silence to full scale: a waveform with a shape."""
    n = int(seconds * rate)
    pcm = array("h", (int(30000 * (i / n) * math.sin(2 * math.pi * 440 * i / rate)) for i in range(n)))
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return buf.getvalue()


@pytest.mark.parametrize(
    ("suffix", "fmt", "subtype"),
    [(".mp3", "MP3", "MPEG_LAYER_III"), (".flac", "FLAC", "PCM_16"), (".ogg", "OGG", "VORBIS")],
)
def test_a_decoded_file_draws_as_its_wav_does(tmp_path: Path, suffix: str, fmt: str, subtype: str) -> None:
    wav = tmp_path / "a.wav"
    wav.write_bytes(_tone())
    data, rate = soundfile.read(str(wav), dtype="float32")
    other = tmp_path / f"a{suffix}"
    soundfile.write(str(other), data, rate, format=fmt, subtype=subtype)
    reference, seconds = wav_columns(wav)
    drawn, decoded_seconds = columns(other)
    assert len(drawn) == len(reference) and abs(decoded_seconds - seconds) < 0.15
    # The same rising shape: quiet at the start, loud at the end (codecs shift a few samples).
    assert drawn[0][1] - drawn[0][0] < 4 and drawn[-1][1] - drawn[-1][0] > 30


def test_a_format_it_cannot_draw_says_why(tmp_path: Path) -> None:
    aac = tmp_path / "a.m4a"
    aac.write_bytes(b"\x00\x00\x00\x18ftypM4A ")
    with pytest.raises(NoWaveform, match="M4A"):
        columns(aac)
    broken = tmp_path / "b.mp3"
    broken.write_bytes(b"ID3\x04" + bytes(100))
    with pytest.raises(NoWaveform, match="does not decode"):
        columns(broken)
