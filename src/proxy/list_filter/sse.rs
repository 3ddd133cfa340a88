//! SSE framing as clients read it: where events end (LF, CRLF or lone CR, scanned once
//! across chunks), the fields of an event (an opening BOM, `data:` with or without its
//! space, over several lines), and an event written back.

use bytes::Bytes;
use std::borrow::Cow;

/// `text/event-stream`, in any case, with optional parameters.
pub fn is_sse(content_type: &[u8]) -> bool {
    let media = content_type
        .split(|b| *b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    media.eq_ignore_ascii_case(b"text/event-stream")
}

/// An SSE event: the `other` lines (id, event, retry, comments) then `data`.
pub(super) fn sse_event(others: &[Cow<str>], data: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(data.len() + 32);
    if others.is_empty() {
        out.extend_from_slice(b"event: message\n");
    }
    for line in others {
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

/// Finds where SSE events end, scanning each byte once across chunks.
pub(super) struct Splitter {
    /// Bytes of the buffer already scanned.
    scan: usize,
    /// The scan stands at the start of a line.
    line_start: bool,
    /// The last byte scanned was a CR (an LF right after it ends the same line).
    last_cr: bool,
    /// No event was read yet (a BOM may open the stream).
    pub(super) first: bool,
}

impl Default for Splitter {
    fn default() -> Self {
        Splitter {
            scan: 0,
            line_start: true,
            last_cr: false,
            first: true,
        }
    }
}

impl Splitter {
    /// The length of the first complete event in `buf` (through its blank line), if any;
    /// `buf` must start where the last event ended and only grow meanwhile.
    pub(super) fn next_event(&mut self, buf: &[u8]) -> Option<usize> {
        while self.scan < buf.len() {
            let b = buf[self.scan];
            self.scan += 1;
            match b {
                b'\n' if self.last_cr => self.last_cr = false,
                b'\n' | b'\r' => {
                    self.last_cr = b == b'\r';
                    if self.line_start {
                        let n = self.scan;
                        self.scan = 0;
                        return Some(n);
                    }
                    self.line_start = true;
                }
                _ => {
                    self.last_cr = false;
                    self.line_start = false;
                }
            }
        }
        None
    }
}

/// An event's fields as an SSE client reads them.
pub(super) struct Fields<'a> {
    /// The `data` lines joined by LF (`None`: no data field).
    pub(super) data: Option<String>,
    /// Every other non-empty line, as written.
    pub(super) others: Vec<Cow<'a, str>>,
}

impl<'a> Fields<'a> {
    pub(super) fn parse(event: &'a [u8], first: bool) -> Fields<'a> {
        let mut text = String::from_utf8_lossy(event);
        if first && text.starts_with('\u{feff}') {
            text = match text {
                Cow::Borrowed(t) => Cow::Borrowed(&t[3..]),
                Cow::Owned(t) => Cow::Owned(t[3..].to_string()),
            };
        }
        let mut data: Option<String> = None;
        let mut others = Vec::new();
        let lines: Vec<Cow<'a, str>> = match text {
            Cow::Borrowed(t) => t
                .split(['\r', '\n'])
                .filter(|l| !l.is_empty())
                .map(Cow::Borrowed)
                .collect(),
            Cow::Owned(t) => t
                .split(['\r', '\n'])
                .filter(|l| !l.is_empty())
                .map(|l| Cow::Owned(l.to_string()))
                .collect(),
        };
        for line in lines {
            let (field, value) = match line.find(':') {
                Some(i) => {
                    let v = &line[i + 1..];
                    (&line[..i], v.strip_prefix(' ').unwrap_or(v))
                }
                None => (line.as_ref(), ""),
            };
            if field == "data" {
                match &mut data {
                    Some(d) => {
                        d.push('\n');
                        d.push_str(value);
                    }
                    None => data = Some(value.to_string()),
                }
                continue;
            }
            others.push(line);
        }
        Fields { data, others }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_splitter_scans_each_byte_once() {
        // A large event arriving byte by byte: each call scans only the new byte.
        let mut s = Splitter::default();
        let event = format!("data: {}\n\n", "x".repeat(10_000));
        let mut buf = Vec::new();
        let mut scanned = 0;
        let mut found = None;
        for b in event.bytes() {
            buf.push(b);
            let before = s.scan;
            found = s.next_event(&buf);
            scanned += if found.is_some() {
                buf.len() - before
            } else {
                s.scan - before
            };
        }
        assert_eq!(found, Some(event.len()));
        assert_eq!(scanned, event.len());
        assert!(is_sse(b"Text/Event-Stream; charset=utf-8"));
        assert!(!is_sse(b"application/json"));
    }
}
