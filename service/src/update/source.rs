//! Where an update bundle comes from — an upload (`MultipartHttpPushUri`), an HTTP(S) download
//! (`SimpleUpdate`) or a local file — turned into one blocking `Read` for the slot engine, which
//! runs on its own thread. Bytes pass through a small bounded channel: nothing is buffered whole,
//! in memory or on disk, and a slow disk slows the sender down (back-pressure).

use actix_web::web::Bytes;
use futures_util::StreamExt;
use std::io::{self, Read};
use tokio::sync::mpsc;

/// A piece of the bundle, or why the transfer broke off.
pub type Chunk = Result<Bytes, String>;

/// How many chunks may wait for the engine (actix chunks are up to 64 KiB; downloads similar).
const DEPTH: usize = 64;

pub fn channel() -> (mpsc::Sender<Chunk>, ChannelReader) {
    let (tx, rx) = mpsc::channel(DEPTH);
    (tx, ChannelReader { rx, cur: Bytes::new(), limit: u64::MAX, seen: 0 })
}

/// The engine's side: blocking reads of what the sender sends; end of stream when the sender is
/// dropped; an error when the sender reported one or the bundle exceeds the limit.
pub struct ChannelReader {
    rx: mpsc::Receiver<Chunk>,
    cur: Bytes,
    limit: u64,
    seen: u64,
}

impl ChannelReader {
    /// Refuse more than `limit` bytes (`MaxImageSizeBytes`).
    pub fn with_limit(mut self, limit: u64) -> Self {
        self.limit = limit;
        self
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => {
                    self.seen += b.len() as u64;
                    if self.seen > self.limit {
                        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("the image is larger than the {} bytes allowed", self.limit)));
                    }
                    self.cur = b;
                }
                Some(Err(e)) => return Err(io::Error::new(io::ErrorKind::BrokenPipe, e)),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        let _ = self.cur.split_to(n);
        Ok(n)
    }
}

/// Download `url` into `tx`. Runs on the actix runtime (awc); an error is sent down the channel
/// (so the engine stops) and returned.
pub async fn download(url: String, tx: mpsc::Sender<Chunk>) -> Result<(), String> {
    let client = awc::Client::builder().disable_timeout().max_redirects(3).finish();
    let res = async {
        let mut resp = client.get(&url).send().await.map_err(|e| format!("cannot fetch {url}: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("fetching {url} answered HTTP {}", resp.status()));
        }
        while let Some(chunk) = resp.next().await {
            let chunk = chunk.map_err(|e| format!("download of {url} broke off: {e}"))?;
            if tx.send(Ok(chunk)).await.is_err() {
                // The engine stopped reading (it refused the bundle): its error is the reason.
                return Ok(());
            }
        }
        Ok(())
    }
    .await;
    if let Err(e) = &res {
        let _ = tx.send(Err(e.clone())).await;
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_across_chunks_ends_at_close_and_reports_errors_and_limits() {
        let (tx, mut r) = channel();
        tx.blocking_send(Ok(Bytes::from_static(b"hello "))).unwrap();
        tx.blocking_send(Ok(Bytes::from_static(b"world"))).unwrap();
        drop(tx);
        let mut s = String::new();
        r.read_to_string(&mut s).unwrap();
        assert_eq!(s, "hello world");

        let (tx, mut r) = channel();
        tx.blocking_send(Ok(Bytes::from_static(b"abc"))).unwrap();
        tx.blocking_send(Err("client went away".into())).unwrap();
        let mut v = vec![];
        let e = r.read_to_end(&mut v).unwrap_err();
        assert_eq!(v, b"abc");
        assert!(e.to_string().contains("client went away"));

        let (tx, r) = channel();
        let mut r = r.with_limit(4);
        tx.blocking_send(Ok(Bytes::from_static(b"abcdef"))).unwrap();
        assert!(r.read(&mut [0u8; 8]).unwrap_err().to_string().contains("larger than the 4 bytes"));
    }
}
