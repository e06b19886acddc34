//! HTTP/2 at the frame level over a blocking socket: for what a real client library never sends
//! (floods, more streams than allowed, endless CONTINUATION) and for reading exactly what the
//! server announces and answers.
//!
//! - [`Frame`]: one frame, written as its 9-byte header plus payload, and read back the same way;
//! - [`request_block`]: an HPACK header block of literal fields only, so it needs no encoder
//!   state;
//! - [`H2Conn`]: h2c with prior knowledge, the handshake done (preface, SETTINGS both ways);
//! - [`FrameLog`]: every frame the server sends, read on a thread of its own, so a test can
//!   write a flood without the server's answers filling the socket and stalling both sides.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What a client sends first (RFC 9113 section 3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Frame types (RFC 9113 section 6).
pub mod kind {
    pub const DATA: u8 = 0x0;
    pub const HEADERS: u8 = 0x1;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const PING: u8 = 0x6;
    pub const GOAWAY: u8 = 0x7;
    pub const WINDOW_UPDATE: u8 = 0x8;
    pub const CONTINUATION: u8 = 0x9;
}

/// Frame flags.
pub mod flag {
    pub const END_STREAM: u8 = 0x1;
    /// SETTINGS and PING.
    pub const ACK: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
}

/// SETTINGS parameters (RFC 9113 section 6.5.2).
pub mod setting {
    pub const HEADER_TABLE_SIZE: u16 = 0x1;
    pub const ENABLE_PUSH: u16 = 0x2;
    pub const MAX_CONCURRENT_STREAMS: u16 = 0x3;
    pub const INITIAL_WINDOW_SIZE: u16 = 0x4;
    pub const MAX_FRAME_SIZE: u16 = 0x5;
    pub const MAX_HEADER_LIST_SIZE: u16 = 0x6;
}

/// Error codes of RST_STREAM and GOAWAY (RFC 9113 section 7).
pub mod code {
    pub const NO_ERROR: u32 = 0x0;
    pub const PROTOCOL_ERROR: u32 = 0x1;
    pub const REFUSED_STREAM: u32 = 0x7;
    pub const CANCEL: u32 = 0x8;
    pub const ENHANCE_YOUR_CALM: u32 = 0xb;
}

/// One HTTP/2 frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

impl Frame {
    pub fn new(kind: u8, flags: u8, stream: u32, payload: Vec<u8>) -> Frame {
        Frame {
            kind,
            flags,
            stream,
            payload,
        }
    }

    /// A HEADERS frame carrying `block` (no padding, no priority).
    pub fn headers(stream: u32, block: Vec<u8>, end_stream: bool, end_headers: bool) -> Frame {
        let mut flags = 0;
        if end_stream {
            flags |= flag::END_STREAM;
        }
        if end_headers {
            flags |= flag::END_HEADERS;
        }
        Frame::new(kind::HEADERS, flags, stream, block)
    }

    pub fn continuation(stream: u32, block: Vec<u8>, end_headers: bool) -> Frame {
        let flags = if end_headers { flag::END_HEADERS } else { 0 };
        Frame::new(kind::CONTINUATION, flags, stream, block)
    }

    pub fn data(stream: u32, data: Vec<u8>, end_stream: bool) -> Frame {
        let flags = if end_stream { flag::END_STREAM } else { 0 };
        Frame::new(kind::DATA, flags, stream, data)
    }

    pub fn rst_stream(stream: u32, code: u32) -> Frame {
        Frame::new(kind::RST_STREAM, 0, stream, code.to_be_bytes().to_vec())
    }

    pub fn settings(params: &[(u16, u32)]) -> Frame {
        let mut payload = Vec::with_capacity(params.len() * 6);
        for (id, value) in params {
            payload.extend_from_slice(&id.to_be_bytes());
            payload.extend_from_slice(&value.to_be_bytes());
        }
        Frame::new(kind::SETTINGS, 0, 0, payload)
    }

    pub fn settings_ack() -> Frame {
        Frame::new(kind::SETTINGS, flag::ACK, 0, Vec::new())
    }

    pub fn ping(data: [u8; 8]) -> Frame {
        Frame::new(kind::PING, 0, 0, data.to_vec())
    }

    pub fn is_ack(&self) -> bool {
        self.flags & flag::ACK != 0
    }

    /// The frame as it goes on the wire, appended to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let len = u32::try_from(self.payload.len()).expect("payload fits a frame");
        assert!(len < 1 << 24, "payload of {len} bytes does not fit a frame");
        out.extend_from_slice(&len.to_be_bytes()[1..]);
        out.push(self.kind);
        out.push(self.flags);
        out.extend_from_slice(&(self.stream & 0x7fff_ffff).to_be_bytes());
        out.extend_from_slice(&self.payload);
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(9 + self.payload.len());
        self.encode_into(&mut out);
        out
    }

    /// Reads one frame; `None` if the peer closed the connection before a frame started.
    pub fn read_from(r: &mut impl Read) -> io::Result<Option<Frame>> {
        let mut head = [0u8; 9];
        let mut got = 0;
        while got < head.len() {
            match r.read(&mut head[got..])? {
                0 if got == 0 => return Ok(None),
                0 => return Err(io::ErrorKind::UnexpectedEof.into()),
                n => got += n,
            }
        }
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0u8; len];
        r.read_exact(&mut payload)?;
        Ok(Some(Frame {
            kind: head[3],
            flags: head[4],
            stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff,
            payload,
        }))
    }

    /// The parameters of a SETTINGS frame, in order.
    pub fn settings_params(&self) -> Vec<(u16, u32)> {
        assert_eq!(self.kind, kind::SETTINGS, "{self:?}");
        self.payload
            .chunks_exact(6)
            .map(|p| {
                (
                    u16::from_be_bytes([p[0], p[1]]),
                    u32::from_be_bytes([p[2], p[3], p[4], p[5]]),
                )
            })
            .collect()
    }

    /// The error code of a RST_STREAM frame.
    pub fn rst_code(&self) -> u32 {
        assert_eq!(self.kind, kind::RST_STREAM, "{self:?}");
        u32::from_be_bytes(self.payload[..4].try_into().expect("4 bytes"))
    }

    /// The content of a GOAWAY frame.
    pub fn goaway(&self) -> GoAway {
        assert_eq!(self.kind, kind::GOAWAY, "{self:?}");
        let word = |i: usize| u32::from_be_bytes(self.payload[i..i + 4].try_into().expect("4"));
        GoAway {
            last_stream: word(0) & 0x7fff_ffff,
            code: word(4),
            debug: String::from_utf8_lossy(&self.payload[8..]).into_owned(),
        }
    }
}

/// What a GOAWAY said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoAway {
    pub last_stream: u32,
    pub code: u32,
    /// The debug data, as text (h2 puts a short reason there).
    pub debug: String,
}

/// An HPACK header block for a request: the pseudo-headers, then `extra`, all as literal fields
/// without indexing (RFC 7541 section 6.2.2) with literal names, so the block is valid whatever
/// the decoder's table holds.
pub fn request_block(method: &str, path: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut block = Vec::new();
    for (name, value) in [
        (":method", method),
        (":scheme", "http"),
        (":path", path),
        (":authority", "localhost"),
    ]
    .into_iter()
    .chain(extra.iter().copied())
    {
        literal_field(&mut block, name, value);
    }
    block
}

/// One literal header field without indexing, new name, no Huffman coding.
pub fn literal_field(block: &mut Vec<u8>, name: &str, value: &str) {
    block.push(0x00);
    for s in [name, value] {
        hpack_int(block, 0, 7, s.len());
        block.extend_from_slice(s.as_bytes());
    }
}

/// An HPACK integer with an `n`-bit prefix after the bits in `first` (RFC 7541 section 5.1).
fn hpack_int(out: &mut Vec<u8>, first: u8, n: u32, mut value: usize) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128) as u8 | 0x80);
        value /= 128;
    }
    out.push(value as u8);
}

/// How long reads and writes on an [`H2Conn`] wait before the test fails rather than hangs.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// An h2c (prior knowledge) connection after the handshake.
pub struct H2Conn {
    stream: TcpStream,
    /// The parameters of the server's first SETTINGS frame.
    pub server_settings: Vec<(u16, u32)>,
}

impl H2Conn {
    /// Connects, sends the preface and an empty SETTINGS, reads frames until the server's own
    /// SETTINGS and acknowledges it. Frames other than SETTINGS read on the way are dropped.
    pub fn handshake(addr: SocketAddr) -> io::Result<H2Conn> {
        let mut stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        stream.set_nodelay(true)?;
        let mut hello = PREFACE.to_vec();
        Frame::settings(&[]).encode_into(&mut hello);
        stream.write_all(&hello)?;
        let server_settings = loop {
            match Frame::read_from(&mut stream)? {
                Some(f) if f.kind == kind::SETTINGS && !f.is_ack() => break f.settings_params(),
                Some(_) => continue,
                None => return Err(io::ErrorKind::UnexpectedEof.into()),
            }
        };
        stream.write_all(&Frame::settings_ack().encode())?;
        Ok(H2Conn {
            stream,
            server_settings,
        })
    }

    /// The value of setting `id` in the server's SETTINGS, if it sent one.
    pub fn setting(&self, id: u16) -> Option<u32> {
        self.server_settings
            .iter()
            .rev()
            .find(|(i, _)| *i == id)
            .map(|(_, v)| *v)
    }

    /// Writes `frames` in one write.
    pub fn send(&mut self, frames: &[Frame]) -> io::Result<()> {
        let mut out = Vec::new();
        for f in frames {
            f.encode_into(&mut out);
        }
        self.stream.write_all(&out)
    }

    /// Reads the next frame; `None` when the server has closed the connection.
    pub fn read_frame(&mut self) -> io::Result<Option<Frame>> {
        Frame::read_from(&mut self.stream)
    }

    pub fn socket(&self) -> &TcpStream {
        &self.stream
    }

    /// Hands the reading side to a [`FrameLog`]; the connection stays for writing.
    pub fn log_frames(&self) -> FrameLog {
        FrameLog::start(self.stream.try_clone().expect("clone the socket"))
    }

    /// Writes `frames` in batches of `batch` per write until they run out, a write fails (the
    /// server closed the connection, or stopped reading for longer than the write timeout) or
    /// `log`, if given, has seen a GOAWAY or the end of the connection.
    pub fn flood(
        &mut self,
        frames: impl IntoIterator<Item = Frame>,
        batch: usize,
        log: Option<&FrameLog>,
    ) -> Flooded {
        let mut frames = frames.into_iter().peekable();
        let mut sent = 0;
        let mut out = Vec::new();
        while frames.peek().is_some() {
            if log.is_some_and(|l| l.seen(|s| s.goaway.is_some() || s.closed)) {
                return Flooded {
                    sent,
                    stopped: Some(Stopped::ServerReacted),
                };
            }
            out.clear();
            let mut n = 0;
            for f in frames.by_ref().take(batch) {
                f.encode_into(&mut out);
                n += 1;
            }
            if let Err(e) = self.stream.write_all(&out) {
                return Flooded {
                    sent,
                    stopped: Some(Stopped::WriteFailed(e)),
                };
            }
            sent += n;
        }
        Flooded {
            sent,
            stopped: None,
        }
    }
}

/// How a [`H2Conn::flood`] ended.
#[derive(Debug)]
pub struct Flooded {
    /// Frames written in full (batches that failed are not counted).
    pub sent: usize,
    /// Why it stopped before the frames ran out, if it did.
    pub stopped: Option<Stopped>,
}

#[derive(Debug)]
pub enum Stopped {
    /// The log saw a GOAWAY or the end of the connection.
    ServerReacted,
    /// A write failed: the connection was closed or reset, or the write timed out.
    WriteFailed(io::Error),
}

/// What a [`FrameLog`] has read so far.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    /// Frames read, by type (index = type; unknown types are not counted).
    pub by_kind: [usize; 10],
    /// RST_STREAM frames: `(stream, code)`.
    pub resets: Vec<(u32, u32)>,
    /// Streams the server answered with a HEADERS frame.
    pub answered: Vec<u32>,
    /// The first GOAWAY.
    pub goaway: Option<GoAway>,
    /// The connection ended (EOF or an error).
    pub closed: bool,
}

impl Seen {
    pub fn count(&self, kind: u8) -> usize {
        self.by_kind.get(usize::from(kind)).copied().unwrap_or(0)
    }
}

/// Reads every frame of a connection on a thread, until the server closes it.
pub struct FrameLog {
    seen: Arc<(Mutex<Seen>, Condvar)>,
    /// Not joined: it ends when the connection does, which the test's end brings about.
    _reader: JoinHandle<()>,
}

impl FrameLog {
    fn start(mut socket: TcpStream) -> FrameLog {
        let seen = Arc::new((Mutex::new(Seen::default()), Condvar::new()));
        let reader = {
            let seen = seen.clone();
            std::thread::spawn(move || {
                // A log lives as long as its test: no read timeout, the end comes from the server
                // closing or the test shutting the socket down.
                let _ = socket.set_read_timeout(None);
                loop {
                    let frame = Frame::read_from(&mut socket);
                    let (lock, grew) = &*seen;
                    let mut s = lock.lock().unwrap();
                    match frame {
                        Ok(Some(f)) => {
                            if let Some(n) = s.by_kind.get_mut(usize::from(f.kind)) {
                                *n += 1;
                            }
                            match f.kind {
                                kind::RST_STREAM => s.resets.push((f.stream, f.rst_code())),
                                kind::HEADERS => s.answered.push(f.stream),
                                kind::GOAWAY if s.goaway.is_none() => {
                                    s.goaway = Some(f.goaway());
                                }
                                _ => {}
                            }
                            grew.notify_all();
                        }
                        Ok(None) | Err(_) => {
                            s.closed = true;
                            grew.notify_all();
                            return;
                        }
                    }
                }
            })
        };
        FrameLog {
            seen,
            _reader: reader,
        }
    }

    /// A copy of what has been read so far.
    pub fn snapshot(&self) -> Seen {
        self.seen.0.lock().unwrap().clone()
    }

    /// Whether what has been read so far satisfies `pred`.
    pub fn seen(&self, pred: impl Fn(&Seen) -> bool) -> bool {
        pred(&self.seen.0.lock().unwrap())
    }

    /// Waits until what has been read satisfies `pred`; returns a copy of it, or `None` after
    /// `timeout`.
    pub fn wait(&self, timeout: Duration, pred: impl Fn(&Seen) -> bool) -> Option<Seen> {
        let deadline = Instant::now() + timeout;
        let (lock, grew) = &*self.seen;
        let mut s = lock.lock().unwrap();
        loop {
            if pred(&s) {
                return Some(s.clone());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            s = grew.wait_timeout(s, left).unwrap().0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let f = Frame::headers(5, request_block("GET", "/", &[]), true, true);
        let wire = f.encode();
        assert_eq!(&wire[..9], &[0, 0, f.payload.len() as u8, 1, 5, 0, 0, 0, 5]);
        assert_eq!(Frame::read_from(&mut &wire[..]).unwrap(), Some(f));
        assert_eq!(Frame::read_from(&mut &[][..]).unwrap(), None);

        let s = Frame::settings(&[(setting::MAX_CONCURRENT_STREAMS, 7)]);
        assert_eq!(s.settings_params(), vec![(3, 7)]);
        assert_eq!(Frame::rst_stream(3, code::CANCEL).rst_code(), code::CANCEL);
    }

    #[test]
    fn hpack_integers_use_the_prefix_then_continuation_bytes() {
        let mut out = Vec::new();
        hpack_int(&mut out, 0, 5, 10);
        assert_eq!(out, [10]);
        // RFC 7541 C.1.2: 1337 with a 5-bit prefix.
        out.clear();
        hpack_int(&mut out, 0, 5, 1337);
        assert_eq!(out, [31, 154, 10]);
    }
}
