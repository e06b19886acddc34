//! [`Recorder`]: a TCP forwarder that keeps what crosses it.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// The bytes of one forwarded connection.
#[derive(Debug, Clone, Default)]
pub struct Recorded {
    /// From the client (the connecting side) to the backend.
    pub to_server: Vec<u8>,
    /// From the backend back to the client.
    pub to_client: Vec<u8>,
}

type Log = Arc<Mutex<Vec<Arc<Mutex<Recorded>>>>>;

/// A TCP forwarder on `127.0.0.1:0` to `backend` that records every byte of every connection
/// in both directions: a wiretap between two sidecars.
pub struct Recorder {
    addr: SocketAddr,
    log: Log,
    stop: Arc<AtomicBool>,
}

impl Recorder {
    pub fn start(backend: SocketAddr) -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the recorder");
        let addr = listener.local_addr().unwrap();
        let log: Log = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        {
            let (log, stop) = (log.clone(), stop.clone());
            std::thread::spawn(move || {
                for client in listener.incoming() {
                    if stop.load(Ordering::Acquire) {
                        return;
                    }
                    let Ok(client) = client else { continue };
                    let Ok(server) = TcpStream::connect(backend) else {
                        continue;
                    };
                    let record = Arc::new(Mutex::new(Recorded::default()));
                    log.lock().unwrap().push(record.clone());
                    splice(client, server, record);
                }
            });
        }
        Recorder { addr, log, stop }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What each connection carried so far, in the order they were accepted.
    pub fn connections(&self) -> Vec<Recorded> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.lock().unwrap().clone())
            .collect()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wake the accept loop so it sees `stop`.
        let _ = TcpStream::connect(self.addr);
    }
}

/// Copies bytes both ways, appending them to `record`; when either side ends, both
/// connections are shut down.
fn splice(client: TcpStream, server: TcpStream, record: Arc<Mutex<Recorded>>) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let pairs = [
        (
            client.try_clone().unwrap(),
            server.try_clone().unwrap(),
            true,
        ),
        (server, client, false),
    ];
    for (mut from, mut to, to_server) in pairs {
        let record = record.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 16 * 1024];
            loop {
                match from.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        {
                            let mut r = record.lock().unwrap();
                            let into = if to_server {
                                &mut r.to_server
                            } else {
                                &mut r.to_client
                            };
                            into.extend_from_slice(&buf[..n]);
                        }
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = from.shutdown(Shutdown::Both);
            let _ = to.shutdown(Shutdown::Both);
        });
    }
}
