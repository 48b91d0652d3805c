//! Decoder limits: the most a message may claim before anything is allocated for it.

/// Bounds a decoder enforces on every message, before it allocates anything a header claims.
///
/// The defaults suit arrays of simulation fields on one machine; raise them for larger arrays.
///
/// ```
/// use ndbridge::wire::Limits;
///
/// let limits = Limits::default().max_array_bytes(16 << 30);
/// assert_eq!(limits.max_header_bytes, 1 << 20);
/// assert_eq!(limits.max_array_bytes, 16 << 30);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest header frame, in bytes. Default 1 MiB.
    pub max_header_bytes: usize,
    /// Most arrays in one message. Default 4096.
    pub max_arrays: usize,
    /// Largest decoded array (`nbytes`), in bytes. Default 4 GiB.
    pub max_array_bytes: u64,
    /// Most dimensions of one array. Default 64 (numpy's own limit).
    pub max_ndim: usize,
    /// Largest total of decoded bytes (`nbytes` summed over the arrays) of one message. Default
    /// 4 GiB. Bounds what one message can make a decoder allocate, however small its frames.
    pub max_message_bytes: u64,
    /// Largest ratio of an array's decoded size to its zstd frame's size, for arrays larger
    /// than [`EXPANSION_FREE_BYTES`]. Default 1024: a 128 KB frame may decode to 128 MiB, not to
    /// 4 GiB. Smooth fields compress far less than that; an array of one repeated value (a field
    /// of zeros) compresses about 30,000 to 1, so raise this (`u64::MAX`: no limit) to receive
    /// constant arrays larger than 64 MiB compressed.
    pub max_expansion: u64,
}

/// Arrays of at most this many decoded bytes (64 MiB) are not held to
/// [`Limits::max_expansion`].
pub const EXPANSION_FREE_BYTES: u64 = 64 << 20;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: 1 << 20,
            max_arrays: 4096,
            max_array_bytes: 4 << 30,
            max_ndim: 64,
            max_message_bytes: 4 << 30,
            max_expansion: 1024,
        }
    }
}

impl Limits {
    /// Sets the largest header frame, in bytes.
    pub fn max_header_bytes(mut self, bytes: usize) -> Self {
        self.max_header_bytes = bytes;
        self
    }

    /// Sets the most arrays per message.
    pub fn max_arrays(mut self, count: usize) -> Self {
        self.max_arrays = count;
        self
    }

    /// Sets the largest decoded array, in bytes.
    pub fn max_array_bytes(mut self, bytes: u64) -> Self {
        self.max_array_bytes = bytes;
        self
    }

    /// Sets the largest total of decoded bytes per message.
    pub fn max_message_bytes(mut self, bytes: u64) -> Self {
        self.max_message_bytes = bytes;
        self
    }

    /// Sets the largest decoded/compressed size ratio of an array larger than 64 MiB.
    ///
    /// ```
    /// use ndbridge::wire::Limits;
    ///
    /// let unlimited = Limits::default().max_expansion(u64::MAX);
    /// assert_eq!(unlimited.max_expansion, u64::MAX);
    /// ```
    pub fn max_expansion(mut self, ratio: u64) -> Self {
        self.max_expansion = ratio;
        self
    }

    /// The most bytes a message within these limits can take on the wire, each frame counted
    /// with 64 bytes besides its data (what a receiving socket holds per frame): the header, the
    /// most decoded bytes of a message, zstd's worst case on top (1/128, and 256 bytes per
    /// frame), and a topic frame. A receiver refuses larger messages before reading them.
    ///
    /// ```
    /// use ndbridge::wire::Limits;
    ///
    /// let small = Limits::default().max_arrays(2).max_message_bytes(1 << 20);
    /// assert_eq!(small.max_wire_bytes(), (1 << 20) + (1 << 20) + (1 << 13) + 5 * (256 + 64));
    /// ```
    pub fn max_wire_bytes(&self) -> u64 {
        let decoded = self
            .max_message_bytes
            .min(self.max_array_bytes.saturating_mul(self.max_arrays as u64));
        let frames = (self.max_arrays as u64).saturating_add(3);
        (self.max_header_bytes as u64)
            .saturating_add(decoded)
            .saturating_add(decoded / 128)
            .saturating_add(frames.saturating_mul(256 + 64))
    }

    /// Sets the most dimensions per array.
    pub fn max_ndim(mut self, ndim: usize) -> Self {
        self.max_ndim = ndim;
        self
    }
}
