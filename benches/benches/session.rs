//! The end-to-end data path: messages through an established `boarding-smol` session
//! over loopback TLS 1.3 (TLS record protection plus the Boarding channel's MAC, in the
//! suite a default gateway and agent negotiate, BLAKE3), against rustls alone (the gateway's own TLS configuration: aws-lc-rs,
//! X25519MLKEM768) over the same loopback, at 1 KiB, 16 KiB and 64 KiB messages.
//!
//! Each cell uploads for a fixed time: the agent sends messages of the size, then an
//! end marker; the gateway's handler (a sink) counts what it received and answers the
//! total, which must be every byte sent. rustls alone does the same with writes of the
//! size on a blocking TLS stream. The ratio column is the session's throughput over
//! rustls alone's at the same size.
//!
//! A third path models what `spec/PROTOCOL.md` §14.3 proposes a TLS-bound session may
//! skip, the channel MAC: the session's framing (a 5-byte header per message), its
//! copies (into a frame buffer on the sender, through a read chunk into a receive buffer
//! on the receiver) and its flush per message, over the same TLS, with no MAC. It is a
//! model of the proposal, not a protocol mode: nothing in the drivers sends such frames.
//!
//! `cargo bench -p boarding-benches --bench session`. Everything runs in this process
//! and shares this machine's cores: the gateway on its executor (one thread per core),
//! the agent on the main thread, the rustls server on a thread of its own. Every
//! connection targets 127.0.0.1; every phase is bounded and stops by itself.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::arithmetic_side_effects)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use boarding::identity::{ClientId, ServerIdentity};
use boarding::suite::MacSuite;
use boarding::token::{BootstrapToken, TokenRecord};
use boarding_benches::rustls_upstream::{SINK, rustls_upstream};
use boarding_smol::tls::{self, PinVerifier};
use boarding_smol::{
    Agent, Gateway, GatewayConfig, GatewaySession, GatewayStream, MemoryKeyringStore, MemoryStore, Store, os_rng,
};

/// How long each cell uploads.
const PHASE: Duration = Duration::from_secs(2);
/// The message sizes.
const SIZES: [usize; 3] = [1024, 16 * 1024, 64 * 1024];
/// The marker that ends an upload (shorter than any message size).
const END: &[u8] = b"end";

/// The gateway's handler: counts the bytes of every message until the end marker, then
/// answers the total.
async fn sink(mut session: GatewaySession<GatewayStream>) -> Result<(), boarding_smol::Error> {
    let mut total = 0u64;
    loop {
        let len = match session.recv_ref().await? {
            Some(END) => {
                session.send(&total.to_be_bytes()).await?;
                total = 0;
                continue;
            }
            Some(message) => message.len(),
            None => break,
        };
        total += len as u64;
    }
    session.close().await
}

/// Bytes per second rustls alone uploads with writes of `size`.
fn rustls_upload(addr: SocketAddr, client: &Arc<rustls::ClientConfig>, size: usize) -> f64 {
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_nodelay(true).unwrap();
    let name = rustls::pki_types::ServerName::try_from(tls::SERVER_NAME).unwrap();
    let mut tls = rustls::StreamOwned::new(rustls::ClientConnection::new(Arc::clone(client), name).unwrap(), tcp);
    let chunk = vec![0x5au8; size];
    // The TLS handshake completes with the first write: keep it out of the phase.
    tls.write_all(&[SINK]).unwrap();
    tls.write_all(&chunk).unwrap();
    let started = Instant::now();
    let mut sent = size as u64;
    while started.elapsed() < PHASE {
        for _ in 0..16 {
            tls.write_all(&chunk).unwrap();
        }
        sent += 16 * size as u64;
    }
    tls.conn.send_close_notify();
    tls.flush().unwrap();
    let mut count = [0u8; 8];
    tls.read_exact(&mut count).unwrap();
    let took = started.elapsed();
    assert_eq!(u64::from_be_bytes(count), sent, "rustls alone: the sink read every byte");
    sent as f64 / took.as_secs_f64()
}

/// The model of a TLS-bound session without the channel MAC: the gateway side, which
/// opens frames as the session does (header, payload, no tag) and answers the count.
async fn unmacced_sink(tls: futures_rustls::server::TlsStream<smol::net::TcpStream>) {
    use smol::io::{AsyncReadExt, AsyncWriteExt};
    let mut tls = tls;
    let (mut rbuf, mut start, mut chunk, mut total) = (Vec::new(), 0usize, vec![0u8; 64 * 1024], 0u64);
    loop {
        // Open every whole frame in the buffer.
        while rbuf.len() - start >= 5 {
            let len = u32::from_be_bytes(rbuf[start + 1..start + 5].try_into().unwrap()) as usize;
            if rbuf.len() - start < 5 + len {
                break;
            }
            let payload = &rbuf[start + 5..start + 5 + len];
            if payload == END {
                let frame = [&[0x17, 0, 0, 0, 8][..], &total.to_be_bytes()].concat();
                tls.write_all(&frame).await.unwrap();
                tls.flush().await.unwrap();
                total = 0;
            } else {
                total += len as u64;
            }
            start += 5 + len;
        }
        rbuf.drain(..start);
        start = 0;
        // The agent's end closes the connection when the bench is done.
        let n = tls.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            return;
        }
        rbuf.extend_from_slice(&chunk[..n]);
    }
}

/// The model's agent side: frames of `size` (copied into a frame buffer, as the
/// session's seal does), written and flushed one by one, then the end marker.
async fn unmacced_upload(tls: &mut futures_rustls::client::TlsStream<smol::net::TcpStream>, size: usize) -> f64 {
    use smol::io::{AsyncReadExt, AsyncWriteExt};
    let message = vec![0x5au8; size];
    let mut frame = Vec::new();
    let send = async |payload: &[u8], frame: &mut Vec<u8>, tls: &mut futures_rustls::client::TlsStream<_>| {
        frame.clear();
        frame.push(0x17);
        frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        frame.extend_from_slice(payload);
        tls.write_all(frame).await.unwrap();
        tls.flush().await.unwrap();
    };
    let started = Instant::now();
    let mut sent = 0u64;
    while started.elapsed() < PHASE {
        for _ in 0..16 {
            send(&message, &mut frame, tls).await;
        }
        sent += 16 * size as u64;
    }
    send(END, &mut frame, tls).await;
    let mut answer = [0u8; 13];
    tls.read_exact(&mut answer).await.unwrap();
    let took = started.elapsed();
    assert_eq!(u64::from_be_bytes(answer[5..].try_into().unwrap()), sent, "the model: the sink read every byte");
    sent as f64 / took.as_secs_f64()
}

/// Bytes per second of payload an established session uploads in messages of `size`.
async fn session_upload(session: &mut boarding_smol::AgentSession<boarding_smol::AgentStream>, size: usize) -> f64 {
    let message = vec![0x5au8; size];
    let started = Instant::now();
    let mut sent = 0u64;
    while started.elapsed() < PHASE {
        for _ in 0..16 {
            session.send(&message).await.unwrap();
        }
        sent += 16 * size as u64;
    }
    session.send(END).await.unwrap();
    let count = session.recv().await.unwrap().expect("the sink's count");
    let took = started.elapsed();
    assert_eq!(u64::from_be_bytes(count.try_into().unwrap()), sent, "the session: the sink read every byte");
    sent as f64 / took.as_secs_f64()
}

fn main() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let identity = ServerIdentity::generate(&mut os_rng());
    let pin = identity.pin();
    let client = tls::client_config(Arc::new(PinVerifier::new(vec![pin]))).unwrap();
    let rustls_addr = rustls_upstream(tls::server_config(&identity).unwrap());

    println!("messages through a session over loopback TLS 1.3 vs rustls alone, {cores} cores shared by every party");
    println!();
    println!(
        "| message | rustls alone | session (TLS + channel, BLAKE3) | ÷ rustls alone | model: session without the MAC | ÷ rustls alone |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    smol::block_on(async {
        let gateway = Gateway::new(identity.clone(), MemoryStore::new(), GatewayConfig::default()).unwrap();
        let listener = smol::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let serving = gateway.serve(listener, sink).unwrap();
        let addr = serving.local_addr().to_string();
        let token = BootstrapToken::generate(&mut os_rng());
        gateway.store().insert_token(TokenRecord::new(token.clone(), None, 1)).await.unwrap();
        let keyrings = MemoryKeyringStore::new();
        let agent = Agent::default();
        agent
            .join(&addr, token, &[pin], ClientId::new("bench").unwrap(), &keyrings)
            .await
            .unwrap()
            .close()
            .await
            .unwrap();
        let mut session = agent.connect(&addr, &keyrings).await.unwrap();
        // The gateway's preference, which this agent offers: the one a deployment gets.
        assert_eq!(session.peer().suite, MacSuite::Blake3);
        // The model's two ends, over the gateway's and the agent's own TLS configurations.
        let model_listener = smol::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let model_addr = model_listener.local_addr().unwrap();
        let acceptor = futures_rustls::TlsAcceptor::from(tls::server_config(&identity).unwrap());
        smol::spawn(async move {
            let (tcp, _) = model_listener.accept().await.unwrap();
            tcp.set_nodelay(true).unwrap();
            unmacced_sink(acceptor.accept(tcp).await.unwrap()).await;
        })
        .detach();
        let tcp = smol::net::TcpStream::connect(model_addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let name = rustls::pki_types::ServerName::try_from(tls::SERVER_NAME).unwrap();
        let mut model = futures_rustls::TlsConnector::from(Arc::clone(&client)).connect(name, tcp).await.unwrap();
        for size in SIZES {
            let alone = rustls_upload(rustls_addr, &client, size);
            let through = session_upload(&mut session, size).await;
            let unmacced = unmacced_upload(&mut model, size).await;
            println!(
                "| {} KiB | {:.0} MB/s | {:.0} MB/s | {:.2} | {:.0} MB/s | {:.2} |",
                size / 1024,
                alone / 1e6,
                through / 1e6,
                through / alone,
                unmacced / 1e6,
                unmacced / alone
            );
        }
        session.close().await.unwrap();
        smol::io::AsyncWriteExt::close(&mut model).await.unwrap();
        serving.shutdown().await;
    });
}
