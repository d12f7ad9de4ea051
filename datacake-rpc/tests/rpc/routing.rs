//! Routing: same message on two services, unknown paths, adding and removing services.

use datacake_rpc::{async_trait, ErrorCode, Handler, Request, RpcService, ServiceRegistry, Status};

use crate::fixtures::*;

#[tokio::test]
async fn same_message_type_on_two_services_is_routed_correctly() {
    let fx = Fixture::start().await;
    fx.server.add_service(ServiceA);
    fx.server.add_service(ServiceB);
    let a = fx.client::<ServiceA>();
    let b = fx.client::<ServiceB>();
    let msg = Echo {
        data: b"x".to_vec(),
    };
    assert_eq!(a.send(&msg).await.unwrap().as_str(), "service-a:x");
    assert_eq!(b.send(&msg).await.unwrap().as_str(), "service-b:x");
}

#[tokio::test]
async fn unknown_service_is_unavailable_naming_the_path() {
    let fx = Fixture::start().await;
    // ServiceA was never added to this server.
    let err = fx
        .client::<ServiceA>()
        .send(&Echo { data: vec![] })
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Unavailable);
    assert!(err.message().contains("/service-a/echo"), "{err}");
}

/// Claims to be the echo service, with a handler the real one does not have.
struct EchoWithExtra;

impl RpcService for EchoWithExtra {
    fn service_name() -> &'static str {
        "echo"
    }

    fn register_handlers(_registry: &mut ServiceRegistry<Self>) {}
}

#[async_trait]
impl Handler<Get> for EchoWithExtra {
    type Reply = u64;

    fn path() -> &'static str {
        "no-such-handler"
    }

    async fn on_message(&self, _request: Request<Get>) -> Result<u64, Status> {
        unreachable!("only used as a client")
    }
}

#[tokio::test]
async fn unknown_handler_is_unavailable_naming_the_path() {
    let fx = Fixture::start().await;
    let err = fx.client::<EchoWithExtra>().send(&Get).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Unavailable);
    assert!(err.message().contains("/echo/no-such-handler"), "{err}");
}

#[tokio::test]
async fn remove_service_removes_only_its_own_handlers() {
    let fx = Fixture::start().await;
    fx.server.add_service(ServiceA);
    fx.server.add_service(ServiceB);
    let counter = fx.client::<CounterService>();
    assert_eq!(
        counter
            .send(&Increment { by: 1 })
            .await
            .unwrap()
            .to_native(),
        1
    );

    fx.server.remove_service("counter");
    fx.server.remove_service("service-a");

    for err in [
        counter.send(&Increment { by: 1 }).await.unwrap_err(),
        counter.send(&Get).await.unwrap_err(),
        fx.client::<ServiceA>()
            .send(&Echo { data: vec![] })
            .await
            .unwrap_err(),
    ] {
        assert_eq!(err.code(), ErrorCode::Unavailable, "{err}");
    }
    let msg = Echo {
        data: b"still here".to_vec(),
    };
    assert_eq!(
        fx.client::<ServiceB>().send(&msg).await.unwrap().as_str(),
        "service-b:still here"
    );
    assert_eq!(
        fx.client::<EchoService>()
            .send(&msg)
            .await
            .unwrap()
            .data
            .as_slice(),
        b"still here"
    );

    // Adding it back works, with fresh state.
    fx.server.add_service(CounterService::default());
    assert_eq!(counter.send(&Get).await.unwrap().to_native(), 0);
}
