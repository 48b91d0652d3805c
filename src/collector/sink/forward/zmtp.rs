//! The parts of ZMTP 3.1 (rfc.zeromq.org/spec/37) the forward sink speaks as a PUB socket:
//! greetings (NULL or CURVE mechanism), commands, metadata and frames, as bytes.

use std::io::{self, IoSlice, Read, Write};

use bytes::Bytes;

use super::{End, MAX_PEER_FRAME};

/// Bytes of a greeting.
pub(super) const GREETING_LEN: usize = 64;

/// Bytes of a greeting's signature and major version, which a peer may send before the rest.
pub(super) const GREETING_FIRST_LEN: usize = 11;

const MORE: u8 = 0x01;
const LONG: u8 = 0x02;
const COMMAND: u8 = 0x04;

/// The security mechanisms the sink speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mechanism {
    /// No security (ZeroMQ sockets without CURVE).
    Null,
    /// CURVE (RFC 26), the sink as its server.
    Curve,
}

impl Mechanism {
    /// The name as a greeting writes it.
    pub(super) fn name(self) -> &'static str {
        match self {
            Mechanism::Null => "NULL",
            Mechanism::Curve => "CURVE",
        }
    }
}

/// Why a peer's greeting was refused.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum GreetingError {
    /// Not ZMTP 3 or later.
    Malformed(String),
    /// ZMTP 3, with another security mechanism than the sink's.
    Mechanism(String),
}

/// Ours: signature, version 3.1, the mechanism, as server with CURVE (the side that holds the
/// long-term key the peers know).
pub(super) fn greeting(mechanism: Mechanism) -> [u8; GREETING_LEN] {
    let mut g = [0u8; GREETING_LEN];
    g[0] = 0xFF;
    g[8] = 0x01;
    g[9] = 0x7F;
    g[10] = 3;
    g[11] = 1;
    let name = mechanism.name().as_bytes();
    g[12..12 + name.len()].copy_from_slice(name);
    g[32] = u8::from(mechanism == Mechanism::Curve);
    g
}

/// Checks a peer's greeting: ZMTP 3 or later, the sink's mechanism.
pub(super) fn check_greeting(
    g: &[u8; GREETING_LEN],
    mechanism: Mechanism,
) -> Result<(), GreetingError> {
    if g[0] != 0xFF || g[9] & 0x01 == 0 {
        return Err(GreetingError::Malformed(format!(
            "expected a ZMTP greeting (0xff, 8 bytes, then an odd byte), found {:02x?}",
            &g[..10]
        )));
    }
    if g[10] < 3 {
        return Err(GreetingError::Malformed(format!(
            "expected ZMTP 3.0 or later, found version {}",
            g[10]
        )));
    }
    let field = &g[12..32];
    let name = mechanism.name().as_bytes();
    if &field[..name.len()] != name || field[name.len()..].iter().any(|&b| b != 0) {
        let found = field.split(|&b| b == 0).next().unwrap_or_default();
        return Err(GreetingError::Mechanism(format!(
            "expected the {} security mechanism, found {:?}",
            mechanism.name(),
            String::from_utf8_lossy(found)
        )));
    }
    Ok(())
}

/// A command's name and the bytes after it, or `None` when the body is too short.
pub(super) fn command(body: &[u8]) -> Option<(&[u8], &[u8])> {
    let (&len, rest) = body.split_first()?;
    let len = usize::from(len);
    (rest.len() >= len).then(|| rest.split_at(len))
}

/// Our metadata: `Socket-Type` `PUB`.
pub(super) fn properties() -> Vec<u8> {
    let mut properties = Vec::with_capacity(32);
    properties.push(11);
    properties.extend_from_slice(b"Socket-Type");
    properties.extend_from_slice(&3u32.to_be_bytes());
    properties.extend_from_slice(b"PUB");
    properties
}

/// Our READY command of the NULL mechanism, with our metadata.
pub(super) fn ready_frame() -> Vec<u8> {
    let mut body = b"\x05READY".to_vec();
    body.extend_from_slice(&properties());
    command_frame(&body)
}

/// An ERROR command with `reason` (at most 255 bytes of it).
pub(super) fn error_frame(reason: &str) -> Vec<u8> {
    let reason = &reason.as_bytes()[..reason.len().min(255)];
    let mut body = b"\x05ERROR".to_vec();
    body.push(reason.len() as u8);
    body.extend_from_slice(reason);
    command_frame(&body)
}

/// The body of a PONG command echoing `context`.
pub(super) fn pong_body(context: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(5 + context.len());
    body.push(4);
    body.extend_from_slice(b"PONG");
    body.extend_from_slice(context);
    body
}

/// A PONG command echoing `context`.
pub(super) fn pong_frame(context: &[u8]) -> Vec<u8> {
    command_frame(&pong_body(context))
}

/// A command frame: its header, then `body`.
pub(super) fn command_frame(body: &[u8]) -> Vec<u8> {
    let mut header = [0u8; 9];
    let n = frame_header(false, true, body.len(), &mut header);
    let mut frame = header[..n].to_vec();
    frame.extend_from_slice(body);
    frame
}

/// Checks a peer's READY command: its socket type must be SUB or XSUB.
pub(super) fn check_ready(body: &[u8]) -> Result<(), String> {
    let (name, properties) =
        command(body).ok_or_else(|| "expected the READY command, found none".to_owned())?;
    if name == b"ERROR" {
        return Err(format!(
            "the peer refused the connection: {}",
            String::from_utf8_lossy(properties.get(1..).unwrap_or_default())
        ));
    }
    if name != b"READY" {
        return Err(format!(
            "expected the READY command, found {:?}",
            String::from_utf8_lossy(name)
        ));
    }
    check_properties(properties)
}

/// Checks a peer's metadata (name, 4-byte length, value; repeated): its socket type must be SUB
/// or XSUB.
pub(super) fn check_properties(mut properties: &[u8]) -> Result<(), String> {
    let malformed = || "expected properties (name, 4-byte length, value), found a cut one";
    let mut socket_type = None;
    while !properties.is_empty() {
        let (name, rest) = command(properties).ok_or_else(malformed)?;
        let (len, rest) = rest.split_first_chunk::<4>().ok_or_else(malformed)?;
        let len = u32::from_be_bytes(*len) as usize;
        if rest.len() < len {
            return Err(malformed().into());
        }
        let (value, rest) = rest.split_at(len);
        if name.eq_ignore_ascii_case(b"Socket-Type") {
            socket_type = Some(value);
        }
        properties = rest;
    }
    match socket_type {
        Some(b"SUB" | b"XSUB") => Ok(()),
        Some(other) => Err(format!(
            "expected a SUB or XSUB socket, found {:?}",
            String::from_utf8_lossy(other)
        )),
        None => Err("expected a Socket-Type in the metadata, found none".into()),
    }
}

/// Writes a frame header into `out`; returns its length (2 or 9 bytes).
pub(super) fn frame_header(more: bool, command: bool, len: usize, out: &mut [u8; 9]) -> usize {
    let mut flags = 0;
    if more {
        flags |= MORE;
    }
    if command {
        flags |= COMMAND;
    }
    if len > 255 {
        out[0] = flags | LONG;
        out[1..9].copy_from_slice(&(len as u64).to_be_bytes());
        9
    } else {
        out[0] = flags;
        out[1] = len as u8;
        2
    }
}

/// A frame read from a peer.
#[derive(Debug)]
pub(super) struct Frame {
    pub command: bool,
    pub more: bool,
    pub body: Vec<u8>,
}

/// Reads one frame of at most `MAX_PEER_FRAME` bytes; anything larger ends the connection
/// before its body is read.
pub(super) fn read_frame(reader: &mut impl Read) -> Result<Frame, End> {
    let io = |_| End::Closed;
    let mut flags = [0u8; 1];
    reader.read_exact(&mut flags).map_err(io)?;
    let flags = flags[0];
    if flags & !(MORE | LONG | COMMAND) != 0 || flags & (MORE | COMMAND) == MORE | COMMAND {
        return Err(End::Failed(format!(
            "expected frame flags MORE, LONG or COMMAND (not MORE with COMMAND), found \
             {flags:#04x}"
        )));
    }
    let len = if flags & LONG != 0 {
        let mut len = [0u8; 8];
        reader.read_exact(&mut len).map_err(io)?;
        u64::from_be_bytes(len)
    } else {
        let mut len = [0u8; 1];
        reader.read_exact(&mut len).map_err(io)?;
        u64::from(len[0])
    };
    if len > MAX_PEER_FRAME {
        return Err(End::Failed(format!(
            "expected frames of at most {MAX_PEER_FRAME} bytes from a subscriber, found one \
             of {len}"
        )));
    }
    let mut body = vec![0u8; len as usize];
    reader.read_exact(&mut body).map_err(io)?;
    Ok(Frame {
        command: flags & COMMAND != 0,
        more: flags & MORE != 0,
        body,
    })
}

/// Writes whole messages, their frames straight from the buffers they are in.
pub(super) fn write_messages<'a>(
    stream: &mut impl Write,
    messages: impl Iterator<Item = &'a [Bytes]> + Clone,
) -> io::Result<()> {
    let mut headers: Vec<([u8; 9], usize)> = Vec::new();
    for frames in messages.clone() {
        for (i, frame) in frames.iter().enumerate() {
            let mut header = [0u8; 9];
            let n = frame_header(i + 1 < frames.len(), false, frame.len(), &mut header);
            headers.push((header, n));
        }
    }
    let mut slices = Vec::with_capacity(headers.len() * 2);
    for (frame, (header, n)) in messages.flatten().zip(&headers) {
        slices.push(IoSlice::new(&header[..*n]));
        if !frame.is_empty() {
            slices.push(IoSlice::new(frame));
        }
    }
    let mut slices = &mut slices[..];
    while !slices.is_empty() {
        match stream.write_vectored(slices) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut slices, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
