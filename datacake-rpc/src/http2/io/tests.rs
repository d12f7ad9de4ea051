//! The driver against a peer on an in-memory pipe, whose every byte the test controls.

use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use super::*;
use crate::http2::frame::{self, Settings, MAX_WINDOW};
use crate::http2::hpack;
use crate::http2::state::Role;

/// A server's settings.
fn server_config() -> Config {
    Config {
        role: Role::Server,
        stream_window: 1 << 20,
        connection_window: 4 << 20,
        max_frame_size: 1 << 20,
        max_header_list_size: 16 << 10,
        max_concurrent_streams: 64,
    }
}

/// A client's opening: the preface and settings with the widest windows.
fn client_opening() -> BytesMut {
    let mut out = BytesMut::from(&frame::PREFACE[..]);
    let settings = Settings {
        initial_window_size: Some(MAX_WINDOW),
        ..Settings::default()
    };
    frame::encode_settings(&mut out, &settings);
    frame::encode_window_update(&mut out, StreamId::ZERO, MAX_WINDOW - 65_535);
    out
}

/// Requests with no body on `streams`.
fn requests(streams: impl Iterator<Item = u32>) -> BytesMut {
    let mut block = BytesMut::new();
    for (name, value) in [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/svc/call"),
    ] {
        hpack::encode_field(&mut block, name.as_bytes(), value.as_bytes());
    }
    let mut out = BytesMut::new();
    for id in streams {
        frame::encode_headers(&mut out, StreamId(id), &block, true, 16_384);
    }
    out
}

#[tokio::test]
async fn a_server_stops_reading_a_peer_that_does_not_read_its_replies() {
    const LIMIT: usize = 256 << 10;
    const REPLY: usize = 1 << 10;
    // A pipe that holds 16 KiB each way: what the server does not read stays with the peer.
    let (peer, server_end) = tokio::io::duplex(16 << 10);
    let pauses = Arc::new(AtomicU64::new(0));
    let rule = ReadPause {
        at: LIMIT,
        count: pauses.clone(),
    };
    let driver = Driver::new(server_end, server_config(), Some(rule));
    let running = tokio::spawn(driver.clone().run());
    // The application answers every request with 1 KiB.
    let accepting = Accepting::new(driver.clone());
    let answering = tokio::spawn(async move {
        while let Some((_, _body, respond)) = accepting.accept().await {
            let reply = Bytes::from(vec![7u8; REPLY]);
            let _ = respond.respond(http::StatusCode::OK, &http::HeaderMap::new(), Some(reply));
        }
    });
    // The peer sends 20,000 requests (about 20 MiB of replies) and reads nothing. It keeps
    // within the stream limit the way a peer that reads nothing can: a batch at a time, the
    // next once the server took the last one and answered it. (Past the limit, the server's
    // refusals would cut the peer off: see `State::answered`.)
    const REQUESTS: u32 = 20_000;
    const BATCH: u32 = 32;
    let sent = Arc::new(AtomicUsize::new(0));
    let (_unread, mut writer) = tokio::io::split(peer);
    let sending = {
        let (sent, driver) = (sent.clone(), driver.clone());
        tokio::spawn(async move {
            writer
                .write_all(&client_opening())
                .await
                .expect("the pipe is open");
            for first in (0..REQUESTS).step_by(BATCH as usize) {
                let batch = first..(first + BATCH).min(REQUESTS);
                let count = batch.len();
                writer
                    .write_all(&requests(batch.map(|i| 2 * i + 1)))
                    .await
                    .expect("the pipe stays open");
                let taken = |state: &State| {
                    state.requests_opened() as usize == sent.load(Ordering::SeqCst) + count
                        && !state.has_streams()
                };
                while !taken(&driver.state.lock()) {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                sent.fetch_add(count, Ordering::SeqCst);
            }
        })
    };
    let unwritten = || {
        let socket = driver.socket.lock();
        let socket = socket.as_ref().expect("the driver runs");
        socket.unwritten + driver.state.lock().queued_len()
    };
    let paused = || driver.socket.lock().as_ref().is_some_and(|s| s.paused);
    // Either the server stopped reading (its replies reached the limit; the peer's requests
    // back up), or it read every request (the failure).
    test_helper::wait_for(
        "the server paused or took every request",
        Duration::from_secs(10),
        || async { sending.is_finished() || paused() },
    )
    .await;
    assert!(
        !sending.is_finished(),
        "the server took all {REQUESTS} requests while its replies piled up ({} bytes)",
        unwritten()
    );
    assert!(pauses.load(Ordering::Relaxed) >= 1, "the pause was counted");
    // Paused: what it holds stays near the limit while the peer keeps trying to send.
    let held = unwritten();
    let bound = LIMIT + 64 * (REPLY + 64);
    assert!(held <= bound, "{held} bytes queued, bound {bound}");
    let taken = sent.load(Ordering::SeqCst);
    assert!(
        taken < REQUESTS as usize,
        "{taken} of {REQUESTS} requests taken"
    );
    running.abort();
    answering.abort();
    sending.abort();
}
