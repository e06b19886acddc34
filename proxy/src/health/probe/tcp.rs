//! TCP check: the connection opens; then, if configured, the bytes are sent and the reply must
//! start with the expected ones. A new connection per check: opening one is what is checked.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use remora_config::identity::SpiffeId;

use super::{CheckFailure, FailureReason, Probe, connect};

pub struct TcpProbe {
    addr: SocketAddr,
    send: Option<Vec<u8>>,
    expect: Option<Vec<u8>>,
    /// The peer identity to require over mTLS; `None`: plaintext.
    mtls: Option<SpiffeId>,
}

impl TcpProbe {
    pub fn new(addr: SocketAddr, send: Option<Vec<u8>>, expect: Option<Vec<u8>>) -> Self {
        TcpProbe {
            addr,
            send,
            expect,
            mtls: None,
        }
    }

    /// Checks through mTLS, requiring this peer identity.
    pub fn with_mtls(mut self, mtls: Option<SpiffeId>) -> Self {
        self.mtls = mtls;
        self
    }
}

impl Probe for TcpProbe {
    async fn check(&mut self) -> Result<(), CheckFailure> {
        let mut stream = connect(self.addr, self.mtls.as_ref(), None).await?;
        let closed = |e: std::io::Error| CheckFailure::new(FailureReason::Closed, e.to_string());
        if let Some(send) = &self.send {
            stream.write_all(send).await.map_err(closed)?;
        }
        let Some(expect) = &self.expect else {
            return Ok(());
        };
        let mut got = Vec::with_capacity(expect.len());
        while got.len() < expect.len() {
            let mut buf = [0u8; 512];
            let n = stream.read(&mut buf).await.map_err(closed)?;
            if n == 0 {
                return Err(CheckFailure::new(
                    FailureReason::Closed,
                    format!(
                        "closed after {} of {} expected bytes",
                        got.len(),
                        expect.len()
                    ),
                ));
            }
            got.extend_from_slice(&buf[..n]);
            // Compare as bytes arrive: a wrong reply fails now rather than at the timeout.
            let upto = got.len().min(expect.len());
            if got[..upto] != expect[..upto] {
                return Err(CheckFailure::new(
                    FailureReason::Mismatch,
                    format!("reply starts {:?}", String::from_utf8_lossy(&got[..upto])),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::net::TcpListener;

    use super::*;
    use crate::health::probe::check_within;

    /// A server that answers each connection's first read with `reply`.
    async fn replying(reply: &'static [u8]) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    let _ = s.read(&mut buf).await;
                    let _ = s.write_all(reply).await;
                });
            }
        });
        addr
    }

    fn probe(addr: SocketAddr, expect: &[u8]) -> TcpProbe {
        TcpProbe::new(addr, Some(b"PING\r\n".to_vec()), Some(expect.to_vec()))
    }

    const T: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn connect_only_passes_and_refused_fails() {
        let addr = replying(b"").await;
        assert_eq!(
            check_within(&mut TcpProbe::new(addr, None, None), T).await,
            Ok(())
        );

        let gone = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gone_addr = gone.local_addr().unwrap();
        drop(gone);
        let err = check_within(&mut TcpProbe::new(gone_addr, None, None), T).await;
        assert_eq!(err.unwrap_err().reason, FailureReason::Connect);
    }

    #[tokio::test]
    async fn send_and_expect_prefix() {
        let addr = replying(b"+PONG\r\nmore").await;
        assert_eq!(check_within(&mut probe(addr, b"+PONG"), T).await, Ok(()));
    }

    #[tokio::test]
    async fn wrong_reply_is_a_mismatch() {
        let addr = replying(b"-ERR nope\r\n").await;
        let err = check_within(&mut probe(addr, b"+PONG"), T)
            .await
            .unwrap_err();
        assert_eq!(err.reason, FailureReason::Mismatch);
    }

    #[tokio::test]
    async fn short_reply_then_close_is_closed() {
        let addr = replying(b"+PO").await;
        let err = check_within(&mut probe(addr, b"+PONG"), T)
            .await
            .unwrap_err();
        assert_eq!(err.reason, FailureReason::Closed);
    }

    #[tokio::test]
    async fn silence_is_a_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // Accepts (the backlog does) but never answers.
        let err = check_within(&mut probe(addr, b"+PONG"), Duration::from_millis(100))
            .await
            .unwrap_err();
        assert_eq!(err.reason, FailureReason::Timeout);
        drop(listener);
    }
}
