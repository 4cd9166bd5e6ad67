//! Outcomes of work done on background threads, handed to an asyncio event loop: each outcome is
//! queued under a token and a socket the loop watches (`loop.add_reader`) becomes readable. The
//! background threads never take the GIL; the loop collects the outcomes in one call.

use parking_lot::Mutex;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;

/// A queue of `(token, outcome)` with a wake-up socket.
pub struct Completions<T> {
    done: Mutex<Vec<(u64, T)>>,
    reader: UnixStream,
    writer: UnixStream,
}

impl<T> Completions<T> {
    pub fn new() -> io::Result<Self> {
        let (reader, writer) = UnixStream::pair()?;
        reader.set_nonblocking(true)?;
        writer.set_nonblocking(true)?;
        Ok(Completions {
            done: Mutex::new(Vec::new()),
            reader,
            writer,
        })
    }

    /// The descriptor that becomes readable when outcomes are waiting.
    pub fn fd(&self) -> i32 {
        self.reader.as_raw_fd()
    }

    /// Queues an outcome; wakes the reader when the queue was empty (otherwise a wake-up is
    /// already pending).
    pub fn push(&self, token: u64, outcome: T) {
        let was_empty = {
            let mut done = self.done.lock();
            let was_empty = done.is_empty();
            done.push((token, outcome));
            was_empty
        };
        if was_empty {
            // WouldBlock means the socket is full of unread wake-ups: the reader wakes anyway.
            let _ = (&self.writer).write(&[1]);
        }
    }

    /// Every queued outcome. Drains the wake-up bytes first, so an outcome queued meanwhile
    /// either is taken now or leaves a fresh wake-up behind.
    pub fn take(&self) -> Vec<(u64, T)> {
        let mut buf = [0u8; 64];
        while let Ok(n) = (&self.reader).read(&mut buf) {
            if n < buf.len() {
                break;
            }
        }
        std::mem::take(&mut *self.done.lock())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads (and so consumes) the pending wake-up bytes.
    fn wakeups(c: &Completions<u8>) -> usize {
        let mut buf = [0u8; 16];
        (&c.reader).read(&mut buf).unwrap_or(0)
    }

    #[test]
    fn wakes_once_per_batch_and_never_loses_an_outcome() {
        let c = Completions::new().expect("socket pair");
        assert_eq!(wakeups(&c), 0);
        c.push(1, 10);
        c.push(2, 20);
        assert_eq!(wakeups(&c), 1);
        assert_eq!(c.take(), vec![(1, 10), (2, 20)]);
        assert!(c.take().is_empty());
        c.push(3, 30);
        assert_eq!(c.take(), vec![(3, 30)]); // take drains the wake-up too
        assert_eq!(wakeups(&c), 0);
    }

    #[test]
    fn concurrent_pushes_all_arrive() {
        let c = std::sync::Arc::new(Completions::new().expect("socket pair"));
        let writers: Vec<_> = (0..4u64)
            .map(|t| {
                let c = c.clone();
                std::thread::spawn(move || {
                    for i in 0..1000u64 {
                        c.push(t * 1000 + i, 0u8);
                    }
                })
            })
            .collect();
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while got.len() < 4000 && std::time::Instant::now() < deadline {
            got.extend(c.take().into_iter().map(|(t, _)| t));
        }
        for w in writers {
            w.join().expect("writer");
        }
        got.extend(c.take().into_iter().map(|(t, _)| t));
        got.sort_unstable();
        assert_eq!(got, (0..4000).collect::<Vec<_>>());
    }
}
