//! The CURVE security mechanism (RFC 26, CurveZMQ, as ZMTP 3 carries it) with the forward sink
//! as its server: the handshake as a state machine over command bodies (HELLO, WELCOME,
//! INITIATE, READY), and the MESSAGE boxes every frame travels in afterwards. Pure over bytes
//! but for libsodium ([`super::sodium`]); the sockets are the sink's.
//!
//! The layouts, nonces and checks are libzmq's (`curve_server.cpp`, `curve_mechanism_base.cpp`),
//! so that any ZeroMQ CURVE client connects: every length from the peer is checked before a box
//! is opened, and a command that is cut, forged, replayed or out of order is an error.

use std::sync::Arc;

use super::sodium::{self, Failed, Secret, KEY_BYTES, MAC_BYTES, NONCE_BYTES};
use super::zmtp;
use crate::keys::{Allowlist, KeyPair, PublicKey};

/// Bytes of a HELLO command.
const HELLO_LEN: usize = 200;
/// Bytes of a WELCOME command.
const WELCOME_LEN: usize = 168;
/// Bytes of an INITIATE command without metadata.
const INITIATE_MIN_LEN: usize = 257;
/// Bytes of a MESSAGE command's name and nonce.
const MESSAGE_HEADER_LEN: usize = 16;
/// Bytes of the smallest MESSAGE command: name, nonce, authenticator and the flags byte.
const MESSAGE_MIN_LEN: usize = MESSAGE_HEADER_LEN + MAC_BYTES + 1;

/// Nonce prefixes of the boxes (RFC 26).
const HELLO_PREFIX: &[u8; 16] = b"CurveZMQHELLO---";
const WELCOME_PREFIX: &[u8; 8] = b"WELCOME-";
const COOKIE_PREFIX: &[u8; 8] = b"COOKIE--";
const INITIATE_PREFIX: &[u8; 16] = b"CurveZMQINITIATE";
const VOUCH_PREFIX: &[u8; 8] = b"VOUCH---";
const READY_PREFIX: &[u8; 16] = b"CurveZMQREADY---";
/// Messages from the server, and from the client.
const SERVER_PREFIX: &[u8; 16] = b"CurveZMQMESSAGES";
const CLIENT_PREFIX: &[u8; 16] = b"CurveZMQMESSAGEC";

/// Flags of a MESSAGE's plaintext (libzmq's message flags, not a frame's).
pub(super) const MESSAGE_MORE: u8 = 0x01;
/// The frame is a command (SUBSCRIBE, CANCEL, PING, PONG).
pub(super) const MESSAGE_COMMAND: u8 = 0x02;

/// libsodium could not start (no random source).
#[derive(Debug)]
pub(super) struct Unavailable;

/// The sink's side of CURVE: its long-term key pair and the client keys it admits.
pub(super) struct CurveServer {
    public: [u8; KEY_BYTES],
    secret: Secret,
    allow: Arc<Allowlist>,
}

impl CurveServer {
    pub(super) fn new(own: &KeyPair, allow: Arc<Allowlist>) -> Result<CurveServer, Unavailable> {
        if !sodium::init() {
            return Err(Unavailable);
        }
        Ok(CurveServer {
            public: *own.public().as_bytes(),
            secret: Secret::from_bytes(*own.secret()),
            allow,
        })
    }

    /// The sink's public key.
    pub(super) fn public(&self) -> PublicKey {
        PublicKey::from_bytes(self.public)
    }
}

/// Why a handshake failed.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Refusal {
    /// The client proved a long-term key that the allowlist does not hold.
    Unlisted(PublicKey),
    /// A command was not the one expected, cut, forged, or did not open.
    Failed(String),
}

fn failed(why: impl Into<String>) -> Refusal {
    Refusal::Failed(why.into())
}

/// A connection's handshake, from the client's HELLO to our READY.
pub(super) struct Handshake<'a> {
    server: &'a CurveServer,
    /// Our short-term key pair for this connection (S', s').
    short_public: [u8; KEY_BYTES],
    short_secret: Secret,
    /// The client's short-term public key (C'), from its HELLO.
    client_short: Option<[u8; KEY_BYTES]>,
    /// The key of the cookie we sent in WELCOME.
    cookie_key: Secret,
}

/// A client admitted by its INITIATE: who it is, our READY, and the two directions of its
/// connection.
pub(super) struct Admitted {
    /// The name the allowlist admits it under.
    pub name: String,
    /// Our READY command's body.
    pub ready: Vec<u8>,
    /// Boxes what we send.
    pub sealer: Sealer,
    /// Opens what the client sends.
    pub opener: Opener,
}

impl<'a> Handshake<'a> {
    pub(super) fn new(server: &'a CurveServer) -> Handshake<'a> {
        let (short_public, short_secret) = sodium::keypair();
        Handshake {
            server,
            short_public,
            short_secret,
            client_short: None,
            cookie_key: Secret::random(),
        }
    }

    /// Takes the client's HELLO command body; returns our WELCOME command body.
    pub(super) fn hello(&mut self, body: &[u8]) -> Result<Vec<u8>, Refusal> {
        expect_command(body, b"\x05HELLO")?;
        if body.len() != HELLO_LEN {
            return Err(failed(format!(
                "expected a HELLO of {HELLO_LEN} bytes, found {}",
                body.len()
            )));
        }
        if body[6..8] != [1, 0] {
            return Err(failed(format!(
                "expected CurveZMQ version 1.0, found {}.{}",
                body[6], body[7]
            )));
        }
        let client_short: [u8; KEY_BYTES] = array(&body[80..112]);
        let nonce = full_nonce(HELLO_PREFIX, &body[112..120]);
        // The signature box: 64 zero bytes from C' to S.
        let mut signature = [0u8; 64];
        sodium::open(
            &mut signature,
            &body[120..200],
            &nonce,
            &client_short,
            &self.server.secret,
        )
        .map_err(|Failed| failed("cannot open the HELLO box: the client has another server key"))?;
        if signature != [0u8; 64] {
            return Err(failed("expected 64 zero bytes in the HELLO box"));
        }
        self.client_short = Some(client_short);

        // The cookie: Box [C' + s'](K), which only we can open, for the client to return.
        let cookie_nonce = sodium::random::<16>();
        let mut cookie_plain = [0u8; 64];
        cookie_plain[..32].copy_from_slice(&client_short);
        cookie_plain[32..].copy_from_slice(self.short_secret.bytes());
        let mut cookie = [0u8; 64 + MAC_BYTES];
        let sealed = sodium::secretbox_seal(
            &mut cookie,
            &cookie_plain,
            &short_nonce(COOKIE_PREFIX, &cookie_nonce),
            &self.cookie_key,
        );
        sodium::wipe(&mut cookie_plain);
        sealed.map_err(|Failed| failed("cannot make the cookie"))?;

        // WELCOME: Box [S' + cookie nonce + cookie](S->C').
        let welcome_nonce = sodium::random::<16>();
        let mut plain = [0u8; 128];
        plain[..32].copy_from_slice(&self.short_public);
        plain[32..48].copy_from_slice(&cookie_nonce);
        plain[48..].copy_from_slice(&cookie);
        let mut welcome = Vec::with_capacity(WELCOME_LEN);
        welcome.extend_from_slice(b"\x07WELCOME");
        welcome.extend_from_slice(&welcome_nonce);
        welcome.resize(WELCOME_LEN, 0);
        sodium::seal(
            &mut welcome[24..],
            &plain,
            &short_nonce(WELCOME_PREFIX, &welcome_nonce),
            &client_short,
            &self.server.secret,
        )
        .map_err(|Failed| failed("cannot box the WELCOME"))?;
        Ok(welcome)
    }

    /// Takes the client's INITIATE command body: the client is admitted when its cookie, box
    /// and vouch open, its long-term key is in the allowlist and its metadata names a SUB or
    /// XSUB socket.
    pub(super) fn initiate(self, body: &[u8]) -> Result<Admitted, Refusal> {
        let Some(client_short) = self.client_short else {
            return Err(failed("expected HELLO before INITIATE"));
        };
        expect_command(body, b"\x08INITIATE")?;
        if body.len() < INITIATE_MIN_LEN {
            return Err(failed(format!(
                "expected an INITIATE of at least {INITIATE_MIN_LEN} bytes, found {}",
                body.len()
            )));
        }
        // The cookie we sent must come back: [C' + s'].
        let mut cookie = [0u8; 64];
        sodium::secretbox_open(
            &mut cookie,
            &body[25..105],
            &short_nonce(COOKIE_PREFIX, &body[9..25]),
            &self.cookie_key,
        )
        .map_err(|Failed| failed("cannot open the INITIATE cookie"))?;
        let cookie_ok =
            cookie[..32] == client_short && cookie[32..] == self.short_secret.bytes()[..];
        sodium::wipe(&mut cookie);
        if !cookie_ok {
            return Err(failed("expected our cookie in INITIATE, found another"));
        }

        // Box [C + vouch nonce + vouch + metadata](C'->S').
        let initiate_nonce = u64::from_be_bytes(array(&body[105..113]));
        let boxed = &body[113..];
        let mut plain = vec![0u8; boxed.len() - MAC_BYTES];
        sodium::open(
            &mut plain,
            boxed,
            &full_nonce(INITIATE_PREFIX, &body[105..113]),
            &client_short,
            &self.short_secret,
        )
        .map_err(|Failed| failed("cannot open the INITIATE box"))?;
        let client_long: [u8; KEY_BYTES] = array(&plain[..32]);

        // The vouch: Box [C' + S](C->S'), proof that the holder of C made C'.
        let mut vouch = [0u8; 64];
        sodium::open(
            &mut vouch,
            &plain[48..128],
            &short_nonce(VOUCH_PREFIX, &plain[32..48]),
            &client_long,
            &self.short_secret,
        )
        .map_err(|Failed| failed("cannot open the INITIATE vouch"))?;
        if vouch[..32] != client_short || vouch[32..] != self.server.public {
            return Err(failed(
                "expected the vouch to name the client's short-term key and ours, found others",
            ));
        }

        let key = PublicKey::from_bytes(client_long);
        let Some(name) = self.server.allow.name_of(&key) else {
            return Err(Refusal::Unlisted(key));
        };
        zmtp::check_properties(&plain[128..]).map_err(Refusal::Failed)?;

        let shared = sodium::precompute(&client_short, &self.short_secret)
            .map_err(|Failed| failed("cannot derive the connection key"))?;
        let mut sealer = Sealer {
            key: Secret::from_bytes(*shared.bytes()),
            prefix: SERVER_PREFIX,
            next: 1,
        };
        let opener = Opener {
            key: shared,
            prefix: CLIENT_PREFIX,
            last: initiate_nonce,
        };
        let ready = sealer
            .command_box(b"\x05READY", READY_PREFIX, &zmtp::properties())
            .map_err(|Failed| failed("cannot box READY"))?;
        Ok(Admitted {
            name: name.to_owned(),
            ready,
            sealer,
            opener,
        })
    }
}

/// Boxes the frames one side sends, each with the next nonce.
pub(super) struct Sealer {
    key: Secret,
    prefix: &'static [u8; 16],
    /// The nonce of the next box.
    next: u64,
}

impl Sealer {
    fn take_nonce(&mut self) -> Result<[u8; 8], Failed> {
        let nonce = self.next;
        // A nonce is never used twice: the connection ends before the counter wraps.
        self.next = nonce.checked_add(1).ok_or(Failed)?;
        Ok(nonce.to_be_bytes())
    }

    /// A command `name` + short nonce + Box [`plain`] with the nonce under `prefix` (READY).
    fn command_box(
        &mut self,
        name: &[u8],
        prefix: &[u8; 16],
        plain: &[u8],
    ) -> Result<Vec<u8>, Failed> {
        let nonce = self.take_nonce()?;
        let mut body = Vec::with_capacity(name.len() + 8 + MAC_BYTES + plain.len());
        body.extend_from_slice(name);
        body.extend_from_slice(&nonce);
        let start = body.len();
        body.resize(start + MAC_BYTES, 0);
        body.extend_from_slice(plain);
        sodium::seal_in_place(&mut body[start..], &full_nonce(prefix, &nonce), &self.key)?;
        Ok(body)
    }

    /// Appends to `out` one ZMTP frame holding a MESSAGE command that carries `data` with
    /// `flags` ([`MESSAGE_MORE`], [`MESSAGE_COMMAND`]). The frame itself has no flags, as
    /// libzmq sends it.
    pub(super) fn seal_frame(
        &mut self,
        flags: u8,
        data: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), Failed> {
        let nonce = self.take_nonce()?;
        let len = MESSAGE_MIN_LEN + data.len();
        let mut header = [0u8; 9];
        let n = zmtp::frame_header(false, false, len, &mut header);
        out.reserve(n + len);
        out.extend_from_slice(&header[..n]);
        out.extend_from_slice(b"\x07MESSAGE");
        out.extend_from_slice(&nonce);
        let start = out.len();
        out.resize(start + MAC_BYTES, 0);
        out.push(flags);
        out.extend_from_slice(data);
        sodium::seal_in_place(
            &mut out[start..],
            &full_nonce(self.prefix, &nonce),
            &self.key,
        )
    }
}

/// Opens the MESSAGE commands one side receives, each with a nonce above the last.
pub(super) struct Opener {
    key: Secret,
    prefix: &'static [u8; 16],
    /// The nonce of the last box opened (or of the handshake command before).
    last: u64,
}

impl Opener {
    /// Opens a MESSAGE command body: its flags ([`MESSAGE_MORE`], [`MESSAGE_COMMAND`]) and data.
    pub(super) fn open(&mut self, body: &[u8]) -> Result<(u8, Vec<u8>), String> {
        if !body.starts_with(b"\x07MESSAGE") {
            let name = zmtp::command(body)
                .map(|(name, _)| name)
                .unwrap_or_default();
            return Err(format!(
                "expected a MESSAGE command, found {:?}",
                String::from_utf8_lossy(name)
            ));
        }
        if body.len() < MESSAGE_MIN_LEN {
            return Err(format!(
                "expected a MESSAGE of at least {MESSAGE_MIN_LEN} bytes, found {}",
                body.len()
            ));
        }
        let nonce = u64::from_be_bytes(array(&body[8..16]));
        if nonce <= self.last {
            return Err(format!(
                "expected a MESSAGE nonce above {}, found {nonce}",
                self.last
            ));
        }
        let boxed = &body[MESSAGE_HEADER_LEN..];
        let mut plain = vec![0u8; boxed.len() - MAC_BYTES];
        sodium::open_precomputed(
            &mut plain,
            boxed,
            &full_nonce(self.prefix, &body[8..16]),
            &self.key,
        )
        .map_err(|Failed| "cannot open a MESSAGE box: forged or damaged".to_owned())?;
        self.last = nonce;
        let flags = plain[0] & (MESSAGE_MORE | MESSAGE_COMMAND);
        plain.remove(0);
        Ok((flags, plain))
    }
}

/// Checks that `body` starts with the command `name` (its length byte included).
fn expect_command(body: &[u8], name: &[u8]) -> Result<(), Refusal> {
    if body.starts_with(name) {
        return Ok(());
    }
    let found = zmtp::command(body)
        .map(|(name, _)| name)
        .unwrap_or_default();
    Err(failed(format!(
        "expected the {} command, found {:?}",
        String::from_utf8_lossy(&name[1..]),
        String::from_utf8_lossy(found)
    )))
}

/// The bytes of a slice whose length the caller has checked.
fn array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&bytes[..N]);
    out
}

/// A nonce of a 16-byte prefix and 8 bytes (the short nonce of a command).
fn full_nonce(prefix: &[u8; 16], short: &[u8]) -> [u8; NONCE_BYTES] {
    let mut nonce = [0u8; NONCE_BYTES];
    nonce[..16].copy_from_slice(prefix);
    nonce[16..].copy_from_slice(&short[..8]);
    nonce
}

/// A nonce of an 8-byte prefix and 16 bytes (a cookie's, WELCOME's, a vouch's).
fn short_nonce(prefix: &[u8; 8], long: &[u8]) -> [u8; NONCE_BYTES] {
    let mut nonce = [0u8; NONCE_BYTES];
    nonce[..8].copy_from_slice(prefix);
    nonce[8..].copy_from_slice(&long[..16]);
    nonce
}

/// A CURVE client, the reverse of [`Handshake`] (what libzmq's `curve_client.cpp` does): the
/// unit tests and the fuzz target drive the server with it.
pub(super) struct Client {
    long_public: [u8; KEY_BYTES],
    long_secret: Secret,
    server: [u8; KEY_BYTES],
    short_public: [u8; KEY_BYTES],
    short_secret: Secret,
    /// The server's short-term key and cookie, from WELCOME.
    server_short: [u8; KEY_BYTES],
    cookie: [u8; 96],
    next: u64,
}

impl Client {
    pub(super) fn new(own: &KeyPair, server: &PublicKey) -> Client {
        let (short_public, short_secret) = sodium::keypair();
        Client {
            long_public: *own.public().as_bytes(),
            long_secret: Secret::from_bytes(*own.secret()),
            server: *server.as_bytes(),
            short_public,
            short_secret,
            server_short: [0u8; KEY_BYTES],
            cookie: [0u8; 96],
            next: 1,
        }
    }

    fn take_nonce(&mut self) -> [u8; 8] {
        let nonce = self.next;
        self.next += 1;
        nonce.to_be_bytes()
    }

    /// Our HELLO command body.
    pub(super) fn hello(&mut self) -> Vec<u8> {
        let nonce = self.take_nonce();
        let mut hello = vec![0u8; HELLO_LEN];
        hello[..6].copy_from_slice(b"\x05HELLO");
        hello[6] = 1;
        hello[80..112].copy_from_slice(&self.short_public);
        hello[112..120].copy_from_slice(&nonce);
        let sealed = sodium::seal(
            &mut hello[120..],
            &[0u8; 64],
            &full_nonce(HELLO_PREFIX, &nonce),
            &self.server,
            &self.short_secret,
        );
        debug_assert!(sealed.is_ok());
        hello
    }

    /// Takes the server's WELCOME command body.
    pub(super) fn welcome(&mut self, body: &[u8]) -> Result<(), String> {
        if body.len() != WELCOME_LEN || !body.starts_with(b"\x07WELCOME") {
            return Err(format!("expected a WELCOME, found {} bytes", body.len()));
        }
        let mut plain = [0u8; 128];
        sodium::open(
            &mut plain,
            &body[24..],
            &short_nonce(WELCOME_PREFIX, &body[8..24]),
            &self.server,
            &self.short_secret,
        )
        .map_err(|Failed| "cannot open the WELCOME box".to_owned())?;
        self.server_short.copy_from_slice(&plain[..32]);
        self.cookie.copy_from_slice(&plain[32..]);
        Ok(())
    }

    /// Our INITIATE command body, with `metadata`.
    pub(super) fn initiate(&mut self, metadata: &[u8]) -> Vec<u8> {
        let vouch_nonce = sodium::random::<16>();
        let mut vouch_plain = [0u8; 64];
        vouch_plain[..32].copy_from_slice(&self.short_public);
        vouch_plain[32..].copy_from_slice(&self.server);
        let mut vouch = [0u8; 64 + MAC_BYTES];
        let sealed = sodium::seal(
            &mut vouch,
            &vouch_plain,
            &short_nonce(VOUCH_PREFIX, &vouch_nonce),
            &self.server_short,
            &self.long_secret,
        );
        debug_assert!(sealed.is_ok());
        let mut plain = Vec::with_capacity(128 + metadata.len());
        plain.extend_from_slice(&self.long_public);
        plain.extend_from_slice(&vouch_nonce);
        plain.extend_from_slice(&vouch);
        plain.extend_from_slice(metadata);
        let nonce = self.take_nonce();
        let mut initiate = Vec::with_capacity(113 + MAC_BYTES + plain.len());
        initiate.extend_from_slice(b"\x08INITIATE");
        initiate.extend_from_slice(&self.cookie);
        initiate.extend_from_slice(&nonce);
        let start = initiate.len();
        initiate.resize(start + MAC_BYTES + plain.len(), 0);
        let sealed = sodium::seal(
            &mut initiate[start..],
            &plain,
            &full_nonce(INITIATE_PREFIX, &nonce),
            &self.server_short,
            &self.short_secret,
        );
        debug_assert!(sealed.is_ok());
        initiate
    }

    /// Takes the server's READY command body; returns its metadata and the two directions
    /// of the connection (sealer, opener).
    pub(super) fn ready(self, body: &[u8]) -> Result<(Vec<u8>, Sealer, Opener), String> {
        if body.len() < 14 + MAC_BYTES || !body.starts_with(b"\x05READY") {
            return Err(format!("expected a READY, found {} bytes", body.len()));
        }
        let shared = sodium::precompute(&self.server_short, &self.short_secret)
            .map_err(|Failed| "cannot derive the connection key".to_owned())?;
        let mut metadata = vec![0u8; body.len() - 14 - MAC_BYTES];
        sodium::open_precomputed(
            &mut metadata,
            &body[14..],
            &full_nonce(READY_PREFIX, &body[6..14]),
            &shared,
        )
        .map_err(|Failed| "cannot open the READY box".to_owned())?;
        let sealer = Sealer {
            key: Secret::from_bytes(*shared.bytes()),
            prefix: CLIENT_PREFIX,
            next: self.next,
        };
        let opener = Opener {
            key: shared,
            prefix: SERVER_PREFIX,
            last: u64::from_be_bytes(array(&body[6..14])),
        };
        Ok((metadata, sealer, opener))
    }
}

/// The fuzz target's entry (`ForwardSink::fuzz_curve`): drives a server with a client and
/// arbitrary bytes, and panics when the server accepts what it must refuse or refuses what it
/// must accept. The first byte picks the case; the rest is cut into chunks, each a 2-byte
/// big-endian length and its bytes.
///
/// - 0: the chunks as HELLO, INITIATE and MESSAGE bodies, without a client.
/// - 1: a client's HELLO and INITIATE with chunks XORed into them (chunk 1 is the metadata):
///   unchanged ones must pass, changed ones must fail.
/// - 2: a full handshake, then each chunk boxed by the client and opened by the server (and
///   back), equal both ways; a box opened twice, or changed, must fail.
/// - 3: a client whose key is not in the allowlist must be refused as unlisted.
pub(super) fn fuzz(input: &[u8]) {
    let Some((&case, mut rest)) = input.split_first() else {
        return;
    };
    let mut chunks = Vec::new();
    while let Some((len, tail)) = rest.split_first_chunk::<2>() {
        let len = usize::from(u16::from_be_bytes(*len)).min(tail.len());
        chunks.push(&tail[..len]);
        rest = &tail[len..];
    }
    let chunk = |i: usize| chunks.get(i).copied().unwrap_or_default();
    let fixture = fixture();
    let server = &fixture.server;
    match case % 4 {
        0 => {
            let mut handshake = Handshake::new(server);
            assert!(handshake.hello(chunk(0)).is_err(), "a forged HELLO passed");
            assert!(
                handshake.initiate(chunk(1)).is_err(),
                "a forged INITIATE passed"
            );
            let mut opener = Opener {
                key: Secret::random(),
                prefix: CLIENT_PREFIX,
                last: 0,
            };
            for body in &chunks {
                assert!(opener.open(body).is_err(), "a forged MESSAGE opened");
            }
        }
        1 => {
            let mut client = Client::new(&fixture.allowed, &server.public());
            let mut handshake = Handshake::new(server);
            let original = client.hello();
            let mut hello = original.clone();
            xor_into(&mut hello, chunk(0));
            // The 72 bytes of padding are not checked (as libzmq does not).
            let changed = hello.len() != original.len()
                || hello[..8] != original[..8]
                || hello[80..] != original[80..];
            let welcome = handshake.hello(&hello);
            assert_eq!(welcome.is_ok(), !changed, "HELLO changed: {changed}");
            let Ok(welcome) = welcome else {
                return;
            };
            client
                .welcome(&welcome)
                .expect("the client opens our WELCOME");
            let metadata = chunk(1);
            let mut initiate = client.initiate(metadata);
            let changed = xor_into(&mut initiate, chunk(2));
            let admitted = handshake.initiate(&initiate);
            if changed {
                assert!(admitted.is_err(), "a changed INITIATE passed");
            } else {
                assert_eq!(
                    admitted.err(),
                    zmtp::check_properties(metadata).err().map(Refusal::Failed)
                );
            }
        }
        2 => {
            let (mut client_sealer, mut client_opener, mut server_sealer, mut server_opener) =
                connect(&fixture.allowed, server);
            let mut framed = Vec::new();
            for data in &chunks {
                let flags = data.first().copied().unwrap_or_default();
                framed.clear();
                client_sealer
                    .seal_frame(flags, data, &mut framed)
                    .expect("sealed");
                let frame = zmtp::read_frame(&mut &framed[..]).expect("one frame");
                let opened = server_opener
                    .open(&frame.body)
                    .expect("the server opens it");
                assert_eq!(
                    opened,
                    (flags & (MESSAGE_MORE | MESSAGE_COMMAND), data.to_vec())
                );
                assert!(
                    server_opener.open(&frame.body).is_err(),
                    "a MESSAGE opened twice"
                );
                let mut changed = frame.body.clone();
                if xor_into(&mut changed, data) {
                    assert!(
                        server_opener.open(&changed).is_err(),
                        "a changed MESSAGE opened"
                    );
                }
                framed.clear();
                server_sealer
                    .seal_frame(flags, data, &mut framed)
                    .expect("sealed");
                let frame = zmtp::read_frame(&mut &framed[..]).expect("one frame");
                assert_eq!(
                    client_opener
                        .open(&frame.body)
                        .expect("the client opens it"),
                    opened
                );
                // Arbitrary bytes as a MESSAGE never open.
                assert!(server_opener.open(data).is_err(), "raw bytes opened");
            }
        }
        _ => {
            let mut client = Client::new(&fixture.stranger, &server.public());
            let mut handshake = Handshake::new(server);
            let welcome = handshake.hello(&client.hello()).expect("HELLO passes");
            client.welcome(&welcome).expect("WELCOME opens");
            let refusal = handshake.initiate(&client.initiate(chunk(0))).err();
            assert_eq!(refusal, Some(Refusal::Unlisted(*fixture.stranger.public())));
        }
    }
}

/// XORs `mask` into `bytes` (a longer mask appends its rest); true when that changed them.
fn xor_into(bytes: &mut Vec<u8>, mask: &[u8]) -> bool {
    let mut changed = false;
    for (i, &m) in mask.iter().enumerate() {
        match bytes.get_mut(i) {
            Some(b) => {
                *b ^= m;
                changed |= m != 0;
            }
            None => {
                bytes.push(m);
                changed = true;
            }
        }
    }
    changed
}

/// A server whose allowlist holds one client key, that key, and one it does not hold.
struct Fixture {
    server: CurveServer,
    allowed: KeyPair,
    stranger: KeyPair,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: std::sync::OnceLock<Fixture> = std::sync::OnceLock::new();
    FIXTURE.get_or_init(|| {
        let own = KeyPair::generate().expect("a key pair");
        let allowed = KeyPair::generate().expect("a key pair");
        let mut allow = Allowlist::new();
        allow
            .insert("allowed", *allowed.public())
            .expect("a new key");
        Fixture {
            server: CurveServer::new(&own, Arc::new(allow)).expect("libsodium starts"),
            allowed,
            stranger: KeyPair::generate().expect("a key pair"),
        }
    })
}

/// A whole handshake of a SUB client with `own` keys: (client sealer, client opener, server
/// sealer, server opener).
fn connect(own: &KeyPair, server: &CurveServer) -> (Sealer, Opener, Sealer, Opener) {
    let mut client = Client::new(own, &server.public());
    let mut handshake = Handshake::new(server);
    let welcome = handshake.hello(&client.hello()).expect("HELLO passes");
    client.welcome(&welcome).expect("WELCOME opens");
    let metadata = b"\x0bSocket-Type\x00\x00\x00\x03SUB";
    let admitted = handshake
        .initiate(&client.initiate(metadata))
        .unwrap_or_else(|e| panic!("INITIATE refused: {e:?}"));
    let (properties, client_sealer, client_opener) =
        client.ready(&admitted.ready).expect("READY opens");
    assert_eq!(properties, zmtp::properties());
    (
        client_sealer,
        client_opener,
        admitted.sealer,
        admitted.opener,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUB: &[u8] = b"\x0bSocket-Type\x00\x00\x00\x03SUB";

    /// A client's handshake with the fixture's server up to its INITIATE, with `metadata`.
    fn initiate_of(own: &KeyPair, metadata: &[u8]) -> (Handshake<'static>, Vec<u8>) {
        let server = &fixture().server;
        let mut client = Client::new(own, &server.public());
        let mut handshake = Handshake::new(server);
        let welcome = handshake.hello(&client.hello()).unwrap();
        client.welcome(&welcome).unwrap();
        let initiate = client.initiate(metadata);
        (handshake, initiate)
    }

    #[test]
    fn an_allowed_client_gets_in_and_messages_open_both_ways_once() {
        let f = fixture();
        let (mut client_sealer, mut client_opener, mut server_sealer, mut server_opener) =
            connect(&f.allowed, &f.server);
        let mut frame = Vec::new();
        client_sealer
            .seal_frame(MESSAGE_COMMAND, b"\x09SUBSCRIBEtemp", &mut frame)
            .unwrap();
        // One frame without flags: name, nonce 3 (after HELLO 1 and INITIATE 2), the box.
        assert_eq!(frame[0], 0);
        assert_eq!(usize::from(frame[1]), frame.len() - 2);
        assert_eq!(
            &frame[2..18],
            b"\x07MESSAGE\x00\x00\x00\x00\x00\x00\x00\x03"
        );
        assert!(!frame.windows(4).any(|w| w == b"temp"));
        let body = frame[2..].to_vec();
        assert_eq!(
            server_opener.open(&body).unwrap(),
            (MESSAGE_COMMAND, b"\x09SUBSCRIBEtemp".to_vec())
        );
        let replayed = server_opener.open(&body).unwrap_err();
        assert!(replayed.contains("nonce above 3, found 3"), "{replayed}");

        // A long frame (over 255 bytes) from the server, nonce 2 (after READY 1).
        frame.clear();
        let data = vec![0x5Au8; 1000];
        server_sealer
            .seal_frame(MESSAGE_MORE, &data, &mut frame)
            .unwrap();
        assert_eq!(frame[0], 0x02);
        assert_eq!(
            &frame[9..25],
            b"\x07MESSAGE\x00\x00\x00\x00\x00\x00\x00\x02"
        );
        assert_eq!(
            client_opener.open(&frame[9..]).unwrap(),
            (MESSAGE_MORE, data.clone())
        );
        // A bit flipped anywhere in the box: refused.
        frame.clear();
        server_sealer.seal_frame(0, &data, &mut frame).unwrap();
        let mut forged = frame[9..].to_vec();
        forged[500] ^= 0x01;
        let err = client_opener.open(&forged).unwrap_err();
        assert!(err.contains("cannot open a MESSAGE box"), "{err}");
    }

    #[test]
    fn an_unlisted_key_is_refused_by_name_after_its_vouch_opens() {
        let f = fixture();
        let (handshake, initiate) = initiate_of(&f.stranger, SUB);
        assert_eq!(
            handshake.initiate(&initiate).err(),
            Some(Refusal::Unlisted(*f.stranger.public()))
        );
    }

    #[test]
    fn a_socket_type_other_than_sub_is_refused() {
        let f = fixture();
        let (handshake, initiate) = initiate_of(&f.allowed, b"\x0bSocket-Type\x00\x00\x00\x04PUSH");
        match handshake.initiate(&initiate).err() {
            Some(Refusal::Failed(why)) => assert!(why.contains("found \"PUSH\""), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn cut_changed_or_misplaced_commands_fail() {
        let f = fixture();
        let server = &f.server;
        let mut client = Client::new(&f.allowed, &server.public());
        let hello = client.hello();
        for len in 0..hello.len() {
            let mut handshake = Handshake::new(server);
            assert!(matches!(
                handshake.hello(&hello[..len]),
                Err(Refusal::Failed(_))
            ));
        }
        let mut version = hello.clone();
        version[6] = 2;
        match Handshake::new(server).hello(&version) {
            Err(Refusal::Failed(why)) => assert!(why.contains("version 1.0, found 2.0"), "{why}"),
            other => panic!("{:?}", other.err()),
        }
        // A HELLO for another server key does not open.
        let other = KeyPair::generate().unwrap();
        let mut stranger = Client::new(&f.allowed, other.public());
        match Handshake::new(server).hello(&stranger.hello()) {
            Err(Refusal::Failed(why)) => assert!(why.contains("another server key"), "{why}"),
            other => panic!("{:?}", other.err()),
        }
        // INITIATE before HELLO, and INITIATE cut at every length.
        let (handshake, initiate) = initiate_of(&f.allowed, SUB);
        match Handshake::new(server).initiate(&initiate) {
            Err(Refusal::Failed(why)) => assert!(why.contains("HELLO before INITIATE"), "{why}"),
            other => panic!("{:?}", other.err()),
        }
        for len in 0..initiate.len() {
            let (handshake, _) = initiate_of(&f.allowed, SUB);
            assert!(matches!(
                handshake.initiate(&initiate[..len]),
                Err(Refusal::Failed(_))
            ));
        }
        // An INITIATE carries the cookie of its own connection only.
        let (other_handshake, _) = initiate_of(&f.allowed, SUB);
        match other_handshake.initiate(&initiate) {
            Err(Refusal::Failed(why)) => assert!(why.contains("cookie"), "{why}"),
            other => panic!("{:?}", other.err()),
        }
        assert!(handshake.initiate(&initiate).is_ok());
        // A MESSAGE that is cut, or another command.
        let (_, _, _, mut opener) = connect(&f.allowed, server);
        for body in [&b""[..], b"\x07MESSAGE", &[7u8; 32], b"\x04PING\x00\x00"] {
            assert!(opener.open(body).is_err());
        }
    }

    #[test]
    fn the_fuzz_cases_hold_on_plain_inputs() {
        for case in 0..4u8 {
            fuzz(&[case]);
            fuzz(&[case, 0, 3, 1, 2, 3, 0, 0, 1, 0xFF]);
            let mut long = vec![case, 0x01, 0x2C];
            long.extend(std::iter::repeat_n(0u8, 300));
            fuzz(&long);
        }
        // A HELLO changed in its padding passes (libzmq does not check it), elsewhere not.
        fuzz(&[1, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF]);
        fuzz(&[1, 0, 1, 0xFF]);
    }
}
