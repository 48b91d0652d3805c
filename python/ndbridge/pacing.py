"""When compression pays: the pure-Python publisher's automatic codec on a network link,
weighing how fast the link drains bytes against how fast the compressor runs and how much it
saves.

The Rust publisher (and with it the native core) measures what the link delivers from ZeroMQ's
releases and tries compression before keeping it (``src/link_pacing.rs``); this module is the
simpler rule a pure-Python publisher can follow, its decisions fixed in
``tests/data/pacing_cases.json``. Compressing costs ``raw / codec_speed`` seconds and saves
``(1 - ratio) * raw / link_speed`` seconds of sending, so it pays when
``codec_speed * (1 - ratio) > link_speed``. The link's speed shows in how long sends block once
ZeroMQ's queue is full: a send that does not block means the link keeps up, and compressing
would only slow the producer.

Pure logic: durations are measured by the caller and passed in, in seconds.

>>> p = Pacing()
>>> p.should_compress()                    # nothing known: raw
False
>>> p.observe_send(1_000_000, 0.010)       # a slow link: 100 MB/s ...
>>> p.observe_compress(1_000_000, 500_000, 0.001)  # ... a 1 GB/s compressor halving the size
>>> p.should_compress()
True
"""

from typing import Optional

__all__ = ["Pacing", "SAMPLE_BYTES", "TIME_SENDS_EVERY_BYTES"]

#: Weight of the newest observation in the moving averages.
ALPHA = 0.2
#: Sends faster than this many seconds per byte are not limited by the link.
UNBLOCKED_SECONDS_PER_BYTE = 1e-11
#: While the link limits and raw is chosen, the compressor is measured again every this many
#: messages, and at least :data:`SAMPLE_EVERY_BYTES` apart.
SAMPLE_EVERY = 16
#: Raw bytes between two measurements of the compressor, at least: compressing a small sample
#: measures zstd's setup more than its speed.
SAMPLE_EVERY_BYTES = 4 << 20
#: Bytes compressed to measure the codec: from the middle of a record's largest array.
SAMPLE_BYTES = 256 << 10
#: A send is timed when it brings the bytes sent since the last timed one to this many (two
#: clock reads cost more than sending a small message).
TIME_SENDS_EVERY_BYTES = 64 << 10


def _ewma(old: Optional[float], new: float) -> float:
    return new if old is None else old + ALPHA * (new - old)


class Pacing:
    """Tracks link and compressor speed and decides, record by record, whether to compress."""

    def __init__(self) -> None:
        self.link_seconds_per_byte: Optional[float] = None
        self.codec_seconds_per_byte: Optional[float] = None
        self.ratio: Optional[float] = None
        self._since_sample = 0
        self._bytes_since_sample = 0

    def observe_send(self, wire_bytes: int, seconds: float) -> None:
        """Records that `wire_bytes` were handed to the socket in `seconds`."""
        if wire_bytes > 0:
            self.link_seconds_per_byte = _ewma(self.link_seconds_per_byte, seconds / wire_bytes)

    def observe_compress(self, raw_bytes: int, compressed_bytes: int, seconds: float) -> None:
        """Records that `raw_bytes` compressed to `compressed_bytes` in `seconds`."""
        if raw_bytes <= 0:
            return
        # Interference only ever slows the compressor: a faster measurement is taken at once,
        # a slower one only gradually.
        spb = seconds / raw_bytes
        old = self.codec_seconds_per_byte
        self.codec_seconds_per_byte = spb if old is not None and spb < old else _ewma(old, spb)
        self.ratio = _ewma(self.ratio, compressed_bytes / raw_bytes)
        self._since_sample = 0
        self._bytes_since_sample = 0

    def link_limited(self) -> bool:
        """True when the link currently limits the rate (sends block)."""
        link = self.link_seconds_per_byte
        return link is not None and link > UNBLOCKED_SECONDS_PER_BYTE

    def should_compress(self) -> bool:
        """Compress the next record?"""
        link, codec, ratio = self.link_seconds_per_byte, self.codec_seconds_per_byte, self.ratio
        if link is None or codec is None or ratio is None or not self.link_limited():
            return False
        return codec < (1.0 - ratio) * link

    def wants_sample(self, raw_bytes: int) -> bool:
        """Should the caller measure the compressor on a sample of the next record, of
        `raw_bytes`? True when the link limits but the compressor's figures are missing or old."""
        if not self.link_limited() or self.should_compress():
            return False
        self._since_sample += 1
        self._bytes_since_sample += raw_bytes
        old = self._since_sample >= SAMPLE_EVERY and self._bytes_since_sample >= SAMPLE_EVERY_BYTES
        if self.codec_seconds_per_byte is None or old:
            self._since_sample = 0
            self._bytes_since_sample = 0
            return True
        return False
