//! The forward sink: re-publishes every valid message on a PUB socket as
//! `[topic, header, buffers...]`, with the original frames (no re-encode, no copy), so live
//! subscribers (Python notebooks, `ndbridge tail`) see the stream.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::thread::JoinHandle;

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use serde_json::json;

use super::{Received, Sink, SinkError};
use crate::error::Error;
use crate::transport::{self, Endpoint, SocketKind, SocketOptions};

/// Messages waiting for the forward socket before new ones are dropped.
const QUEUE: usize = 1024;

/// Re-publishes records on a bound PUB socket, owned by its own thread.
pub struct ForwardSink {
    endpoint: String,
    queue: Mutex<Option<Sender<Vec<Bytes>>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    forwarded: std::sync::Arc<AtomicU64>,
    dropped: AtomicU64,
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
        let forwarded = std::sync::Arc::new(AtomicU64::new(0));
        let counter = std::sync::Arc::clone(&forwarded);
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
        })
    }

    /// The bound address, with the port resolved.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
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
        let mut frames = Vec::with_capacity(message.frames.len() + 1);
        frames.push(Bytes::from(message.record.header.name.clone().into_bytes()));
        frames.extend(message.frames.iter().cloned());
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
        m.insert(
            "dropped".into(),
            json!(self.dropped.load(Ordering::Relaxed)),
        );
        m
    }
}

impl Drop for ForwardSink {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}
