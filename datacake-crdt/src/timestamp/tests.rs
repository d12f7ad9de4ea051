use super::*;

const NODE: u32 = 1;

fn ts(millis: u64, counter: u16, node: u32) -> HLCTimestamp {
    HLCTimestamp::new(millis, counter, node)
}

#[test]
fn new_clamps_and_try_new_refuses_out_of_range_millis() {
    assert_eq!(HLCTimestamp::new(u64::MAX, 1, 2).millis(), MAX_MILLIS);
    assert_eq!(
        HLCTimestamp::try_new(MAX_MILLIS + 1, 0, 0),
        Err(TimestampError::MillisOutOfRange {
            millis: MAX_MILLIS + 1
        })
    );
    let t = HLCTimestamp::try_new(MAX_MILLIS, 3, 4).unwrap();
    assert_eq!((t.millis(), t.counter(), t.node()), (MAX_MILLIS, 3, 4));
}

#[test]
fn now_is_close_to_the_wall_clock() {
    let before = wall_clock_millis();
    let t = HLCTimestamp::now(9);
    let after = wall_clock_millis();
    assert!(before <= t.millis() && t.millis() <= after);
    assert_eq!((t.counter(), t.node()), (0, 9));
    assert!(before > 1_600_000_000_000, "wall clock is in milliseconds");
}

#[test]
fn order_is_millis_then_counter_then_node() {
    assert!(ts(2, 0, 0) > ts(1, u16::MAX, u32::MAX));
    assert!(ts(1, 2, 0) > ts(1, 1, u32::MAX));
    assert!(ts(1, 1, 2) > ts(1, 1, 1));
    assert_eq!(ts(1, 1, 1), ts(1, 1, 1));
    assert_eq!(ts(1, 1, 1).cmp(&ts(1, 1, 1)), std::cmp::Ordering::Equal);
}

#[test]
fn pack_and_u128_round_trip_and_keep_order() {
    let samples = [
        ts(0, 0, 0),
        ts(1, 0, 5),
        ts(1, 1, 0),
        ts(1_700_000_000_000, 42, 7),
        ts(MAX_MILLIS, u16::MAX, u32::MAX),
    ];
    for t in samples {
        assert_eq!(HLCTimestamp::from_packed(t.pack(), t.node()), t);
        assert_eq!(HLCTimestamp::from_u128(t.as_u128()), Ok(t));
    }
    for w in samples.windows(2) {
        assert!(w[0].as_u128() < w[1].as_u128());
        assert!(w[0].pack() <= w[1].pack());
    }
    assert_eq!(ts(3, 4, 5).pack(), (3 << 16) | 4);
    assert_eq!(
        HLCTimestamp::from_u128(1 << 96),
        Err(TimestampError::MillisOutOfRange { millis: 1 << 48 })
    );
    assert!(HLCTimestamp::from_u128(u128::MAX).is_err());
}

#[test]
fn send_moves_to_the_wall_clock_when_it_is_ahead() {
    let mut clock = ts(10, 5, NODE);
    assert_eq!(clock.send_at(20), Ok(ts(20, 0, NODE)));
    assert_eq!(clock, ts(20, 0, NODE));
}

#[test]
fn send_is_strictly_monotonic_when_the_wall_clock_stands_still() {
    let mut clock = ts(10, 0, NODE);
    let a = clock.send_at(10).unwrap();
    let b = clock.send_at(10).unwrap();
    assert_eq!(a, ts(10, 1, NODE));
    assert_eq!(b, ts(10, 2, NODE));
}

#[test]
fn send_is_strictly_monotonic_when_the_wall_clock_goes_backwards() {
    let mut clock = ts(0, 0, NODE);
    let a = clock.send_at(1_000).unwrap();
    let b = clock.send_at(500).unwrap();
    let c = clock.send_at(0).unwrap();
    assert!(a < b && b < c);
    assert_eq!(c, ts(1_000, 2, NODE));
}

#[test]
fn send_moves_to_the_next_logical_millisecond_when_the_counter_is_exhausted() {
    let mut clock = ts(10, u16::MAX - 1, NODE);
    assert_eq!(clock.send_at(10), Ok(ts(10, u16::MAX, NODE)));
    // The wall clock still reads 10 (or less): the clock moves on to millisecond 11 anyway.
    assert_eq!(clock.send_at(10), Ok(ts(11, 0, NODE)));
    assert_eq!(clock.send_at(9), Ok(ts(11, 1, NODE)));
    // The wall clock catching up, and passing, changes nothing about the rule.
    assert_eq!(clock.send_at(11), Ok(ts(11, 2, NODE)));
    assert_eq!(clock.send_at(12), Ok(ts(12, 0, NODE)));
}

#[test]
fn next_send_of_an_exhausted_clock_far_ahead_of_the_wall_clock_does_not_fail() {
    let m = 1_700_000_004_000;
    let exhausted = ts(m, u16::MAX, NODE).pack();
    assert_eq!(next_send(exhausted, m - 4_000), Ok((m + 1) << 16));
    let mut clock = ts(m, u16::MAX, NODE);
    assert_eq!(clock.send_at(m - 4_000), Ok(ts(m + 1, 0, NODE)));
}

#[test]
fn send_fails_only_when_the_last_millisecond_is_exhausted() {
    assert_eq!(
        next_send(ts(MAX_MILLIS, u16::MAX, NODE).pack(), MAX_MILLIS),
        Err(TimestampError::CounterExhausted { millis: MAX_MILLIS })
    );
    assert_eq!(
        next_send(ts(MAX_MILLIS, u16::MAX, NODE).pack(), 0),
        Err(TimestampError::CounterExhausted { millis: MAX_MILLIS })
    );
    let mut clock = ts(MAX_MILLIS, u16::MAX - 1, NODE);
    assert_eq!(clock.send_at(u64::MAX), Ok(ts(MAX_MILLIS, u16::MAX, NODE)));
    assert_eq!(
        clock.send_at(u64::MAX),
        Err(TimestampError::CounterExhausted { millis: MAX_MILLIS })
    );
    assert_eq!(clock, ts(MAX_MILLIS, u16::MAX, NODE), "unchanged on error");
    // One millisecond earlier, exhaustion still moves on.
    assert_eq!(
        next_send(ts(MAX_MILLIS - 1, u16::MAX, NODE).pack(), 0),
        Ok(MAX_MILLIS << 16)
    );
}

#[test]
fn send_with_the_real_clock_moves_past_an_exhausted_millisecond() {
    let now = wall_clock_millis();
    let mut clock = ts(now, u16::MAX, NODE);
    let next = clock.send().unwrap();
    assert!(next > ts(now, u16::MAX, NODE));
    assert!(next.millis() > now);
    assert_eq!(next.counter(), 0);
}

#[test]
fn send_with_the_real_clock_moves_on_when_ahead_and_exhausted() {
    let ahead = wall_clock_millis() + 60_000;
    let mut clock = ts(ahead, u16::MAX, NODE);
    assert_eq!(clock.send(), Ok(ts(ahead + 1, 0, NODE)));
    assert_eq!(clock.send(), Ok(ts(ahead + 1, 1, NODE)));
}

#[test]
fn send_with_the_real_clock_is_strictly_monotonic() {
    let mut clock = HLCTimestamp::now(NODE);
    let mut last = clock;
    for _ in 0..10_000 {
        let next = clock.send().unwrap();
        assert!(next > last);
        last = next;
    }
}

#[test]
fn send_clamps_a_wall_clock_past_the_range() {
    let mut clock = ts(0, 0, NODE);
    assert_eq!(clock.send_at(u64::MAX), Ok(ts(MAX_MILLIS, 0, NODE)));
    assert_eq!(clock.send_at(u64::MAX), Ok(ts(MAX_MILLIS, 1, NODE)));
}

#[test]
fn recv_orders_after_a_remote_that_is_ahead() {
    let mut clock = ts(100, 3, NODE);
    let remote = ts(150, 7, 2);
    let merged = clock.recv_at(&remote, 120, DEFAULT_MAX_DRIFT).unwrap();
    assert_eq!(merged, ts(150, 8, NODE));
    assert!(merged > remote);
    assert!(clock.send_at(120).unwrap() > remote);
}

#[test]
fn recv_of_an_older_remote_still_advances() {
    let mut clock = ts(100, 3, NODE);
    let merged = clock.recv_at(&ts(50, 9, 2), 80, DEFAULT_MAX_DRIFT).unwrap();
    assert_eq!(merged, ts(100, 4, NODE));
}

#[test]
fn recv_takes_the_wall_clock_when_it_is_ahead_of_both() {
    let mut clock = ts(100, 3, NODE);
    let merged = clock
        .recv_at(&ts(110, 9, 2), 200, DEFAULT_MAX_DRIFT)
        .unwrap();
    assert_eq!(merged, ts(200, 0, NODE));
}

#[test]
fn recv_of_an_equal_time_takes_the_larger_counter() {
    let mut clock = ts(100, 3, NODE);
    assert_eq!(
        clock.recv_at(&ts(100, 9, 2), 100, DEFAULT_MAX_DRIFT),
        Ok(ts(100, 10, NODE))
    );
    let mut clock = ts(100, 9, NODE);
    assert_eq!(
        clock.recv_at(&ts(100, 3, 2), 100, DEFAULT_MAX_DRIFT),
        Ok(ts(100, 10, NODE))
    );
    // An identical remote (same millis and counter, other node).
    let mut clock = ts(100, 3, NODE);
    assert_eq!(
        clock.recv_at(&ts(100, 3, 2), 50, DEFAULT_MAX_DRIFT),
        Ok(ts(100, 4, NODE))
    );
}

#[test]
fn recv_refuses_a_remote_beyond_the_maximum_drift() {
    let mut clock = ts(100, 0, NODE);
    let remote = ts(10_000, 0, 2);
    let err = clock
        .recv_at(&remote, 4_000, Duration::from_secs(5))
        .unwrap_err();
    assert_eq!(
        err,
        TimestampError::ClockDrift {
            remote_millis: 10_000,
            wall_millis: 4_000,
            max_drift: Duration::from_secs(5)
        }
    );
    assert_eq!(clock, ts(100, 0, NODE), "unchanged on error");
    // Exactly at the bound is accepted.
    assert!(clock
        .recv_at(&remote, 5_000, Duration::from_secs(5))
        .is_ok());
    // The real-clock variant with the default drift refuses a stamp an hour ahead.
    let far = ts(wall_clock_millis() + 3_600_000, 0, 2);
    assert!(matches!(
        clock.recv(&far),
        Err(TimestampError::ClockDrift { .. })
    ));
    assert!(matches!(
        clock.recv_with_max_drift(&far, Duration::from_secs(7_200)),
        Ok(t) if t > far
    ));
}

#[test]
fn recv_detects_a_duplicate_node() {
    let mut clock = ts(100, 5, NODE);
    // A stamp of ours we did issue is fine.
    assert!(clock
        .clone()
        .recv_at(&ts(100, 5, NODE), 100, DEFAULT_MAX_DRIFT)
        .is_ok());
    assert!(clock
        .clone()
        .recv_at(&ts(90, 9, NODE), 100, DEFAULT_MAX_DRIFT)
        .is_ok());
    // One later than anything we issued is another node using our id.
    assert_eq!(
        clock.recv_at(&ts(100, 6, NODE), 100, DEFAULT_MAX_DRIFT),
        Err(TimestampError::DuplicateNode { node: NODE })
    );
    assert_eq!(
        clock.recv(&ts(wall_clock_millis(), 0, NODE)),
        Err(TimestampError::DuplicateNode { node: NODE })
    );
    assert_eq!(clock, ts(100, 5, NODE));
}

#[test]
fn recv_moves_to_the_next_logical_millisecond_when_the_counter_is_exhausted() {
    // The remote's counter is exhausted.
    let mut clock = ts(100, 0, NODE);
    let remote = ts(100, u16::MAX, 2);
    assert_eq!(
        clock.clone().recv_at(&remote, 50, DEFAULT_MAX_DRIFT),
        Ok(ts(101, 0, NODE))
    );
    assert_eq!(
        clock.recv_at(&remote, 101, DEFAULT_MAX_DRIFT),
        Ok(ts(101, 0, NODE))
    );
    // Our own counter is exhausted and the remote is older.
    let mut clock = ts(100, u16::MAX, NODE);
    assert_eq!(
        clock.recv_at(&ts(90, 3, 2), 50, DEFAULT_MAX_DRIFT),
        Ok(ts(101, 0, NODE))
    );
    // With the real clock.
    let now = wall_clock_millis();
    let mut clock = ts(now, 0, NODE);
    let merged = clock.recv(&ts(now, u16::MAX, 2)).unwrap();
    assert!(merged > ts(now, u16::MAX, 2));
}

#[test]
fn next_recv_with_an_exhausted_base_far_ahead_of_the_wall_clock_does_not_fail() {
    let m = 1_700_000_004_000;
    let wall = m - 4_000;
    // Our clock is exhausted 4 s ahead of the wall clock (it merged such a stamp before).
    let exhausted = ts(m, u16::MAX, NODE).pack();
    assert_eq!(
        next_recv(exhausted, NODE, &ts(m - 10, 7, 2), wall, DEFAULT_MAX_DRIFT),
        Ok((m + 1) << 16)
    );
    // A remote stamp 4 s ahead, exhausted itself, within the 5 s drift bound.
    let clock = ts(wall, 0, NODE).pack();
    assert_eq!(
        next_recv(clock, NODE, &ts(m, u16::MAX, 2), wall, DEFAULT_MAX_DRIFT),
        Ok((m + 1) << 16)
    );
    // Both at the same exhausted millisecond.
    assert_eq!(
        next_recv(
            exhausted,
            NODE,
            &ts(m, u16::MAX, 2),
            wall,
            DEFAULT_MAX_DRIFT
        ),
        Ok((m + 1) << 16)
    );
}

#[test]
fn recv_fails_only_when_the_last_millisecond_is_exhausted() {
    let max_drift = Duration::from_secs(5);
    let mut clock = ts(MAX_MILLIS, 0, NODE);
    assert_eq!(
        clock.recv_at(&ts(MAX_MILLIS, u16::MAX, 2), MAX_MILLIS, max_drift),
        Err(TimestampError::CounterExhausted { millis: MAX_MILLIS })
    );
    assert_eq!(clock, ts(MAX_MILLIS, 0, NODE), "unchanged on error");
    let mut clock = ts(MAX_MILLIS, u16::MAX, NODE);
    assert_eq!(
        clock.recv_at(&ts(5, 0, 2), MAX_MILLIS, max_drift),
        Err(TimestampError::CounterExhausted { millis: MAX_MILLIS })
    );
    // One millisecond earlier, exhaustion still moves on.
    let mut clock = ts(MAX_MILLIS - 1, u16::MAX, NODE);
    assert_eq!(
        clock.recv_at(&ts(MAX_MILLIS - 1, u16::MAX, 2), MAX_MILLIS - 1, max_drift),
        Ok(ts(MAX_MILLIS, 0, NODE))
    );
}

#[test]
fn recv_checks_drift_and_duplicates_before_moving_on() {
    let m = 1_700_000_004_000;
    let wall = m - 4_000;
    let exhausted = ts(m, u16::MAX, NODE).pack();
    // Beyond the drift bound: refused, even though the counter would also need to move on.
    assert!(matches!(
        next_recv(
            exhausted,
            NODE,
            &ts(m + 2_000, u16::MAX, 2),
            wall,
            DEFAULT_MAX_DRIFT
        ),
        Err(TimestampError::ClockDrift { .. })
    ));
    // Our own id, later than anything we issued: a duplicate node.
    assert_eq!(
        next_recv(
            exhausted,
            NODE,
            &ts(m + 1, 0, NODE),
            wall,
            DEFAULT_MAX_DRIFT
        ),
        Err(TimestampError::DuplicateNode { node: NODE })
    );
    // Our own id at the exhausted stamp we did issue: fine, and moves on.
    assert_eq!(
        next_recv(
            exhausted,
            NODE,
            &ts(m, u16::MAX, NODE),
            wall,
            DEFAULT_MAX_DRIFT
        ),
        Ok((m + 1) << 16)
    );
}

#[test]
fn packed_functions_match_the_methods() {
    let mut clock = ts(100, 1, NODE);
    let packed = next_send(clock.pack(), 100).unwrap();
    assert_eq!(
        HLCTimestamp::from_packed(packed, NODE),
        clock.send_at(100).unwrap()
    );
    let remote = ts(105, 2, 3);
    let packed = next_recv(clock.pack(), NODE, &remote, 100, DEFAULT_MAX_DRIFT).unwrap();
    assert_eq!(
        HLCTimestamp::from_packed(packed, NODE),
        clock.recv_at(&remote, 100, DEFAULT_MAX_DRIFT).unwrap()
    );
    assert!(next_send_now(clock.pack()).unwrap() > clock.pack());
    assert!(next_recv_now(clock.pack(), NODE, &remote, DEFAULT_MAX_DRIFT).unwrap() > clock.pack());
}

#[test]
fn display_and_from_str_round_trip() {
    let t = ts(1_700_000_000_123, 42, 7);
    assert_eq!(t.to_string(), "001700000000123-00042-0000000007");
    assert_eq!(t.to_string().parse::<HLCTimestamp>(), Ok(t));
    for t in [ts(0, 0, 0), ts(MAX_MILLIS, u16::MAX, u32::MAX)] {
        assert_eq!(t.to_string().parse::<HLCTimestamp>(), Ok(t));
    }
    assert_eq!("5-6-7".parse::<HLCTimestamp>(), Ok(ts(5, 6, 7)));
    // String order is timestamp order.
    assert!(ts(2, 0, 0).to_string() > ts(1, 9, 9).to_string());
}

#[test]
fn from_str_refuses_bad_strings() {
    for bad in [
        "", "1", "1-2", "1-2-3-4", "a-2-3", "1--3", "+1-2-3", " 1-2-3", "1-2-3 ", "-1-2",
    ] {
        assert_eq!(
            bad.parse::<HLCTimestamp>(),
            Err(TimestampError::InvalidFormat {
                input: bad.to_owned()
            }),
            "{bad:?}"
        );
    }
    assert!(matches!(
        "1-65536-3".parse::<HLCTimestamp>(),
        Err(TimestampError::InvalidField {
            field: "counter",
            ..
        })
    ));
    assert!(matches!(
        "1-2-4294967296".parse::<HLCTimestamp>(),
        Err(TimestampError::InvalidField { field: "node", .. })
    ));
    assert!(matches!(
        "99999999999999999999-2-3".parse::<HLCTimestamp>(),
        Err(TimestampError::InvalidField {
            field: "millis",
            ..
        })
    ));
    assert_eq!(
        format!("{}-0-0", MAX_MILLIS + 1).parse::<HLCTimestamp>(),
        Err(TimestampError::MillisOutOfRange {
            millis: MAX_MILLIS + 1
        })
    );
    let err = "x".parse::<HLCTimestamp>().unwrap_err();
    assert!(err.to_string().contains("millis-counter-node"));
}

#[cfg(feature = "rkyv")]
#[test]
fn rkyv_round_trip_and_archived_comparisons() {
    use rkyv::rancor::Error;
    let t = ts(1_700_000_000_123, 42, 7);
    let bytes = rkyv::to_bytes::<Error>(&t).unwrap();
    let archived = rkyv::access::<ArchivedHLCTimestamp, Error>(&bytes).unwrap();
    assert_eq!(*archived, t);
    assert!(*archived < ts(1_700_000_000_123, 43, 0));
    assert_eq!(archived.to_native(), t);
    assert_eq!(HLCTimestamp::from(archived), t);
    assert_eq!(
        (archived.millis(), archived.counter(), archived.node()),
        (t.millis(), 42, 7)
    );
    let back = rkyv::from_bytes::<HLCTimestamp, Error>(&bytes).unwrap();
    assert_eq!(back, t);
}

#[cfg(feature = "rkyv")]
#[test]
fn rkyv_refuses_out_of_range_millis() {
    use rkyv::rancor::Error;
    let bytes = rkyv::to_bytes::<Error>(&ts(5, 0, 0)).unwrap();
    let mut bad = rkyv::util::AlignedVec::<16>::new();
    bad.extend_from_slice(&bytes);
    // millis is the first field, little endian: set its top byte.
    bad[7] = 0xff;
    assert!(rkyv::access::<ArchivedHLCTimestamp, Error>(&bad).is_err());
    assert!(rkyv::from_bytes::<HLCTimestamp, Error>(&bad).is_err());
}
