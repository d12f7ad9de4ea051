//! The cluster clock across nodes.

use std::time::Duration;

use datacake_node::{Clock, HLCTimestamp, TimestampError};

use crate::fixtures::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clock_is_monotonic_across_remote_stamps() {
    let n1 = start(1, &[]).await;
    let n2 = start(2, &[&n1]).await;

    let mut last_1 = n1.clock().get_time();
    let mut last_2 = n2.clock().get_time();
    for i in 0..2_000u64 {
        // A stamp travels 1 -> 2, then a reply 2 -> 1, as with an RPC both ways.
        let sent = n1.clock().get_time();
        assert!(sent > last_1);
        let on_2 = n2.clock().register_ts(sent).unwrap();
        assert!(on_2 > sent && on_2 > last_2);
        let reply = n2.clock().get_time();
        assert!(reply > on_2);
        let on_1 = n1.clock().register_ts(reply).unwrap();
        assert!(on_1 > reply && on_1 > sent);
        last_1 = on_1;
        last_2 = reply;

        // Now and then, a remote from slightly in the future (a peer whose wall clock is
        // ahead, within the allowed drift): everything after it orders after it.
        if i % 500 == 0 {
            let ahead = HLCTimestamp::new(sent.millis() + 1_000, 7, 3);
            let merged = n1.clock().register_ts(ahead).unwrap();
            assert!(merged > ahead);
            assert!(n1.clock().get_time() > ahead);
            last_1 = n1.clock().get_time();
        }
    }
    assert_eq!(last_1.node(), 1);
    assert_eq!(last_2.node(), 2);

    // A stamp too far in the future is refused and leaves the clock alone.
    let before = n1.clock().get_time();
    let far = HLCTimestamp::new(
        before.millis() + Duration::from_secs(3600).as_millis() as u64,
        0,
        2,
    );
    assert!(matches!(
        n1.clock().register_ts(far),
        Err(TimestampError::ClockDrift { .. })
    ));
    assert!(n1.clock().get_time().millis() < far.millis());

    n2.shutdown().await;
    n1.shutdown().await;
}

/// A remote stamp 4 s ahead of the wall clock (within the default 5 s drift bound) with an
/// almost exhausted counter: the clock moves on to logical milliseconds past it instead of
/// waiting for the wall clock to get there. The stamps show it: every one is the previous
/// one plus one in the packed `(millis, counter)` form — no jump to a wall-clock reading in
/// between — and they pass the remote's millisecond, which the wall clock reaches only 4 s
/// later (a wait would have let it catch up and pull the stamps to its own readings).
#[test]
fn get_time_never_waits_for_the_wall_clock_after_a_remote_stamp_from_the_future() {
    const STAMPS: u64 = 200_000;
    let clock = Clock::new(1);
    let start = clock.get_time();
    let remote = HLCTimestamp::new(start.millis() + 4_000, 0xFFFE, 2);
    let merged = clock.register_ts(remote).unwrap();
    assert_eq!(merged, HLCTimestamp::new(remote.millis(), 0xFFFF, 1));

    let mut last = merged;
    for _ in 0..STAMPS {
        let next = clock.get_time();
        assert!(next > last, "{next} after {last}");
        assert_eq!(next.pack(), last.pack() + 1, "{next} after {last}");
        assert_eq!(next.node(), 1);
        last = next;
    }
    // 200,000 stamps after (r, 0xFFFF) are (r + 1, 0) .. (r + 4, 3391): past the remote's
    // millisecond by three whole logical milliseconds.
    assert_eq!(last.pack(), merged.pack() + STAMPS);
    assert_eq!(last.millis(), remote.millis() + 4);
    assert!(clock.get_time() > last);
}
