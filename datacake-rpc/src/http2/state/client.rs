//! What only a client's connection does: open streams for requests, read their replies'
//! heads, and retire.

use std::task::Waker;

use super::super::frame::{StreamId, MAX_WINDOW};
use super::super::head::{Head, ResponseHead};
use super::super::hpack;
use super::super::stream::Stream;
use super::{encode_headers, Error, State};

impl State {
    /// A client takes no new calls on the connection: it ends once its streams have.
    pub(crate) fn retire(&mut self) {
        self.retired = true;
    }

    /// Opens a stream for a request (a client's): `Ok(None)` when the server's stream limit
    /// is reached (`waker` is woken when a stream closes). The stream starts with one
    /// handle, its reply's.
    pub(crate) fn open(
        &mut self,
        authority: &str,
        path: &str,
        headers: &http::HeaderMap,
        end_stream: bool,
        waker: &Waker,
    ) -> Result<Option<StreamId>, Error> {
        if let Some(error) = &self.closed {
            return Err(error.clone());
        }
        if self.going_away.is_some() || self.retired || self.next_id > MAX_WINDOW {
            return Err(Error::NotProcessed);
        }
        if self.active >= self.peer_max_streams {
            if !self.waiting_to_open.iter().any(|w| w.will_wake(waker)) {
                self.waiting_to_open.push(waker.clone());
            }
            return Ok(None);
        }
        let id = StreamId(self.next_id);
        self.next_id += 2;
        self.queue_head(id, end_stream, |encoder, block| {
            hpack::encode_field(block, b":method", b"POST");
            hpack::encode_field(block, b":scheme", b"http");
            // Every call on the connection repeats these: indexed after the first.
            encoder.encode_indexed(block, b":authority", authority.as_bytes());
            encoder.encode_indexed(block, b":path", path.as_bytes());
            encode_headers(block, headers);
        });
        self.active += 1;
        let mut stream = Stream::new(self.config.stream_window, self.peer_initial_window, 1);
        stream.local_ended = end_stream;
        self.streams.insert(id.0, stream);
        Ok(Some(id))
    }

    /// The reply's head (a client's), once it arrived; otherwise `waker` is woken when it
    /// does.
    pub(crate) fn poll_response(
        &mut self,
        id: StreamId,
        waker: &Waker,
    ) -> Option<Result<ResponseHead, Error>> {
        let stream = match self.stream_mut(id) {
            Ok(stream) => stream,
            Err(e) => return Some(Err(e)),
        };
        if let Some(Head::Response(head)) = stream.head.take() {
            return Some(Ok(head));
        }
        if let Some(error) = &stream.failed {
            return Some(Err(error.clone()));
        }
        stream.reader = Some(waker.clone());
        None
    }
}
