//! The connection state's rules, frame by frame: a client's first (opening streams,
//! reading replies, windows, refusals, a server that breaks the rules), then a server's.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Wake;

use super::*;
use crate::http2::head::{RequestHead, ResponseHead};

const CONFIG: Config = Config {
    role: Role::Client,
    max_concurrent_streams: 0,
    stream_window: 1 << 20,
    connection_window: 4 << 20,
    max_frame_size: 1 << 20,
    max_header_list_size: 16 << 10,
};

/// A waker that counts its wake-ups.
#[derive(Default)]
struct Counter(AtomicUsize);

impl Wake for Counter {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn waker() -> (Waker, Arc<Counter>) {
    let counter = Arc::new(Counter::default());
    (Waker::from(counter.clone()), counter)
}

fn wake(wakeups: Wakeups) {
    wakeups.wake_all();
}

/// Every frame the client queued (after the preface, which must lead the first batch).
fn sent(state: &mut State) -> Vec<Frame> {
    let mut segments = VecDeque::new();
    state.take_output(&mut segments);
    let mut bytes = BytesMut::new();
    for segment in segments {
        bytes.extend_from_slice(&segment);
    }
    if bytes.starts_with(frame::PREFACE) {
        let _ = bytes.split_to(frame::PREFACE.len());
    }
    let mut frames = Vec::new();
    while let Some(frame) = frame::decode(&mut bytes, 1 << 24).expect("the client's frames decode")
    {
        frames.push(frame);
    }
    assert!(bytes.is_empty(), "a partial frame was queued");
    frames
}

/// A client past its opening frames.
fn client(config: Config) -> State {
    let mut state = State::new(config);
    let opening = sent(&mut state);
    assert!(matches!(opening[0], Frame::Settings(_)), "{opening:?}");
    state
}

fn receive(state: &mut State, bytes: BytesMut) -> bool {
    let mut buf = bytes;
    receive_into(state, &mut buf)
}

/// Hands `buf` to the state; a partial frame stays in it for the next call.
fn receive_into(state: &mut State, buf: &mut BytesMut) -> bool {
    let mut wakeups = Wakeups::new();
    let open = state.receive(buf, &mut wakeups);
    wake(wakeups);
    open
}

fn settings_frame(settings: Settings) -> BytesMut {
    let mut out = BytesMut::new();
    frame::encode_settings(&mut out, &settings);
    out
}

/// A header block's fields, decoded by a fresh decoder.
fn decoded(block: &[u8]) -> Vec<(String, String)> {
    let mut fields = Vec::new();
    hpack::Decoder::new(4096)
        .decode(block, 1 << 16, |n, v| {
            fields.push((
                String::from_utf8(n.to_vec()).unwrap(),
                String::from_utf8(v.to_vec()).unwrap(),
            ))
        })
        .unwrap();
    fields
}

fn owned(fields: &[(&str, &str)]) -> Vec<(String, String)> {
    fields
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

fn head_block(fields: &[(&str, &str)]) -> BytesMut {
    let mut block = BytesMut::new();
    for (name, value) in fields {
        hpack::encode_field(&mut block, name.as_bytes(), value.as_bytes());
    }
    block
}

fn reply_head(id: u32, fields: &[(&str, &str)], end_stream: bool) -> BytesMut {
    let mut out = BytesMut::new();
    frame::encode_headers(
        &mut out,
        StreamId(id),
        &head_block(fields),
        end_stream,
        16_384,
    );
    out
}

fn data(id: u32, payload: &[u8], end_stream: bool) -> BytesMut {
    let mut out = BytesMut::new();
    frame::encode_data(&mut out, StreamId(id), payload, end_stream);
    out
}

/// Opens a stream, dropping what was queued so far (the request's head with the rest).
fn open(state: &mut State, end_stream: bool) -> StreamId {
    let (waker, _) = waker();
    let id = state
        .open(
            "127.0.0.1:1",
            "/svc/call",
            &http::HeaderMap::new(),
            end_stream,
            &waker,
        )
        .expect("the connection is open")
        .expect("below the stream limit");
    sent(state);
    id
}

fn send(state: &mut State, id: StreamId, body: &'static [u8], end: bool) {
    let mut wakeups = Wakeups::new();
    state
        .send_data(id, Bytes::from_static(body), end, &mut wakeups)
        .unwrap();
    wake(wakeups);
}

fn head(state: &mut State, id: StreamId) -> Option<Result<ResponseHead, Error>> {
    state.poll_response(id, &waker().0)
}

fn next_data(state: &mut State, id: StreamId) -> Option<Result<Option<Bytes>, Error>> {
    state
        .poll_data(id, &waker().0)
        .map(|polled| polled.map(|data| data.map(|(bytes, _)| bytes)))
}

fn release(state: &mut State, id: StreamId) {
    let mut wakeups = Wakeups::new();
    state.release(id, &mut wakeups);
    wake(wakeups);
}

#[test]
fn the_connection_opens_with_the_preface_settings_and_window() {
    let mut state = State::new(CONFIG);
    let mut segments = VecDeque::new();
    state.take_output(&mut segments);
    assert!(segments[0].starts_with(frame::PREFACE));
    let mut state = State::new(CONFIG);
    let frames = sent(&mut state);
    let Frame::Settings(settings) = &frames[0] else {
        panic!("{frames:?}")
    };
    assert_eq!(settings.enable_push, Some(false));
    assert_eq!(settings.initial_window_size, Some(CONFIG.stream_window));
    assert_eq!(settings.max_frame_size, Some(CONFIG.max_frame_size));
    assert_eq!(
        settings.max_header_list_size,
        Some(CONFIG.max_header_list_size)
    );
    assert!(matches!(
        frames[1],
        Frame::WindowUpdate { stream: StreamId(0), increment } if i64::from(increment) == i64::from(CONFIG.connection_window) - DEFAULT_WINDOW
    ));
}

#[test]
fn a_request_leaves_as_one_headers_and_one_data_frame() {
    let mut state = client(CONFIG);
    let mut headers = http::HeaderMap::new();
    headers.insert("x-trace", http::HeaderValue::from_static("abc"));
    let (waker, _) = waker();
    let id = state
        .open("10.0.0.1:7000", "/svc/echo", &headers, false, &waker)
        .unwrap()
        .unwrap();
    assert_eq!(id, StreamId(1));
    send(&mut state, id, b"hello", true);
    let frames = sent(&mut state);
    assert_eq!(frames.len(), 2, "{frames:?}");
    let Frame::Headers {
        stream,
        end_stream: false,
        end_headers: true,
        block,
    } = &frames[0]
    else {
        panic!("{frames:?}")
    };
    assert_eq!(*stream, id);
    let expected = [
        (":method", "POST"),
        (":scheme", "http"),
        (":authority", "10.0.0.1:7000"),
        (":path", "/svc/echo"),
        ("x-trace", "abc"),
    ];
    assert_eq!(decoded(block), owned(&expected));
    assert!(
        matches!(&frames[1], Frame::Data { stream, end_stream: true, payload, .. } if *stream == id && payload[..] == b"hello"[..])
    );
    // The next stream takes the next odd id.
    assert_eq!(open(&mut state, true), StreamId(3));
}

#[test]
fn a_reply_is_read_as_its_head_then_its_body() {
    let mut state = client(CONFIG);
    let id = open(&mut state, true);
    let (reader, woken) = waker();
    assert!(state.poll_response(id, &reader).is_none());
    assert!(receive(
        &mut state,
        reply_head(1, &[(":status", "200"), ("x-reply", "yes")], false)
    ));
    assert_eq!(
        woken.0.load(Ordering::SeqCst),
        1,
        "the caller waiting for the head was woken"
    );
    let head = head(&mut state, id).unwrap().unwrap();
    assert_eq!(head.status, http::StatusCode::OK);
    assert_eq!(head.headers.get("x-reply").unwrap(), "yes");
    assert!(next_data(&mut state, id).is_none(), "no body yet");
    assert!(receive(&mut state, data(1, b"abc", false)));
    assert!(receive(&mut state, data(1, b"def", true)));
    let (first, last) = state.poll_data(id, &waker().0).unwrap().unwrap().unwrap();
    assert_eq!((&first[..], last), (&b"abc"[..], false));
    let (second, last) = state.poll_data(id, &waker().0).unwrap().unwrap().unwrap();
    assert_eq!(
        (&second[..], last),
        (&b"def"[..], true),
        "the last piece says so"
    );
    assert!(state.is_body_done(id));
    assert_eq!(next_data(&mut state, id).unwrap().unwrap(), None);
    release(&mut state, id);
    assert!(
        state.streams.is_empty(),
        "a finished stream is forgotten with its handle"
    );
    assert_eq!(state.active, 0);
    assert!(
        sent(&mut state).is_empty(),
        "a finished stream is not reset"
    );
}

#[test]
fn a_reply_head_that_breaks_the_rules_fails_only_its_stream() {
    for fields in [
        &[("x-no-status", "1")][..],
        &[(":status", "abc")],
        &[(":status", "200"), (":path", "/x")],
        &[(":status", "200"), ("connection", "close")],
        &[("x-first", "1"), (":status", "200")],
    ] {
        let mut state = client(CONFIG);
        let id = open(&mut state, true);
        assert!(
            receive(&mut state, reply_head(1, fields, false)),
            "{fields:?}"
        );
        assert!(
            matches!(head(&mut state, id), Some(Err(Error::Protocol(_)))),
            "{fields:?}"
        );
        let frames = sent(&mut state);
        assert!(
            matches!(
                frames[..],
                [Frame::RstStream {
                    reason: Reason::PROTOCOL_ERROR,
                    ..
                }]
            ),
            "{fields:?}: {frames:?}"
        );
        assert_eq!(state.active, 0);
        // The connection goes on.
        assert_eq!(open(&mut state, true), StreamId(3));
    }
}

#[test]
fn informational_heads_are_skipped() {
    let mut state = client(CONFIG);
    let id = open(&mut state, true);
    assert!(receive(
        &mut state,
        reply_head(1, &[(":status", "100")], false)
    ));
    assert!(head(&mut state, id).is_none());
    assert!(receive(
        &mut state,
        reply_head(1, &[(":status", "503")], true)
    ));
    assert_eq!(head(&mut state, id).unwrap().unwrap().status, 503);
}

#[test]
fn the_servers_stream_limit_holds_callers_back_until_a_stream_closes() {
    let mut state = client(CONFIG);
    let settings = settings_frame(Settings {
        max_concurrent_streams: Some(1),
        ..Settings::default()
    });
    assert!(receive(&mut state, settings));
    assert!(matches!(sent(&mut state)[..], [Frame::SettingsAck]));
    let first = open(&mut state, true);
    let (waiter, woken) = waker();
    let second = state.open("a:1", "/s/c", &http::HeaderMap::new(), true, &waiter);
    assert_eq!(second, Ok(None));
    assert!(receive(
        &mut state,
        reply_head(1, &[(":status", "200")], true)
    ));
    assert_eq!(
        woken.0.load(Ordering::SeqCst),
        1,
        "the waiting caller was woken"
    );
    let _ = head(&mut state, first);
    assert_eq!(open(&mut state, true), StreamId(3));
}

#[test]
fn a_body_leaves_as_the_servers_windows_allow() {
    let mut state = client(CONFIG);
    let settings = settings_frame(Settings {
        initial_window_size: Some(4),
        ..Settings::default()
    });
    assert!(receive(&mut state, settings));
    let id = open(&mut state, false);
    send(&mut state, id, b"0123456789", true);
    let frames = sent(&mut state);
    assert!(
        matches!(&frames[..], [Frame::Data { end_stream: false, payload, .. }] if payload[..] == b"0123"[..]),
        "{frames:?}"
    );
    assert_eq!(state.unsent(id), 6);
    let (writer, woken) = waker();
    state.wait_to_send(id, &writer).unwrap();
    let mut update = BytesMut::new();
    frame::encode_window_update(&mut update, id, 100);
    assert!(receive(&mut state, update));
    assert_eq!(woken.0.load(Ordering::SeqCst), 1);
    let frames = sent(&mut state);
    assert!(
        matches!(&frames[..], [Frame::Data { end_stream: true, payload, .. }] if payload[..] == b"456789"[..]),
        "{frames:?}"
    );
    assert_eq!(state.unsent(id), 0);
}

#[test]
fn a_shrinking_initial_window_holds_data_back() {
    let mut state = client(CONFIG);
    let id = open(&mut state, false);
    let settings = settings_frame(Settings {
        initial_window_size: Some(0),
        ..Settings::default()
    });
    assert!(receive(&mut state, settings));
    send(&mut state, id, b"abc", true);
    let frames = sent(&mut state);
    assert!(matches!(&frames[..], [Frame::SettingsAck]), "{frames:?}");
    assert_eq!(state.unsent(id), 3);
}

/// A client with an 8-byte stream window, and the head of a reply on its first stream.
fn small_windows_with_a_reply() -> (State, StreamId) {
    let small = Config {
        stream_window: 8,
        connection_window: 65_535,
        ..CONFIG
    };
    let mut state = client(small);
    let id = open(&mut state, true);
    assert!(receive(
        &mut state,
        reply_head(1, &[(":status", "200")], false)
    ));
    (state, id)
}

#[test]
fn data_past_a_window_is_refused() {
    let (mut state, id) = small_windows_with_a_reply();
    assert!(receive(&mut state, data(1, b"0123456789", false)));
    let _ = head(&mut state, id);
    assert!(matches!(
        next_data(&mut state, id),
        Some(Err(Error::Protocol(_)))
    ));
    assert!(matches!(
        sent(&mut state)[..],
        [Frame::RstStream {
            reason: Reason::FLOW_CONTROL_ERROR,
            ..
        }]
    ));
    // The connection window counts every byte, whatever the stream.
    let (mut state, id) = small_windows_with_a_reply();
    assert!(head(&mut state, id).unwrap().is_ok());
    let big = vec![0u8; 70_000];
    assert!(!receive(&mut state, data(1, &big, false)));
    assert!(matches!(
        next_data(&mut state, id),
        Some(Err(Error::Closed(_)))
    ));
    assert!(matches!(
        sent(&mut state)[..],
        [Frame::GoAway {
            reason: Reason::FLOW_CONTROL_ERROR,
            ..
        }]
    ));
}

#[test]
fn bytes_read_go_back_to_the_server_as_window_updates() {
    let (mut state, id) = small_windows_with_a_reply();
    assert!(receive(&mut state, data(1, b"0123", false)));
    let _ = head(&mut state, id);
    assert!(
        sent(&mut state).is_empty(),
        "nothing is handed back before it is read"
    );
    assert_eq!(next_data(&mut state, id).unwrap().unwrap().unwrap(), "0123");
    let frames = sent(&mut state);
    assert!(
        matches!(frames[..], [Frame::WindowUpdate { stream, increment: 4 }] if stream == id),
        "{frames:?}"
    );
    // Then the server may send the whole window again.
    assert!(receive(&mut state, data(1, b"01234567", false)));
    assert_eq!(
        next_data(&mut state, id).unwrap().unwrap().unwrap().len(),
        8
    );
}

#[test]
fn a_reply_dropped_before_its_end_resets_the_stream() {
    let mut state = client(CONFIG);
    let id = open(&mut state, true);
    release(&mut state, id);
    assert!(matches!(
        sent(&mut state)[..],
        [Frame::RstStream { stream, reason: Reason::CANCEL }] if stream == id
    ));
    assert_eq!(state.active, 0);
    // What the server sent before it saw the reset is ignored, its room handed back.
    assert!(receive(
        &mut state,
        reply_head(1, &[(":status", "200")], false)
    ));
    let frame = vec![0u8; CONFIG.max_frame_size as usize];
    for _ in 0..CONFIG.connection_window / CONFIG.max_frame_size / 2 {
        assert!(receive(&mut state, data(1, &frame, false)));
    }
    assert!(matches!(
        sent(&mut state)[..],
        [Frame::WindowUpdate {
            stream: StreamId(0),
            ..
        }]
    ));
}

#[test]
fn refused_and_unprocessed_streams_can_be_sent_again() {
    let mut state = client(CONFIG);
    let first = open(&mut state, true);
    let second = open(&mut state, true);
    let third = open(&mut state, true);
    let mut frames = BytesMut::new();
    frame::encode_rst_stream(&mut frames, first, Reason::REFUSED_STREAM);
    frame::encode_goaway(&mut frames, second, Reason::NO_ERROR, b"");
    assert!(receive(&mut state, frames));
    let refused = head(&mut state, first).unwrap().unwrap_err();
    assert!(refused.is_unprocessed(), "{refused:?}");
    assert!(
        head(&mut state, second).is_none(),
        "at or below the last stream: still served"
    );
    let unprocessed = head(&mut state, third).unwrap().unwrap_err();
    assert_eq!(unprocessed, Error::NotProcessed);
    let (waker, _) = waker();
    assert_eq!(
        state.open("a:1", "/s/c", &http::HeaderMap::new(), true, &waker),
        Err(Error::NotProcessed)
    );
    // A reset for another reason is not retried.
    let mut state = client(CONFIG);
    let id = open(&mut state, true);
    let mut frames = BytesMut::new();
    frame::encode_rst_stream(&mut frames, id, Reason::STREAM_CLOSED);
    assert!(receive(&mut state, frames));
    assert!(!head(&mut state, id).unwrap().unwrap_err().is_unprocessed());
}

#[test]
fn a_server_that_breaks_the_connection_rules_is_left() {
    let cases: Vec<(&str, BytesMut)> = vec![
        ("a push promise", {
            let mut out = BytesMut::new();
            // PUSH_PROMISE on stream 1 promising stream 2, END_HEADERS.
            frame::encode_head(&mut out, 0x5, 0x4, StreamId(1), 4);
            out.extend_from_slice(&2u32.to_be_bytes());
            out
        }),
        (
            "a stream never opened",
            reply_head(7, &[(":status", "200")], true),
        ),
        (
            "a server-initiated stream",
            reply_head(2, &[(":status", "200")], true),
        ),
        ("an interrupted header block", {
            let block = head_block(&[(":status", "200")]);
            let mut out = BytesMut::new();
            frame::encode_head(&mut out, 0x1, 0x0, StreamId(1), block.len());
            out.extend_from_slice(&block);
            out.extend_from_slice(&data(1, b"x", false));
            out
        }),
        ("a header block that does not decode", {
            let mut out = BytesMut::new();
            // Indexed field 0 is never valid.
            frame::encode_headers(&mut out, StreamId(1), &[0x80], false, 16_384);
            out
        }),
    ];
    for (what, bytes) in cases {
        let mut state = client(CONFIG);
        let id = open(&mut state, true);
        assert!(!receive(&mut state, bytes), "{what}");
        assert!(
            matches!(head(&mut state, id), Some(Err(Error::Closed(_)))),
            "{what}"
        );
        let frames = sent(&mut state);
        assert!(
            matches!(frames.last(), Some(Frame::GoAway { .. })),
            "{what}: {frames:?}"
        );
        let (waker, _) = waker();
        assert!(state
            .open("a:1", "/s/c", &http::HeaderMap::new(), true, &waker)
            .is_err());
    }
}

#[test]
fn pings_are_answered_and_ours_are_matched() {
    let mut state = client(CONFIG);
    let mut ping = BytesMut::new();
    frame::encode_ping(&mut ping, false, *b"12345678");
    assert!(receive(&mut state, ping));
    assert!(
        matches!(sent(&mut state)[..], [Frame::Ping { ack: true, payload }] if payload == *b"12345678")
    );
    state.send_ping().unwrap();
    let Frame::Ping {
        ack: false,
        payload,
    } = sent(&mut state)[0]
    else {
        panic!("no ping sent")
    };
    let (waker, woken) = waker();
    assert!(state.poll_pong(&waker).is_none());
    let mut other = BytesMut::new();
    frame::encode_ping(&mut other, true, *b"00000000");
    assert!(receive(&mut state, other));
    assert!(
        state.poll_pong(&waker).is_none(),
        "an answer to another ping"
    );
    let mut answer = BytesMut::new();
    frame::encode_ping(&mut answer, true, payload);
    assert!(receive(&mut state, answer));
    assert_eq!(woken.0.load(Ordering::SeqCst), 1);
    assert_eq!(state.poll_pong(&waker), Some(Ok(())));
}

#[test]
fn closing_fails_every_stream_and_wakes_every_caller() {
    let mut state = client(CONFIG);
    let id = open(&mut state, true);
    let (reader, woken) = waker();
    assert!(state.poll_response(id, &reader).is_none());
    let mut wakeups = Wakeups::new();
    state.close(Error::Closed("gone".into()), &mut wakeups);
    wake(wakeups);
    assert_eq!(woken.0.load(Ordering::SeqCst), 1);
    assert!(matches!(head(&mut state, id), Some(Err(Error::Closed(why))) if why == "gone"));
}

#[test]
fn a_reply_that_contradicts_its_content_length_fails() {
    let mut state = client(CONFIG);
    let id = open(&mut state, true);
    assert!(receive(
        &mut state,
        reply_head(1, &[(":status", "200"), ("content-length", "5")], false)
    ));
    assert!(head(&mut state, id).unwrap().is_ok());
    assert!(receive(&mut state, data(1, b"abc", true)));
    assert!(matches!(
        next_data(&mut state, id),
        Some(Err(Error::Protocol(_)))
    ));
}

// The server's end.

const SERVER: Config = Config {
    role: Role::Server,
    max_concurrent_streams: 8,
    ..CONFIG
};

/// A server past the client's preface and settings.
fn server(config: Config) -> State {
    let mut state = State::new(config);
    let opening = sent(&mut state);
    assert!(
        matches!(&opening[0], Frame::Settings(s) if s.max_concurrent_streams == Some(config.max_concurrent_streams)),
        "{opening:?}"
    );
    let mut hello = BytesMut::from(&frame::PREFACE[..]);
    frame::encode_settings(&mut hello, &Settings::default());
    assert!(receive(&mut state, hello));
    assert!(state.poll_handshake(&waker().0));
    assert!(matches!(sent(&mut state)[..], [Frame::SettingsAck]));
    state
}

fn request(id: u32, path: &str, extra: &[(&str, &str)], end_stream: bool) -> BytesMut {
    let mut fields = vec![(":method", "POST"), (":scheme", "http"), (":path", path)];
    fields.extend_from_slice(extra);
    let mut out = BytesMut::new();
    frame::encode_headers(
        &mut out,
        StreamId(id),
        &head_block(&fields),
        end_stream,
        16_384,
    );
    out
}

fn accept(state: &mut State) -> Option<(StreamId, RequestHead)> {
    state.poll_accept(&waker().0)
}

#[test]
fn a_server_takes_requests_and_answers_them() {
    let mut state = server(SERVER);
    assert!(receive(
        &mut state,
        request(1, "/svc/call", &[("x-a", "b")], false)
    ));
    assert!(receive(&mut state, data(1, b"ping", true)));
    let (id, head) = accept(&mut state).expect("a request");
    assert_eq!(
        (id, head.method.as_str(), head.route()),
        (StreamId(1), "POST", "/svc/call")
    );
    assert_eq!(head.headers.get("x-a").unwrap(), "b");
    assert_eq!(next_data(&mut state, id).unwrap().unwrap().unwrap(), "ping");
    assert_eq!(next_data(&mut state, id).unwrap().unwrap(), None);
    let mut wakeups = Wakeups::new();
    state
        .respond(
            id,
            http::StatusCode::OK,
            &http::HeaderMap::new(),
            false,
            &mut wakeups,
        )
        .unwrap();
    state
        .send_data(id, Bytes::from_static(b"pong"), true, &mut wakeups)
        .unwrap();
    let frames = sent(&mut state);
    let [Frame::Headers {
        block,
        end_stream: false,
        ..
    }, Frame::Data {
        payload,
        end_stream: true,
        ..
    }, ..] = &frames[..]
    else {
        panic!("{frames:?}")
    };
    assert_eq!(decoded(block), owned(&[(":status", "200")]));
    assert_eq!(&payload[..], b"pong");
    // Both handles (body, reply) let go: the stream is forgotten, with no reset.
    release(&mut state, id);
    release(&mut state, id);
    assert!(state.streams.is_empty());
    assert!(!state.has_streams());
    assert!(sent(&mut state).is_empty());
}

#[test]
fn a_server_refuses_streams_past_its_limit_and_after_its_goaway() {
    let mut state = server(Config {
        max_concurrent_streams: 1,
        ..SERVER
    });
    assert!(receive(&mut state, request(1, "/a", &[], true)));
    assert!(receive(&mut state, request(3, "/a", &[], true)));
    assert!(matches!(
        sent(&mut state)[..],
        [Frame::RstStream {
            stream: StreamId(3),
            reason: Reason::REFUSED_STREAM
        }]
    ));
    let (id, _) = accept(&mut state).unwrap();
    assert!(accept(&mut state).is_none());
    let mut wakeups = Wakeups::new();
    state.go_away(&mut wakeups);
    assert!(matches!(
        sent(&mut state)[..],
        [Frame::GoAway {
            last_stream: StreamId(3),
            reason: Reason::NO_ERROR,
            ..
        }]
    ));
    assert!(receive(&mut state, request(5, "/a", &[], true)));
    assert!(matches!(
        sent(&mut state)[..],
        [Frame::RstStream {
            stream: StreamId(5),
            reason: Reason::REFUSED_STREAM
        }]
    ));
    assert!(!state.is_finished(), "stream 1 is still being answered");
    state
        .respond(
            id,
            http::StatusCode::OK,
            &http::HeaderMap::new(),
            true,
            &mut wakeups,
        )
        .unwrap();
    assert!(state.is_finished());
}

#[test]
fn a_request_that_breaks_the_rules_is_reset_and_the_connection_goes_on() {
    let mut state = server(SERVER);
    let mut no_path = BytesMut::new();
    frame::encode_headers(
        &mut no_path,
        StreamId(1),
        &head_block(&[(":method", "POST"), (":scheme", "http")]),
        true,
        16_384,
    );
    assert!(receive(&mut state, no_path));
    assert!(receive(
        &mut state,
        request(3, "/a", &[("content-length", "9")], true)
    ));
    assert!(receive(
        &mut state,
        request(5, "/a", &[("content-length", "2")], false)
    ));
    assert!(receive(&mut state, data(5, b"abc", true)));
    let frames = sent(&mut state);
    assert!(
        matches!(
            frames[..],
            [
                Frame::RstStream {
                    stream: StreamId(1),
                    reason: Reason::PROTOCOL_ERROR
                },
                Frame::RstStream {
                    stream: StreamId(3),
                    reason: Reason::PROTOCOL_ERROR
                },
                Frame::RstStream {
                    stream: StreamId(5),
                    reason: Reason::PROTOCOL_ERROR
                },
            ]
        ),
        "{frames:?}"
    );
    assert!(receive(&mut state, request(7, "/a", &[], true)));
    assert_eq!(accept(&mut state).map(|(id, _)| id), Some(StreamId(7)));
}

#[test]
fn an_oversized_request_head_is_answered_431() {
    let mut state = server(Config {
        max_header_list_size: 200,
        ..SERVER
    });
    let big = "x".repeat(300);
    assert!(receive(
        &mut state,
        request(1, "/a", &[("x-big", &big)], false)
    ));
    let frames = sent(&mut state);
    let [Frame::Headers {
        block,
        end_stream: true,
        ..
    }, Frame::RstStream {
        reason: Reason::NO_ERROR,
        ..
    }] = &frames[..]
    else {
        panic!("{frames:?}")
    };
    assert_eq!(decoded(block), owned(&[(":status", "431")]));
    assert!(accept(&mut state).is_none());
    // The compression context stayed in step: the next request decodes.
    assert!(receive(&mut state, request(3, "/a", &[], true)));
    assert!(accept(&mut state).is_some());
}

#[test]
fn a_server_wants_the_preface_first() {
    let mut state = State::new(SERVER);
    sent(&mut state);
    assert!(!receive(
        &mut state,
        BytesMut::from(&b"GET / HTTP/1.1\r\n\r\n"[..])
    ));
    assert!(matches!(
        sent(&mut state)[..],
        [Frame::GoAway {
            reason: Reason::PROTOCOL_ERROR,
            ..
        }]
    ));
    // Byte by byte, the preface is still the preface.
    let mut state = State::new(SERVER);
    let mut buf = BytesMut::new();
    for byte in frame::PREFACE.iter() {
        buf.extend_from_slice(&[*byte]);
        assert!(state.receive(&mut buf, &mut Wakeups::new()));
    }
    assert!(buf.is_empty(), "the preface was taken");
    assert!(state.poll_handshake(&waker().0));
}

#[test]
fn a_peer_that_does_not_read_its_answers_is_cut_off() {
    let mut state = server(SERVER);
    let mut pings = BytesMut::new();
    for _ in 0..(MAX_QUEUED_ANSWERS / 17 + 1) {
        frame::encode_ping(&mut pings, false, [7; 8]);
    }
    assert!(!receive(&mut state, pings));
    assert!(matches!(
        sent(&mut state).last(),
        Some(Frame::GoAway {
            reason: Reason::ENHANCE_YOUR_CALM,
            ..
        })
    ));
    // One that reads them may ping as often as it likes.
    let mut state = server(SERVER);
    for _ in 0..(MAX_QUEUED_ANSWERS / 17 + 1) {
        let mut ping = BytesMut::new();
        frame::encode_ping(&mut ping, false, [7; 8]);
        assert!(receive(&mut state, ping));
        sent(&mut state);
    }
}

#[test]
fn a_stream_reset_before_it_is_taken_is_not_served() {
    let mut state = server(SERVER);
    assert!(receive(&mut state, request(1, "/a", &[], false)));
    let mut reset = BytesMut::new();
    frame::encode_rst_stream(&mut reset, StreamId(1), Reason::CANCEL);
    assert!(receive(&mut state, reset));
    assert!(accept(&mut state).is_none());
    assert!(state.streams.is_empty());
    assert!(!state.has_streams());
}

#[test]
fn a_retired_connection_ends_with_its_last_stream() {
    let mut state = client(CONFIG);
    let id = open(&mut state, true);
    state.retire();
    let (waker, _) = waker();
    assert_eq!(
        state.open("a:1", "/s/c", &http::HeaderMap::new(), true, &waker),
        Err(Error::NotProcessed)
    );
    assert!(!state.is_finished(), "a call is still in flight");
    assert!(receive(
        &mut state,
        reply_head(1, &[(":status", "200")], true)
    ));
    assert!(state.is_finished());
    assert!(
        head(&mut state, id).unwrap().is_ok(),
        "its reply is still there"
    );
}

#[test]
fn headers_http2_forbids_are_not_sent() {
    let mut state = server(SERVER);
    assert!(receive(&mut state, request(1, "/a", &[], true)));
    let (id, _) = accept(&mut state).unwrap();
    let mut headers = http::HeaderMap::new();
    headers.insert("connection", http::HeaderValue::from_static("close"));
    headers.insert("x-kept", http::HeaderValue::from_static("1"));
    let mut wakeups = Wakeups::new();
    state
        .respond(id, http::StatusCode::OK, &headers, true, &mut wakeups)
        .unwrap();
    let frames = sent(&mut state);
    let [Frame::Headers { block, .. }] = &frames[..] else {
        panic!("{frames:?}")
    };
    let names: Vec<String> = decoded(block).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, [":status", "x-kept"]);
}

#[test]
fn a_431_carries_the_table_size_update_the_peer_is_owed() {
    let mut state = server(Config {
        max_header_list_size: 200,
        ..SERVER
    });
    let lowered = settings_frame(Settings {
        header_table_size: Some(0),
        ..Settings::default()
    });
    assert!(receive(&mut state, lowered));
    sent(&mut state);
    let big = "x".repeat(300);
    assert!(receive(
        &mut state,
        request(1, "/a", &[("x-big", &big)], true)
    ));
    let frames = sent(&mut state);
    let [Frame::Headers { block, .. }] = &frames[..] else {
        panic!("{frames:?}")
    };
    assert_eq!(block[0], 0x20, "a size update to 0 starts the block");
    assert_eq!(decoded(block), owned(&[(":status", "431")]));
}

mod any_input;
