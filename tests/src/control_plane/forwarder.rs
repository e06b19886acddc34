//! [`Forwarder`]: a TCP forwarder whose backend can be switched.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// A TCP forwarder on `127.0.0.1:0` to a backend the test can switch: a Kubernetes Service in
/// front of control-plane replicas. Connections already forwarded stay with their backend (and
/// die with it); new ones go to the current backend.
pub struct Forwarder {
    addr: SocketAddr,
    backend: Arc<Mutex<SocketAddr>>,
    stop: Arc<AtomicBool>,
}

impl Forwarder {
    pub fn start(backend: SocketAddr) -> Forwarder {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind forwarder");
        let addr = listener.local_addr().unwrap();
        let backend = Arc::new(Mutex::new(backend));
        let stop = Arc::new(AtomicBool::new(false));
        {
            let (backend, stop) = (backend.clone(), stop.clone());
            std::thread::spawn(move || {
                for client in listener.incoming() {
                    if stop.load(Ordering::Acquire) {
                        return;
                    }
                    let Ok(client) = client else { continue };
                    let to = *backend.lock().unwrap();
                    match TcpStream::connect(to) {
                        Ok(server) => splice(client, server),
                        // As a Service with no ready endpoint: the connection is refused.
                        Err(_) => drop(client),
                    }
                }
            });
        }
        Forwarder {
            addr,
            backend,
            stop,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// New connections go to `backend` from now on.
    pub fn switch(&self, backend: SocketAddr) {
        *self.backend.lock().unwrap() = backend;
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wake the accept loop so it sees `stop`.
        let _ = TcpStream::connect(self.addr);
    }
}

/// Copies bytes both ways; when either side ends, both connections are shut down.
fn splice(a: TcpStream, b: TcpStream) {
    let _ = a.set_nodelay(true);
    let _ = b.set_nodelay(true);
    for (mut from, mut to) in [(a.try_clone().unwrap(), b.try_clone().unwrap()), (b, a)] {
        std::thread::spawn(move || {
            let mut buf = [0u8; 16 * 1024];
            loop {
                match from.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
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
