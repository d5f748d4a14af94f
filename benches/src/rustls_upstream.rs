//! rustls alone in front of a sink or an echo: what the `forward` and `session` benches
//! measure the Boarding paths against.
//!
//! The client's first byte picks the mode: [`SINK`] reads until the client's close and
//! answers the byte count (8 bytes, big-endian); [`ECHO`] echoes until the close.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;

/// The first byte that asks for a sink.
pub const SINK: u8 = b'S';
/// The first byte that asks for an echo.
pub const ECHO: u8 = b'E';

/// A rustls server with `config` on 127.0.0.1 (blocking, a thread per connection);
/// returns its address.
pub fn rustls_upstream(config: Arc<rustls::ServerConfig>) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let config = Arc::clone(&config);
            std::thread::spawn(move || {
                let _ = stream.set_nodelay(true);
                let conn = rustls::ServerConnection::new(config).unwrap();
                let mut tls = rustls::StreamOwned::new(conn, stream);
                let mut mode = [0u8; 1];
                if tls.read_exact(&mut mode).is_err() {
                    return;
                }
                let mut buf = vec![0u8; 64 * 1024];
                let mut total = 0u64;
                loop {
                    let n = match tls.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    total += n as u64;
                    if mode[0] == ECHO && tls.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
                if mode[0] == SINK {
                    let _ = tls.write_all(&total.to_be_bytes());
                    tls.conn.send_close_notify();
                    let _ = tls.flush();
                }
            });
        }
    });
    addr
}
