//! Any bytes through the forward sink's CURVE server (`ForwardSink::fuzz_curve`): as HELLO,
//! INITIATE and MESSAGE commands without a client; XORed into a real client's HELLO and
//! INITIATE; and as messages boxed by a client after a real handshake. Never a panic; a changed
//! or replayed command never passes; an unchanged one always does, and opens to what was sent.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: &[u8]| {
    ndbridge::collector::ForwardSink::fuzz_curve(input);
});
