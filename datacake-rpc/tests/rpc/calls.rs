//! Successful calls: echo, shared state, headers, handler errors, streaming, concurrency.

use datacake_rpc::{Body, ErrorCode, RequestContext, Status};
use futures::StreamExt;

use crate::fixtures::*;

#[tokio::test]
async fn echo_small_payload() {
    let fx = Fixture::start().await;
    let client = fx.client::<EchoService>();
    let reply = client
        .send(&Echo {
            data: b"hello".to_vec(),
        })
        .await
        .unwrap();
    assert_eq!(reply.data.as_slice(), b"hello");
    assert_eq!(
        reply.deserialize_view().unwrap(),
        Echo {
            data: b"hello".to_vec()
        }
    );
}

#[tokio::test]
async fn a_reply_compares_with_the_value_it_stands_for() {
    let fx = Fixture::start().await;
    let echo = Echo {
        data: b"hi".to_vec(),
    };
    let reply = fx.client::<EchoService>().send(&echo).await.unwrap();
    assert_eq!(reply, echo);
    assert_ne!(
        reply,
        Echo {
            data: b"ho".to_vec()
        }
    );
    let view = reply.into_inner();
    assert_eq!(view, echo);
    assert_eq!(view.to_owned().unwrap(), echo);

    let counter = fx.client::<CounterService>();
    assert_eq!(counter.send(&Increment { by: 2 }).await.unwrap(), 2);

    // Whole results compare: a reply with a reply, an error with an error.
    assert_eq!(counter.send(&Get).await, counter.send(&Get).await);
    let failed = fx
        .client::<MiscService>()
        .send(&Fail {
            code: 7,
            message: "no".into(),
        })
        .await;
    assert_eq!(failed, Err(Status::custom(7, "no")));
}

#[tokio::test]
async fn echo_32_mib_payload() {
    let fx = Fixture::start().await;
    let client = fx.client::<EchoService>();
    let data = random_bytes(32, 32 << 20);
    let reply = client
        .send_owned(Echo { data: data.clone() })
        .await
        .unwrap();
    assert_eq!(reply.data.len(), data.len());
    assert!(
        reply.data.as_slice() == data.as_slice(),
        "32 MiB echo differs"
    );
}

#[tokio::test]
async fn two_handlers_share_service_state() {
    let fx = Fixture::start().await;
    let client = fx.client::<CounterService>();
    assert_eq!(
        client.send(&Increment { by: 2 }).await.unwrap().to_native(),
        2
    );
    assert_eq!(
        client.send(&Increment { by: 5 }).await.unwrap().to_native(),
        7
    );
    assert_eq!(client.send(&Get).await.unwrap().to_native(), 7);
}

#[tokio::test]
async fn request_and_reply_headers() {
    let fx = Fixture::start().await;
    let client = fx.client::<MiscService>();
    let ctx = RequestContext::new()
        .with_header("x-question", "forty-two")
        .unwrap();
    let reply = client.send_with_context(&Headered, ctx).await.unwrap();
    assert_eq!(reply.headers().get("x-answer"), Some("you asked forty-two"));

    let reply = client.send(&Headered).await.unwrap();
    assert_eq!(reply.headers().get("x-answer"), Some("you asked nothing"));
}

#[tokio::test]
async fn handler_error_reaches_the_client_unchanged() {
    let fx = Fixture::start().await;
    let client = fx.client::<MiscService>();
    let err = client
        .send(&Fail {
            code: 418,
            message: "i am a teapot: ünïcödé".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err, Status::custom(418, "i am a teapot: ünïcödé"));

    // A handler may also use the library's codes; they arrive as sent.
    let err = client
        .send(&Fail {
            code: 0,
            message: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Custom(0));
}

#[tokio::test]
async fn streaming_reply_arrives_in_chunks() {
    let fx = Fixture::start().await;
    let client = fx.client::<MiscService>();
    let reply = client
        .send(&Stream {
            chunks: 20,
            chunk_size: 1000,
        })
        .await
        .unwrap();
    let mut body = reply.into_inner();
    let mut received = Vec::new();
    let mut chunks = 0;
    while let Some(chunk) = body.next().await {
        received.extend_from_slice(&chunk.unwrap());
        chunks += 1;
    }
    assert_eq!(received.len(), 20 * 1000);
    for (i, block) in received.chunks(1000).enumerate() {
        assert!(
            block.iter().all(|b| *b == (i % 251) as u8),
            "block {i} corrupted"
        );
    }
    assert!(chunks >= 1);
}

#[tokio::test]
async fn streaming_request_body() {
    let fx = Fixture::start().await;
    let client = fx.client::<MiscService>();
    let chunks = (0..50).map(|_| Ok::<_, Status>(bytes::Bytes::from(vec![7u8; 4096])));
    let body = Body::from_stream(futures::stream::iter(chunks));
    let total = client.send_owned(body).await.unwrap();
    assert_eq!(total.to_native(), 50 * 4096);
}

#[tokio::test]
async fn new_client_shares_the_channel() {
    let fx = Fixture::start().await;
    let echo = fx.client::<EchoService>();
    let counter = echo.new_client::<CounterService>();
    assert_eq!(
        counter
            .send(&Increment { by: 1 })
            .await
            .unwrap()
            .to_native(),
        1
    );
    assert_eq!(
        echo.send(&Echo { data: vec![1] })
            .await
            .unwrap()
            .data
            .as_slice(),
        &[1]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_calls_on_one_channel() {
    let fx = Fixture::start().await;
    let client = fx.client::<EchoService>();
    let calls = (0..1000u32).map(|i| {
        let client = client.clone();
        tokio::spawn(async move {
            let data = i.to_le_bytes().repeat(16);
            let reply = client.send(&Echo { data: data.clone() }).await?;
            assert_eq!(
                reply.data.as_slice(),
                data.as_slice(),
                "call {i} got another reply"
            );
            Ok::<_, Status>(())
        })
    });
    let results = futures::future::join_all(calls).await;
    let failed: Vec<_> = results
        .into_iter()
        .filter_map(|r| r.unwrap().err())
        .collect();
    assert!(
        failed.is_empty(),
        "{} calls failed, first: {:?}",
        failed.len(),
        failed.first()
    );
}

/// Callers that each wait for their reply before the next call, on two worker threads: the
/// shape in which a caller often writes its request itself, racing the connection's driver
/// on the other thread (see `src/driver.rs`). A lost wake-up would leave a call hanging; the
/// deadline turns that into a failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_loop_callers_on_two_threads_all_get_their_replies() {
    const CALLERS: u32 = 8;
    const CALLS: u32 = 300;
    let fx = Fixture::start().await;
    let client = fx.client::<EchoService>();
    let loops = (0..CALLERS).map(|caller| {
        let client = client.clone();
        tokio::spawn(async move {
            for call in 0..CALLS {
                let data = [caller.to_le_bytes(), call.to_le_bytes()].concat();
                let reply = client.send(&Echo { data: data.clone() }).await?;
                assert_eq!(
                    reply.data.as_slice(),
                    data.as_slice(),
                    "caller {caller}, call {call}"
                );
            }
            Ok::<_, Status>(())
        })
    });
    let results = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        futures::future::join_all(loops),
    )
    .await
    .expect("every caller finishes within a minute (no call hangs)");
    for result in results {
        result.unwrap().unwrap();
    }
}

#[tokio::test]
async fn a_header_http2_forbids_fails_the_call_not_the_channel() {
    let fx = Fixture::start().await;
    let client = fx.client::<MiscService>();
    let ctx = RequestContext::new()
        .with_header("connection", "close")
        .unwrap();
    let err = client.send_with_context(&Headered, ctx).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidPayload, "{err}");
    let reply = client.send(&Headered).await.unwrap();
    assert_eq!(reply.headers().get("x-answer"), Some("you asked nothing"));
}
