//! After a failed commit (a full disk) the store refuses writes (`Error::Poisoned`). redb then
//! refuses every file access until the file is reopened (only its cached pages stay
//! readable), so a read of committed records that misses the cache is `Error::Poisoned` too,
//! naming the file and the failure: never a vague storage error to wait on and retry.

mod common;

use std::sync::atomic::Ordering;

use common::WAIT;
use common::faulty::{Faults, Mode, faulty_builder};
use embus::{Broker, Error, SendError, Start, TopicOptions};

const RECORDS: usize = 50;

#[test]
fn a_read_past_the_cache_after_a_failed_commit_is_poisoned_naming_the_file() {
    let dir = common::fresh_dir("poisoned-reads");
    let path = dir.join("store.embus");
    {
        let bus = Broker::open(&path).unwrap();
        let topic = bus
            .topic_with::<String>("t", TopicOptions::default().partitions(1))
            .unwrap();
        let sent: Vec<String> = (0..RECORDS).map(|i| format!("record-{i}")).collect();
        topic.producer().send_batch(sent).unwrap();
        bus.close().unwrap();
    }
    let faults = Faults::new(Mode::Sticky); // never armed: only the disk fills
    let bus = faulty_builder(&path, &faults)
        .cache_size(0) // every read reaches the file
        .open()
        .unwrap();
    let jobs = bus.queue::<String>("jobs").unwrap();
    faults.full.store(true, Ordering::SeqCst);
    match jobs.producer().send("lost".to_owned()) {
        Err(SendError::Failed(back, Error::Poisoned { .. })) => assert_eq!(back, "lost"),
        other => panic!("expected Error::Poisoned, got {other:?}"),
    }
    // The topic is restored from the file now, past redb's cache (size 0).
    match bus.topic::<String>("t") {
        Err(e @ Error::Poisoned { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains("store.embus") && text.contains("disk full"),
                "{text}"
            );
            assert!(text.contains("unreadable until it is reopened"), "{text}");
        }
        other => panic!("expected Error::Poisoned, got {other:?}"),
    }
    assert!(matches!(bus.close(), Err(Error::Poisoned { .. })));
    // Reopened, every committed record reads back.
    let bus = Broker::open(&path).unwrap();
    let topic = bus.topic::<String>("t").unwrap();
    let mut sub = topic.subscribe(Start::Earliest).unwrap();
    for i in 0..RECORDS {
        let m = sub.recv_timeout(WAIT).unwrap();
        assert_eq!(
            (m.offset(), m.payload().as_str()),
            (i as u64, &*format!("record-{i}"))
        );
    }
    drop(sub);
    bus.close().unwrap();
}
