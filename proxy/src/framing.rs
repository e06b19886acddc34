//! What hyper's HTTP/1 parser normalises away before we see a request: a second scan of the raw
//! request head, looking only at the framing fields.
//!
//! hyper accepts a request carrying both `Content-Length` and `Transfer-Encoding` (it drops the
//! length and closes the connection afterwards, as RFC 9112 section 6.3 allows) and folds
//! repeated identical `Content-Length` lines into one, so the parsed head no longer shows that
//! the client sent an ambiguous message. We refuse such requests outright (the strict choice the
//! RFC leaves open), so the transport feeds each request head's raw bytes through a
//! [`HeadScan`] and the service reads the verdict when the request arrives.
//!
//! The scan looks at the first bytes of each line only (found with memchr), so it costs a few
//! dozen instructions per header line. It starts where a head starts at a read boundary; heads
//! pipelined behind another request in the same read are not scanned, and for those hyper's
//! normalisation (one framing, re-encoded upstream, connection closed after) still applies.

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

/// Incremental scan of one request head.
#[derive(Debug, Default)]
pub struct HeadScan {
    /// The start of the current line, lowercased, as far as it matters (the longest name we
    /// look for plus its colon).
    line: [u8; 18],
    line_len: usize,
    /// Past the request line.
    in_headers: bool,
    content_lengths: u8,
    transfer_encoding: bool,
}

impl HeadScan {
    /// Feeds the next bytes of the head. Returns `Some((flags, consumed))` once the blank line
    /// that ends the head has been seen (`consumed` bytes of `data` belonged to the head), or
    /// `None` if the head continues in the next read.
    pub fn feed(&mut self, data: &[u8]) -> Option<(u8, usize)> {
        let mut pos = 0;
        while pos < data.len() {
            let rest = &data[pos..];
            let end = memchr::memchr(b'\n', rest);
            let chunk = &rest[..end.unwrap_or(rest.len())];
            let room = self.line.len() - self.line_len;
            for (dst, src) in self.line[self.line_len..]
                .iter_mut()
                .zip(chunk.iter().take(room))
            {
                *dst = src.to_ascii_lowercase();
            }
            self.line_len += chunk.len().min(room);
            let end = end?;
            pos += end + 1;
            if self.end_line() {
                return Some((self.flags(), pos));
            }
        }
        None
    }

    /// Classifies the line just ended; true at the blank line that ends the head.
    fn end_line(&mut self) -> bool {
        let line = &self.line[..self.line_len];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let blank = line.is_empty();
        if self.in_headers {
            if line.starts_with(b"content-length:") {
                self.content_lengths = self.content_lengths.saturating_add(1);
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
        head_done
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
    fn an_unfinished_head_waits() {
        assert_eq!(scan(&[b"GET / HTTP/1.1\r\nHost: a\r\n"]), None);
    }
}
