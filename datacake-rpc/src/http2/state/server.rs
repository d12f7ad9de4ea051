//! What only a server's connection does: take the client's preface and its requests (up to
//! the stream limit, refusing the rest), answer them, and close gracefully.

use std::task::Waker;

use super::super::frame::{self, StreamId};
use super::super::head::{Fields, Head, RequestHead};
use super::super::stream::{contradicts_length, Stream, Wakeups};
use super::super::{hpack, Reason};
use super::{encode_headers, Error, State};

impl State {
    /// Whether the client's preface arrived (a server's handshake is done); otherwise
    /// `waker` is woken when it does.
    pub(crate) fn poll_handshake(&mut self, waker: &Waker) -> bool {
        if !self.awaiting_preface || self.closed.is_some() {
            return true;
        }
        self.accept_waker = Some(waker.clone());
        false
    }

    /// How many requests the peer opened so far (a server's).
    pub(crate) fn requests_opened(&self) -> u32 {
        self.last_peer_id.div_ceil(2)
    }

    /// The next request taken (a server's), with two handles on its stream: its body's and
    /// its reply's. Otherwise `waker` is woken when one arrives.
    pub(crate) fn poll_accept(&mut self, waker: &Waker) -> Option<(StreamId, RequestHead)> {
        while let Some(id) = self.accepted.pop_front() {
            let Some(stream) = self.streams.get_mut(&id.0) else {
                continue;
            };
            let head = stream.head.take();
            if stream.failed.is_some() {
                // Reset by the client before it was taken: nothing to serve.
                self.deactivate(id, &mut Wakeups::new());
                continue;
            }
            if let Some(Head::Request(head)) = head {
                stream.handles += 2;
                return Some((id, head));
            }
        }
        self.accept_waker = Some(waker.clone());
        None
    }

    /// Queues a reply's head on `id` (a server's), ending the stream with it when
    /// `end_stream`.
    pub(crate) fn respond(
        &mut self,
        id: StreamId,
        status: http::StatusCode,
        headers: &http::HeaderMap,
        end_stream: bool,
        wake: &mut Wakeups,
    ) -> Result<(), Error> {
        let stream = self.stream_mut(id)?;
        if let Some(error) = &stream.failed {
            return Err(error.clone());
        }
        if stream.responded {
            return Err(Error::Closed("the reply was already sent".into()));
        }
        stream.responded = true;
        stream.local_ended = end_stream;
        self.queue_head(id, end_stream, |_, block| {
            hpack::encode_field(block, b":status", status.as_str().as_bytes());
            encode_headers(block, headers);
        });
        if end_stream {
            self.deactivate(id, wake);
        }
        Ok(())
    }

    /// The peer's error if it reset `id` (or the connection failed); otherwise `waker` is
    /// woken when that happens. Never ready for a stream that ended well.
    pub(crate) fn poll_reset(&mut self, id: StreamId, waker: &Waker) -> Option<Error> {
        let closed = self.closed.clone();
        let Some(stream) = self.streams.get_mut(&id.0) else {
            return closed;
        };
        match &stream.failed {
            Some(error) => Some(error.clone()),
            None => {
                stream.watcher = Some(waker.clone());
                None
            }
        }
    }

    /// A server's graceful close: GOAWAY naming the last stream taken; streams the client
    /// opens after it are refused, those taken finish.
    pub(crate) fn go_away(&mut self, wake: &mut Wakeups) {
        if self.goaway_sent.is_some() || self.closed.is_some() {
            return;
        }
        self.goaway_sent = Some(self.last_peer_id);
        frame::encode_goaway(
            &mut self.scratch,
            StreamId(self.last_peer_id),
            Reason::NO_ERROR,
            b"",
        );
        wake.extend(self.accept_waker.take());
    }

    /// A new stream from the client (a server's): taken, refused, or answered with 431.
    pub(super) fn on_request(
        &mut self,
        id: StreamId,
        end_stream: bool,
        fields: Fields,
        wake: &mut Wakeups,
    ) {
        if !id.is_client_initiated() {
            return self.fail_connection(
                Reason::PROTOCOL_ERROR,
                "a client opened an even-numbered stream",
                wake,
            );
        }
        self.last_peer_id = id.0;
        let refused = self.goaway_sent.is_some_and(|last| id.0 > last)
            || self.active >= self.config.max_concurrent_streams;
        if refused {
            return self.refuse(id, Reason::REFUSED_STREAM, wake);
        }
        let too_large = fields.is_too_large();
        let head = match fields.into_request() {
            Ok(request) => request,
            Err(_) if too_large => {
                // 431, and the client may stop sending the request (RFC 9113 §8.1).
                self.queue_head(id, true, |_, block| {
                    hpack::encode_field(block, b":status", b"431");
                });
                if !end_stream {
                    frame::encode_rst_stream(&mut self.scratch, id, Reason::NO_ERROR);
                }
                return self.answered(frame::HEADER_LEN * 2 + 8, wake);
            }
            Err(_) => return self.refuse(id, Reason::PROTOCOL_ERROR, wake),
        };
        if contradicts_length(head.content_length, 0, end_stream) {
            return self.refuse(id, Reason::PROTOCOL_ERROR, wake);
        }
        let mut stream = Stream::new(self.config.stream_window, self.peer_initial_window, 0);
        stream.expected_len = head.content_length;
        stream.head = Some(Head::Request(head));
        stream.head_received = true;
        stream.remote_ended = end_stream;
        self.streams.insert(id.0, stream);
        self.active += 1;
        self.accepted.push_back(id);
        wake.extend(self.accept_waker.take());
    }
}
