//! The libsodium calls of the forward sink's CURVE mechanism, each behind a safe function whose
//! argument types fix the key and nonce lengths and which checks every buffer length before the
//! call: a wrong length is an error, never a call.

use std::sync::OnceLock;

use libsodium_sys as ffi;

/// Bytes of a public or secret key, and of a precomputed key.
pub(super) const KEY_BYTES: usize = 32;

/// Bytes of a nonce.
pub(super) const NONCE_BYTES: usize = 24;

/// Bytes of the authenticator a box adds to its plaintext.
pub(super) const MAC_BYTES: usize = 16;

// The constants above are libsodium's for crypto_box (curve25519xsalsa20poly1305) and
// crypto_secretbox (xsalsa20poly1305); a libsodium that disagrees fails the first test.

/// A buffer had the wrong length for a call, or a box did not open (forged, cut or for another
/// key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Failed;

/// A secret key (long-term, short-term, precomputed or symmetric), wiped when dropped. Its
/// `Debug` shows nothing of it.
pub(super) struct Secret([u8; KEY_BYTES]);

impl Secret {
    pub(super) fn from_bytes(bytes: [u8; KEY_BYTES]) -> Secret {
        Secret(bytes)
    }

    /// A key from libsodium's random source (a cookie key).
    pub(super) fn random() -> Secret {
        Secret(random())
    }

    pub(super) fn bytes(&self) -> &[u8; KEY_BYTES] {
        &self.0
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        wipe(&mut self.0);
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Overwrites secret bytes (sodium_memzero: a store the compiler cannot drop).
pub(super) fn wipe(bytes: &mut [u8]) {
    // SAFETY: the pointer and length describe `bytes`, borrowed mutably for the call.
    unsafe { ffi::sodium_memzero(bytes.as_mut_ptr().cast(), bytes.len()) };
}

/// Starts libsodium once per process; false when it cannot start (no random source).
pub(super) fn init() -> bool {
    static STARTED: OnceLock<bool> = OnceLock::new();
    // SAFETY: sodium_init takes no arguments, may be called from any thread and more than once
    // (it returns 1 when libsodium had started already).
    *STARTED.get_or_init(|| unsafe { ffi::sodium_init() } >= 0)
}

/// `N` bytes from libsodium's random source.
pub(super) fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    // SAFETY: the pointer and length describe `bytes`, borrowed mutably for the call.
    unsafe { ffi::randombytes_buf(bytes.as_mut_ptr().cast(), N) };
    bytes
}

/// A new key pair: (public, secret).
pub(super) fn keypair() -> ([u8; KEY_BYTES], Secret) {
    let mut public = [0u8; KEY_BYTES];
    let mut secret = Secret([0u8; KEY_BYTES]);
    // SAFETY: crypto_box_keypair writes crypto_box_PUBLICKEYBYTES (32) bytes to its first
    // argument and crypto_box_SECRETKEYBYTES (32) to its second: both are distinct arrays of
    // 32 bytes borrowed mutably for the call.
    let rc = unsafe { ffi::crypto_box_keypair(public.as_mut_ptr(), secret.0.as_mut_ptr()) };
    debug_assert_eq!(rc, 0);
    (public, secret)
}

/// Boxes `plain` for `their_public` from `our_secret` into `out`, which must be `MAC_BYTES`
/// longer (crypto_box_easy).
pub(super) fn seal(
    out: &mut [u8],
    plain: &[u8],
    nonce: &[u8; NONCE_BYTES],
    their_public: &[u8; KEY_BYTES],
    our_secret: &Secret,
) -> Result<(), Failed> {
    if out.len() != plain.len() + MAC_BYTES {
        return Err(Failed);
    }
    // SAFETY: `out` holds exactly plain.len() + crypto_box_MACBYTES bytes, what
    // crypto_box_easy writes; `plain` is read for its own length; the nonce and both keys are
    // arrays of the lengths libsodium reads (24 and 32). `out` is borrowed mutably, so it
    // overlaps none of the inputs.
    let rc = unsafe {
        ffi::crypto_box_easy(
            out.as_mut_ptr(),
            plain.as_ptr(),
            plain.len() as u64,
            nonce.as_ptr(),
            their_public.as_ptr(),
            our_secret.0.as_ptr(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(Failed)
    }
}

/// Opens `boxed` from `their_public` for `our_secret` into `out`, which must be `MAC_BYTES`
/// shorter (crypto_box_open_easy).
pub(super) fn open(
    out: &mut [u8],
    boxed: &[u8],
    nonce: &[u8; NONCE_BYTES],
    their_public: &[u8; KEY_BYTES],
    our_secret: &Secret,
) -> Result<(), Failed> {
    if boxed.len() < MAC_BYTES || out.len() != boxed.len() - MAC_BYTES {
        return Err(Failed);
    }
    // SAFETY: `boxed` holds at least crypto_box_MACBYTES bytes and is read for its length;
    // `out` holds exactly boxed.len() - crypto_box_MACBYTES bytes, what crypto_box_open_easy
    // writes; the nonce and keys are arrays of 24 and 32 bytes. `out` is borrowed mutably, so
    // it overlaps none of the inputs.
    let rc = unsafe {
        ffi::crypto_box_open_easy(
            out.as_mut_ptr(),
            boxed.as_ptr(),
            boxed.len() as u64,
            nonce.as_ptr(),
            their_public.as_ptr(),
            our_secret.0.as_ptr(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(Failed)
    }
}

/// The key shared by `their_public` and `our_secret`, for [`seal_in_place`] and
/// [`open_precomputed`] (crypto_box_beforenm).
pub(super) fn precompute(
    their_public: &[u8; KEY_BYTES],
    our_secret: &Secret,
) -> Result<Secret, Failed> {
    let mut key = Secret([0u8; KEY_BYTES]);
    // SAFETY: crypto_box_beforenm writes crypto_box_BEFORENMBYTES (32) bytes to `key`, an array
    // of 32 bytes borrowed mutably, and reads 32 bytes of each key.
    let rc = unsafe {
        ffi::crypto_box_beforenm(
            key.0.as_mut_ptr(),
            their_public.as_ptr(),
            our_secret.0.as_ptr(),
        )
    };
    // A public key of low order (all zeros, say) gives no shared key.
    if rc == 0 {
        Ok(key)
    } else {
        Err(Failed)
    }
}

/// Boxes `buf[MAC_BYTES..]` in place with a precomputed key: the authenticator lands in
/// `buf[..MAC_BYTES]`, the ciphertext over the plaintext (crypto_box_easy_afternm).
pub(super) fn seal_in_place(
    buf: &mut [u8],
    nonce: &[u8; NONCE_BYTES],
    key: &Secret,
) -> Result<(), Failed> {
    if buf.len() < MAC_BYTES {
        return Err(Failed);
    }
    let plain_len = buf.len() - MAC_BYTES;
    let start = buf.as_mut_ptr();
    // SAFETY: `buf` has MAC_BYTES + plain_len bytes and is borrowed mutably for the call, and
    // both pointers derive from the one pointer to it. crypto_box_easy_afternm reads plain_len
    // bytes at start + MAC_BYTES and writes the ciphertext there (the same address: libsodium
    // encrypts in place when c + crypto_box_MACBYTES == m, as its documentation allows) and the
    // MAC_BYTES of the authenticator at start, which the plaintext does not overlap.
    let rc = unsafe {
        ffi::crypto_box_easy_afternm(
            start,
            start.add(MAC_BYTES),
            plain_len as u64,
            nonce.as_ptr(),
            key.0.as_ptr(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(Failed)
    }
}

/// Opens `boxed` with a precomputed key into `out`, which must be `MAC_BYTES` shorter
/// (crypto_box_open_easy_afternm).
pub(super) fn open_precomputed(
    out: &mut [u8],
    boxed: &[u8],
    nonce: &[u8; NONCE_BYTES],
    key: &Secret,
) -> Result<(), Failed> {
    if boxed.len() < MAC_BYTES || out.len() != boxed.len() - MAC_BYTES {
        return Err(Failed);
    }
    // SAFETY: `boxed` holds at least crypto_box_MACBYTES bytes and is read for its length;
    // `out` holds exactly boxed.len() - crypto_box_MACBYTES bytes, what the call writes; the
    // nonce and key are arrays of 24 and 32 bytes; `out` is borrowed mutably, so it overlaps
    // none of the inputs.
    let rc = unsafe {
        ffi::crypto_box_open_easy_afternm(
            out.as_mut_ptr(),
            boxed.as_ptr(),
            boxed.len() as u64,
            nonce.as_ptr(),
            key.0.as_ptr(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(Failed)
    }
}

/// Boxes `plain` with a symmetric key into `out`, which must be `MAC_BYTES` longer
/// (crypto_secretbox_easy).
pub(super) fn secretbox_seal(
    out: &mut [u8],
    plain: &[u8],
    nonce: &[u8; NONCE_BYTES],
    key: &Secret,
) -> Result<(), Failed> {
    if out.len() != plain.len() + MAC_BYTES {
        return Err(Failed);
    }
    // SAFETY: `out` holds exactly plain.len() + crypto_secretbox_MACBYTES bytes, what the call
    // writes; `plain` is read for its length; the nonce and key are arrays of
    // crypto_secretbox_NONCEBYTES (24) and crypto_secretbox_KEYBYTES (32) bytes; `out` is
    // borrowed mutably, so it overlaps none of the inputs.
    let rc = unsafe {
        ffi::crypto_secretbox_easy(
            out.as_mut_ptr(),
            plain.as_ptr(),
            plain.len() as u64,
            nonce.as_ptr(),
            key.0.as_ptr(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(Failed)
    }
}

/// Opens a symmetric box into `out`, which must be `MAC_BYTES` shorter
/// (crypto_secretbox_open_easy).
pub(super) fn secretbox_open(
    out: &mut [u8],
    boxed: &[u8],
    nonce: &[u8; NONCE_BYTES],
    key: &Secret,
) -> Result<(), Failed> {
    if boxed.len() < MAC_BYTES || out.len() != boxed.len() - MAC_BYTES {
        return Err(Failed);
    }
    // SAFETY: `boxed` holds at least crypto_secretbox_MACBYTES bytes and is read for its
    // length; `out` holds exactly boxed.len() - crypto_secretbox_MACBYTES bytes, what the call
    // writes; the nonce and key are arrays of 24 and 32 bytes; `out` is borrowed mutably, so
    // it overlaps none of the inputs.
    let rc = unsafe {
        ffi::crypto_secretbox_open_easy(
            out.as_mut_ptr(),
            boxed.as_ptr(),
            boxed.len() as u64,
            nonce.as_ptr(),
            key.0.as_ptr(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(Failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_are_libsodiums() {
        assert!(init());
        // SAFETY: these functions take no arguments and return constants.
        unsafe {
            assert_eq!(ffi::crypto_box_publickeybytes(), KEY_BYTES);
            assert_eq!(ffi::crypto_box_secretkeybytes(), KEY_BYTES);
            assert_eq!(ffi::crypto_box_beforenmbytes(), KEY_BYTES);
            assert_eq!(ffi::crypto_box_noncebytes(), NONCE_BYTES);
            assert_eq!(ffi::crypto_box_macbytes(), MAC_BYTES);
            assert_eq!(ffi::crypto_secretbox_keybytes(), KEY_BYTES);
            assert_eq!(ffi::crypto_secretbox_noncebytes(), NONCE_BYTES);
            assert_eq!(ffi::crypto_secretbox_macbytes(), MAC_BYTES);
        }
    }

    #[test]
    fn boxes_open_only_with_the_right_keys_and_wrong_lengths_are_refused() {
        assert!(init());
        let (a_public, a_secret) = keypair();
        let (b_public, b_secret) = keypair();
        assert_eq!(crate::keys::public_of(a_secret.bytes()), a_public);
        let nonce = random::<NONCE_BYTES>();
        let plain = b"the quick brown fox";
        let mut boxed = vec![0u8; plain.len() + MAC_BYTES];
        seal(&mut boxed, plain, &nonce, &b_public, &a_secret).unwrap();
        let mut opened = vec![0u8; plain.len()];
        open(&mut opened, &boxed, &nonce, &a_public, &b_secret).unwrap();
        assert_eq!(&opened, plain);
        // The precomputed key of either side opens it too, in place or not.
        let shared = precompute(&a_public, &b_secret).unwrap();
        open_precomputed(&mut opened, &boxed, &nonce, &shared).unwrap();
        assert_eq!(&opened, plain);
        let mut in_place = vec![0u8; MAC_BYTES];
        in_place.extend_from_slice(plain);
        seal_in_place(
            &mut in_place,
            &nonce,
            &precompute(&b_public, &a_secret).unwrap(),
        )
        .unwrap();
        assert_eq!(in_place, boxed);
        // A flipped bit, another nonce or another key: no.
        boxed[3] ^= 1;
        assert_eq!(
            open_precomputed(&mut opened, &boxed, &nonce, &shared),
            Err(Failed)
        );
        boxed[3] ^= 1;
        let other = random::<NONCE_BYTES>();
        assert_eq!(
            open_precomputed(&mut opened, &boxed, &other, &shared),
            Err(Failed)
        );
        assert_eq!(
            open(&mut opened, &boxed, &nonce, &b_public, &b_secret),
            Err(Failed)
        );
        // Lengths that do not fit are refused before any call.
        assert_eq!(
            open(&mut opened[1..], &boxed, &nonce, &a_public, &b_secret),
            Err(Failed)
        );
        assert_eq!(
            open_precomputed(&mut [], &boxed[..15], &nonce, &shared),
            Err(Failed)
        );
        assert_eq!(
            seal(&mut boxed[1..], plain, &nonce, &b_public, &a_secret),
            Err(Failed)
        );
        assert_eq!(seal_in_place(&mut [0u8; 15], &nonce, &shared), Err(Failed));
        let key = Secret::random();
        let mut sealed = [0u8; 4 + MAC_BYTES];
        secretbox_seal(&mut sealed, b"abcd", &nonce, &key).unwrap();
        let mut back = [0u8; 4];
        secretbox_open(&mut back, &sealed, &nonce, &key).unwrap();
        assert_eq!(&back, b"abcd");
        assert_eq!(
            secretbox_open(&mut back, &sealed, &nonce, &Secret::random()),
            Err(Failed)
        );
        // A low-order public key gives no shared key.
        assert_eq!(precompute(&[0u8; KEY_BYTES], &a_secret).err(), Some(Failed));
    }
}
