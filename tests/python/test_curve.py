"""CURVE: encrypted and authenticated publishers and subscribers.

- :func:`ndbridge.keygen` writes pyzmq's certificate files, the secret one private (0600), and
  never overwrites a key.
- The pure-Python and the native (Rust) publisher, with ``curve_server=`` / ``curve_secret=``,
  deliver records bit-exactly to a pyzmq PULL socket that is a CURVE server with a
  ``ThreadAuthenticator`` allowlist; ZeroMQ reports the client's public key as the messages'
  User-Id. A key the server does not list, or a wrong server key, gets nothing through (and the
  publisher's close says so). Both publishers refuse bad arguments with the same errors.
- A :class:`ndbridge.Subscriber` receives from a pyzmq PUB CURVE server; unlisted, nothing.
- Against the real collector (``ndbridge collect --curve-secret FILE --allow DIR``), if the
  binary has those options: the records of an allowed Python publisher are stored under the
  key's name, and an unlisted key's are not. With ``--forward`` too, the forward socket is a
  CURVE server: an allowed :class:`ndbridge.Subscriber` receives those records bit-exactly
  under the key's name; a subscriber with an unlisted key, and one without CURVE, receive
  nothing and are counted as refused in the collector's statistics.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import time
from pathlib import Path
from typing import Dict, Iterator, List, NamedTuple, Optional

import numpy as np
import pytest
import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

import ndbridge
from ndbridge import native
from collector_proc import (BINARY, PROBE, Collector, bit_exact, recv_records, require_binary,
                            wait_subscribed)
from golden_io import REPO

pytestmark = pytest.mark.skipif(not zmq.has("curve"), reason="pyzmq's libzmq has no CURVE")

#: How long an unlisted peer is given to get something through, in seconds.
REFUSED_WAIT_S = 1.0

#: Which publisher: the pure-Python one, and the Rust one when the native core is built.
PUBLISHERS = [
    pytest.param(False, id="pure"),
    pytest.param(True, id="native", marks=pytest.mark.skipif(
        not native.AVAILABLE, reason="ndbridge._native is not built (pure-Python install)")),
]


class Keys(NamedTuple):
    """Certificates of a server, an allowed client and a stranger; `allowed` lists the
    client's public key only (as a collector's --allow directory)."""

    dir: Path
    allowed: Path
    server_public: Path
    server_secret: Path
    client_public: Path
    client_secret: Path
    stranger_secret: Path


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    directory = tmp_path / "keys"
    server_public, server_secret = map(Path, ndbridge.keygen(directory, "collector"))
    client_public, client_secret = map(Path, ndbridge.keygen(directory, "worker-1"))
    _, stranger_secret = map(Path, ndbridge.keygen(directory, "stranger"))
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    shutil.copy(client_public, allowed / client_public.name)
    return Keys(directory, allowed, server_public, server_secret, client_public, client_secret,
                stranger_secret)


@pytest.fixture
def auth(ctx: zmq.Context, keys: Keys) -> Iterator[ThreadAuthenticator]:
    """A ZAP handler on `ctx` that admits the CURVE keys of ``keys.allowed/*.key``."""
    authenticator = ThreadAuthenticator(ctx)
    authenticator.start()
    authenticator.configure_curve(domain="*", location=str(keys.allowed))
    yield authenticator
    authenticator.stop()


def curve_server_socket(ctx: zmq.Context, kind: int, keys: Keys) -> zmq.Socket:
    """A socket of `kind` bound to a loopback port as a CURVE server with the server keys."""
    sock = ctx.socket(kind)
    sock.linger = 0
    public, secret = zmq.auth.load_certificate(keys.server_secret)
    sock.curve_publickey = public
    sock.curve_secretkey = secret
    sock.curve_server = True
    sock.bind("tcp://127.0.0.1:*")
    return sock


@pytest.fixture
def pull(ctx: zmq.Context, auth: ThreadAuthenticator, keys: Keys) -> zmq.Socket:
    """A PULL CURVE server admitting the allowed keys; its endpoint is LAST_ENDPOINT."""
    return curve_server_socket(ctx, zmq.PULL, keys)


def endpoint(sock: zmq.Socket) -> str:
    return sock.getsockopt_string(zmq.LAST_ENDPOINT)


def records() -> Dict[str, Dict[str, np.ndarray]]:
    """Records of a few dtypes and sizes: small, big-endian, F-order, and one over the zero-copy
    threshold (1 MiB)."""
    rng = np.random.default_rng(7)
    return {
        "small": {"u": np.arange(12, dtype="<f8").reshape(3, 4), "n": np.array(7, "<i4")},
        "big-endian": {"v": np.linspace(0, 1, 100).astype(">f4")},
        "fortran": {"w": np.asfortranarray(rng.integers(0, 1000, (30, 20), dtype="<u2"))},
        "large": {"x": np.sin(np.linspace(0, 50, 1 << 17)).astype("<f8")},
    }


def recv_all(sock: zmq.Socket, count: int, timeout_s: float = 20.0) -> List[zmq.Frame]:
    """`count` multipart messages as frame lists (copy=False, so that User-Id is readable)."""
    got = []
    deadline = time.monotonic() + timeout_s
    while len(got) < count:
        remaining_ms = int((deadline - time.monotonic()) * 1000)
        assert remaining_ms > 0 and sock.poll(remaining_ms, zmq.POLLIN), \
            f"{len(got)} of {count} messages arrived within {timeout_s} s"
        got.append(sock.recv_multipart(copy=False))
    return got


# ---------------------------------------------------------------------------------------------
# keygen


def test_keygen_writes_pyzmq_certificates_with_a_private_secret(tmp_path: Path) -> None:
    directory = tmp_path / "new" / "keys"          # made if missing
    public, secret = ndbridge.keygen(directory, "worker-1")
    assert (public, secret) == (str(directory / "worker-1.key"),
                                str(directory / "worker-1.key_secret"))
    assert stat.S_IMODE(os.stat(secret).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(public).st_mode) == 0o644
    public_key, none = zmq.auth.load_certificate(public)
    assert none is None and len(public_key) == 40
    same_public, secret_key = zmq.auth.load_certificate(secret)
    assert same_public == public_key and secret_key is not None
    assert zmq.curve_public(secret_key) == public_key
    assert sorted(os.listdir(directory)) == ["worker-1.key", "worker-1.key_secret"]  # no staging
    # Two pairs are different.
    other, _ = ndbridge.keygen(directory, "worker-2")
    assert zmq.auth.load_certificate(other)[0] != public_key


def test_keygen_never_overwrites_a_key(tmp_path: Path) -> None:
    public, secret = ndbridge.keygen(tmp_path, "w")
    before = Path(secret).read_bytes()
    with pytest.raises(FileExistsError, match="never overwrites"):
        ndbridge.keygen(tmp_path, "w")
    Path(public).unlink()                          # one of the two left: still refused
    with pytest.raises(FileExistsError, match=r"w\.key_secret"):
        ndbridge.keygen(tmp_path, "w")
    assert Path(secret).read_bytes() == before and not Path(public).exists()
    assert sorted(os.listdir(tmp_path)) == ["w.key_secret"]


@pytest.mark.parametrize("name", ["", ".", "..", ".hidden", "a/b", "../up", "a\0b", "a\nb", 7])
def test_keygen_refuses_a_name_that_is_no_file_name(tmp_path: Path, name: object) -> None:
    with pytest.raises(ValueError, match=r"name: expected a file name \(not empty, no '/', not "
                                         r"starting with '\.'\)"):
        ndbridge.keygen(tmp_path, name)  # type: ignore[arg-type]
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------------------------------------
# Publishers over CURVE to a pyzmq server


@pytest.mark.parametrize("use_native", PUBLISHERS)
@pytest.mark.parametrize("server_key", ["path", "z85-str", "z85-bytes"])
def test_publisher_over_curve_delivers_bit_exact(pull: zmq.Socket, keys: Keys, use_native: bool,
                                                 server_key: str) -> None:
    server = {"path": keys.server_public,
              "z85-str": zmq.auth.load_certificate(keys.server_public)[0].decode(),
              "z85-bytes": zmq.auth.load_certificate(keys.server_public)[0]}[server_key]
    sent = records()
    with ndbridge.Publisher(endpoint(pull), source="w", codec="zstd", native=use_native,
                            curve_server=server, curve_secret=str(keys.client_secret),
                            timeout=20) as pub:
        assert isinstance(pub, native.Publisher) == use_native
        for name, arrays in sent.items():
            pub.send(name, arrays, attrs={"name": name})
    client_key = zmq.auth.load_certificate(keys.client_public)[0].decode()
    for frames in recv_all(pull, len(sent)):
        # ZeroMQ authenticated the message as sent with the client's key.
        assert frames[0].get("User-Id") == client_key
        rec = ndbridge.decode(frames)
        assert rec.attrs == {"name": rec.name} and rec.source == "w"
        assert rec.arrays.keys() == sent[rec.name].keys()
        for array_name, expected in sent[rec.name].items():
            bit_exact(rec[array_name], expected)
    # Then the session's end, authenticated as well, and nothing else.
    end_frames, = recv_all(pull, 1)
    assert end_frames[0].get("User-Id") == client_key
    end = ndbridge.decode(end_frames)
    assert (end.end, end.seq, end.session, end.arrays) == (True, len(sent), pub.session, {})
    assert not pull.poll(100, zmq.POLLIN)


@pytest.mark.parametrize("use_native", PUBLISHERS)
@pytest.mark.parametrize("who", ["unlisted-key", "wrong-server-key"])
def test_publisher_not_admitted_gets_nothing_through(pull: zmq.Socket, keys: Keys,
                                                      use_native: bool, who: str) -> None:
    if who == "unlisted-key":
        server, secret = keys.server_public, keys.stranger_secret
    else:  # the client's own public key given as the server's: the handshake fails
        server, secret = keys.client_public, keys.client_secret
    pub = ndbridge.Publisher(endpoint(pull), source="w", native=use_native, curve_server=server,
                             curve_secret=secret, timeout=REFUSED_WAIT_S)
    pub.send("u", np.arange(1000.0))
    with pytest.raises(ndbridge.DeliveryError, match=r"did not go out .* does it admit this "
                                                     r"publisher's CURVE key"):
        pub.close()
    assert pub.closed
    assert not pull.poll(int(REFUSED_WAIT_S * 1000), zmq.POLLIN), "a message got through"


def test_a_plain_publisher_gets_nothing_through_to_a_curve_server(pull: zmq.Socket) -> None:
    pub = ndbridge.Publisher(endpoint(pull), native=False, timeout=REFUSED_WAIT_S)
    pub.send("u", np.arange(10.0))
    with pytest.raises(ndbridge.DeliveryError):
        pub.close()
    assert not pull.poll(int(REFUSED_WAIT_S * 1000), zmq.POLLIN)


@pytest.mark.parametrize("use_native", PUBLISHERS)
def test_curve_arguments_are_checked(keys: Keys, tmp_path: Path, use_native: bool) -> None:
    def publisher(**curve: object) -> None:
        pub = ndbridge.Publisher("tcp://127.0.0.1:1", native=use_native, timeout=0, **curve)
        pub.close()  # not reached when the arguments are refused
        pytest.fail(f"accepted {curve}")

    with pytest.raises(ValueError, match="expected both .* or neither, found curve_server "
                                         "without curve_secret"):
        publisher(curve_server=keys.server_public)
    with pytest.raises(ValueError, match="found curve_secret without curve_server"):
        publisher(curve_secret=keys.client_secret)
    missing = tmp_path / "nope.key_secret"
    with pytest.raises(FileNotFoundError, match=r"curve_secret: .*nope\.key_secret: no such "
                                                r"file \(expected this peer's secret"):
        publisher(curve_server=keys.server_public, curve_secret=missing)
    with pytest.raises(FileNotFoundError, match=r"curve_server: .*nope\.key: no such file"):
        publisher(curve_server=str(tmp_path / "nope.key"), curve_secret=keys.client_secret)
    # The public certificate where the secret one belongs.
    with pytest.raises(ValueError, match=r"curve_secret: .*worker-1\.key: expected this peer's "
                                         r"secret certificate .* found a public certificate "
                                         r"without a secret-key line \(this looks like"):
        publisher(curve_server=keys.server_public, curve_secret=keys.client_public)
    empty = tmp_path / "empty.key"
    empty.write_text("")
    with pytest.raises(ValueError, match=r"curve_server: .*empty\.key: expected a certificate "
                                         r"with a line public-key = .* found an empty file"):
        publisher(curve_server=empty, curve_secret=keys.client_secret)
    garbage = tmp_path / "garbage.key_secret"
    garbage.write_text("metadata\ncurve\n    public-key = \"short\"\n")
    with pytest.raises(ValueError, match=r"garbage\.key_secret: expected .* found a public-key "
                                         r"that is not 40 characters of Z85 \('short'\)"):
        publisher(curve_server=keys.server_public, curve_secret=garbage)
    # A secret certificate whose public key is another one's.
    mixed = tmp_path / "mixed.key_secret"
    secret = zmq.auth.load_certificate(keys.client_secret)[1]
    mixed.write_text(f"curve\n    public-key = \"{zmq.auth.load_certificate(keys.server_public)[0].decode()}\"\n"
                     f"    secret-key = \"{secret.decode()}\"\n")
    with pytest.raises(ValueError, match="expected the public key of its secret key"):
        publisher(curve_server=keys.server_public, curve_secret=mixed)
    with pytest.raises(ValueError, match="40 characters that are not Z85"):
        publisher(curve_server="~" * 40, curve_secret=keys.client_secret)
    with pytest.raises(TypeError, match="curve_server: expected"):
        publisher(curve_server=12, curve_secret=keys.client_secret)


@pytest.mark.skipif(not native.AVAILABLE, reason="ndbridge._native is not built")
def test_the_rust_side_maps_key_errors(keys: Keys, tmp_path: Path) -> None:
    # What the Python wrapper checks first, the extension module checks again (KeyError mapped
    # to OSError or ValueError with its message).
    from ndbridge import _native  # type: ignore[attr-defined]
    z85 = zmq.auth.load_certificate(keys.server_public)[0].decode()
    with pytest.raises(FileNotFoundError, match=r"curve_secret: .*nope\.key_secret"):
        _native.Publisher(["tcp://127.0.0.1:1"], curve_server=z85,
                          curve_secret=str(tmp_path / "nope.key_secret"))
    with pytest.raises(ValueError, match=r"curve_secret: .*worker-1\.key: expected a secret "
                                         r"certificate"):
        _native.Publisher(["tcp://127.0.0.1:1"], curve_server=z85,
                          curve_secret=str(keys.client_public))
    with pytest.raises(ValueError, match="curve_server: expected the server's public key as 40 "
                                         "characters of Z85"):
        _native.Publisher(["tcp://127.0.0.1:1"], curve_server="not z85",
                          curve_secret=str(keys.client_secret))
    with pytest.raises(ValueError, match="found curve_secret without curve_server"):
        _native.Publisher(["tcp://127.0.0.1:1"], curve_secret=str(keys.client_secret))


# ---------------------------------------------------------------------------------------------
# Subscriber over CURVE from a pyzmq PUB server


def publish_until_received(pub: zmq.Socket, sub: ndbridge.Subscriber, arrays: Dict[str, np.ndarray],
                           timeout_s: float = 10.0) -> ndbridge.Record:
    """Publishes `arrays` as record "u" until `sub` receives one (a SUB's subscription reaches
    the PUB some time after connecting: PUB drops what it publishes before)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ndbridge.send(pub, "u", arrays, source="server")
        try:
            return sub.recv(timeout_ms=50)
        except TimeoutError:
            pass
    raise AssertionError(f"no record arrived within {timeout_s} s")


def test_subscriber_over_curve(ctx: zmq.Context, auth: ThreadAuthenticator, keys: Keys) -> None:
    pub = curve_server_socket(ctx, zmq.PUB, keys)
    arrays = records()["large"]
    with ndbridge.Subscriber(endpoint(pub), names="u", curve_server=keys.server_public,
                             curve_secret=keys.client_secret, context=ctx) as sub:
        rec = publish_until_received(pub, sub, arrays)
    assert rec.name == "u" and rec.source == "server"
    bit_exact(rec["x"], arrays["x"])


def test_subscriber_not_admitted_receives_nothing(ctx: zmq.Context, auth: ThreadAuthenticator,
                                                  keys: Keys) -> None:
    pub = curve_server_socket(ctx, zmq.PUB, keys)
    with ndbridge.Subscriber(endpoint(pub), curve_server=keys.server_public,
                             curve_secret=keys.stranger_secret, context=ctx) as sub:
        with pytest.raises(AssertionError, match="no record arrived"):
            publish_until_received(pub, sub, {"u": np.arange(3.0)}, timeout_s=REFUSED_WAIT_S)


def test_subscriber_checks_curve_arguments(keys: Keys) -> None:
    with pytest.raises(ValueError, match="found curve_server without curve_secret"):
        ndbridge.Subscriber("tcp://127.0.0.1:1", curve_server=keys.server_public)
    with pytest.raises(ValueError, match="found a public certificate"):
        ndbridge.Subscriber("tcp://127.0.0.1:1", curve_server=keys.server_public,
                            curve_secret=keys.client_public)


# ---------------------------------------------------------------------------------------------
# The real collector


def collector_has_curve() -> bool:
    """Whether ``ndbridge collect`` has --curve-secret and --allow (from its --help)."""
    result = subprocess.run([str(require_binary()), "collect", "--help"], capture_output=True,
                            text=True, timeout=30, cwd=REPO)
    assert result.returncode == 0, f"{BINARY} collect --help exited with {result.returncode}:\n" \
                                   f"{result.stderr}"
    return "--curve-secret" in result.stdout and "--allow" in result.stdout


@pytest.fixture
def curve_collector(tmp_path: Path, keys: Keys) -> Iterator[Collector]:
    if not collector_has_curve():
        pytest.skip(f"{BINARY} collect has no --curve-secret/--allow option yet")
    # Without --forward: these tests need only the input socket.
    c = Collector(tmp_path / "out", ["--curve-secret", str(keys.server_secret),
                                     "--allow", str(keys.allowed)], forward=False)
    try:
        yield c
    finally:
        c.kill()


@pytest.mark.parametrize("use_native", PUBLISHERS)
def test_collector_stores_an_allowed_publishers_records_under_the_keys_name(
        curve_collector: Collector, keys: Keys, use_native: bool) -> None:
    sent = records()
    with ndbridge.Publisher(curve_collector.input, source="claimed", native=use_native,
                            curve_server=keys.server_public, curve_secret=keys.client_secret,
                            timeout=20) as pub:
        for name, arrays in sent.items():
            pub.send(name, arrays)
    # The source is the allowed key's file name (worker-1.key), whatever the publisher claims.
    lines = curve_collector.wait_records("worker-1", len(sent))
    for line in lines:
        path = curve_collector.out / line["path"]
        expected = sent[line["name"]]
        if len(expected) == 1:
            (array_name, array), = expected.items()
            bit_exact(np.load(path), array)
        else:
            with np.load(path) as npz:
                for array_name, array in expected.items():
                    bit_exact(npz[array_name], array)
    # An unlisted key gets nothing stored.
    pub = ndbridge.Publisher(curve_collector.input, source="stranger", native=use_native,
                             curve_server=keys.server_public, curve_secret=keys.stranger_secret,
                             timeout=REFUSED_WAIT_S)
    # The pure publisher's send raises once the refused connection has left it no peer; else
    # close does.
    with pytest.raises(ndbridge.DeliveryError):
        try:
            pub.send("u", np.arange(10.0))
        finally:
            pub.close()
    curve_collector.stop()
    sources = {line["source"] for line in curve_collector.manifest()}
    assert sources == {"worker-1"}, sources


@pytest.fixture
def curve_forward_collector(tmp_path: Path, keys: Keys) -> Iterator[Collector]:
    """A collector with CURVE on its input and on its forward socket (same keys, same
    allowlist)."""
    if not collector_has_curve():
        pytest.skip(f"{BINARY} collect has no --curve-secret/--allow option yet")
    c = Collector(tmp_path / "out", ["--curve-secret", str(keys.server_secret),
                                     "--allow", str(keys.allowed)])
    try:
        yield c
    finally:
        c.kill()


def forward_stats(stats: Dict[str, object]) -> Dict[str, object]:
    """The forward sink's report in the collector's statistics JSON."""
    found = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if "per_subscriber" in node and "mechanism" in node:
                found.append(node)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(stats)
    assert len(found) == 1, f"expected one forward report in the statistics, found {stats}"
    return found[0]


def assert_receives_nothing(sub: ndbridge.Subscriber, who: str, timeout_ms: int) -> None:
    try:
        rec = sub.recv(timeout_ms=timeout_ms)
    except TimeoutError:
        return
    pytest.fail(f"{who} received record {rec.name!r} from {rec.source!r}")


@pytest.mark.parametrize("use_native", PUBLISHERS)
def test_collector_forwards_over_curve_to_allowed_subscribers_only(
        curve_forward_collector: Collector, keys: Keys, ctx: zmq.Context,
        use_native: bool) -> None:
    c = curve_forward_collector
    assert c.forward is not None
    allowed_keys = dict(curve_server=keys.server_public, curve_secret=keys.client_secret)
    sent = records()
    # The refused subscribers connect first: by the time the allowed one (connected last)
    # receives, they would have been subscribed too, had the collector admitted them.
    stranger = ndbridge.Subscriber(c.forward, curve_server=keys.server_public,
                                   curve_secret=keys.stranger_secret, context=ctx)
    plain = ndbridge.Subscriber(c.forward, context=ctx)
    allowed = ndbridge.Subscriber(c.forward, context=ctx, **allowed_keys)
    # Probes (through the CURVE input with the allowed key) until one comes out of `allowed`.
    wait_subscribed(allowed, c, **allowed_keys)
    with ndbridge.Publisher(c.input, source="claimed", native=use_native, codec="zstd",
                            timeout=20, **allowed_keys) as pub:
        for name, arrays in sent.items():
            pub.send(name, arrays, attrs={"name": name})
    got = recv_records(allowed, sent)
    for name, rec in got.items():
        # Stored and forwarded under the key's file name (worker-1.key), not the claimed one.
        assert rec.source == "worker-1", rec.source
        assert rec.attrs == {"name": name}
        assert rec.arrays.keys() == sent[name].keys()
        for array_name, expected in sent[name].items():
            bit_exact(rec[array_name], expected)

    # Nothing reaches the refused subscribers: not the records, not the probes, not a record
    # sent a while after they connected (when an admitted subscriber would long be live).
    refused = {"the unlisted key's subscriber": stranger, "the subscriber without CURVE": plain}
    for who, sub in refused.items():
        assert_receives_nothing(sub, who, int(REFUSED_WAIT_S * 1000))
    late = {"y": np.arange(5, dtype="<i8")}
    with ndbridge.Publisher(c.input, source="claimed", native=use_native, timeout=20,
                            **allowed_keys) as pub:
        pub.send("late", late)
    rec = recv_records(allowed, ["late"])["late"]
    assert rec.source == "worker-1"
    bit_exact(rec["y"], late["y"])
    for who, sub in refused.items():
        assert_receives_nothing(sub, who, 100)
    for sub in (stranger, plain, allowed):
        sub.close()

    stats = c.stop()
    forward = forward_stats(stats)
    totals = forward["subscribers"]
    assert forward["mechanism"] == "CURVE", forward
    assert forward["public_key"] == zmq.auth.load_certificate(keys.server_public)[0].decode()
    # The stranger proved an unlisted key; the plain subscriber offered NULL.
    assert totals["refused_keys"] >= 1, totals
    assert totals["refused_mechanism"] >= 1, totals
    # Everything the allowed publisher sent went out, and the collector stored it under
    # the key's name.
    assert {line["source"] for line in c.manifest()} == {"worker-1"}
    stored = {line["name"] for line in c.manifest()} - {PROBE}
    assert stored == set(sent) | {"late"}, stored
