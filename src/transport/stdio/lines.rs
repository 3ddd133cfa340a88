//! The lines a stdio server writes: newline-delimited, each at most a cap; a longer one
//! is skipped whole (up to its newline) and reported, and reading goes on after it.

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

pub enum Read {
    Line(Vec<u8>),
    /// A line over the cap, skipped.
    TooLong,
    End,
}

/// Newline-delimited lines of at most `max` bytes.
pub struct Lines<R> {
    inner: BufReader<R>,
    max: usize,
    line: Vec<u8>,
}

impl<R: AsyncRead + Unpin> Lines<R> {
    pub fn new(inner: R, max: usize) -> Self {
        Lines {
            inner: BufReader::with_capacity(64 << 10, inner),
            max,
            line: Vec::new(),
        }
    }

    pub async fn next(&mut self) -> std::io::Result<Read> {
        let mut skipping = false;
        loop {
            let buf = self.inner.fill_buf().await?;
            if buf.is_empty() {
                return Ok(Read::End);
            }
            let (take, newline) = match memchr::memchr(b'\n', buf) {
                Some(i) => (i, true),
                None => (buf.len(), false),
            };
            if skipping || self.line.len() + take > self.max {
                skipping = true;
                self.line.clear();
            } else {
                self.line.extend_from_slice(&buf[..take]);
            }
            self.inner.consume(take + usize::from(newline));
            if newline {
                return Ok(if skipping {
                    Read::TooLong
                } else {
                    Read::Line(std::mem::take(&mut self.line))
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn long_lines_are_skipped_whole_and_reading_goes_on() {
        let input: &[u8] = b"short\nthis one is too long\nok\r\npartial";
        // A tiny buffer, so lines arrive split across reads.
        let mut lines = Lines {
            inner: BufReader::with_capacity(3, input),
            max: 8,
            line: Vec::new(),
        };
        let mut got = Vec::new();
        loop {
            match lines.next().await.unwrap() {
                Read::Line(l) => got.push(String::from_utf8(l).unwrap()),
                Read::TooLong => got.push("<too long>".into()),
                Read::End => break,
            }
        }
        // The `\r` is the dispatcher's to strip; a line without its newline is not one.
        assert_eq!(got, ["short", "<too long>", "ok\r"]);
    }
}
