//! Node settings: every bad timing is refused by `connect` with a typed error naming it,
//! before anything is bound, and never panics.

use std::net::TcpListener;
use std::time::Duration;

use datacake_node::{ConnectionConfig, DCAwareSelector, DatacakeNodeBuilder, NodeError};

use crate::fixtures::*;

type Builder = DatacakeNodeBuilder<DCAwareSelector>;
/// Applies one setting to a builder.
type Setting = Box<dyn Fn(Builder) -> Builder>;

/// Each bad setting, the name `connect` must report, and how to apply it.
fn bad_settings() -> Vec<(&'static str, Setting)> {
    let tiny = Duration::from_nanos(1);
    vec![
        (
            "gossip_interval",
            Box::new(|b: Builder| b.with_gossip_interval(Duration::ZERO)),
        ),
        (
            "gossip_interval",
            Box::new(|b: Builder| b.with_gossip_interval(Duration::from_micros(999))),
        ),
        (
            "gossip_interval",
            Box::new(move |b: Builder| b.with_gossip_interval(Builder::MAX_GOSSIP_INTERVAL + tiny)),
        ),
        (
            "gossip_interval",
            Box::new(|b: Builder| b.with_gossip_interval(Duration::MAX)),
        ),
        (
            "phi_threshold",
            Box::new(|b: Builder| b.with_phi_threshold(0.0)),
        ),
        (
            "phi_threshold",
            Box::new(|b: Builder| b.with_phi_threshold(-3.0)),
        ),
        (
            "phi_threshold",
            Box::new(|b: Builder| b.with_phi_threshold(f64::NAN)),
        ),
        (
            "phi_threshold",
            Box::new(|b: Builder| b.with_phi_threshold(f64::INFINITY)),
        ),
        (
            "phi_threshold",
            Box::new(|b: Builder| b.with_phi_threshold(f64::NEG_INFINITY)),
        ),
        (
            "min_failure_timeout",
            Box::new(move |b: Builder| b.with_min_failure_timeout(Builder::MAX_TIMEOUT + tiny)),
        ),
        (
            "min_failure_timeout",
            Box::new(|b: Builder| b.with_min_failure_timeout(Duration::MAX)),
        ),
        (
            "dead_node_grace_period",
            Box::new(move |b: Builder| {
                b.with_dead_node_grace_period(Builder::MAX_DEAD_NODE_GRACE_PERIOD + tiny)
            }),
        ),
        (
            "dead_node_grace_period",
            Box::new(|b: Builder| b.with_dead_node_grace_period(Duration::MAX)),
        ),
        (
            "join_timeout",
            Box::new(move |b: Builder| b.with_join_timeout(Builder::MAX_TIMEOUT + tiny)),
        ),
        (
            "join_timeout",
            Box::new(|b: Builder| b.with_join_timeout(Duration::MAX)),
        ),
        (
            "leave_timeout",
            Box::new(move |b: Builder| b.with_leave_timeout(Builder::MAX_TIMEOUT + tiny)),
        ),
        (
            "leave_timeout",
            Box::new(|b: Builder| b.with_leave_timeout(Duration::MAX)),
        ),
    ]
}

#[tokio::test]
async fn each_bad_setting_is_refused_by_name_before_anything_is_bound() {
    // The listen address is taken: had `connect` bound anything before checking the
    // settings, it would fail with `NodeError::Bind` instead.
    let taken = TcpListener::bind(local()).unwrap();
    let addr = taken.local_addr().unwrap();
    let builder =
        || DatacakeNodeBuilder::new(1, ConnectionConfig::new(addr, addr, Vec::<String>::new()));

    for (expected, apply) in bad_settings() {
        match apply(builder()).connect().await {
            Err(error @ NodeError::InvalidConfig { setting, .. }) => {
                assert_eq!(setting, expected);
                let message = error.to_string();
                assert!(message.contains(expected), "{message}");
            }
            Err(other) => panic!("{expected}: expected InvalidConfig, got {other:?}"),
            Ok(node) => panic!("{expected}: a node started at {:?}", node.me().public_addr),
        }
    }

    // With good settings the same builder does get as far as binding.
    assert!(matches!(
        builder().connect().await,
        Err(NodeError::Bind { addr: a, .. }) if a == addr
    ));
}

#[tokio::test]
async fn the_bounds_themselves_are_accepted() {
    let largest = builder(1, &[])
        .with_gossip_interval(Builder::MAX_GOSSIP_INTERVAL)
        .with_phi_threshold(f64::MAX)
        .with_min_failure_timeout(Builder::MAX_TIMEOUT)
        .with_dead_node_grace_period(Builder::MAX_DEAD_NODE_GRACE_PERIOD)
        .with_join_timeout(Builder::MAX_TIMEOUT)
        .with_leave_timeout(Builder::MAX_TIMEOUT)
        .connect()
        .await
        .expect("the largest accepted settings start a node");
    // Alone in its cluster, the node has no peer to wait for on the way out.
    tokio::time::timeout(CONVERGE, largest.shutdown())
        .await
        .expect("a node without peers shuts down without waiting out its leave timeout");

    let smallest = builder(2, &[])
        .with_gossip_interval(Builder::MIN_GOSSIP_INTERVAL)
        .with_phi_threshold(f64::MIN_POSITIVE)
        .with_min_failure_timeout(Duration::ZERO)
        .with_dead_node_grace_period(Duration::ZERO)
        .with_join_timeout(Duration::ZERO)
        .with_leave_timeout(Duration::ZERO)
        .connect()
        .await
        .expect("the smallest accepted settings start a node");
    smallest.shutdown().await;
}
