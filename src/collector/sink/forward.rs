//! The forward sink: re-publishes every valid message on a PUB socket as
//! `[topic, header, buffers...]`, with the original frames (no re-encode, no copy), so live
//! subscribers (Python notebooks, `ndbridge tail`) see the stream.
//!
//! The frames stay alive while the sink's queue or ZeroMQ holds them (a slow subscriber's queue
//! holds up to 1000 messages). The sink counts those bytes and drops a message, counted, that
//! would take them over its limit ([`ForwardSink::max_bytes`], 256 MiB by default), so that
//! subscribers cannot make the collector hold unbounded memory.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use serde_json::json;

use super::{Received, Sink, SinkError};
use crate::error::Error;
use crate::transport::{self, Endpoint, SocketKind, SocketOptions};

/// Messages waiting for the forward socket before new ones are dropped.
const QUEUE: usize = 1024;

/// Bytes of forwarded frames held at once by default (see [`ForwardSink::max_bytes`]).
pub const DEFAULT_FORWARD_MAX_BYTES: u64 = 256 << 20;

/// Re-publishes records on a bound PUB socket, owned by its own thread.
pub struct ForwardSink {
    endpoint: String,
    queue: Mutex<Option<Sender<Vec<Bytes>>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    forwarded: Arc<AtomicU64>,
    dropped: AtomicU64,
    /// Bytes of frames handed to the forward path and not yet released by it.
    held: Arc<AtomicU64>,
    max_bytes: u64,
}

/// A forwarded frame: gives its bytes back to the sink's count when the last holder (the queue,
/// or ZeroMQ once it has sent the frame to every subscriber) drops it.
struct HeldFrame {
    frame: Bytes,
    held: Arc<AtomicU64>,
}

impl AsRef<[u8]> for HeldFrame {
    fn as_ref(&self) -> &[u8] {
        &self.frame
    }
}

impl Drop for HeldFrame {
    fn drop(&mut self) {
        self.held
            .fetch_sub(self.frame.len() as u64, Ordering::Relaxed);
    }
}

impl ForwardSink {
    /// Binds a PUB socket at `addr` (`tcp://127.0.0.1:*` picks a port; see
    /// [`ForwardSink::endpoint`]).
    pub fn bind(context: &zmq::Context, addr: &str) -> Result<ForwardSink, Error> {
        let options = SocketOptions {
            send_hwm: 1000,
            linger: std::time::Duration::from_millis(500),
            ..SocketOptions::default()
        };
        let socket = transport::open(context, SocketKind::Pub, &[Endpoint::bind(addr)], &options)?;
        let endpoint = transport::last_endpoint(&socket).unwrap_or_else(|| addr.to_owned());
        let (tx, rx) = crossbeam_channel::bounded(QUEUE);
        let forwarded = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&forwarded);
        let thread = std::thread::Builder::new()
            .name("ndbridge-forward".into())
            .spawn(move || forward_loop(socket, rx, &counter))
            .map_err(|source| Error::Thread {
                name: "ndbridge-forward".into(),
                source,
            })?;
        Ok(ForwardSink {
            endpoint,
            queue: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
            forwarded,
            dropped: AtomicU64::new(0),
            held: Arc::new(AtomicU64::new(0)),
            max_bytes: DEFAULT_FORWARD_MAX_BYTES,
        })
    }

    /// Sets the most bytes of forwarded frames held at once: in the sink's queue and in ZeroMQ's
    /// queues for slow subscribers. A message that would go over it is dropped and counted
    /// (`dropped`); one larger than the limit is forwarded only when nothing else is held.
    pub fn max_bytes(mut self, bytes: u64) -> Self {
        self.max_bytes = bytes;
        self
    }

    /// The bound address, with the port resolved.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Bytes of forwarded frames held now.
    pub fn held_bytes(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }

    /// Messages dropped so far: the queue was full or the held bytes at their limit.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

fn forward_loop(mut socket: zmq::Socket, rx: Receiver<Vec<Bytes>>, forwarded: &AtomicU64) {
    for frames in rx.iter() {
        // PUB never blocks: at the high-water mark ZeroMQ drops for that subscriber.
        match transport::send_message(&mut socket, &frames, 0) {
            Ok(()) => {
                forwarded.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => tracing::warn!("forward: cannot publish: {e}"),
        }
    }
}

impl Sink for ForwardSink {
    fn name(&self) -> &str {
        "forward"
    }

    fn write(&self, message: &Received) -> Result<(), SinkError> {
        let size: u64 = message.frames.iter().map(|f| f.len() as u64).sum();
        let taken = self
            .held
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
                (held == 0 || held + size <= self.max_bytes).then_some(held + size)
            });
        if taken.is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        let mut frames = Vec::with_capacity(message.frames.len() + 1);
        frames.push(Bytes::from(message.record.header.name.clone().into_bytes()));
        frames.extend(message.frames.iter().map(|frame| {
            Bytes::from_owner(HeldFrame {
                frame: frame.clone(),
                held: Arc::clone(&self.held),
            })
        }));
        let queue = self.queue.lock().expect("forward queue lock");
        let Some(tx) = queue.as_ref() else {
            return Err(SinkError::Dropped("forward sink is closed"));
        };
        match tx.try_send(frames) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(TrySendError::Disconnected(_)) => {
                Err(SinkError::Dropped("forward thread has stopped"))
            }
        }
    }

    fn finish(&self) -> Result<(), SinkError> {
        self.queue.lock().expect("forward queue lock").take();
        if let Some(thread) = self.thread.lock().expect("forward thread lock").take() {
            let _ = thread.join();
        }
        Ok(())
    }

    fn report(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut m = serde_json::Map::new();
        m.insert("endpoint".into(), json!(self.endpoint));
        m.insert(
            "forwarded".into(),
            json!(self.forwarded.load(Ordering::Relaxed)),
        );
        m.insert("dropped".into(), json!(self.dropped()));
        m.insert("held_bytes".into(), json!(self.held_bytes()));
        m.insert("max_bytes".into(), json!(self.max_bytes));
        m
    }
}

impl Drop for ForwardSink {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}
