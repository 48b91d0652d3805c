//! The layout of one zstd frame, read from its frame header and block headers only (RFC 8878,
//! sections 3.1.1.1 to 3.1.1.3), without decompressing: where it ends, what it declares, and the
//! most it can decode to. A frame that declares more than its blocks can hold is refused before
//! anything is allocated for it.

/// The zstd frame magic number.
const MAGIC: u32 = 0xFD2F_B528;

/// The largest block, compressed or decoded (RFC 8878, `Block_Maximum_Size`).
pub(crate) const BLOCK_MAX: u64 = 128 << 10;

/// What the headers of one zstd frame say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrameLayout {
    /// Bytes of the frame header (magic number included).
    pub(crate) header_len: usize,
    /// The decoded size the frame header declares, if it declares one.
    pub(crate) content_size: Option<u64>,
    /// The window size: how far back a match may reach.
    pub(crate) window: u64,
    /// The frame carries a content checksum.
    pub(crate) checksum: bool,
    /// The frame names a dictionary.
    pub(crate) dictionary: bool,
    /// Where the frame ends (after its checksum, if any).
    pub(crate) end: usize,
    /// The most bytes the frame's blocks can decode to: raw and RLE blocks their size,
    /// compressed blocks the block maximum each.
    pub(crate) capacity: u64,
}

/// Why a buffer is not one readable zstd frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LayoutError {
    /// The buffer does not start with the zstd magic number.
    NotZstd,
    /// A reserved bit or block type is set.
    Reserved,
    /// The frame or one of its blocks runs past the end of the buffer, at this offset.
    Truncated(usize),
    /// A block is larger than the block maximum.
    BlockTooLarge(u64),
}

impl std::fmt::Display for LayoutError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LayoutError::NotZstd => write!(f, "not a zstd frame"),
            LayoutError::Reserved => write!(f, "a reserved bit or block type is set"),
            LayoutError::Truncated(at) => write!(f, "frame truncated at byte {at}"),
            LayoutError::BlockTooLarge(size) => {
                write!(f, "block of {size} bytes, larger than the block maximum")
            }
        }
    }
}

/// Reads the layout of the zstd frame at the start of `buf`.
pub(crate) fn layout(buf: &[u8]) -> Result<FrameLayout, LayoutError> {
    let magic = buf.get(..4).ok_or(LayoutError::NotZstd)?;
    if u32::from_le_bytes([magic[0], magic[1], magic[2], magic[3]]) != MAGIC {
        return Err(LayoutError::NotZstd);
    }
    let descriptor = *buf.get(4).ok_or(LayoutError::Truncated(4))?;
    if descriptor & 0x08 != 0 {
        return Err(LayoutError::Reserved);
    }
    let single_segment = descriptor & 0x20 != 0;
    let window_len = usize::from(!single_segment);
    let dict_len = [0, 1, 2, 4][usize::from(descriptor & 3)];
    let size_len = [usize::from(single_segment), 2, 4, 8][usize::from(descriptor >> 6)];
    let header_len = 5 + window_len + dict_len + size_len;
    let header = buf
        .get(..header_len)
        .ok_or(LayoutError::Truncated(buf.len()))?;
    let size_bytes = &header[header_len - size_len..];
    let content_size = match size_len {
        0 => None,
        2 => Some(u64::from(u16::from_le_bytes([size_bytes[0], size_bytes[1]])) + 256),
        _ => Some(
            size_bytes
                .iter()
                .rev()
                .fold(0u64, |v, &b| v << 8 | u64::from(b)),
        ),
    };
    let window = if single_segment {
        content_size.unwrap_or(0)
    } else {
        let descriptor = header[5];
        let base = 1u64 << (10 + u32::from(descriptor >> 3));
        base + (base / 8) * u64::from(descriptor & 7)
    };
    let checksum = descriptor & 0x04 != 0;
    let (blocks_end, capacity) = walk_blocks(buf, header_len)?;
    let end = blocks_end + if checksum { 4 } else { 0 };
    if end > buf.len() {
        return Err(LayoutError::Truncated(buf.len()));
    }
    Ok(FrameLayout {
        header_len,
        content_size,
        window,
        checksum,
        dictionary: dict_len != 0,
        end,
        capacity,
    })
}

/// Walks the block headers from `pos` to the last block: where the blocks end and the most they
/// can decode to. A compressed block is counted at 128 KiB whatever the window: zstd's decoder
/// bounds a block's compressed size by the window, not what it decodes to.
fn walk_blocks(buf: &[u8], mut pos: usize) -> Result<(usize, u64), LayoutError> {
    let mut capacity = 0u64;
    loop {
        let header = buf
            .get(pos..pos + 3)
            .ok_or(LayoutError::Truncated(buf.len()))?;
        let header = u32::from(header[0]) | u32::from(header[1]) << 8 | u32::from(header[2]) << 16;
        pos += 3;
        let size = u64::from(header >> 3);
        let (stored, decoded) = match (header >> 1) & 3 {
            0 => (size, size),
            1 => (1, size),
            2 => (size, BLOCK_MAX),
            _ => return Err(LayoutError::Reserved),
        };
        if size > BLOCK_MAX {
            return Err(LayoutError::BlockTooLarge(size));
        }
        pos = usize::try_from(stored)
            .ok()
            .and_then(|stored| pos.checked_add(stored))
            .filter(|&end| end <= buf.len())
            .ok_or(LayoutError::Truncated(buf.len()))?;
        capacity += decoded;
        if header & 1 != 0 {
            return Ok((pos, capacity));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(data: &[u8], level: i32, checksum: bool) -> Vec<u8> {
        let mut c = zstd::bulk::Compressor::new(level).unwrap();
        c.include_checksum(checksum).unwrap();
        c.compress(data).unwrap()
    }

    #[test]
    fn agrees_with_zstd_on_size_and_extent() {
        let data: Vec<u8> = (0..1_000_000u32)
            .map(|i| (i.wrapping_mul(i) >> 7) as u8)
            .collect();
        for checksum in [false, true] {
            for level in [-5, 1, 3, 19] {
                let f = frame(&data, level, checksum);
                let layout = layout(&f).unwrap();
                assert_eq!(layout.end, f.len());
                assert_eq!(layout.content_size, Some(data.len() as u64));
                assert_eq!(layout.checksum, checksum);
                assert!(layout.capacity >= data.len() as u64);
                let declared = zstd::zstd_safe::get_frame_content_size(&f).unwrap();
                assert_eq!(layout.content_size, declared);
            }
        }
    }

    #[test]
    fn the_two_byte_content_size_is_offset_by_256() {
        // 300 bytes: zstd writes the size in two bytes, as 300 - 256.
        let f = frame(&[7u8; 300], 1, false);
        assert_eq!(layout(&f).unwrap().content_size, Some(300));
    }

    /// A frame header declaring `declared` bytes (single segment, 8-byte size), then `blocks`.
    fn handmade(declared: u64, blocks: &[u8]) -> Vec<u8> {
        let mut f = MAGIC.to_le_bytes().to_vec();
        f.push(0xE0);
        f.extend(declared.to_le_bytes());
        f.extend(blocks);
        f
    }

    #[test]
    fn capacity_counts_each_block_kind() {
        // RLE of 1000 bytes (last = 0), raw of 2 bytes, compressed of 5 bytes (last).
        let rle = [(1000u32 << 3 | 1 << 1).to_le_bytes()[..3].to_vec(), vec![9]].concat();
        let raw = [(2u32 << 3).to_le_bytes()[..3].to_vec(), vec![1, 2]].concat();
        let comp = [
            (5u32 << 3 | 2 << 1 | 1).to_le_bytes()[..3].to_vec(),
            vec![0; 5],
        ]
        .concat();
        let f = handmade(4 << 30, &[rle, raw, comp].concat());
        let layout = layout(&f).unwrap();
        assert_eq!(layout.end, f.len());
        assert_eq!(layout.capacity, 1000 + 2 + BLOCK_MAX);
        assert_eq!(layout.content_size, Some(4 << 30));
    }

    #[test]
    fn damaged_frames_are_refused_with_where() {
        let f = frame(&[1u8; 5000], 1, false);
        assert_eq!(
            layout(&f[..f.len() - 1]),
            Err(LayoutError::Truncated(f.len() - 1))
        );
        assert_eq!(layout(b"nope"), Err(LayoutError::NotZstd));
        let reserved_block = handmade(10, &(3u32 << 1 | 1).to_le_bytes()[..3]);
        assert_eq!(layout(&reserved_block), Err(LayoutError::Reserved));
        let huge = handmade(10, &((BLOCK_MAX as u32 + 1) << 3 | 1).to_le_bytes()[..3]);
        assert_eq!(
            layout(&huge),
            Err(LayoutError::BlockTooLarge(BLOCK_MAX + 1))
        );
    }
}
