"""CURVE keys: making a key pair, and reading the keys a :class:`~ndbridge.Publisher` or
:class:`~ndbridge.Subscriber` needs for ``curve_server=`` and ``curve_secret=``.

The files are ZeroMQ's certificates, as pyzmq's :mod:`zmq.auth` and ``ndbridge keygen`` write
them: ``NAME.key`` holds the public key and may be handed out (a collector admits the keys in
the ``NAME.key`` files of its ``--allow`` directory, and stores their records under ``NAME``);
``NAME.key_secret`` holds both keys and must stay private (mode 0600). Each key is 40
characters of Z85 text.

Nothing here opens a socket.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import unicodedata
from typing import NamedTuple, Optional, Tuple, Union

import zmq
import zmq.auth
from zmq.utils import z85

__all__ = ["keygen", "CurveKeys", "load_curve", "KeySource", "PathLike"]

PathLike = Union[str, "os.PathLike[str]"]

#: What ``curve_server=`` accepts: the path of the server's certificate, or its public key as
#: 40 characters of Z85 (``str`` or ``bytes``).
KeySource = Union[str, bytes, "os.PathLike[str]"]

_Z85_KEY_CHARS = 40


def keygen(directory: PathLike, name: str) -> Tuple[str, str]:
    """Makes a new CURVE key pair and writes it as ``DIRECTORY/NAME.key`` (the public key, to
    hand out) and ``DIRECTORY/NAME.key_secret`` (both keys, mode 0600); returns the two paths,
    public first. What ``ndbridge keygen NAME --dir DIRECTORY`` does.

    Give ``NAME.key`` to the peer that must admit this key (a collector lists it in its
    ``--allow`` directory and stores the records sent with it under the source ``NAME``), and
    pass ``NAME.key_secret`` as ``curve_secret=``.

    `directory` is created if missing. Existing keys are never overwritten: if either file
    exists, ``FileExistsError`` is raised and nothing is written.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as keys:
    ...     public, secret = keygen(keys, "worker-1")
    ...     print(os.path.basename(public), os.path.basename(secret),
    ...           oct(os.stat(secret).st_mode & 0o777))
    worker-1.key worker-1.key_secret 0o600
    """
    _require_curve("keygen")
    # The rule of `ndbridge keygen`.
    if not isinstance(name, str) or not name or name.startswith(".") or \
            any(c in name for c in {"/", os.sep, os.altsep or "/"}) or \
            any(unicodedata.category(c) == "Cc" for c in name):
        raise ValueError(f"name: expected a file name (not empty, no '/', not starting with "
                         f"'.'), the key's name such as 'worker-1'; found {name!r}")
    directory = os.fspath(directory)
    public_path = os.path.join(directory, f"{name}.key")
    secret_path = os.path.join(directory, f"{name}.key_secret")
    for path in (public_path, secret_path):
        if os.path.lexists(path):
            raise FileExistsError(f"{path}: a key of that name exists already; keygen never "
                                  f"overwrites a key (remove it, or choose another name)")
    os.makedirs(directory, exist_ok=True)
    # pyzmq writes both files with the default mode (0644 under the usual umask): write them in
    # a private directory (0700), make the secret one 0600 there, then link each into place,
    # which fails instead of overwriting a file that appeared in the meantime.
    staging = tempfile.mkdtemp(prefix=f".{name}.", dir=directory)
    placed = []
    try:
        staged_public, staged_secret = zmq.auth.create_certificates(staging, name)
        os.chmod(staged_secret, stat.S_IRUSR | stat.S_IWUSR)
        os.chmod(staged_public, 0o644)
        for staged, final in ((staged_secret, secret_path), (staged_public, public_path)):
            _place(staged, final)
            placed.append(final)
    except BaseException:
        for path in placed:
            os.unlink(path)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return public_path, secret_path


def _place(staged: str, final: str) -> None:
    """Moves `staged` to `final`, which must not exist."""
    try:
        os.link(staged, final)
    except FileExistsError:
        raise FileExistsError(f"{final}: a key of that name exists already; keygen never "
                              f"overwrites a key (remove it, or choose another name)") from None
    except OSError:
        # A file system without hard links: check, then rename (not atomic, but close).
        if os.path.lexists(final):
            raise FileExistsError(f"{final}: a key of that name exists already") from None
        os.rename(staged, final)


class CurveKeys(NamedTuple):
    """The keys of a CURVE client, each as 40 characters of Z85 (``bytes``)."""

    #: The server's public key (the collector's).
    server: bytes
    #: This peer's public key.
    public: bytes
    #: This peer's secret key.
    secret: bytes
    #: The secret certificate the two keys of this peer were read from.
    secret_path: str


def load_curve(curve_server: Optional[KeySource],
               curve_secret: Optional[PathLike]) -> Optional[CurveKeys]:
    """Reads the CURVE keys of ``curve_server=`` and ``curve_secret=`` (see
    :class:`~ndbridge.Publisher`); ``None`` when neither is given.

    Raises ``ValueError`` when only one is given or a file does not hold what it should,
    ``FileNotFoundError`` (an ``OSError``) for a missing file, and ``RuntimeError`` when
    pyzmq's libzmq is built without CURVE.
    """
    if curve_server is None and curve_secret is None:
        return None
    if curve_server is None or curve_secret is None:
        given, missing = ("curve_server", "curve_secret") if curve_secret is None else \
            ("curve_secret", "curve_server")
        raise ValueError(f"curve_server and curve_secret: expected both (CURVE: the server's "
                         f"public key and this peer's secret certificate) or neither, found "
                         f"{given} without {missing}")
    _require_curve("curve_server and curve_secret")
    server = _server_key(curve_server)
    public, secret, secret_path = _secret_pair(curve_secret)
    return CurveKeys(server=server, public=public, secret=secret, secret_path=secret_path)


def _require_curve(what: str) -> None:
    if not zmq.has("curve"):
        raise RuntimeError(f"{what}: CURVE needs a libzmq built with it, and pyzmq's "
                           f"(libzmq {zmq.zmq_version()}) is not")


def _server_key(value: KeySource) -> bytes:
    """The server's public key from a certificate's path or from Z85 text."""
    expected = ("the server's public certificate (its NAME.key file) or its public key as "
                "40 characters of Z85")
    if isinstance(value, bytes):
        if _is_z85_key(value):
            return value
        try:
            value = os.fsdecode(value)
        except UnicodeDecodeError:
            raise ValueError(f"curve_server: expected {expected}, found {value!r}") from None
    elif not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"curve_server: expected {expected} (str, bytes or a path), found "
                        f"{type(value).__name__}")
    path = os.fspath(value)
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if not os.path.exists(path):
        if isinstance(value, str) and _is_z85_key(value.encode("ascii", "replace")):
            return value.encode("ascii")
        if isinstance(value, str) and len(value) == _Z85_KEY_CHARS:
            raise ValueError(f"curve_server: expected {expected}, found 40 characters that are "
                             f"not Z85 and no such file: {value!r}")
        raise FileNotFoundError(f"curve_server: {path}: no such file (expected {expected})")
    public, _ = _certificate("curve_server", path, "a certificate with a line "
                             "public-key = \"<40 characters of Z85>\" (a NAME.key file)")
    return public


def _secret_pair(value: PathLike) -> Tuple[bytes, bytes, str]:
    """This peer's public and secret keys from its secret certificate, and the path."""
    expected = ("this peer's secret certificate (its NAME.key_secret file, with lines "
                "public-key = \"...\" and secret-key = \"...\")")
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"curve_secret: expected the path of {expected}, found "
                        f"{type(value).__name__}")
    path = os.fspath(value)
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"curve_secret: {path}: no such file (expected {expected})")
    public, secret = _certificate("curve_secret", path, expected)
    if secret is None:
        hint = " (this looks like the public NAME.key; pass NAME.key_secret)" \
            if path.endswith(".key") else ""
        raise ValueError(f"curve_secret: {path}: expected {expected}, found a public "
                         f"certificate without a secret-key line{hint}")
    if zmq.curve_public(secret) != public:
        raise ValueError(f"curve_secret: {path}: expected the public key of its secret key, "
                         f"found another public key ({public.decode('ascii')})")
    return public, secret, path


def _certificate(argument: str, path: str, expected: str) -> Tuple[bytes, Optional[bytes]]:
    """The keys of a certificate file, checked to be Z85 keys."""
    if os.path.isdir(path):
        raise IsADirectoryError(f"{argument}: {path}: expected {expected}, found a directory")
    try:
        public, secret = zmq.auth.load_certificate(path)
    except ValueError:
        raise ValueError(f"{argument}: {path}: expected {expected}, found "
                         f"{_describe(path)}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{argument}: {path}: expected {expected}, found a file that is not "
                         f"text") from None
    for key_name, key in (("public-key", public), ("secret-key", secret)):
        if key is not None and not _is_z85_key(key):
            shown = f"{len(key)} characters" if key_name == "secret-key" else repr(
                key.decode("ascii", "replace"))
            raise ValueError(f"{argument}: {path}: expected {expected}, found a {key_name} that "
                             f"is not 40 characters of Z85 ({shown})")
    return public, secret


def _describe(path: str) -> str:
    """A few words on what a file that holds no public key holds instead."""
    try:
        with open(path, "rb") as f:
            data = f.read(1 << 20)
    except OSError as e:
        return f"a file that cannot be read ({e.strerror})"
    if not data.strip():
        return "an empty file"
    return f"{len(data.splitlines())} lines without a public-key line"


def _is_z85_key(key: bytes) -> bool:
    """True for 40 characters of Z85 (32 bytes)."""
    if len(key) != _Z85_KEY_CHARS:
        return False
    try:
        return len(z85.decode(key)) == 32
    except Exception:  # KeyError for a character outside Z85, struct.error for overflow
        return False
