"""ndbridge for Python: send and receive numpy arrays over ZeroMQ in the ndbridge wire format.

A message is ``[header, buf_0, ..., buf_{n-1}]`` (with the record name as a topic frame first on
PUB/SUB): a JSON header describing each array, then one frame per array, raw or zstd-compressed
(optionally byte-shuffled; ``zstd-chunks`` for large arrays compressed on every core). ``docs/wire-format.md`` in the repository is the contract.

Receive::

    import ndbridge
    for rec in ndbridge.Subscriber("tcp://127.0.0.1:5556", names=["u"], timeout_ms=5000):
        print(rec.name, rec.seq, rec["u"].shape)

Send::

    with ndbridge.Publisher("tcp://127.0.0.1:5555") as pub:
        pub.send("u", u, attrs={"step": 41})

Layout
------
- :mod:`ndbridge.errors`: :class:`WireError` and its subclasses, one per kind of fault.
- :mod:`ndbridge.limits`: :class:`Limits`, the bounds checked before anything is allocated.
- :mod:`ndbridge.dtypes`: the wire's type strings and their numpy dtypes.
- :mod:`ndbridge.header`: parsing and checking the JSON header.
- :mod:`ndbridge.codec`: byte shuffle and zstd for one buffer.
- :mod:`ndbridge.wire`: :func:`encode` and :func:`decode` between arrays and frames;
  :func:`encode_end`, the message that ends a publisher session.
- :mod:`ndbridge.pacing`: when the automatic codec compresses on a network link.
- :mod:`ndbridge.acked`: acked delivery's acknowledgements and window. Pure: these seven
  modules never touch a socket.
- :mod:`ndbridge.curve`: CURVE keys: :func:`keygen`, and reading the certificate files that
  ``curve_server=`` and ``curve_secret=`` name (no sockets either).
- :mod:`ndbridge.net`: :func:`send`, :func:`recv`, :class:`Publisher`, :class:`Subscriber`.
- :mod:`ndbridge.store`: :func:`open_store`, a run store's records as xarray Datasets (needs
  ``zarr`` 3 and ``xarray``, imported when a Dataset is first opened).
- :mod:`ndbridge.lifetime`: closes the publishers still open when the process ends.
- :mod:`ndbridge.native`: the Rust publisher and codec, when the package was built with them.

Data flow: ``arrays -> encode -> frames -> send => zmq => recv -> frames -> decode -> Record``.
"""

from .curve import keygen
from .errors import (CodecError, DeliveryError, FrameError, HeaderError, LimitError, VersionError,
                     WireError)
from .header import FORMAT_VERSION
from .limits import DEFAULT_LIMITS, Limits
from .net import Publisher, Subscriber, is_local, recv, send
from .store import Store, open_store, record_attrs
from .wire import Record, decode, default_source, encode, encode_end, new_session, strip_topic

__version__ = "0.1.0"

__all__ = [
    "Store",
    "open_store",
    "record_attrs",
    "FORMAT_VERSION",
    "DEFAULT_LIMITS",
    "Limits",
    "Record",
    "decode",
    "encode",
    "encode_end",
    "strip_topic",
    "default_source",
    "new_session",
    "send",
    "recv",
    "is_local",
    "Publisher",
    "Subscriber",
    "keygen",
    "WireError",
    "HeaderError",
    "VersionError",
    "FrameError",
    "CodecError",
    "LimitError",
    "DeliveryError",
]
