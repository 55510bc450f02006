use super::*;

#[test]
fn holders() {
    assert_eq!(Holder::of(Some(0), Some(false)), Holder::Root);
    assert_eq!(Holder::of(Some(0), Some(true)), Holder::Agent);
    assert_eq!(Holder::of(Some(1000), Some(false)), Holder::Uid(1000));
    assert_eq!(Holder::of(Some(1000), None), Holder::Agent);
    assert_eq!(Holder::of(None, Some(false)), Holder::Agent);
}

#[test]
fn shares_keep_root_a_reserve_and_one_uid_to_its_half() {
    let mut c = Counts::default();
    for _ in 0..SLOTS.uid {
        assert!(c.admits(Holder::Uid(7), &SLOTS));
        c.add(Holder::Uid(7));
    }
    assert!(!c.admits(Holder::Uid(7), &SLOTS), "one uid: half the slots");
    for _ in 0..SLOTS.agents {
        assert!(c.admits(Holder::Agent, &SLOTS));
        c.add(Holder::Agent);
    }
    assert!(!c.admits(Holder::Agent, &SLOTS));
    while c.admits(Holder::Uid(8), &SLOTS) {
        c.add(Holder::Uid(8));
    }
    assert_eq!(c.others, SLOTS.others, "the others stop at root's reserve");
    let mut root = 0;
    while c.admits(Holder::Root, &SLOTS) {
        c.add(Holder::Root);
        root += 1;
    }
    assert_eq!(root, SLOTS.total - SLOTS.others);
    c.remove(Holder::Root);
    assert!(
        !c.admits(Holder::Uid(9), &SLOTS),
        "a free slot of root's reserve"
    );
    assert!(c.admits(Holder::Root, &SLOTS));
    c.remove(Holder::Uid(8));
    assert!(!c.admits(Holder::Uid(7), &SLOTS), "uid 7 has its half");
    assert!(c.admits(Holder::Uid(9), &SLOTS));
    c.remove(Holder::Uid(7));
    assert!(c.admits(Holder::Uid(7), &SLOTS));
    assert_eq!(c.uids.get(&7), Some(&(SLOTS.uid - 1)));
}

/// Lets the spawned waiters run until `n` wait.
async fn queued(a: &Admission, n: usize) {
    for _ in 0..10_000 {
        if a.counts().2 == n {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(a.counts().2, n, "waiting");
}

#[tokio::test]
async fn a_freed_slot_goes_to_the_first_waiter_its_share_admits() {
    let a = Arc::new(Admission::default());
    let mut held = Vec::new();
    for _ in 0..SLOTS.uid {
        held.push(a.slot(Holder::Uid(7), Duration::ZERO).await.expect("slot"));
    }
    // uid 7 waits behind its own share; root behind a full pool.
    let waiting7 = tokio::spawn({
        let a = Arc::clone(&a);
        async move {
            a.slot(Holder::Uid(7), Duration::from_secs(5))
                .await
                .map(drop)
        }
    });
    let mut roots = Vec::new();
    for _ in 0..(SLOTS.total - SLOTS.uid) {
        roots.push(
            a.slot(Holder::Root, Duration::ZERO)
                .await
                .expect("root slot"),
        );
    }
    queued(&a, 1).await;
    let waiting_root = tokio::spawn({
        let a = Arc::clone(&a);
        async move { a.slot(Holder::Root, Duration::from_secs(5)).await.map(drop) }
    });
    queued(&a, 2).await;
    // A root slot frees: uid 7 is first in line but over its share; root gets it.
    drop(roots.pop());
    assert_eq!(waiting_root.await.expect("join"), Ok(()));
    // uid 7's slot frees: its waiter gets it.
    drop(held.pop());
    assert_eq!(waiting7.await.expect("join"), Ok(()));
    assert_eq!(a.counts().2, 0);
}

#[tokio::test]
async fn a_waiter_gives_up_after_its_wait_and_the_queue_is_bounded() {
    let a = Arc::new(Admission::default());
    let mut held = Vec::new();
    for _ in 0..SLOTS.uid {
        held.push(a.slot(Holder::Uid(7), Duration::ZERO).await.expect("slot"));
    }
    let start = Instant::now();
    assert_eq!(
        a.slot(Holder::Uid(7), Duration::from_millis(50))
            .await
            .err(),
        Some(Busy::Waited)
    );
    assert!(start.elapsed() >= Duration::from_millis(50));
    let mut waiters = Vec::new();
    for _ in 0..WAITING.uid {
        let a = Arc::clone(&a);
        waiters.push(tokio::spawn(async move {
            a.slot(Holder::Uid(7), Duration::from_secs(30))
                .await
                .map(drop)
        }));
    }
    queued(&a, WAITING.uid).await;
    assert_eq!(
        a.slot(Holder::Uid(7), Duration::from_secs(5)).await.err(),
        Some(Busy::QueueFull)
    );
    // Root still gets a slot at once.
    assert!(a.slot(Holder::Root, Duration::ZERO).await.is_ok());
    // Cancelled waiters leave the queue.
    for w in &waiters {
        w.abort();
    }
    for w in waiters {
        let _ = w.await;
    }
    assert_eq!(a.counts().2, 0);
    drop(held);
    assert_eq!(a.counts().1, 0);
}

#[test]
fn open_connections_are_shared_out_too() {
    let a = Arc::new(Admission::default());
    let mine: Vec<_> = (0..OPEN.uid)
        .map_while(|_| a.open(Holder::Uid(7)))
        .collect();
    assert_eq!(mine.len(), OPEN.uid);
    assert!(a.open(Holder::Uid(7)).is_none());
    assert!(a.open(Holder::Root).is_some());
    drop(mine);
    assert_eq!(a.counts().0, 0);
}

#[test]
fn refusal_warnings_come_at_most_once_per_interval_with_counts() {
    let r = Refusals::new(Duration::from_secs(10));
    let t0 = Instant::now();
    let first = r
        .note(Refused::Slow, Holder::Uid(7), t0)
        .expect("the first at once");
    assert_eq!(first.tally.slow, 1);
    for i in 0..1000 {
        let now = t0 + Duration::from_millis(i);
        assert!(
            r.note(Refused::Busy(Busy::Waited), Holder::Uid(7), now)
                .is_none()
        );
    }
    assert!(r.flush(t0 + Duration::from_secs(9)).is_none());
    let next = r
        .flush(t0 + Duration::from_secs(10))
        .expect("after the interval");
    assert_eq!(
        next,
        Warning {
            tally: Tally {
                waited: 1000,
                ..Tally::default()
            },
            last_holder: Some(Holder::Uid(7)),
        }
    );
    assert!(
        r.flush(t0 + Duration::from_secs(30)).is_none(),
        "nothing new"
    );
}
