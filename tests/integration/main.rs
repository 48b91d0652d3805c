//! ndbridge's integration tests, one module per topic, built as one test binary: the wire
//! format from bytes, the publisher and the collector in-process over real sockets, the
//! `ndbridge` program and the examples as processes, and attacks by hostile peers. The helpers
//! they share are in `tests/common/`.
//!
//! Every test that opens a socket or starts a process binds ephemeral endpoints
//! (`tcp://127.0.0.1:*`, or `ipc://` in a temporary directory), waits with timeouts, and arms
//! [`common::watchdog`], which ends this binary when the test hangs.
//!
//! Two tests have binaries of their own, because each installs a counting global allocator
//! that would count every other test of its binary: `tests/publisher_allocations.rs` and
//! `tests/zero_copy.rs`.

#[path = "../common/mod.rs"]
mod common;
#[path = "../../src/synth.rs"]
mod synth;

mod acked;
mod chunks;
mod cli_errors;
mod curve;
mod delivery;
mod demo;
mod disk_files;
mod disk_safety;
mod fault_loop;
mod forward_curve;
mod forward_subscribers;
mod golden;
mod header_template;
mod hostile_peers;
mod inflight_budget;
mod inline_batches;
mod pacing;
mod publisher;
mod restart_counts;
mod robustness;
mod service_process;
mod session_end;
mod sink_retries;
mod store;
mod stress;
mod subscriber;
mod verify;
mod wire_malformed;
mod wire_roundtrip;
mod zstd_block_frames;
mod zstd_frames;
