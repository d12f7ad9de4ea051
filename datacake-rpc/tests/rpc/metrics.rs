//! What servers and clients record through the `metrics` facade.

use std::time::Duration;

use datacake_rpc::{ErrorCode, RequestContext};
use test_helper::metrics::capture_async;

use crate::fixtures::*;

#[test]
fn calls_errors_and_latency_are_recorded_by_service_and_code() {
    let ((), m) = capture_async(async {
        let fx = Fixture::start().await;
        let echo = Echo {
            data: b"hi".to_vec(),
        };
        fx.client::<EchoService>().send(&echo).await.unwrap();
        fx.client::<EchoService>().send(&echo).await.unwrap();
        let misc = fx.client::<MiscService>();
        let fail = Fail {
            code: 7,
            message: "no".into(),
        };
        assert_eq!(
            misc.send(&fail).await.unwrap_err().code(),
            ErrorCode::Custom(7)
        );
        // ServiceA is not on this server: its path comes from the network, not a label.
        let err = fx.client::<ServiceA>().send(&echo).await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::Unavailable);
        // A call past its deadline, and one its caller drops before the reply.
        let ctx = RequestContext::new().with_timeout(Duration::from_millis(50));
        let err = misc.send_with_context(&Hang, ctx).await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::Timeout);
        let mut fx = fx;
        let dropped = {
            let misc = misc.clone();
            tokio::spawn(async move { misc.send(&Hang).await })
        };
        // Two Hang calls entered the handler: the timed-out one and this one.
        for _ in 0..2 {
            fx.entered.recv().await.expect("the handler was entered");
        }
        dropped.abort();
        assert!(dropped.await.unwrap_err().is_cancelled());
        fx.server.shutdown().await;
    });
    let (calls, errors, duration) = (
        "datacake_rpc_server_calls_total",
        "datacake_rpc_server_errors_total",
        "datacake_rpc_server_call_duration_seconds",
    );
    assert_eq!(
        m.counter(calls, &[("service", "echo")]),
        2,
        "{:?}",
        m.names()
    );
    assert_eq!(m.counter(errors, &[("service", "echo")]), 0);
    assert_eq!(m.histogram(duration, &[("service", "echo")]).len(), 2);
    assert_eq!(m.counter(calls, &[("service", "misc")]), 3);
    assert_eq!(
        m.counter(errors, &[("service", "misc"), ("code", "custom")]),
        1
    );
    assert_eq!(
        m.counter(errors, &[("service", "misc"), ("code", "cancelled")]),
        2,
        "both Hang calls were abandoned by their callers"
    );
    assert_eq!(m.counter(calls, &[("service", "unknown")]), 1);
    assert_eq!(
        m.counter(errors, &[("service", "unknown"), ("code", "unavailable")]),
        1
    );
    // Every service's series exists from when it was added (the fixture's `counter` took no
    // call), so a dashboard sees zero rather than nothing.
    assert_eq!(m.counter(calls, &[("service", "counter")]), 0);
    assert_eq!(
        m.label_values(calls, "service"),
        ["counter", "echo", "misc", "unknown"]
    );

    // The client side: labelled by the service it called (its own type's name).
    let (calls, errors, duration) = (
        "datacake_rpc_client_calls_total",
        "datacake_rpc_client_errors_total",
        "datacake_rpc_client_call_duration_seconds",
    );
    assert_eq!(m.counter(calls, &[("service", "echo")]), 2);
    assert_eq!(m.counter(errors, &[("service", "echo")]), 0);
    assert_eq!(m.histogram(duration, &[("service", "echo")]).len(), 2);
    assert_eq!(m.counter(calls, &[("service", "misc")]), 3);
    for code in ["custom", "timeout", "cancelled"] {
        assert_eq!(
            m.counter(errors, &[("service", "misc"), ("code", code)]),
            1,
            "{code}"
        );
    }
    assert_eq!(
        m.histogram(duration, &[("service", "misc")]).len(),
        2,
        "the cancelled call has no duration"
    );
    assert_eq!(
        m.counter(errors, &[("service", "service-a"), ("code", "unavailable")]),
        1
    );
}
