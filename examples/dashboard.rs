//! A live view of a broker through `Broker::stats`: a small workload runs for a few seconds
//! and a table of its figures is printed every second, so you can watch a consumer group's lag
//! rise while the producer outpaces it and fall when it slows down.
//!
//! Run it with `cargo run --example dashboard` (or `-- --seconds 30`). The workload, in memory
//! mode:
//! - `orders`, a topic of 4 partitions, gets a rate that swells from 0 to 800 messages/s and
//!   back over the run; the group `billing`, two members that need 4 ms per message (about
//!   500/s together), falls behind, then catches up.
//! - `jobs`, a queue, gets 50 jobs/s, some delayed by half a second; its worker nacks every
//!   7th job once (it comes back after a 200 ms backoff) and every 10th job always, so those
//!   land in `jobs.dead` after 3 deliveries.

use std::f64::consts::PI;
use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use embus::stats::{Stats, TopicStats};
use embus::{Backoff, Broker, Consumer, QueueOptions, Record, RecvTimeoutError, TopicOptions};

/// Any failure of a workload thread, sent back to `main`.
type Failure = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), Failure> {
    let seconds = parse_seconds()?;
    let bus = Broker::memory();
    let orders = bus.topic_with::<u64>("orders", TopicOptions::default().partitions(4))?;
    let jobs = bus.queue_with::<u64>(
        "jobs",
        QueueOptions::default()
            .max_deliveries(3)
            .backoff(Backoff::fixed(Duration::from_millis(200)))
            .dead_letter("jobs.dead"),
    )?;
    let (stop, run) = (Arc::new(AtomicBool::new(false)), seconds as f64);
    let mut threads = Vec::new();

    // The producer: orders at a rate that swells and ebbs, and 50 jobs a second.
    let (order_tx, job_tx, halt) = (orders.producer(), jobs.producer(), Arc::clone(&stop));
    threads.push(thread::spawn(move || -> Result<(), Failure> {
        let began = Instant::now();
        let (mut owed, mut sent, mut job) = (0.0, 0u64, 0u64);
        while !halt.load(Ordering::Relaxed) {
            let phase = began.elapsed().as_secs_f64() / run;
            owed += 800.0 * (PI * phase).sin().powi(2) * 0.02; // 20 ms of the current rate
            while owed >= 1.0 {
                order_tx.send(sent)?;
                (owed, sent) = (owed - 1.0, sent + 1);
            }
            let delay = Duration::from_millis(if job % 4 == 0 { 500 } else { 0 });
            job_tx.send_record(Record::new(job).delay(delay))?;
            job += 1;
            thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }));
    // Two slow members of the group `billing`.
    for _ in 0..2 {
        let (member, halt) = (orders.join_group("billing")?, Arc::clone(&stop));
        threads.push(thread::spawn(move || {
            work(member, &halt, |msg| {
                thread::sleep(Duration::from_millis(4));
                msg.ack()
            })
        }));
    }
    // A worker that sometimes fails a job.
    let (worker, halt) = (jobs.consumer(), Arc::clone(&stop));
    threads.push(thread::spawn(move || {
        work(worker, &halt, |msg| {
            thread::sleep(Duration::from_millis(5));
            let job = *msg.payload();
            if job % 10 == 0 || (job % 7 == 0 && msg.delivery_count() == 1) {
                msg.nack()
            } else {
                msg.ack()
            }
        })
    }));

    // The dashboard: one snapshot a second.
    let terminal = std::io::stdout().is_terminal();
    let began = Instant::now();
    let mut last: Option<Stats> = None;
    for second in 1..=seconds {
        let wake = began + Duration::from_secs(second);
        thread::sleep(wake.saturating_duration_since(Instant::now()));
        let stats = bus.stats();
        if terminal {
            print!("\x1b[2J\x1b[H"); // clear the screen, cursor home
        }
        print_frame(second, &stats, last.as_ref());
        last = Some(stats);
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().map_err(|_| "a workload thread panicked")??;
    }

    let stats = bus.stats();
    let (topic, queue) = (stats.topic("orders"), stats.queue("jobs"));
    let (Some(topic), Some(queue)) = (topic, queue) else {
        return Err("the snapshot lacks `orders` or `jobs`".into());
    };
    let billing = topic.group("billing").ok_or("no billing group")?;
    let sent: u64 = topic.partitions.iter().map(|p| p.appended).sum();
    println!(
        "done in {seconds} s: {sent} orders sent, billing lag {}, {} redelivered; jobs {} acked, \
         {} nacked, {} dead-lettered",
        billing.lag, billing.redelivered, queue.acked, queue.nacked, queue.dead_lettered,
    );
    Ok(())
}

/// Receives until told to stop, handing each message to `handle`.
fn work(
    mut consumer: Consumer<u64>,
    stop: &AtomicBool,
    handle: impl Fn(embus::Message<u64>) -> Result<(), embus::Error>,
) -> Result<(), Failure> {
    while !stop.load(Ordering::Relaxed) {
        match consumer.recv_timeout(Duration::from_millis(50)) {
            Ok(msg) => handle(msg)?,
            Err(RecvTimeoutError::Timeout) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// One frame: topics, their groups, queues. `last` is the previous second's snapshot, to
/// show this second's append rate next to the one-minute average that stats keeps.
fn print_frame(second: u64, stats: &Stats, last: Option<&Stats>) {
    println!("embus dashboard, t = {second} s");
    println!(
        "\n{:<10} {:>5} {:>24} {:>6} {:>7} {:>7}",
        "TOPIC", "PARTS", "NEXT OFFSETS", "MSGS", "NOW/S", "AVG/S"
    );
    for topic in &stats.topics {
        let before = last.and_then(|s| s.topic(&topic.name));
        let appended = |t: &TopicStats| t.partitions.iter().map(|p| p.appended).sum::<u64>();
        let now = appended(topic) - before.map_or(0, appended);
        let avg: f64 = topic.partitions.iter().map(|p| p.append_rate).sum();
        let next = join(topic.partitions.iter().map(|p| p.next));
        let parts = topic.partitions.len();
        println!(
            "{:<10} {parts:>5} {next:>24} {:>6} {now:>7} {avg:>7.0}",
            topic.name,
            topic.messages()
        );
    }
    println!(
        "\n{:<18} {:>7} {:>20} {:>6} {:>9} {:>11}",
        "GROUP", "MEMBERS", "LAG PER PARTITION", "LAG", "IN FLIGHT", "REDELIVERED"
    );
    for topic in &stats.topics {
        for g in &topic.groups {
            let lags = join(g.partitions.iter().map(|p| p.lag));
            println!(
                "{:<18} {:>7} {lags:>20} {:>6} {:>9} {:>11}",
                format!("{}/{}", topic.name, g.name),
                g.members.len(),
                g.lag,
                g.in_flight,
                g.redelivered
            );
        }
    }
    println!(
        "\n{:<10} {:>6} {:>9} {:>7} {:>5} {:>8} {:>6} {:>6}",
        "QUEUE", "READY", "IN FLIGHT", "DELAYED", "DEAD", "OLDEST", "ACK/S", "NACK/S"
    );
    for q in &stats.queues {
        let oldest = q
            .oldest_ready_age
            .map_or("-".to_owned(), |a| format!("{} ms", a.as_millis()));
        println!(
            "{:<10} {:>6} {:>9} {:>7} {:>5} {oldest:>8} {:>6.1} {:>6.1}",
            q.name, q.ready, q.in_flight, q.delayed, q.dead_lettered, q.ack_rate, q.nack_rate
        );
    }
    println!();
}

/// Numbers separated by spaces.
fn join(numbers: impl Iterator<Item = u64>) -> String {
    numbers.map(|n| n.to_string()).collect::<Vec<_>>().join(" ")
}

/// `--seconds N` (default 10).
fn parse_seconds() -> Result<u64, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [] => Ok(10),
        [flag, n] if flag == "--seconds" => n
            .parse()
            .ok()
            .filter(|&n| n > 0)
            .ok_or(format!("--seconds wants a whole number above 0, not `{n}`")),
        _ => Err(format!(
            "usage: dashboard [--seconds N], not `{}`",
            args.join(" ")
        )),
    }
}
