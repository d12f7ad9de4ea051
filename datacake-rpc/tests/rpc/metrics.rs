//! What the server records through the `metrics` facade.

use datacake_rpc::ErrorCode;
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
            misc.send(&fail).await.unwrap_err().code,
            ErrorCode::Custom(7)
        );
        // ServiceA is not on this server: its path comes from the network, not a label.
        let err = fx.client::<ServiceA>().send(&echo).await.unwrap_err();
        assert_eq!(err.code, ErrorCode::Unavailable);
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
    assert_eq!(m.counter(calls, &[("service", "misc")]), 1);
    assert_eq!(
        m.counter(errors, &[("service", "misc"), ("code", "custom")]),
        1
    );
    assert_eq!(m.counter(calls, &[("service", "unknown")]), 1);
    assert_eq!(
        m.counter(errors, &[("service", "unknown"), ("code", "unavailable")]),
        1
    );
    assert_eq!(
        m.label_values(calls, "service"),
        ["echo", "misc", "unknown"]
    );
}
