//! What hyper's HTTP/1 parser normalises away before we see a request: a second scan of the raw
//! request head, looking only at the framing fields.
//!
//! hyper accepts a request carrying both `Content-Length` and `Transfer-Encoding` (it drops the
//! length and closes the connection afterwards, as RFC 9112 section 6.3 allows) and folds
//! repeated identical `Content-Length` lines into one, so the parsed head no longer shows that
//! the client sent an ambiguous message. We refuse such requests outright (the strict choice the
//! RFC leaves open), so the transport feeds each request head's raw bytes through a
//! [`HeadScan`] and the service reads the verdict when the request arrives. Upstream responses
//! need no raw scan: hyper's client keeps those headers as received ([`response_problem`]).
//!
//! The scan looks at the first bytes of each line only (line ends found with memchr). It starts
//! where a head starts at a read boundary, and follows pipelined requests: after a head without
//! a body, or with a Content-Length body it skips, the next bytes are the next head. Behind a
//! chunked body it cannot follow without decoding, and waits for the connection to go quiet;
//! for heads it misses that way, hyper's normalisation (one framing, re-encoded upstream,
//! connection closed after) still applies.

/// Both `Content-Length` and `Transfer-Encoding` were present.
pub const CL_AND_TE: u8 = 1;
/// `Content-Length` appeared more than once (even with equal values).
pub const REPEATED_CL: u8 = 2;

/// The error for a request whose raw head had ambiguous framing, if it had.
pub fn refuse(flags: u8) -> Option<crate::error::ProxyError> {
    use crate::error::ProxyError::BadRequest;
    if flags & CL_AND_TE != 0 {
        Some(BadRequest("both Content-Length and Transfer-Encoding"))
    } else if flags & REPEATED_CL != 0 {
        Some(BadRequest("more than one Content-Length"))
    } else {
        None
    }
}

/// Checks on the parsed head for what RFC 9110/9112 leave to the recipient; we take the strict
/// reading each time:
/// - more than one `Host` (RFC 9112 section 3.2: a server MUST answer 400);
/// - a `Transfer-Encoding` other than exactly `chunked`: hyper only decodes the chunked coding,
///   so a request that also uses another coding (`gzip, chunked`) would reach the upstream with
///   its coding stripped from the header but still applied to the body.
pub fn check_head(headers: &http::HeaderMap) -> Result<(), crate::error::ProxyError> {
    use crate::error::ProxyError::BadRequest;
    use http::header::{HOST, TRANSFER_ENCODING};
    let mut hosts = headers.get_all(HOST).iter();
    if hosts.next().is_some() && hosts.next().is_some() {
        return Err(BadRequest("more than one Host header"));
    }
    let mut codings = headers.get_all(TRANSFER_ENCODING).iter();
    if let Some(te) = codings.next()
        && (codings.next().is_some() || !te.as_bytes().eq_ignore_ascii_case(b"chunked"))
    {
        return Err(BadRequest("a transfer coding other than chunked"));
    }
    Ok(())
}

/// Checks on the request target, for what HTTP/2 (whose pseudo-headers hyper takes as given)
/// lets through and an HTTP/1.1 upstream would receive as a broken request line:
/// - no path at all (`:path` missing; RFC 9113 section 8.3.1 calls that malformed);
/// - `*` as the target of anything but OPTIONS (RFC 9112 section 3.2.4);
/// - HTTP/2 with neither `:authority` nor `Host` (the upstream would get no host to route on).
pub fn check_target<B>(req: &http::Request<B>) -> Result<(), crate::error::ProxyError> {
    use crate::error::ProxyError::BadRequest;
    let uri = req.uri();
    let Some(target) = uri.path_and_query() else {
        return Err(BadRequest("no request target"));
    };
    if target.as_str().is_empty() {
        return Err(BadRequest("no request target"));
    }
    if target.as_str() == "*" && req.method() != http::Method::OPTIONS {
        return Err(BadRequest("'*' is only a target for OPTIONS"));
    }
    if req.version() == http::Version::HTTP_2
        && uri.authority().is_none()
        && !req.headers().contains_key(http::header::HOST)
    {
        return Err(BadRequest("neither :authority nor Host"));
    }
    Ok(())
}

/// Why an upstream response head must not be trusted, if it must not. hyper's client keeps
/// every framing header it received (unlike its server side), so the parsed head shows it:
/// both Content-Length and Transfer-Encoding (hyper would let the chunked coding win), or
/// several Content-Length lines (hyper accepts equal ones).
pub fn response_problem(headers: &http::HeaderMap) -> Option<&'static str> {
    use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
    let mut lengths = headers.get_all(CONTENT_LENGTH).iter();
    let length = lengths.next().is_some();
    if length && lengths.next().is_some() {
        Some("more than one Content-Length")
    } else if length && headers.contains_key(TRANSFER_ENCODING) {
        Some("both Content-Length and Transfer-Encoding")
    } else {
        None
    }
}

/// Incremental scan of one request head.
#[derive(Debug)]
pub struct HeadScan {
    /// The start of the current line, lowercased, kept only for lines that can be one of the
    /// two fields we look for (they start with `c` or `t`): as long as the longest name plus
    /// its colon.
    /// Long enough for `content-length:` and a 20-digit value with some spaces.
    prefix: [u8; 40],
    prefix_len: usize,
    /// Bytes seen so far in the current line, and its first one (for telling blank lines).
    line_len: usize,
    first: u8,
    interesting: bool,
    /// Past the request line.
    in_headers: bool,
    content_lengths: u8,
    /// The value of the (first) Content-Length, when it parsed.
    length: Option<u64>,
    transfer_encoding: bool,
}

impl Default for HeadScan {
    fn default() -> Self {
        HeadScan {
            prefix: [0; 40],
            prefix_len: 0,
            line_len: 0,
            first: 0,
            interesting: false,
            in_headers: false,
            content_lengths: 0,
            length: None,
            transfer_encoding: false,
        }
    }
}

/// What follows a scanned head on the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// The next request's head, right away (a request without a body).
    Head,
    /// A body of this many bytes, then the next head.
    Body(u64),
    /// A body we cannot measure without decoding it (chunked): the scan loses the thread until
    /// the connection is quiet again.
    Unknown,
}

impl HeadScan {
    /// Feeds the next bytes of the head. Returns `Some((flags, consumed))` once the blank line
    /// that ends the head has been seen (`consumed` bytes of `data` belonged to the head), or
    /// `None` if the head continues in the next read.
    pub fn feed(&mut self, data: &[u8]) -> Option<(u8, usize)> {
        // One SIMD pass finds every line end; only line starts are looked at.
        let mut start = 0;
        for end in memchr::memchr_iter(b'\n', data) {
            self.take(&data[start..end]);
            start = end + 1;
            if self.end_line() {
                return Some((self.flags(), start));
            }
        }
        self.take(&data[start..]);
        None
    }

    /// Notes a piece of the current line (a line can span reads).
    fn take(&mut self, chunk: &[u8]) {
        let Some(&first) = chunk.first() else {
            return;
        };
        if self.line_len == 0 {
            self.first = first;
            self.interesting = self.in_headers && matches!(first | 0x20, b'c' | b't');
        }
        if self.interesting && self.prefix_len < self.prefix.len() {
            let room = &mut self.prefix[self.prefix_len..];
            let n = room.len().min(chunk.len());
            for (dst, src) in room[..n].iter_mut().zip(chunk) {
                *dst = src.to_ascii_lowercase();
            }
            self.prefix_len += n;
        }
        self.line_len = self.line_len.saturating_add(chunk.len());
    }

    /// Classifies the line just ended; true at the blank line that ends the head.
    fn end_line(&mut self) -> bool {
        let blank = self.line_len == 0 || (self.line_len == 1 && self.first == b'\r');
        if self.interesting {
            let line = &self.prefix[..self.prefix_len];
            if let Some(value) = line.strip_prefix(b"content-length:") {
                self.content_lengths = self.content_lengths.saturating_add(1);
                if self.length.is_none() {
                    self.length = parse_length(value);
                }
            } else if line.starts_with(b"transfer-encoding:") {
                self.transfer_encoding = true;
            }
        }
        // hyper, like RFC 9112 section 2.2, ignores blank lines before the request line.
        let head_done = blank && self.in_headers;
        if !blank {
            self.in_headers = true;
        }
        self.line_len = 0;
        self.prefix_len = 0;
        self.interesting = false;
        head_done
    }

    /// What follows this head, once it is complete.
    pub fn next(&self) -> Next {
        match (self.transfer_encoding, self.content_lengths, self.length) {
            (false, 0, _) => Next::Head,
            (false, 1, Some(n)) => Next::Body(n),
            _ => Next::Unknown,
        }
    }

    fn flags(&self) -> u8 {
        let mut flags = 0;
        if self.content_lengths > 0 && self.transfer_encoding {
            flags |= CL_AND_TE;
        }
        if self.content_lengths > 1 {
            flags |= REPEATED_CL;
        }
        flags
    }
}

/// A Content-Length value: optional spaces, digits, optional spaces and CR.
fn parse_length(value: &[u8]) -> Option<u64> {
    let value = value.trim_ascii();
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(parts: &[&[u8]]) -> Option<(u8, usize)> {
        let mut s = HeadScan::default();
        let mut total = 0;
        for (i, p) in parts.iter().enumerate() {
            if let Some((flags, used)) = s.feed(p) {
                return Some((flags, total + used)).filter(|_| i == parts.len() - 1);
            }
            total += p.len();
        }
        None
    }

    #[test]
    fn a_plain_head_has_no_flags() {
        let head = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello";
        assert_eq!(scan(&[head]), Some((0, head.len() - 5)));
    }

    #[test]
    fn cl_with_te_in_either_order_and_any_case() {
        let a = b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n";
        let b = b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\nCONTENT-LENGTH: 5\r\n\r\n";
        assert_eq!(scan(&[a]).unwrap().0, CL_AND_TE);
        assert_eq!(scan(&[b]).unwrap().0, CL_AND_TE);
    }

    #[test]
    fn repeated_content_length_even_when_equal() {
        let h = b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n";
        assert_eq!(scan(&[h]).unwrap().0, REPEATED_CL);
    }

    #[test]
    fn a_head_split_anywhere_gives_the_same_answer() {
        let h: &[u8] = b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nrest";
        for cut in 1..h.len() - 4 {
            let (a, b) = h.split_at(cut);
            assert_eq!(
                scan(&[a, b]),
                Some((CL_AND_TE, h.len() - 4)),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn a_name_only_starting_like_ours_does_not_count() {
        let h = b"GET / HTTP/1.1\r\nContent-Length-X: 1\r\nX-Content-Length: 2\r\nTransfer-Encodings: x\r\n\r\n";
        assert_eq!(scan(&[h]).unwrap().0, 0);
    }

    #[test]
    fn bare_lf_lines_and_leading_blank_lines_are_handled() {
        let h = b"\r\nGET / HTTP/1.1\nContent-Length: 1\nTransfer-Encoding: chunked\n\n";
        assert_eq!(scan(&[h]), Some((CL_AND_TE, h.len())));
    }

    #[test]
    fn what_follows_a_head() {
        let next = |h: &[u8]| {
            let mut s = HeadScan::default();
            s.feed(h).expect("complete head");
            s.next()
        };
        assert_eq!(next(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"), Next::Head);
        assert_eq!(
            next(b"POST / HTTP/1.1\r\nContent-Length:  42 \r\n\r\n"),
            Next::Body(42)
        );
        assert_eq!(
            next(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Next::Unknown
        );
        assert_eq!(
            next(b"POST / HTTP/1.1\r\nContent-Length: 4x\r\n\r\n"),
            Next::Unknown
        );
    }

    #[test]
    fn an_unfinished_head_waits() {
        assert_eq!(scan(&[b"GET / HTTP/1.1\r\nHost: a\r\n"]), None);
    }
}
