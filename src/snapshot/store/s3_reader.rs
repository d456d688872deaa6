//! Reading one S3 object by offset, for the mount and for HTTP downloads, at the
//! object store's speed.
//!
//! A request per read would make a sequential copy wait a round trip for every
//! 128 KiB the kernel asks for. So the object is read in chunks of `chunk` bytes
//! with ranged GETs, and while a reader goes forward the next `ahead` chunks are
//! already being fetched, concurrently, by tasks on the runtime. Memory per open
//! object is bounded by `chunk × (ahead + 2)` (the window, the chunk being read and
//! the one before it, kept for reads that come slightly out of order).
//!
//! Read-ahead starts only for a reader that goes forward (from offset 0, or from
//! where its last read ended): a single ranged read (`curl -r`, an HTTP `Range`)
//! fetches just the bytes it asks for.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use object_store::ObjectStore;
use object_store::path::Path as Key;

use crate::storage::error::with_causes;

type Fetch = Shared<BoxFuture<'static, Result<Bytes, Arc<object_store::Error>>>>;

pub struct ObjectReader {
    store: Arc<dyn ObjectStore>,
    key: Key,
    size: u64,
    chunk: u64,
    ahead: u64,
    runtime: tokio::runtime::Handle,
    state: Mutex<Window>,
}

#[derive(Default)]
struct Window {
    /// Chunks fetched or being fetched, by index (with the way to stop a fetch).
    chunks: BTreeMap<u64, (Fetch, tokio::task::AbortHandle)>,
    /// Where the last read ended: a read starting here goes forward.
    next: u64,
}

impl ObjectReader {
    /// A reader of `size` bytes of `key`. Call from a thread that may block (not an
    /// async task): reads wait for the runtime `runtime`.
    pub fn new(
        store: Arc<dyn ObjectStore>,
        key: Key,
        size: u64,
        chunk: usize,
        ahead: usize,
        runtime: tokio::runtime::Handle,
    ) -> ObjectReader {
        ObjectReader {
            store,
            key,
            size,
            chunk: chunk.max(64 << 10) as u64,
            ahead: ahead as u64,
            runtime,
            state: Mutex::new(Window::default()),
        }
    }

    /// Fill `buf` from `offset` (short only at the end of the object); blocking.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
        if offset >= self.size || buf.is_empty() {
            return Ok(0);
        }
        let want = (buf.len() as u64).min(self.size - offset) as usize;
        let forward = {
            let window = self.state.lock().unwrap();
            offset == 0
                || offset == window.next
                || window.chunks.contains_key(&(offset / self.chunk))
        };
        if !forward {
            // A lone ranged read: exactly its bytes, nothing kept.
            let bytes = self
                .runtime
                .block_on(
                    self.store
                        .get_range(&self.key, offset..offset + want as u64),
                )
                .map_err(|e| std::io::Error::other(with_causes(&e)))?;
            buf[..bytes.len()].copy_from_slice(&bytes);
            self.state.lock().unwrap().next = offset + bytes.len() as u64;
            return Ok(bytes.len());
        }
        let mut done = 0;
        while done < want {
            let at = offset + done as u64;
            let index = at / self.chunk;
            let bytes = self.chunk_at(index)?;
            let start = (at - index * self.chunk) as usize;
            if start >= bytes.len() {
                return Err(std::io::Error::other(format!(
                    "{} is shorter than listed ({} bytes)",
                    self.key, self.size
                )));
            }
            let n = (bytes.len() - start).min(want - done);
            buf[done..done + n].copy_from_slice(&bytes[start..start + n]);
            done += n;
        }
        self.state.lock().unwrap().next = offset + done as u64;
        Ok(done)
    }

    /// Chunk `index`, with the window ahead of it requested and the chunks well
    /// behind it dropped.
    fn chunk_at(&self, index: u64) -> std::io::Result<Bytes> {
        let fetch = {
            let mut window = self.state.lock().unwrap();
            let last = self.size.div_ceil(self.chunk);
            for i in index..(index + 1 + self.ahead).min(last) {
                window.chunks.entry(i).or_insert_with(|| self.fetch(i));
            }
            window.chunks.retain(|&i, (_, abort)| {
                let keep = i + 1 >= index && i <= index + self.ahead;
                if !keep {
                    abort.abort();
                }
                keep
            });
            window.chunks[&index].0.clone()
        };
        match self.runtime.block_on(fetch) {
            Ok(bytes) => Ok(bytes),
            Err(e) => {
                // Fetched again by the next read, not failed for good.
                self.state.lock().unwrap().chunks.remove(&index);
                Err(std::io::Error::other(with_causes(&*e)))
            }
        }
    }

    /// Start fetching chunk `index` now, on the runtime, whoever waits for it.
    fn fetch(&self, index: u64) -> (Fetch, tokio::task::AbortHandle) {
        let start = index * self.chunk;
        let end = (start + self.chunk).min(self.size);
        let store = self.store.clone();
        let key = self.key.clone();
        let task = self
            .runtime
            .spawn(async move { store.get_range(&key, start..end).await });
        let abort = task.abort_handle();
        let fetch = async move {
            match task.await {
                Ok(result) => result.map_err(Arc::new),
                Err(join) => Err(Arc::new(object_store::Error::Generic {
                    store: "S3",
                    source: Box::new(join),
                })),
            }
        }
        .boxed()
        .shared();
        (fetch, abort)
    }
}

impl Drop for ObjectReader {
    fn drop(&mut self) {
        // Fetches nobody will read are stopped.
        for (_, abort) in self.state.lock().unwrap().chunks.values() {
            abort.abort();
        }
    }
}
