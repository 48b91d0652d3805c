//! Shuffled zstd frames built block by block (raw, RLE and compressed blocks of every size,
//! empty blocks between them, matches across blocks, past the window and before the frame,
//! lying content sizes and checksums): ndbridge decodes each exactly as zstd's reference decoder
//! followed by the plain unshuffle, or refuses it when the reference decoder does. The cargo
//! fuzz target `block_frames` runs the same generator and check without end.

use proptest::prelude::*;

use crate::common::block_frames::{build, check};

/// Frames from the committed fuzz corpus (`fuzz/corpus/block_frames`), among them the frames
/// that once made the block decoder read history from another buffer.
#[test]
fn committed_corpus_decodes_as_the_reference_does() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/block_frames");
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    assert!(entries.len() >= 4, "the corpus holds the regression frames");
    let mut valid = 0;
    for path in &entries {
        let input = std::fs::read(path).unwrap();
        if check(&build(&input)) {
            valid += 1;
        }
    }
    assert!(valid > 0, "some corpus frames are valid zstd frames");
}

proptest! {
    #![proptest_config(crate::common::proptest_config(3000))]

    /// Any input bytes make a frame that decodes as the reference decoder reads it.
    #[test]
    fn block_built_frames_decode_as_the_reference_does(
        input in proptest::collection::vec(any::<u8>(), 0..160)
    ) {
        check(&build(&input));
    }
}
