//! Borrowers of the write transaction (`Transaction::redb`) that keep asking are served in
//! turn without growing the writer thread's stack.
//!
//! Before the fix, the writer served a borrower that asked during a loan from inside that loan
//! (a recursive call): two threads committing outbox transactions back to back kept one
//! request always pending, so the recursion went on until the writer's stack overflowed and
//! the process aborted (found by `tests/crash_tx.rs` in CI: a debug build, after about 2,000
//! loans). The test runs the workload in a child process whose threads get a 256 KiB stack
//! (`RUST_MIN_STACK`), so that the old recursion aborts within a few hundred loans.

mod common;

use std::sync::Arc;

use common::process::Proc;
use embus::Broker;
use embus::redb::TableDefinition;

/// Names the store the child opens; without it [`lend_child`] returns at once.
const CHILD: &str = "EMBUS_LEND_CHILD";
/// Threads lending in the child (three: two asking during one loan must both be served).
const THREADS: u64 = 3;
/// Transactions per thread in the child.
const LOANS: u64 = 2_000;
const ROWS: TableDefinition<u64, u64> = TableDefinition::new("rows");

#[test]
fn borrowers_that_keep_asking_do_not_grow_the_writers_stack() {
    let dir = common::fresh_dir("lend");
    let path = dir.join("app.embus");
    let mut child = Proc::spawn(
        "lend_child",
        "@lend ",
        "the lending child".to_owned(),
        &[
            (CHILD, path.display().to_string()),
            ("RUST_MIN_STACK", (256 << 10).to_string()),
        ],
    );
    child.succeed();
    // Every loan committed its row and its event.
    let bus = Broker::open(&path).unwrap();
    let topic = bus.topic::<u64>("placed").unwrap();
    assert_eq!(topic.retained(), THREADS * LOANS);
    bus.close().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// The child: [`THREADS`] threads, each committing [`LOANS`] transactions that write a row through
/// `Transaction::redb` and send an event, back to back.
#[test]
fn lend_child() {
    let Some(path) = std::env::var_os(CHILD) else {
        return;
    };
    let bus = Arc::new(Broker::open(&path).unwrap());
    let topic = bus.topic::<u64>("placed").unwrap();
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (bus, placed) = (Arc::clone(&bus), topic.producer());
            std::thread::spawn(move || {
                for n in 0..LOANS {
                    let key = t * LOANS + n;
                    let mut tx = bus.transaction().unwrap();
                    tx.redb()
                        .unwrap()
                        .open_table(ROWS)
                        .unwrap()
                        .insert(key, key)
                        .unwrap();
                    tx.send(&placed, key).unwrap();
                    tx.commit().unwrap();
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    drop(topic);
    Arc::try_unwrap(bus).ok().unwrap().close().unwrap();
}
