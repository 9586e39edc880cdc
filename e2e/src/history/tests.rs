//! The checker on synthetic histories: every rule is shown to fire on a history that
//! breaks it and to stay quiet on one that does not.

use super::*;

fn strict() -> CheckOptions {
    CheckOptions::default()
}

fn idempotent() -> CheckOptions {
    CheckOptions {
        idempotent_producer: true,
        ..CheckOptions::default()
    }
}

/// A send of `value` by `producer` acknowledged at `offset`, completed before
/// anything recorded after it is invoked.
fn acked(history: &History, producer: u32, partition: u32, value: &str, offset: u64) -> u64 {
    let id = history.record_send_invoke(producer, partition, value);
    history.record_send_ok(id, offset);
    id
}

fn at(partition: u32, offset: u64) -> Position {
    Position { partition, offset }
}

fn only_anomaly(verdict: &Verdict) -> &Anomaly {
    assert_eq!(verdict.anomalies.len(), 1, "{verdict}");
    assert!(!verdict.is_valid());
    &verdict.anomalies[0]
}

#[test]
fn a_clean_history_is_valid() {
    let history = History::new();
    acked(&history, 0, 0, "a", 0);
    acked(&history, 0, 0, "b", 1);
    acked(&history, 1, 1, "c", 0);
    // Two concurrent sends of one producer may be acknowledged in either order.
    let d = history.record_send_invoke(0, 0, "d");
    let e = history.record_send_invoke(0, 0, "e");
    history.record_send_ok(e, 2);
    history.record_send_ok(d, 3);
    let refused = history.record_send_invoke(1, 1, "refused");
    history.record_send_failed(refused);
    let seen = history.record_send_invoke(1, 1, "maybe-seen");
    history.record_send_unknown(seen);
    let unseen = history.record_send_invoke(1, 1, "maybe-unseen");
    history.record_send_unknown(unseen);
    history.record_send_invoke(1, 1, "never-completed");
    for (partition, offset, value) in [
        (0, 0, "a"),
        (0, 1, "b"),
        (0, 2, "e"),
        (0, 3, "d"),
        (1, 0, "c"),
        (1, 1, "maybe-seen"),
        // A read during the run and the final read may see the same record.
        (0, 0, "a"),
    ] {
        history.record_read(partition, offset, value);
    }

    let verdict = check(&history, &strict());
    assert!(verdict.is_valid(), "{verdict}");
    let counts = &verdict.counts;
    assert_eq!((counts.sends, counts.acked, counts.failed), (9, 5, 1));
    assert_eq!(counts.unknown, 3);
    assert_eq!(
        (counts.unknown_sends_seen, counts.unknown_sends_unseen),
        (1, 2)
    );
    assert_eq!(counts.positions_read, 6);
    assert!(verdict.to_json().contains("\"valid\": true"));
}

#[test]
fn an_acknowledged_send_never_read_is_lost() {
    let history = History::new();
    let lost = acked(&history, 0, 2, "x", 7);
    acked(&history, 0, 2, "y", 8);
    history.record_read(2, 8, "y");

    let verdict = check(&history, &strict());
    assert_eq!(
        only_anomaly(&verdict),
        &Anomaly::Lost {
            op: lost,
            acknowledged: at(2, 7),
            value: "x".into()
        }
    );
    assert_eq!(verdict.counts.lost, 1);

    history.record_read(2, 7, "x");
    assert!(check(&history, &strict()).is_valid());
}

#[test]
fn an_acknowledged_value_read_elsewhere_is_at_the_wrong_offset() {
    let history = History::new();
    let moved = acked(&history, 0, 0, "x", 3);
    let other_partition = acked(&history, 0, 0, "y", 4);
    history.record_read(0, 5, "x");
    history.record_read(1, 4, "y");

    let verdict = check(&history, &strict());
    assert_eq!(
        verdict.anomalies,
        [
            Anomaly::WrongOffset {
                op: moved,
                acknowledged: at(0, 3),
                read_at: vec![at(0, 5)],
                value: "x".into()
            },
            Anomaly::WrongOffset {
                op: other_partition,
                acknowledged: at(0, 4),
                read_at: vec![at(1, 4)],
                value: "y".into()
            },
        ],
        "{verdict}"
    );
    assert_eq!(verdict.counts.wrong_offset, 2);
}

#[test]
fn an_uncertain_value_read_on_another_partition_is_reported() {
    let history = History::new();
    let id = history.record_send_invoke(0, 0, "x");
    history.record_send_unknown(id);
    history.record_read(1, 0, "x");
    assert_eq!(
        only_anomaly(&check(&history, &strict())),
        &Anomaly::WrongPartition {
            op: id,
            sent_to: 0,
            read_at: vec![at(1, 0)],
            value: "x".into()
        }
    );

    let quiet = History::new();
    let id = quiet.record_send_invoke(0, 0, "x");
    quiet.record_send_unknown(id);
    quiet.record_read(0, 0, "x");
    assert!(check(&quiet, &strict()).is_valid());
}

#[test]
fn duplicates_are_allowed_only_for_uncertain_sends_without_idempotence() {
    let history = History::new();
    let retried = history.record_send_invoke(0, 0, "retried");
    history.record_send_unknown(retried);
    history.record_read(0, 0, "retried");
    history.record_read(0, 1, "retried");

    let lenient = check(&history, &strict());
    assert!(lenient.is_valid(), "{lenient}");
    assert_eq!(lenient.counts.allowed_duplicates, 1);

    let expected = Anomaly::Duplicate {
        op: retried,
        outcome: SendOutcome::Unknown,
        read_at: vec![at(0, 0), at(0, 1)],
        value: "retried".into(),
    };
    let verdict = check(&history, &idempotent());
    assert_eq!(only_anomaly(&verdict), &expected);
    assert_eq!(verdict.counts.duplicates, 1);
}

#[test]
fn an_acknowledged_value_read_twice_is_a_duplicate() {
    let history = History::new();
    let id = acked(&history, 0, 0, "x", 0);
    history.record_read(0, 0, "x");
    history.record_read(0, 1, "x");
    assert_eq!(
        only_anomaly(&check(&history, &strict())),
        &Anomaly::Duplicate {
            op: id,
            outcome: SendOutcome::Ok { offset: 0 },
            read_at: vec![at(0, 0), at(0, 1)],
            value: "x".into()
        }
    );
}

#[test]
fn a_value_nobody_sent_is_a_phantom() {
    let history = History::new();
    acked(&history, 0, 0, "x", 0);
    history.record_read(0, 0, "x");
    history.record_read(0, 1, "ghost");
    assert_eq!(
        only_anomaly(&check(&history, &strict())),
        &Anomaly::Phantom {
            read_at: vec![at(0, 1)],
            value: "ghost".into()
        }
    );
}

#[test]
fn a_refused_send_must_stay_invisible() {
    let history = History::new();
    let id = history.record_send_invoke(0, 0, "refused");
    history.record_send_failed(id);
    assert!(check(&history, &strict()).is_valid());

    history.record_read(0, 0, "refused");
    let verdict = check(&history, &strict());
    assert_eq!(
        only_anomaly(&verdict),
        &Anomaly::FailedButVisible {
            op: id,
            read_at: vec![at(0, 0)],
            value: "refused".into()
        }
    );
    assert_eq!(verdict.counts.failed_but_visible, 1);
}

#[test]
fn sequential_sends_of_one_producer_must_be_acknowledged_in_order() {
    let history = History::new();
    let first = acked(&history, 0, 0, "first", 5);
    let second = acked(&history, 0, 0, "second", 4);
    history.record_read(0, 5, "first");
    history.record_read(0, 4, "second");
    let verdict = check(&history, &strict());
    assert_eq!(
        only_anomaly(&verdict),
        &Anomaly::Order {
            producer: 0,
            partition: 0,
            earlier_op: first,
            earlier_offset: 5,
            later_op: second,
            later_offset: 4
        }
    );
    assert_eq!(verdict.counts.order_violations, 1);
}

#[test]
fn order_is_not_required_of_concurrent_sends_other_producers_or_partitions() {
    let history = History::new();
    // Concurrent: the second was invoked before the first completed.
    let first = history.record_send_invoke(0, 0, "a");
    let second = history.record_send_invoke(0, 0, "b");
    history.record_send_ok(first, 5);
    history.record_send_ok(second, 4);
    // Later, lower offsets: from another producer, and on another partition.
    acked(&history, 1, 0, "c", 3);
    acked(&history, 0, 1, "d", 0);
    for (partition, offset, value) in [(0, 5, "a"), (0, 4, "b"), (0, 3, "c"), (1, 0, "d")] {
        history.record_read(partition, offset, value);
    }
    let verdict = check(&history, &strict());
    assert!(verdict.is_valid(), "{verdict}");
}

#[test]
fn two_values_at_one_offset_conflict() {
    let history = History::new();
    let x = history.record_send_invoke(0, 0, "x");
    let y = history.record_send_invoke(1, 0, "y");
    history.record_send_unknown(x);
    history.record_send_unknown(y);
    history.record_read(0, 0, "x");
    history.record_read(0, 0, "y");
    assert_eq!(
        only_anomaly(&check(&history, &strict())),
        &Anomaly::OffsetConflict {
            at: at(0, 0),
            values: vec!["x".into(), "y".into()]
        }
    );
}

#[test]
fn a_value_sent_twice_makes_the_history_uncheckable() {
    let history = History::new();
    let first = acked(&history, 0, 0, "same", 0);
    let second = history.record_send_invoke(0, 0, "same");
    history.record_send_unknown(second);
    history.record_read(0, 0, "same");
    assert_eq!(
        only_anomaly(&check(&history, &strict())),
        &Anomaly::ReusedValue {
            ops: vec![first, second],
            value: "same".into()
        }
    );
}

#[test]
fn the_verdict_lists_a_bounded_number_of_anomalies_and_counts_all() {
    let history = History::new();
    for i in 0..10u64 {
        acked(&history, 0, 0, &format!("v{i}"), i);
    }
    let options = CheckOptions {
        max_anomalies: 3,
        ..CheckOptions::default()
    };
    let verdict = check(&history, &options);
    assert_eq!(verdict.anomalies.len(), 3);
    assert_eq!((verdict.counts.lost, verdict.anomalies_omitted), (10, 7));
    let json: serde_json::Value = serde_json::from_str(&verdict.to_json()).expect("JSON");
    assert_eq!(json["anomalies"][0]["kind"], "lost");
    assert_eq!(json["anomalies"][0]["acknowledged"]["offset"], 0);
    assert_eq!(json["counts"]["lost"], 10);
    let shown = verdict.to_string();
    assert!(
        shown.contains("lost: send 0 of \"v0\" was acknowledged at p0@0 but never read"),
        "{shown}"
    );
}

#[test]
fn the_order_sweep_agrees_with_comparing_every_pair() {
    // A small deterministic generator: no randomness crate needed for this.
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move |bound: u64| {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) % bound
    };
    let mut violating_rounds = 0;
    for round in 0..300 {
        let history = History::new();
        let mut pending: Vec<u64> = Vec::new();
        let mut offsets = 0u64..;
        for n in 0..12 {
            if pending.is_empty() || next(2) == 0 {
                pending.push(history.record_send_invoke(0, 0, &format!("r{round}-{n}")));
            } else {
                let id = pending.swap_remove(next(pending.len() as u64) as usize);
                // Mostly increasing offsets, sometimes one from the past.
                let offset = offsets
                    .next()
                    .unwrap_or(0)
                    .saturating_sub(next(3) * next(2));
                history.record_send_ok(id, offset);
            }
        }
        let log = history.snapshot();
        let acked: Vec<(&SendOp, u64, u64)> = log
            .sends
            .iter()
            .filter_map(|send| match (send.outcome, send.complete_us) {
                (SendOutcome::Ok { offset }, Some(done)) => Some((send, offset, done)),
                _ => None,
            })
            .collect();
        let violated = acked.iter().any(|(a, a_offset, a_done)| {
            acked.iter().any(|(b, b_offset, _)| {
                *a_done < b.invoke_us && a_offset >= b_offset && a.id != b.id
            })
        });
        let verdict = check_log(&log, &strict());
        assert_eq!(
            verdict.counts.order_violations > 0,
            violated,
            "round {round}: {verdict}"
        );
        violating_rounds += u32::from(violated);
    }
    // Both kinds of history were generated, so the agreement means something.
    assert!((1..300).contains(&violating_rounds), "{violating_rounds}");
}

#[test]
fn tasks_on_other_threads_share_one_history() {
    let history = History::new();
    let workers: Vec<_> = (0..4u32)
        .map(|producer| {
            let history = history.clone();
            std::thread::spawn(move || {
                for i in 0..100u64 {
                    let id =
                        history.record_send_invoke(producer, producer, &format!("{producer}-{i}"));
                    history.record_send_ok(id, i);
                    history.record_read(producer, i, &format!("{producer}-{i}"));
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().expect("worker");
    }
    let log = history.snapshot();
    assert!(
        log.sends
            .iter()
            .enumerate()
            .all(|(i, send)| send.id == i as u64)
    );
    let verdict = check(&history, &strict());
    assert!(verdict.is_valid(), "{verdict}");
    assert_eq!(verdict.counts.acked, 400);
}

#[test]
#[should_panic(expected = "completed twice")]
fn completing_a_send_twice_is_a_test_bug() {
    let history = History::new();
    let id = history.record_send_invoke(0, 0, "x");
    history.record_send_ok(id, 0);
    history.record_send_unknown(id);
}
