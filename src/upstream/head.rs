//! A request's head as its upstream gets it, shaped without a copy of the client's: the
//! fields the client sent but those the gateway drops or replaces, then the gateway's
//! own, written once into the buffer the body follows ([`Head::request`]: one write,
//! [`super::exchange`]).
//!
//! Shaping a copy of the client's map, then writing it out with Pingora's
//! `http_req_header_to_wire`, cost a copy of the map and its growth, a hash lookup for
//! every field removed or set, a head of its own and a second buffer for the body:
//! `docs/benchmarks.md#the-upstream-request-written-from-the-clients-head` has the count.

use super::exchange::Request;
use bytes::{BufMut, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use pingora::{Error, ErrorType};

/// What shapes a head's fields: a map ([`HeaderMap`]) or a [`Head`].
pub trait Fields {
    /// Remove every field called `name`.
    fn remove(&mut self, name: &HeaderName);
    /// Set `name` to `value` alone (its other values removed).
    fn insert(&mut self, name: HeaderName, value: HeaderValue);
    /// The first value of `name`.
    fn get(&self, name: &HeaderName) -> Option<&HeaderValue>;
}

impl Fields for HeaderMap {
    fn remove(&mut self, name: &HeaderName) {
        HeaderMap::remove(self, name);
    }

    fn insert(&mut self, name: HeaderName, value: HeaderValue) {
        HeaderMap::insert(self, name, value);
    }

    fn get(&self, name: &HeaderName) -> Option<&HeaderValue> {
        HeaderMap::get(self, name)
    }
}

/// A route's or a member's `request_headers` (`transforms`) on a request going upstream:
/// its names removed, then its fields set.
pub fn request_headers(fields: &mut impl Fields, t: &crate::transform::RouteTransforms) {
    for name in &t.remove_headers {
        fields.remove(name);
    }
    for (name, value) in &t.set_headers {
        fields.insert(name.clone(), value.clone());
    }
}

/// The fields of a request on its way upstream: the client's (but those dropped), then
/// `added`, in order. A name set is dropped from the client's first, so a field is never
/// both.
pub struct Head<'a> {
    client: &'a HeaderMap,
    /// The client's fields in order, each with whether it goes upstream.
    fields: Vec<(&'a HeaderName, &'a HeaderValue, bool)>,
    added: Vec<(HeaderName, HeaderValue)>,
}

impl<'a> Head<'a> {
    /// The client's fields, unchanged so far.
    pub fn new(client: &'a HeaderMap) -> Self {
        Head {
            client,
            fields: client.iter().map(|(n, v)| (n, v, true)).collect(),
            added: Vec::with_capacity(8),
        }
    }

    /// The fields as the client sent them.
    pub fn client(&self) -> &'a HeaderMap {
        self.client
    }

    /// Whether a field called `name` goes upstream.
    pub fn contains_key(&self, name: &HeaderName) -> bool {
        self.get(name).is_some()
    }

    /// The request: `method target HTTP/1.1`, the fields, then `body`, in one buffer.
    /// `target` is written as the concatenation of its parts (the path and the query);
    /// a part with a byte a request line cannot carry is an error.
    pub fn request(
        &self,
        method: &http::Method,
        target: &[&str],
        body: &[u8],
    ) -> pingora::Result<Request> {
        if target
            .iter()
            .any(|p| p.bytes().any(|b| b <= b' ' || b == 0x7f))
        {
            return Err(Error::explain(
                ErrorType::InvalidHTTPHeader,
                "the request target contains a space or a control character",
            ));
        }
        let mut size = method.as_str().len() + 1 + " HTTP/1.1\r\n\r\n".len() + body.len();
        size += target.iter().map(|p| p.len()).sum::<usize>();
        size += self
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 4)
            .sum::<usize>();
        let mut wire = BytesMut::with_capacity(size);
        wire.put_slice(method.as_str().as_bytes());
        wire.put_u8(b' ');
        for part in target {
            wire.put_slice(part.as_bytes());
        }
        wire.put_slice(b" HTTP/1.1\r\n");
        for (name, value) in self.iter() {
            wire.put_slice(titled(name).as_bytes());
            wire.put_slice(b": ");
            wire.put_slice(value.as_bytes());
            wire.put_slice(b"\r\n");
        }
        wire.put_slice(b"\r\n");
        wire.put_slice(body);
        let close = super::exchange::asks_close(self.get(&header::CONNECTION));
        Ok(Request::wire(wire, method == http::Method::HEAD, close))
    }

    /// The fields that go upstream, in the order they are written: a `Host` set here
    /// first (RFC 9112 §3.2), then the client's, then the others set here.
    pub fn iter(&self) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
        let added = |host: bool| {
            self.added
                .iter()
                .filter(move |(n, _)| (n == header::HOST) == host)
                .map(|(n, v)| (n, v))
        };
        let kept = self
            .fields
            .iter()
            .filter(|(_, _, kept)| *kept)
            .map(|(n, v, _)| (*n, *v));
        added(true).chain(kept).chain(added(false))
    }
}

impl Fields for Head<'_> {
    fn remove(&mut self, name: &HeaderName) {
        if !self.added.is_empty() {
            self.added.retain(|(n, _)| n != name);
        }
        for (n, _, kept) in self.fields.iter_mut() {
            if *n == name {
                *kept = false;
            }
        }
    }

    fn insert(&mut self, name: HeaderName, value: HeaderValue) {
        self.remove(&name);
        self.added.push((name, value));
    }

    fn get(&self, name: &HeaderName) -> Option<&HeaderValue> {
        match self.added.iter().find(|(n, _)| n == name) {
            Some((_, v)) => Some(v),
            None => self
                .fields
                .iter()
                .find(|(n, _, kept)| *kept && *n == name)
                .map(|(_, v, _)| *v),
        }
    }
}

/// A field's name as written: the usual case of the standard ones Pingora names so, the
/// others in lower case (as Pingora writes a head it did not parse).
fn titled(name: &HeaderName) -> &str {
    // On the text: a match on the names compares each as a `HeaderName`.
    match name.as_str() {
        "accept-ranges" => "Accept-Ranges",
        "age" => "Age",
        "cache-control" => "Cache-Control",
        "connection" => "Connection",
        "content-type" => "Content-Type",
        "content-encoding" => "Content-Encoding",
        "content-length" => "Content-Length",
        "date" => "Date",
        "transfer-encoding" => "Transfer-Encoding",
        "host" => "Host",
        "server" => "Server",
        "set-cookie" => "Set-Cookie",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.append(header::HOST, HeaderValue::from_static("gw:8080"));
        h.append("x-a", HeaderValue::from_static("1"));
        h.append("x-a", HeaderValue::from_static("2"));
        h.append(header::AUTHORIZATION, HeaderValue::from_static("Bearer t"));
        h.append(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h
    }

    fn wire(head: &Head, target: &[&str], body: &[u8]) -> String {
        let r = head.request(&http::Method::POST, target, body).unwrap();
        String::from_utf8(r.bytes().to_vec()).unwrap()
    }

    #[test]
    fn the_clients_fields_go_but_those_dropped_and_the_added_follow() {
        let client = client();
        let mut head = Head::new(&client);
        head.remove(&header::AUTHORIZATION);
        head.insert(header::HOST, HeaderValue::from_static("up:9000"));
        head.insert("x-b".parse().unwrap(), HeaderValue::from_static("3"));
        head.insert("x-b".parse().unwrap(), HeaderValue::from_static("4"));
        head.remove(&"x-none".parse().unwrap());
        assert_eq!(
            wire(&head, &["/mcp", "?a=1"], b"{}"),
            "POST /mcp?a=1 HTTP/1.1\r\nHost: up:9000\r\nx-a: 1\r\nx-a: 2\r\n\
             Content-Type: application/json\r\nx-b: 4\r\n\r\n{}"
        );
        assert_eq!(head.get(&header::HOST).unwrap(), "up:9000");
        assert!(head.get(&header::AUTHORIZATION).is_none());
        assert_eq!(head.get(&"x-a".parse().unwrap()).unwrap(), "1");
        assert!(head.contains_key(&header::CONTENT_TYPE));
        // A field set, then removed, goes nowhere.
        head.remove(&"x-b".parse().unwrap());
        assert!(!wire(&head, &["/"], b"").contains("x-b"));
        // Nothing changed the client's.
        assert_eq!(client.len(), 5);
    }

    #[test]
    fn the_answer_expected_follows_the_head() {
        let client = HeaderMap::new();
        let mut head = Head::new(&client);
        head.insert(header::CONNECTION, HeaderValue::from_static("Close"));
        let r = head.request(&http::Method::HEAD, &["/"], b"").unwrap();
        assert!(r.asked().head && r.asked().close);
        let r = Head::new(&client)
            .request(&http::Method::GET, &["/"], b"")
            .unwrap();
        assert!(!r.asked().head && !r.asked().close);
    }

    #[test]
    fn a_target_that_would_break_the_request_line_is_refused() {
        let client = HeaderMap::new();
        let head = Head::new(&client);
        for bad in ["/a b", "/a\r\nx: y", "/\u{7f}"] {
            assert!(head.request(&http::Method::GET, &[bad], b"").is_err());
        }
    }
}
