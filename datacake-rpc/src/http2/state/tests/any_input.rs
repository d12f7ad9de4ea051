//! Whatever a peer sends, in any order and cut anywhere, a connection's state keeps its
//! rules: no panic, no more open streams than its limit, no stream kept that nobody holds,
//! only well-formed frames written, answers cut off for a peer that does not read them, and
//! nothing more taken in once the connection failed.

use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;

use super::*;
use crate::http2::frame::{flag, kind};

/// Something a peer sends: well-formed frames with any values, and frames of any type,
/// flags and payload.
#[derive(Debug, Clone)]
enum Piece {
    /// A message head: a request's (`:method` POST) to a server, a reply's (`:status`) to
    /// a client; `length` adds a `content-length`.
    Head {
        stream: u32,
        end_stream: bool,
        length: Option<u8>,
    },
    Data {
        stream: u32,
        len: usize,
        end_stream: bool,
    },
    WindowUpdate {
        stream: u32,
        increment: u32,
    },
    Reset {
        stream: u32,
        code: u32,
    },
    Settings(Vec<(u16, u32)>),
    Ping {
        ack: bool,
    },
    /// Any frame at all.
    Raw {
        kind: u8,
        flags: u8,
        stream: u32,
        payload: Vec<u8>,
    },
}

/// Mostly the first few streams, sometimes 0 or any id (reserved bit included).
fn stream_id() -> impl Strategy<Value = u32> {
    prop_oneof![8 => 1u32..12, 1 => Just(0u32), 1 => any::<u32>()]
}

fn piece() -> impl Strategy<Value = Piece> {
    prop_oneof![
        4 => (stream_id(), any::<bool>(), option::of(any::<u8>())).prop_map(
            |(stream, end_stream, length)| Piece::Head { stream, end_stream, length }
        ),
        3 => (stream_id(), 0usize..300, any::<bool>())
            .prop_map(|(stream, len, end_stream)| Piece::Data { stream, len, end_stream }),
        1 => (
            stream_id(),
            prop_oneof![Just(0u32), 1u32..70_000, Just(frame::MAX_WINDOW), any::<u32>()]
        )
            .prop_map(|(stream, increment)| Piece::WindowUpdate { stream, increment }),
        1 => (stream_id(), 0u32..16).prop_map(|(stream, code)| Piece::Reset { stream, code }),
        1 => vec(
            (
                1u16..8,
                prop_oneof![0u32..100, Just(16_384u32), Just(frame::MAX_WINDOW), any::<u32>()]
            ),
            0..4
        )
        .prop_map(Piece::Settings),
        1 => any::<bool>().prop_map(|ack| Piece::Ping { ack }),
        2 => (0u8..12, any::<u8>(), stream_id(), vec(any::<u8>(), 0..40)).prop_map(
            |(kind, flags, stream, payload)| Piece::Raw { kind, flags, stream, payload }
        ),
    ]
}

/// A frame exactly as given: no field masked, no rule applied.
fn raw(out: &mut BytesMut, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    let [_, l0, l1, l2] = (payload.len() as u32).to_be_bytes();
    out.extend_from_slice(&[l0, l1, l2, kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
}

/// `pieces` as a peer in `role` sends them.
fn encode(pieces: &[Piece], role: Role) -> BytesMut {
    let mut out = BytesMut::new();
    for piece in pieces {
        match piece {
            Piece::Head {
                stream,
                end_stream,
                length,
            } => {
                let length = length.map(|n| n.to_string());
                let mut fields = match role {
                    Role::Client => vec![(":method", "POST"), (":scheme", "http"), (":path", "/a")],
                    Role::Server => vec![(":status", "200")],
                };
                if let Some(length) = &length {
                    fields.push(("content-length", length));
                }
                let flags = flag::END_HEADERS | if *end_stream { flag::END_STREAM } else { 0 };
                raw(
                    &mut out,
                    kind::HEADERS,
                    flags,
                    *stream,
                    &head_block(&fields),
                );
            }
            Piece::Data {
                stream,
                len,
                end_stream,
            } => {
                let flags = if *end_stream { flag::END_STREAM } else { 0 };
                raw(&mut out, kind::DATA, flags, *stream, &vec![7; *len]);
            }
            Piece::WindowUpdate { stream, increment } => raw(
                &mut out,
                kind::WINDOW_UPDATE,
                0,
                *stream,
                &increment.to_be_bytes(),
            ),
            Piece::Reset { stream, code } => {
                raw(&mut out, kind::RST_STREAM, 0, *stream, &code.to_be_bytes())
            }
            Piece::Settings(settings) => {
                let mut payload = Vec::new();
                for (id, value) in settings {
                    payload.extend_from_slice(&id.to_be_bytes());
                    payload.extend_from_slice(&value.to_be_bytes());
                }
                raw(&mut out, kind::SETTINGS, 0, 0, &payload);
            }
            Piece::Ping { ack } => {
                let flags = if *ack { flag::ACK } else { 0 };
                raw(&mut out, kind::PING, flags, 0, &[1; 8]);
            }
            Piece::Raw {
                kind,
                flags,
                stream,
                payload,
            } => raw(&mut out, *kind, *flags, *stream, payload),
        }
    }
    out
}

/// `bytes` cut at `cuts` (positions taken modulo its length).
fn chunks(bytes: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut at: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    at.push(0);
    at.push(bytes.len());
    at.sort_unstable();
    at.dedup();
    at.windows(2).map(|w| bytes[w[0]..w[1]].to_vec()).collect()
}

/// How the application and the peer behave around what the peer sends.
#[derive(Debug, Clone, Copy)]
struct Conduct {
    /// The peer reads what the state writes.
    reads: bool,
    /// The application answers and lets go of what it takes (else it holds all of it).
    answers: bool,
}

/// Feeds `bytes` in `chunks`, checking the state's rules after each.
fn feed(
    state: &mut State,
    chunks: Vec<Vec<u8>>,
    conduct: Conduct,
    mut app: impl FnMut(&mut State, Conduct) -> usize,
) -> Result<(), TestCaseError> {
    let mut buf = BytesMut::new();
    let mut failed = false;
    for chunk in chunks {
        buf.extend_from_slice(&chunk);
        let (streams, queued) = (state.streams.len(), state.queued_len());
        let open = receive_into(state, &mut buf);
        if failed {
            prop_assert!(!open, "a failed connection took bytes in again");
            prop_assert!(
                state.streams.len() <= streams,
                "streams grew after the failure"
            );
            prop_assert!(
                state.queued_len() <= queued,
                "answers grew after the failure"
            );
        }
        failed = !open;
        let held = app(state, conduct);
        prop_assert!(
            state.active <= SERVER_LIMIT,
            "{} streams open",
            state.active
        );
        prop_assert!(
            state.streams.len() <= SERVER_LIMIT as usize + held,
            "{} streams kept, {held} held",
            state.streams.len()
        );
        if conduct.reads {
            // Every frame written decodes (`sent` checks, and fails the case if not).
            sent(state);
        } else {
            // Answers are cut off at MAX_QUEUED_ANSWERS; the last one (a GOAWAY) and what
            // the application sent (nothing, when it does not answer) may follow.
            let bound = if conduct.answers {
                usize::MAX
            } else {
                MAX_QUEUED_ANSWERS + 512
            };
            prop_assert!(
                state.queued_len() <= bound,
                "{} bytes queued",
                state.queued_len()
            );
        }
    }
    Ok(())
}

const SERVER_LIMIT: u32 = 4;

/// A server's application: takes every request; answering, it replies and lets go at once.
/// Returns how many streams it holds.
fn server_app(held: &mut Vec<StreamId>) -> impl FnMut(&mut State, Conduct) -> usize + '_ {
    move |state, conduct| {
        while let Some((id, _)) = accept(state) {
            held.push(id);
        }
        if conduct.answers {
            for id in held.drain(..) {
                let mut wakeups = Wakeups::new();
                let ok = http::StatusCode::OK;
                if state
                    .respond(id, ok, &http::HeaderMap::new(), false, &mut wakeups)
                    .is_ok()
                {
                    let _ = state.send_data(id, Bytes::from_static(b"done"), true, &mut wakeups);
                }
                wake(wakeups);
                // The body's handle and the reply's.
                release(state, id);
                release(state, id);
            }
        }
        held.len()
    }
}

/// A client's application: opens up to three calls when it can, and, answering, reads
/// their replies and lets go of those that ended.
fn client_app(calls: &mut Vec<StreamId>) -> impl FnMut(&mut State, Conduct) -> usize + '_ {
    move |state, conduct| {
        while calls.len() < 3 && state.closed().is_none() {
            let (waker, _) = waker();
            match state.open("h:1", "/a", &http::HeaderMap::new(), false, &waker) {
                Ok(Some(id)) => {
                    let mut wakeups = Wakeups::new();
                    let _ = state.send_data(id, Bytes::from_static(b"call"), true, &mut wakeups);
                    wake(wakeups);
                    calls.push(id);
                }
                _ => break,
            }
        }
        if conduct.answers {
            calls.retain(|&id| {
                let done = match head(state, id) {
                    None => false,
                    Some(Err(_)) => true,
                    Some(Ok(_)) => loop {
                        match next_data(state, id) {
                            Some(Ok(Some(_))) => continue,
                            None => break false,
                            Some(Ok(None)) | Some(Err(_)) => break true,
                        }
                    },
                };
                if done {
                    release(state, id);
                }
                !done
            });
        }
        calls.len()
    }
}

fn conduct() -> impl Strategy<Value = Conduct> {
    (any::<bool>(), any::<bool>()).prop_map(|(reads, answers)| Conduct { reads, answers })
}

proptest! {
    #[test]
    fn a_server_keeps_its_rules_whatever_a_client_sends(
        pieces in vec(piece(), 0..40),
        cuts in vec(any::<usize>(), 0..8),
        conduct in conduct(),
    ) {
        let mut state = server(Config { max_concurrent_streams: SERVER_LIMIT, ..SERVER });
        let bytes = encode(&pieces, Role::Client);
        let mut held = Vec::new();
        feed(&mut state, chunks(&bytes, &cuts), conduct, server_app(&mut held))?;
    }

    #[test]
    fn a_client_keeps_its_rules_whatever_a_server_sends(
        pieces in vec(piece(), 0..40),
        cuts in vec(any::<usize>(), 0..8),
        conduct in conduct(),
    ) {
        let mut state = client(CONFIG);
        let mut calls = Vec::new();
        let mut app = client_app(&mut calls);
        app(&mut state, conduct);
        sent(&mut state);
        let bytes = encode(&pieces, Role::Server);
        feed(&mut state, chunks(&bytes, &cuts), conduct, app)?;
    }
}
