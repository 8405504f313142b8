//! Issue #16's E1, end to end against its floor: the `e2e` section of `benches/durable.rs`
//! (see its table).
//!
//! Each E1 run opens a fresh file (`Durability::Immediate`) and runs the embus e2e run of
//! `benches/peers.rs` on it (`common::flow`: one producer thread `send_batch`ing 1000 messages
//! for the window, one consumer thread receiving and acking each until it has acked all), then
//! closes the broker on the clock, as the throughput rows do: the rate counts messages acked
//! over the time from the first send until `close` returns. F2 runs in the same rounds, so the
//! ratios are per round.

use std::time::Duration;

use embus::{Broker, Durability};

use super::Target::AtLeast;
use super::common::flow::{self, Tally};
use super::{Ctx, Figure, Section, durable_broker, f2, rate, ratio, remove, side};

/// Runs `flow` on a fresh durable broker and closes it; the rate counts from the flow's start
/// to the end of the close.
fn run(
    ctx: &Ctx,
    warm: bool,
    key: &'static str,
    flow: fn(&Broker, Duration) -> Tally,
) -> Vec<Figure> {
    let (path, bus) = durable_broker(ctx, key, Durability::Immediate, true);
    let tally = flow(&bus, ctx.window(warm));
    bus.close().expect("close");
    let elapsed = tally.start.elapsed();
    remove(&path);
    vec![rate(key, tally.sent, elapsed)]
}

/// The section: F2 between the two E1 sides, so each runs next to it in most rounds.
pub(super) fn section() -> Section {
    Section {
        name: "e2e",
        sides: vec![
            side(
                "E1 queue",
                "queue: send_batch(1000) → recv + ack each",
                |c, w| run(c, w, "E1 queue", flow::embus_queue),
            ),
            f2(),
            side(
                "E1 group",
                "topic, group member: send_batch(1000) → recv + ack",
                |c, w| run(c, w, "E1 group", flow::embus_group),
            ),
        ],
        ratios: vec![
            ratio("E1 queue / F2", "E1 queue", "F2", Some(AtLeast(0.5))),
            ratio("E1 group / F2", "E1 group", "F2", Some(AtLeast(0.5))),
        ],
        setup: None,
    }
}
