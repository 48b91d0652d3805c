//! CURVE keys: generating a key pair, the certificate files keys live in, and the allowlist of
//! public keys a collector admits.
//!
//! The files are ZeroMQ's certificates, as pyzmq's `zmq.auth` writes and reads them: `NAME.key`
//! holds the public key and may be handed out; `NAME.key_secret` holds both keys and is created
//! with mode 0600. Each key is written as Z85 text (40 characters for 32 bytes):
//!
//! ```text
//! metadata
//! curve
//!     public-key = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"
//! ```

use std::collections::HashMap;
use std::fmt;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Suffix of a public certificate file.
pub const PUBLIC_SUFFIX: &str = "key";

/// Suffix of a secret certificate file.
pub const SECRET_SUFFIX: &str = "key_secret";

/// A key could not be made, read or written.
///
/// Each message includes its cause, so [`source`](std::error::Error::source) returns none
/// (see [`Error`](crate::Error)).
#[derive(Debug)]
#[non_exhaustive]
pub enum KeyError {
    /// A file or directory could not be read or written.
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A file does not hold what it should.
    Format {
        /// The file.
        path: PathBuf,
        /// What it should hold.
        expected: &'static str,
        /// What it holds instead.
        found: String,
    },
    /// Two files of an allowlist hold the same public key.
    Duplicate {
        /// The key, in Z85.
        key: String,
        /// The names of the two files.
        names: (String, String),
    },
    /// ZeroMQ could not make a key pair.
    Generate(zmq::Error),
    /// A key was to be admitted under an empty name: its peer's messages would carry no
    /// `User-Id`, and its records would keep whatever source they claim.
    EmptyName {
        /// The key, in Z85.
        key: String,
    },
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            KeyError::Format {
                path,
                expected,
                found,
            } => write!(f, "{}: expected {expected}, found {found}", path.display()),
            KeyError::Duplicate { key, names } => write!(
                f,
                "the allowlist names one public key twice, as {:?} and {:?} ({key})",
                names.0, names.1
            ),
            KeyError::Generate(e) => write!(f, "cannot make a CURVE key pair: {e}"),
            KeyError::EmptyName { key } => write!(
                f,
                "the allowlist cannot admit key {key} under an empty name (its records are \
                 stored under its name)"
            ),
        }
    }
}

impl std::error::Error for KeyError {}

/// A CURVE public key: 32 bytes, written as 40 characters of Z85.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    /// The key from its 32 bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> PublicKey {
        PublicKey(bytes)
    }

    /// The key's 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The key from its Z85 text; `None` unless that is 40 characters of Z85.
    pub fn from_z85(text: &str) -> Option<PublicKey> {
        z85_key(text).map(PublicKey)
    }

    /// The key as Z85 text.
    pub fn to_z85(self) -> String {
        z85(&self.0)
    }

    /// Reads the public key of a certificate file (public or secret).
    pub fn load(path: impl AsRef<Path>) -> Result<PublicKey, KeyError> {
        let path = path.as_ref();
        let text = read(path)?;
        field(&text, "public-key").map(PublicKey).ok_or_else(|| {
            missing(
                path,
                "a line public-key = \"<40 characters of Z85>\"",
                &text,
            )
        })
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_z85())
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_z85())
    }
}

/// A CURVE key pair: the public key others are given, and the secret key that proves it.
/// Its `Debug` shows the public key only.
#[derive(Clone)]
pub struct KeyPair {
    public: PublicKey,
    secret: [u8; 32],
}

impl KeyPair {
    /// A new key pair from the operating system's random source.
    pub fn generate() -> Result<KeyPair, KeyError> {
        let mut pair = zmq::CurveKeyPair::new().map_err(KeyError::Generate)?;
        let made = KeyPair {
            public: PublicKey(pair.public_key),
            secret: pair.secret_key,
        };
        wipe(&mut pair.secret_key);
        Ok(made)
    }

    /// The public key.
    pub fn public(&self) -> &PublicKey {
        &self.public
    }

    /// The secret key's 32 bytes.
    pub(crate) fn secret(&self) -> &[u8; 32] {
        &self.secret
    }

    /// Reads a secret certificate file (`NAME.key_secret`), which holds both keys.
    pub fn load(path: impl AsRef<Path>) -> Result<KeyPair, KeyError> {
        let path = path.as_ref();
        let mut text = read(path)?.into_bytes();
        let lines = std::str::from_utf8(&text).unwrap_or_default();
        let pair = match (field(lines, "public-key"), field(lines, "secret-key")) {
            (Some(public), Some(secret)) => {
                let pair = KeyPair {
                    public: PublicKey(public),
                    secret,
                };
                let derived = PublicKey(public_of(&pair.secret));
                if derived == pair.public {
                    Ok(pair)
                } else {
                    Err(KeyError::Format {
                        path: path.to_owned(),
                        expected: "a public-key line that belongs to its secret-key line",
                        found: format!(
                            "public-key {}, while the secret key's public key is {derived}",
                            pair.public
                        ),
                    })
                }
            }
            (_, secret) => {
                let mut secret = secret.unwrap_or_default();
                wipe(&mut secret);
                Err(missing(
                    path,
                    "a secret certificate, with lines public-key = \"...\" and secret-key = \
                     \"...\" (the NAME.key_secret file of `ndbridge keygen`)",
                    lines,
                ))
            }
        };
        wipe(&mut text);
        pair
    }

    /// Writes `DIR/NAME.key` (the public key) and `DIR/NAME.key_secret` (both keys, mode 0600),
    /// and returns their paths. Neither file may exist already.
    pub fn save(&self, dir: impl AsRef<Path>, name: &str) -> Result<(PathBuf, PathBuf), KeyError> {
        let dir = dir.as_ref();
        let public_path = dir.join(format!("{name}.{PUBLIC_SUFFIX}"));
        let secret_path = dir.join(format!("{name}.{SECRET_SUFFIX}"));
        let public = self.public.to_z85();
        let header = |kind: &str| {
            format!(
                "#   ZeroMQ CURVE {kind} Certificate, made by ndbridge keygen\n\
                 #   {}\n\nmetadata\ncurve\n",
                if kind == "Public" {
                    "Give this file to the peers that must recognise this key."
                } else {
                    "Keep this file private: whoever holds it can act as this key."
                }
            )
        };
        let public_line = format!("    public-key = \"{public}\"\n");
        // The secret key's text is written from the one buffer it is made in, then wiped.
        let mut secret = z85(&self.secret).into_bytes();
        let written = write_new(
            &secret_path,
            0o600,
            &[
                header("**Secret**").as_bytes(),
                public_line.as_bytes(),
                b"    secret-key = \"",
                &secret,
                b"\"\n",
            ],
        );
        wipe(&mut secret);
        written?;
        write_new(
            &public_path,
            0o644,
            &[header("Public").as_bytes(), public_line.as_bytes()],
        )?;
        Ok((public_path, secret_path))
    }
}

/// The secret key is overwritten when the pair is dropped (each clone its own copy).
impl Drop for KeyPair {
    fn drop(&mut self) {
        wipe(&mut self.secret);
    }
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyPair {{ public: {}, secret: .. }}", self.public)
    }
}

/// The public keys a collector admits, each with the name its records are stored under.
#[derive(Debug, Clone, Default)]
pub struct Allowlist {
    names: HashMap<PublicKey, String>,
}

impl Allowlist {
    /// An empty allowlist: admits no one.
    pub fn new() -> Allowlist {
        Allowlist::default()
    }

    /// Reads every `NAME.key` file of `dir`; each key is admitted under its file's NAME.
    /// Other files are ignored (secret certificates among them).
    pub fn load(dir: impl AsRef<Path>) -> Result<Allowlist, KeyError> {
        let dir = dir.as_ref();
        let io = |source| KeyError::Io {
            path: dir.to_owned(),
            source,
        };
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(io)?
            .map(|entry| entry.map(|e| e.path()))
            .collect::<Result<_, _>>()
            .map_err(io)?;
        paths.sort();
        let mut list = Allowlist::new();
        for path in paths {
            if path.extension().and_then(|e| e.to_str()) != Some(PUBLIC_SUFFIX) {
                continue;
            }
            let name = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            list.insert(&name, PublicKey::load(&path)?)?;
        }
        Ok(list)
    }

    /// Admits `key` under `name`. A key already admitted is [`KeyError::Duplicate`], an empty
    /// name [`KeyError::EmptyName`].
    pub fn insert(&mut self, name: &str, key: PublicKey) -> Result<(), KeyError> {
        if name.is_empty() {
            return Err(KeyError::EmptyName { key: key.to_z85() });
        }
        if let Some(earlier) = self.names.get(&key) {
            return Err(KeyError::Duplicate {
                key: key.to_z85(),
                names: (earlier.clone(), name.to_owned()),
            });
        }
        self.names.insert(key, name.to_owned());
        Ok(())
    }

    /// The name `key` is admitted under, if it is.
    pub fn name_of(&self, key: &PublicKey) -> Option<&str> {
        self.names.get(key).map(String::as_str)
    }

    /// How many keys are admitted.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// True when no key is admitted.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// Z85 text of 32 bytes, in a string of exactly its 40 bytes (no copy left behind).
fn z85(bytes: &[u8; 32]) -> String {
    let mut text = String::with_capacity(40);
    for group in bytes.chunks_exact(4) {
        let mut value = u32::from_be_bytes([group[0], group[1], group[2], group[3]]);
        let mut digits = [0u8; 5];
        for digit in digits.iter_mut().rev() {
            *digit = Z85[(value % 85) as usize];
            value /= 85;
        }
        text.extend(digits.iter().map(|&d| char::from(d)));
    }
    text
}

/// Z85's alphabet (ZeroMQ RFC 32), a character's value its index.
const Z85: &[u8; 85] =
    b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";

/// 32 bytes from 40 characters of Z85; `None` for any other text. Decoded here rather than by
/// `zmq::z85_decode`, which ignores libzmq's refusal of a character outside the alphabet
/// (returning zeros for the rest of the key: another key, silently) and leaks a copy of the
/// text it is given (a secret key's, from a secret certificate).
fn z85_key(text: &str) -> Option<[u8; 32]> {
    let text = text.as_bytes();
    if text.len() != 40 {
        return None;
    }
    let mut key = [0u8; 32];
    for (chars, bytes) in text.chunks_exact(5).zip(key.chunks_exact_mut(4)) {
        let mut value: u64 = 0;
        for &c in chars {
            let digit = Z85.iter().position(|&z| z == c)?;
            value = value * 85 + digit as u64;
        }
        let value = u32::try_from(value).ok()?;
        bytes.copy_from_slice(&value.to_be_bytes());
    }
    Some(key)
}

/// Overwrites secret bytes with stores the compiler keeps although nothing reads them after.
fn wipe(bytes: &mut [u8]) {
    for b in bytes.iter_mut() {
        // SAFETY: `b` is a valid, aligned, exclusive reference to one byte.
        unsafe { std::ptr::write_volatile(b, 0) };
    }
    std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
}

/// The key on a line `NAME = "Z85"` of a certificate (quotes optional, as pyzmq reads them).
fn field(text: &str, name: &str) -> Option<[u8; 32]> {
    text.lines().find_map(|line| {
        let (key, value) = line.trim().split_once('=')?;
        if key.trim() != name {
            return None;
        }
        z85_key(value.trim().trim_matches(|c| c == '"' || c == '\''))
    })
}

fn read(path: &Path) -> Result<String, KeyError> {
    std::fs::read_to_string(path).map_err(|source| KeyError::Io {
        path: path.to_owned(),
        source,
    })
}

fn missing(path: &Path, expected: &'static str, text: &str) -> KeyError {
    let found = if text.trim().is_empty() {
        "an empty file".to_owned()
    } else {
        format!("{} lines without it", text.lines().count())
    };
    KeyError::Format {
        path: path.to_owned(),
        expected,
        found,
    }
}

fn write_new(path: &Path, mode: u32, parts: &[&[u8]]) -> Result<(), KeyError> {
    let io = |source| KeyError::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io)?;
    for part in parts {
        file.write_all(part).map_err(io)?;
    }
    file.sync_all().map_err(io)
}

/// The public key of a secret key (curve25519 scalar multiplication of the base point).
pub(crate) fn public_of(secret: &[u8; 32]) -> [u8; 32] {
    let mut public = [0u8; 32];
    // SAFETY: both pointers are to arrays of 32 bytes (crypto_scalarmult_BYTES and
    // crypto_scalarmult_SCALARBYTES), the output borrowed mutably, the input shared.
    unsafe { libsodium_sys::crypto_scalarmult_base(public.as_mut_ptr(), secret.as_ptr()) };
    public
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn zeromq_is_built_with_curve() {
        assert_eq!(zmq::has("curve"), Some(true));
    }

    #[test]
    fn a_saved_pair_loads_back_and_the_secret_file_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let pair = KeyPair::generate().unwrap();
        let (public_path, secret_path) = pair.save(dir.path(), "worker-1").unwrap();
        assert_eq!(public_path, dir.path().join("worker-1.key"));
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&secret_path), 0o600);
        assert_eq!(PublicKey::load(&public_path).unwrap(), *pair.public());
        let loaded = KeyPair::load(&secret_path).unwrap();
        assert_eq!(loaded.public(), pair.public());
        assert_eq!(loaded.secret(), pair.secret());
        assert!(!format!("{loaded:?}").contains(&z85(pair.secret())));
        // A second save does not overwrite a key.
        assert!(matches!(
            pair.save(dir.path(), "worker-1"),
            Err(KeyError::Io { .. })
        ));
        // The public file is no secret certificate.
        let error = KeyPair::load(&public_path).unwrap_err().to_string();
        assert!(error.contains("expected a secret certificate"), "{error}");
    }

    #[test]
    fn pyzmq_certificates_are_read() {
        let dir = tempfile::tempdir().unwrap();
        // As pyzmq's zmq.auth.create_certificates writes them (single quotes accepted too).
        let text = "#   ****  Generated on 2026-12-03 by pyzmq  ****\n\
                    #   ZeroMQ CURVE **Secret** Certificate\n\nmetadata\ncurve\n    \
                    public-key = \"rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7\"\n    \
                    secret-key = 'JTKVSB%%)wK0E.X)V>+}o?pNmC{O&4W4b!Ni{Lh6'\n";
        let path = dir.path().join("server.key_secret");
        std::fs::write(&path, text).unwrap();
        let pair = KeyPair::load(&path).unwrap();
        // The key pair of ZeroMQ's RFC 26 test vectors.
        assert_eq!(
            pair.public().to_z85(),
            "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"
        );
        assert_eq!(
            z85(pair.secret()),
            "JTKVSB%%)wK0E.X)V>+}o?pNmC{O&4W4b!Ni{Lh6"
        );
    }

    #[test]
    fn a_secret_certificate_whose_public_key_is_another_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (ours, theirs) = (KeyPair::generate().unwrap(), KeyPair::generate().unwrap());
        let (_, secret_path) = ours.save(dir.path(), "worker-1").unwrap();
        let text = std::fs::read_to_string(&secret_path).unwrap();
        let edited = text.replace(&ours.public().to_z85(), &theirs.public().to_z85());
        assert_ne!(text, edited);
        std::fs::write(&secret_path, edited).unwrap();
        let error = KeyPair::load(&secret_path).unwrap_err().to_string();
        assert!(
            error.contains("belongs to its secret-key line")
                && error.contains(&theirs.public().to_z85())
                && error.contains(&ours.public().to_z85()),
            "{error}"
        );
    }

    #[test]
    fn z85_outside_the_alphabet_or_over_32_bits_is_no_key() {
        for _ in 0..64 {
            let pair = KeyPair::generate().unwrap();
            let text = pair.public().to_z85();
            // As libzmq encodes and decodes.
            assert_eq!(text, zmq::z85_encode(pair.public().as_bytes()).unwrap());
            assert_eq!(PublicKey::from_z85(&text), Some(*pair.public()));
            assert_eq!(
                &zmq::z85_decode(&text).unwrap()[..],
                pair.public().as_bytes()
            );
        }
        let valid = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7";
        assert!(PublicKey::from_z85(valid).is_some());
        // One character outside Z85 anywhere: no key (zmq::z85_decode gave zeros from there on,
        // another key).
        for (at, c) in [(0, ' '), (5, '"'), (17, '~'), (39, ',')] {
            let mut typo = valid.to_owned();
            typo.replace_range(at..at + 1, &c.to_string());
            assert_eq!(PublicKey::from_z85(&typo), None, "{typo}");
        }
        // Five characters of a value above 0xffffffff, and other lengths.
        assert_eq!(PublicKey::from_z85(&"#".repeat(40)), None);
        assert_eq!(PublicKey::from_z85(&valid[..35]), None);
        assert_eq!(PublicKey::from_z85(&format!("{valid}00000")), None);
        assert_eq!(PublicKey::from_z85("é".repeat(20).as_str()), None);
        // A secret certificate whose secret key has a typo is refused, not read as another key.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("typo.key_secret");
        std::fs::write(
            &path,
            format!("public-key = \"{valid}\"\nsecret-key = \"JTKVSB%%)wK0E.X)V>+}}o?pNmC{{O&4W4b!Ni{{Lh \"\n"),
        )
        .unwrap();
        assert!(matches!(KeyPair::load(&path), Err(KeyError::Format { .. })));
    }

    #[test]
    fn a_dropped_key_pair_leaves_no_secret_behind() {
        let mut pair = std::mem::ManuallyDrop::new(KeyPair::generate().unwrap());
        let public = *pair.public();
        assert_ne!(pair.secret, [0u8; 32]);
        let pair: *mut KeyPair = &mut *pair;
        // SAFETY: `pair` points to a live KeyPair that nothing drops otherwise (ManuallyDrop);
        // after the drop its storage is still there, and its fields are plain bytes, so reading
        // them reads what the drop left.
        let (secret, after) = unsafe {
            std::ptr::drop_in_place(pair);
            (
                std::ptr::addr_of!((*pair).secret).read(),
                std::ptr::addr_of!((*pair).public).read(),
            )
        };
        assert_eq!(secret, [0u8; 32]);
        assert_eq!(after, public);
    }

    #[test]
    fn an_allowlist_names_keys_by_file_and_refuses_a_key_twice() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (KeyPair::generate().unwrap(), KeyPair::generate().unwrap());
        a.save(dir.path(), "alpha").unwrap();
        b.save(dir.path(), "beta").unwrap();
        std::fs::write(dir.path().join("README"), "not a key").unwrap();
        let list = Allowlist::load(dir.path()).unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list.name_of(a.public()), Some("alpha"));
        assert_eq!(list.name_of(b.public()), Some("beta"));
        let stranger = KeyPair::generate().unwrap();
        assert_eq!(list.name_of(stranger.public()), None);
        // No key is admitted without a name: the collector would have no User-Id to store its
        // records under, and would keep the source they claim.
        let mut named = list.clone();
        let error = named
            .insert("", *stranger.public())
            .unwrap_err()
            .to_string();
        assert!(error.contains("under an empty name"), "{error}");
        assert_eq!(named.name_of(stranger.public()), None);
        std::fs::copy(dir.path().join("alpha.key"), dir.path().join("gamma.key")).unwrap();
        let error = Allowlist::load(dir.path()).unwrap_err().to_string();
        assert!(error.contains("\"alpha\" and \"gamma\""), "{error}");
        std::fs::write(dir.path().join("gamma.key"), "public-key = \"short\"\n").unwrap();
        let error = Allowlist::load(dir.path()).unwrap_err().to_string();
        assert!(
            error.contains("gamma.key: expected a line public-key"),
            "{error}"
        );
    }
}
