use super::*;

fn ts(millis: u64) -> HLCTimestamp {
    HLCTimestamp::new(millis, 0, 0)
}

fn live<const N: usize>(set: &OrSWotSet<N>) -> StateChanges {
    let mut v: StateChanges = set.iter().collect();
    v.sort_unstable();
    v
}

fn dead<const N: usize>(set: &OrSWotSet<N>) -> StateChanges {
    let mut v: StateChanges = set.tombstones().collect();
    v.sort_unstable();
    v
}

#[test]
fn insert_get_len_and_iteration() {
    let mut set = OrSWotSet::<1>::default();
    assert!(set.is_empty());
    assert!(set.insert(1, ts(10)));
    assert!(set.insert(2, ts(11)));
    assert_eq!(set.len(), 2);
    assert!(!set.is_empty());
    assert_eq!(set.get(&1), Some(&ts(10)));
    assert_eq!(set.get(&3), None);
    assert_eq!(live(&set), vec![(1, ts(10)), (2, ts(11))]);
    assert_eq!(set.tombstone_count(), 0);
}

#[test]
fn last_writer_wins_on_insert() {
    let mut set = OrSWotSet::<1>::new();
    assert!(set.insert(1, ts(10)));
    assert!(!set.insert(1, ts(9)), "older loses");
    assert!(!set.insert(1, ts(10)), "equal is a repeat");
    assert!(set.insert(1, ts(12)), "newer wins");
    assert_eq!(set.get(&1), Some(&ts(12)));
    // The node id breaks ties between equal times.
    assert!(set.insert(1, HLCTimestamp::new(12, 0, 1)));
}

#[test]
fn delete_rules() {
    let mut set = OrSWotSet::<1>::new();
    set.insert(1, ts(10));
    assert!(!set.delete(1, ts(9)), "an older delete loses");
    assert_eq!(set.get(&1), Some(&ts(10)));
    assert!(
        set.delete(1, ts(10)),
        "a delete beats an insert with the same timestamp"
    );
    assert_eq!(set.get(&1), None);
    assert_eq!(dead(&set), vec![(1, ts(10))]);
    assert!(!set.insert(1, ts(10)), "...in either order");
    assert!(!set.delete(1, ts(10)), "a repeated delete does nothing");
    assert!(set.delete(1, ts(11)), "a newer delete moves the tombstone");
    assert_eq!(dead(&set), vec![(1, ts(11))]);
    assert!(set.insert(1, ts(12)), "a newer insert revives the key");
    assert_eq!(set.get(&1), Some(&ts(12)));
    assert_eq!(set.tombstone_count(), 0);
}

#[test]
fn delete_of_an_unknown_key_leaves_a_tombstone() {
    let mut set = OrSWotSet::<1>::new();
    assert!(set.delete(5, ts(10)));
    assert!(
        !set.insert(5, ts(8)),
        "the insert it deleted arrives late and loses"
    );
    assert_eq!(set.len(), 0);
    assert_eq!(dead(&set), vec![(5, ts(10))]);
}

#[test]
fn will_apply_predicts_insert() {
    let mut set = OrSWotSet::<1>::new();
    assert!(set.will_apply(1, ts(1)));
    set.insert(1, ts(5));
    assert!(!set.will_apply(1, ts(5)));
    assert!(set.will_apply(1, ts(6)));
    set.delete(1, ts(7));
    assert!(!set.will_apply(1, ts(7)));
    assert!(set.will_apply(1, ts(8)));
    assert_eq!(set.observed(0), Some(ts(7)), "will_apply observes nothing");
}

#[test]
fn sources_out_of_range_are_errors_not_panics() {
    let mut set = OrSWotSet::<2>::new();
    let err = SetError::SourceOutOfRange {
        index: 2,
        sources: 2,
    };
    assert_eq!(set.insert_with_source(2, 1, ts(1)), Err(err.clone()));
    assert!(matches!(
        set.delete_with_source(usize::MAX, 1, ts(1)),
        Err(SetError::SourceOutOfRange {
            index: usize::MAX,
            sources: 2
        })
    ));
    assert_eq!(set.len(), 0);
    assert_eq!(set.observed(2), None);
    assert_eq!(set.insert_with_source(1, 1, ts(1)), Ok(true));
    assert_eq!(set.delete_with_source(1, 1, ts(2)), Ok(true));
    assert!(err.to_string().contains("out of range"));
}

#[test]
fn observed_watermarks_advance_even_when_a_write_loses() {
    let mut set = OrSWotSet::<2>::new();
    set.insert_with_source(0, 1, ts(10)).unwrap();
    assert_eq!(set.insert_with_source(1, 1, ts(5)), Ok(false));
    assert_eq!(set.observed(1), Some(ts(5)));
    set.insert_with_source(1, 2, ts(3)).unwrap();
    assert_eq!(set.observed(1), Some(ts(5)), "watermarks never go back");
}

#[test]
fn purge_drops_tombstones_older_than_every_active_source() {
    let mut set = OrSWotSet::<3>::new();
    assert!(
        set.purge_old_deletes().is_empty(),
        "nothing observed, nothing purged"
    );
    set.insert_with_source(0, 1, ts(1)).unwrap();
    set.delete_with_source(0, 1, ts(2)).unwrap();
    set.insert_with_source(1, 2, ts(3)).unwrap();
    set.delete_with_source(1, 2, ts(4)).unwrap();
    // Source 0 has observed 2, source 1 has observed 4; source 2 never delivered and does
    // not hold purging back. The frontier is 2 and purging is strict: nothing goes yet.
    assert!(set.purge_old_deletes().is_empty());
    set.insert_with_source(0, 3, ts(5)).unwrap();
    // Frontier 4: only the delete at 2 is older.
    assert_eq!(set.purge_old_deletes(), vec![(1, ts(2))]);
    assert_eq!(set.purge_watermark(), Some(ts(2)));
    set.insert_with_source(1, 4, ts(6)).unwrap();
    assert_eq!(set.purge_old_deletes(), vec![(2, ts(4))]);
    assert_eq!(set.tombstone_count(), 0, "tombstones really go");
    assert_eq!(set.purge_watermark(), Some(ts(4)));
    assert_eq!(live(&set), vec![(3, ts(5)), (4, ts(6))]);
}

#[test]
fn an_active_slow_source_holds_purging_back() {
    let mut set = OrSWotSet::<2>::new();
    set.insert_with_source(1, 9, ts(1)).unwrap();
    set.delete_with_source(0, 1, ts(5)).unwrap();
    set.insert_with_source(0, 2, ts(6)).unwrap();
    assert!(
        set.purge_old_deletes().is_empty(),
        "source 1 is at 1 and may still send 2..5"
    );
    set.insert_with_source(1, 3, ts(7)).unwrap();
    assert_eq!(set.purge_old_deletes(), vec![(1, ts(5))]);
}

#[test]
fn a_purged_delete_still_rejects_stale_writes() {
    let mut set = OrSWotSet::<2>::new();
    set.insert_with_source(0, 1, ts(1)).unwrap();
    set.delete_with_source(0, 1, ts(3)).unwrap();
    set.insert_with_source(0, 2, ts(4)).unwrap();
    assert_eq!(set.purge_old_deletes(), vec![(1, ts(3))]);
    // A late insert older than the purged delete, from the idle source, is refused...
    assert_eq!(set.insert_with_source(1, 1, ts(2)), Ok(false));
    assert_eq!(set.insert_with_source(1, 1, ts(3)), Ok(false));
    assert!(!set.will_apply(1, ts(3)));
    assert_eq!(set.get(&1), None);
    // ...and so is the same write arriving through a merge.
    let mut other = OrSWotSet::<2>::new();
    other.insert(1, ts(2));
    set.merge(other);
    assert_eq!(set.get(&1), None);
    // A newer write for the key applies.
    assert!(set.insert(1, ts(5)));
    assert_eq!(set.get(&1), Some(&ts(5)));
}

#[test]
fn merge_unions_and_applies_last_writer_wins() {
    let mut a = OrSWotSet::<1>::new();
    let mut b = OrSWotSet::<1>::new();
    a.insert(1, ts(1));
    a.insert(2, ts(5));
    a.delete(3, ts(6));
    b.insert(2, ts(4));
    b.insert(3, ts(5));
    b.insert(4, ts(7));
    b.delete(1, ts(2));
    let mut ab = a.clone();
    ab.merge(b.clone());
    let mut ba = b.clone();
    ba.merge(a.clone());
    assert_eq!(ab, ba);
    assert_eq!(live(&ab), vec![(2, ts(5)), (4, ts(7))]);
    assert_eq!(dead(&ab), vec![(1, ts(2)), (3, ts(6))]);
    assert_eq!(ab.observed(0), Some(ts(7)));
    let before = ab.clone();
    ab.merge(before.clone());
    assert_eq!(ab, before, "idempotent");
}

#[test]
fn merge_revives_a_key_deleted_before_a_newer_insert() {
    let mut a = OrSWotSet::<1>::new();
    let mut b = OrSWotSet::<1>::new();
    a.delete(1, ts(3));
    b.insert(1, ts(4));
    a.merge(b);
    assert_eq!(a.get(&1), Some(&ts(4)));
    assert_eq!(a.tombstone_count(), 0);
}

#[test]
fn merge_drops_what_the_other_side_purged() {
    let mut a = OrSWotSet::<1>::new();
    a.insert(1, ts(1));
    a.insert(2, ts(10));
    let mut b = a.clone();
    b.delete(1, ts(3));
    b.insert(3, ts(4));
    assert_eq!(b.purge_old_deletes(), vec![(1, ts(3))]);
    let mut ab = a.clone();
    ab.merge(b.clone());
    let mut ba = b.clone();
    ba.merge(a.clone());
    assert_eq!(ab, ba);
    assert_eq!(
        ab.get(&1),
        None,
        "b deleted and purged key 1; a's older entry goes"
    );
    assert_eq!(live(&ab), vec![(2, ts(10)), (3, ts(4))]);
    assert_eq!(ab.purge_watermark(), Some(ts(3)));
    // Our own tombstone at or below the other's watermark goes too, when it knows nothing of
    // the key.
    let mut c = OrSWotSet::<1>::new();
    c.delete(7, ts(2));
    c.merge(b.clone());
    assert_eq!(c.tombstone_count(), 0);
    // A tombstone newer than the watermark stays.
    let mut d = OrSWotSet::<1>::new();
    d.delete(7, ts(9));
    d.merge(b);
    assert_eq!(dead(&d), vec![(7, ts(9))]);
}

#[test]
fn diff_lists_what_the_other_side_has() {
    let mut a = OrSWotSet::<1>::new();
    let mut b = OrSWotSet::<1>::new();
    a.insert(1, ts(1));
    a.insert(2, ts(5));
    b.insert(1, ts(2));
    b.insert(2, ts(4));
    b.insert(3, ts(3));
    b.delete(4, ts(6));
    b.delete(2, ts(4)); // loses to a's insert at 5
    let (changed, removed) = a.diff(&b);
    assert_eq!(changed, vec![(1, ts(2)), (3, ts(3))]);
    assert_eq!(removed, vec![(4, ts(6))]);
    for (k, t) in changed {
        a.insert(k, t);
    }
    for (k, t) in removed {
        a.delete(k, t);
    }
    let (changed, removed) = a.diff(&b);
    assert!(changed.is_empty() && removed.is_empty());
    assert_eq!(live(&a), vec![(1, ts(2)), (2, ts(5)), (3, ts(3))]);
    assert_eq!(dead(&a), vec![(4, ts(6))]);
}

#[test]
fn many_keys_survive_compactions_and_merges() {
    let mut a = OrSWotSet::<1>::new();
    let mut b = OrSWotSet::<1>::new();
    for k in 0..20_000u64 {
        a.insert(k * 2, ts(k + 1));
        b.insert(k * 3, ts(k + 2));
    }
    for k in 0..5_000u64 {
        a.delete(k * 4, ts(100_000 + k));
    }
    assert_eq!(a.len(), 15_000);
    let mut ab = a.clone();
    ab.merge(b.clone());
    let mut ba = b;
    ba.merge(a);
    assert_eq!(ab, ba);
    assert_eq!(ab.get(&0), None);
    assert_eq!(ab.get(&3), Some(&ts(3)));
    assert_eq!(ab.get(&6), Some(&ts(4)), "6 = 3*2 (ts 4) vs 2*3 (ts 4)");
}

#[cfg(feature = "rkyv")]
#[test]
fn bytes_round_trip() {
    let mut set = OrSWotSet::<2>::new();
    for k in 0..3_000u64 {
        set.insert_with_source((k % 2) as usize, k, ts(k + 1))
            .unwrap();
    }
    set.delete(5, ts(10_000));
    set.delete(6, ts(10_001));
    set.insert_with_source(1, 9_999, ts(10_002)).unwrap();
    set.purge_old_deletes();
    set.delete(7, ts(10_003));
    let bytes = set.to_bytes().unwrap();
    let back = OrSWotSet::<2>::from_bytes(&bytes).unwrap();
    assert_eq!(back, set);
    assert_eq!(back.purge_watermark(), set.purge_watermark());
    // Unaligned input works too.
    let mut shifted = vec![0u8];
    shifted.extend_from_slice(&bytes);
    assert_eq!(OrSWotSet::<2>::from_bytes(&shifted[1..]).unwrap(), set);
}

#[cfg(feature = "rkyv")]
#[test]
fn bad_bytes_are_errors() {
    assert!(matches!(
        OrSWotSet::<1>::from_bytes(&[]),
        Err(SetError::InvalidBytes { .. })
    ));
    assert!(OrSWotSet::<1>::from_bytes(&[0xff; 64]).is_err());
    let set = OrSWotSet::<2>::new();
    let bytes = set.to_bytes().unwrap();
    let err = OrSWotSet::<1>::from_bytes(&bytes).unwrap_err();
    assert!(err.to_string().contains("2 source watermarks"), "{err}");
    // Every truncation is refused, never a panic.
    let mut full = OrSWotSet::<1>::new();
    full.insert(1, ts(1));
    full.delete(2, ts(2));
    let bytes = full.to_bytes().unwrap();
    for len in 0..bytes.len() {
        let _ = OrSWotSet::<1>::from_bytes(&bytes[..len]);
    }
}

#[test]
fn purge_deletes_before_uses_the_cutoff_and_keeps_refusing_older_writes() {
    let mut set = OrSWotSet::<1>::new();
    set.insert(1, ts(1));
    set.delete(1, ts(2));
    set.delete(2, ts(4));
    set.insert(3, ts(3));
    assert_eq!(set.tombstone(&1), Some(&ts(2)));
    assert_eq!(set.tombstone(&3), None, "live keys have no tombstone");
    assert!(set.purge_deletes_before(ts(2)).is_empty(), "strict cutoff");
    assert_eq!(set.purge_deletes_before(ts(3)), vec![(1, ts(2))]);
    assert_eq!(set.tombstone(&1), None);
    assert_eq!(set.purge_watermark(), Some(ts(2)));
    assert!(!set.insert(1, ts(2)), "a purged delete never resurrects");
    assert!(!set.insert(1, ts(1)));
    assert_eq!(dead(&set), vec![(2, ts(4))]);
    assert_eq!(live(&set), vec![(3, ts(3))]);
    assert!(set.insert(1, ts(5)), "newer writes apply");
    set.raise_purge_watermark(ts(1));
    assert_eq!(set.purge_watermark(), Some(ts(2)), "never lowered");
    set.raise_purge_watermark(ts(7));
    assert!(!set.insert(9, ts(6)));
}
