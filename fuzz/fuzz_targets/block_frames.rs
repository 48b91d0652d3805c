//! Shuffled zstd frames built block by block from the fuzzer's bytes: ndbridge must decode each
//! exactly as zstd's reference decoder and the plain unshuffle do, or refuse it when the
//! reference decoder does (the generator and the check are `tests/common/block_frames.rs`,
//! which the test suite also runs as a proptest).
#![no_main]

#[path = "../../tests/common/block_frames.rs"]
mod block_frames;

libfuzzer_sys::fuzz_target!(|input: &[u8]| {
    block_frames::check(&block_frames::build(input));
});
