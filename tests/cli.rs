//! The `embus` command-line tool, run as a process on stores written by a real broker:
//! golden outputs of `inspect`, `tail` and `dlq`, JSON mode, `--follow`, and `--redrive` read
//! back by a broker. Bad input is in `cli_errors.rs`.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, UNIX_EPOCH};

use embus::codec::CodecKind;
use embus::{Broker, ManualClock, QueueOptions, Record, TopicOptions};
use serde::{Deserialize, Serialize};

use common::{WAIT, fresh_dir};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Order {
    id: u32,
    item: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Job {
    name: String,
}

/// 2026-12-06T10:00:00Z.
const START: u64 = 1_796_551_200;

fn clock() -> ManualClock {
    ManualClock::starting_at(UNIX_EPOCH + Duration::from_secs(START))
}

fn open(path: &Path, codec: CodecKind, clock: &ManualClock) -> Broker {
    Broker::builder()
        .path(path)
        .codec(codec)
        .clock(clock.clone())
        .open()
        .unwrap()
}

/// A store with a topic of two partitions (keys, headers, one binary), a group with a position
/// and lag, a queue with a message in flight at close and a dead-letter queue with one dead
/// letter. Every send is one second after the previous one.
fn write_store(path: &Path, codec: CodecKind) {
    let clock = clock();
    let bus = open(path, codec, &clock);
    let orders = bus
        .topic_with::<Order>("orders", TopicOptions::default().partitions(2))
        .unwrap();
    let producer = orders.producer();
    for (id, item) in [(1, "apple"), (2, "pear"), (3, "fig")] {
        let record = Record::new(Order {
            id,
            item: item.to_owned(),
        })
        .key(format!("customer-{id}"))
        .header("trace", format!("t{id}"))
        .header("raw", [0xff, id as u8]);
        producer.send_record(record).unwrap();
        clock.advance(Duration::from_secs(1));
    }
    let mut member = orders.join_group("billing").unwrap();
    let first = member.recv_timeout(WAIT).unwrap();
    first.ack().unwrap();

    let jobs = bus
        .queue_with::<Job>(
            "jobs",
            QueueOptions::default()
                .max_deliveries(1)
                .dead_letter("jobs.dead"),
        )
        .unwrap();
    for name in ["resize", "crop", "blur"] {
        let record = Record::new(Job {
            name: name.to_owned(),
        })
        .key(name)
        .header("by", "cli-test");
        jobs.producer().send_record(record).unwrap();
        clock.advance(Duration::from_secs(1));
    }
    let mut worker = jobs.consumer();
    worker.recv_timeout(WAIT).unwrap().nack().unwrap(); // resize: dead-lettered
    let in_flight = worker.recv_timeout(WAIT).unwrap(); // crop: in flight at close
    bus.close().unwrap();
    drop((member, in_flight));
}

fn embus(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_embus"))
        .args(args)
        .output()
        .unwrap()
}

/// Runs the tool, expecting success and nothing on stderr; returns stdout.
fn ok(args: &[&str]) -> String {
    let out = embus(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{args:?}: {:?}\n{stderr}", out.status);
    assert_eq!(stderr, "", "{args:?} wrote to stderr");
    String::from_utf8(out.stdout).unwrap()
}

fn store(test: &str, codec: CodecKind) -> (PathBuf, String) {
    let path = fresh_dir(test).join("app.embus");
    write_store(&path, codec);
    let text = path.to_str().unwrap().to_owned();
    (path, text)
}

fn lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// What redb stores for `table`'s rows: an 8-byte key and the record each.
fn stored_bytes(file: &str, table: &str) -> String {
    use embus::redb::{ReadableDatabase, ReadableTable, TableDefinition};
    let db = embus::redb::ReadOnlyDatabase::open(file).unwrap();
    let txn = db.begin_read().unwrap();
    let rows = txn
        .open_table(TableDefinition::<u64, &[u8]>::new(table))
        .unwrap();
    let sum: usize = rows
        .iter()
        .unwrap()
        .map(|r| 8 + r.unwrap().1.value().len())
        .sum();
    sum.to_string()
}

#[test]
fn inspect_prints_the_golden_table() {
    let (_, file) = store("cli-inspect", CodecKind::Json);
    let backoff = r#""backoff":{"kind":{"Exponential":{"initial":{"nanos":10000000,"secs":0},"max":{"nanos":0,"secs":10}}}}"#;
    let ack = r#""ack_timeout":{"nanos":0,"secs":30}"#;
    let queue = |dlq: &str, max: &str| {
        format!(
            r#"{{{ack},{backoff},"capacity":65536,"dead_letter":{dlq},"dedupe":null,"max_deliveries":{max},"message_ttl":null,"prefetch":null,"priorities":null}}"#
        )
    };
    let (bytes0, bytes1) = (
        stored_bytes(&file, "embus.t.orders.0"),
        stored_bytes(&file, "embus.t.orders.1"),
    );
    let expected = format!(
        r#"store: {file}
codec: json
closed cleanly: yes

topic orders (Order)
  options: {{"compaction":false,"dedupe":null,"interest":false,"overflow":"Lag","partitions":2,"retention":{{"age":null,"bytes":null,"messages":65536}}}}
  partition  first  next  messages  bytes
  0          0      2     2         {bytes0}
  1          0      1     1         {bytes1}
  group billing (lag 2)
    options: {{{ack},{backoff},"dead_letter":null,"max_deliveries":null,"overflow":"Block","start":"Earliest"}}
    partition  position  lag
    0          1         1
    1          0         1

queues
  name       payload  depth  delivered  next id  dead-letter queue  dead letters
  jobs       Job      2      1          3        jobs.dead          1
  jobs.dead  Job      1      0          1        -                  -
  options jobs: {}
  options jobs.dead: {}
"#,
        queue(r#""jobs.dead""#, "1"),
        queue("null", "null"),
    );
    assert_eq!(ok(&["inspect", &file]), expected);
}

#[test]
fn inspect_json_has_the_figures() {
    let (_, file) = store("cli-inspect-json", CodecKind::Bincode);
    let s: serde_json::Value = serde_json::from_str(&ok(&["inspect", &file, "--json"])).unwrap();
    assert_eq!(s["codec"], "bincode");
    assert_eq!(s["closed_cleanly"], true);
    let topic = &s["topics"][0];
    assert_eq!(topic["name"], "orders");
    assert_eq!(topic["options"]["partitions"], 2);
    let counts: Vec<_> = topic["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["first_offset"].as_u64(),
                p["next_offset"].as_u64().unwrap(),
                p["messages"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(counts, [(Some(0), 2, 2), (Some(0), 1, 1)]);
    let group = &topic["groups"][0];
    assert_eq!(
        (group["name"].as_str(), group["lag"].as_u64()),
        (Some("billing"), Some(2))
    );
    assert_eq!(group["partitions"][0]["position"], 1);
    let queues = s["queues"].as_array().unwrap();
    let jobs = &queues[0];
    assert_eq!(jobs["name"], "jobs");
    assert_eq!(
        (jobs["depth"].as_u64(), jobs["delivered"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(jobs["dead_letter_queue"], "jobs.dead");
    assert_eq!(jobs["dead_letters"], 1);
    assert_eq!(queues[1]["name"], "jobs.dead");
    assert_eq!(queues[1]["depth"], 1);
}

/// The golden JSON line of order `id` (JSON codec).
fn order_line(partition: u32, offset: u64, id: u32, item: &str) -> String {
    let ts = START + u64::from(id) - 1;
    format!(
        r#"{{"topic":"orders","partition":{partition},"offset":{offset},"timestamp":"2026-12-06T10:00:0{}.000000000Z","timestamp_ns":{ts}000000000,"key":"customer-{id}","headers":{{"raw":{{"base64":"/w{}="}},"trace":"t{id}"}},"payload":{{"id":{id},"item":"{item}"}}}}"#,
        id - 1,
        ["E", "I", "M"][id as usize - 1],
    )
}

#[test]
fn tail_prints_golden_json_lines_from_each_start() {
    let (_, file) = store("cli-tail", CodecKind::Json);
    let pear = order_line(0, 0, 2, "pear");
    let fig = order_line(0, 1, 3, "fig");
    let apple = order_line(1, 0, 1, "apple");
    let all = format!("{pear}\n{fig}\n{apple}\n");
    assert_eq!(ok(&["tail", &file, "orders"]), all);
    assert_eq!(ok(&["tail", &file, "orders", "--from", "earliest"]), all);
    assert_eq!(ok(&["tail", &file, "orders", "--from", "latest"]), "");
    assert_eq!(
        ok(&["tail", &file, "orders", "--from", "1"]),
        format!("{fig}\n")
    );
    let from_time = ok(&["tail", &file, "orders", "--from=2026-12-06T10:00:01Z"]);
    assert_eq!(from_time, format!("{pear}\n{fig}\n"));
    let from_offset_zone = ok(&[
        "tail",
        &file,
        "orders",
        "--from",
        "2026-12-06T11:00:02+01:00",
    ]);
    assert_eq!(from_offset_zone, format!("{fig}\n"));
    let queue = ok(&["tail", &file, "jobs"]);
    let expected = r#"{"queue":"jobs","id":1,"delivery_count":1,"timestamp":"2026-12-06T10:00:04.000000000Z","timestamp_ns":1796551204000000000,"key":"crop","headers":{"by":"cli-test"},"payload":{"name":"crop"}}
{"queue":"jobs","id":2,"delivery_count":0,"timestamp":"2026-12-06T10:00:05.000000000Z","timestamp_ns":1796551205000000000,"key":"blur","headers":{"by":"cli-test"},"payload":{"name":"blur"}}
"#;
    assert_eq!(queue, expected);
    assert_eq!(
        ok(&["tail", &file, "jobs", "--from", "2"]),
        expected.lines().nth(1).unwrap().to_owned() + "\n"
    );
}

/// Standard base64, decoded.
fn unbase64(text: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        }
    };
    let mut out = Vec::new();
    for chunk in text.as_bytes().chunks(4) {
        let data: Vec<u8> = chunk.iter().copied().filter(|c| *c != b'=').collect();
        let n = data
            .iter()
            .enumerate()
            .fold(0, |n, (i, c)| n | value(*c) << (18 - 6 * i));
        out.extend(n.to_be_bytes()[1..data.len()].iter());
    }
    out
}

#[test]
fn tail_of_a_bincode_store_prints_the_payload_as_base64() {
    use embus::codec::{Bincode, Codec};
    let (_, file) = store("cli-tail-bincode", CodecKind::Bincode);
    let orders = lines(&ok(&["tail", &file, "orders"]));
    assert_eq!(orders.len(), 3);
    for line in &orders {
        assert!(line.get("payload").is_none(), "{line}");
        let bytes = unbase64(line["payload_base64"].as_str().unwrap());
        let order: Order = Bincode::decode(&bytes).unwrap();
        assert_eq!(line["key"], format!("customer-{}", order.id));
        assert_eq!(line["headers"]["trace"], format!("t{}", order.id));
    }
    let queue = lines(&ok(&["tail", &file, "jobs"]));
    assert_eq!(queue.len(), 2);
    assert_eq!(queue[0]["delivery_count"], 1);
}

#[test]
fn dlq_lists_dead_letters_as_a_table_and_as_json() {
    let (_, file) = store("cli-dlq", CodecKind::Json);
    let table = ok(&["dlq", &file, "jobs.dead"]);
    assert_eq!(
        table,
        "id  timestamp                       from  reason  deliveries  key     payload
0   2026-12-06T10:00:03.000000000Z  jobs  nack    1           resize  {\"name\":\"resize\"}
"
    );
    let json = lines(&ok(&["dlq", &file, "jobs.dead", "--json"]));
    assert_eq!(json.len(), 1);
    assert_eq!(json[0]["headers"][embus::DEAD_LETTER_REASON], "nack");
    assert_eq!(json[0]["headers"][embus::DEAD_LETTER_QUEUE], "jobs");
    assert_eq!(json[0]["payload"]["name"], "resize");
}

#[test]
fn redrive_moves_dead_letters_that_a_broker_then_delivers() {
    let (path, file) = store("cli-redrive", CodecKind::Bincode);
    let out = ok(&["dlq", &file, "jobs.dead", "--redrive", "jobs"]);
    assert_eq!(out, "moved 1 message from `jobs.dead` to `jobs`\n");
    let summary: serde_json::Value =
        serde_json::from_str(&ok(&["inspect", &file, "--json"])).unwrap();
    assert_eq!(summary["closed_cleanly"], true);
    assert_eq!(summary["queues"][0]["depth"], 3);
    assert_eq!(summary["queues"][1]["depth"], 0);

    let bus = open(&path, CodecKind::Bincode, &clock());
    let jobs = bus
        .queue_with::<Job>(
            "jobs",
            QueueOptions::default()
                .max_deliveries(1)
                .dead_letter("jobs.dead"),
        )
        .unwrap();
    let dead = bus.queue::<Job>("jobs.dead").unwrap();
    assert_eq!(dead.len(), 0, "the dead letter left its queue");
    let mut worker = jobs.consumer();
    let mut got = Vec::new();
    for _ in 0..3 {
        let d = worker.recv_timeout(WAIT).unwrap();
        got.push((
            d.payload().name.clone(),
            d.key().map(<[u8]>::to_vec),
            d.delivery_count(),
        ));
        if d.payload().name == "resize" {
            assert_eq!(d.headers().get("by"), Some(&b"cli-test"[..]));
            assert_eq!(
                d.headers().get(embus::DEAD_LETTER_REASON),
                Some(&b"nack"[..])
            );
            let ts = d.timestamp().duration_since(UNIX_EPOCH).unwrap();
            assert_eq!(ts, Duration::from_secs(START + 3), "the timestamp is kept");
        }
        d.ack().unwrap();
    }
    got.sort();
    assert_eq!(
        got,
        [
            ("blur".to_owned(), Some(b"blur".to_vec()), 1),
            ("crop".to_owned(), Some(b"crop".to_vec()), 2),
            ("resize".to_owned(), Some(b"resize".to_vec()), 1),
        ]
    );
    bus.close().unwrap();
}

#[test]
fn redrive_keeps_to_the_limit_and_the_target_capacity() {
    let path = fresh_dir("cli-redrive-limit").join("app.embus");
    let file = path.to_str().unwrap().to_owned();
    let bus = open(&path, CodecKind::Json, &clock());
    let q = bus
        .queue_with::<u32>(
            "q",
            QueueOptions::default()
                .capacity(2)
                .max_deliveries(1)
                .dead_letter("q.dead"),
        )
        .unwrap();
    let mut worker = q.consumer();
    for n in 0..4 {
        q.producer().send(n).unwrap();
        worker.recv_timeout(WAIT).unwrap().nack().unwrap();
    }
    q.producer().send(9).unwrap();
    bus.close().unwrap();
    drop(worker);

    let moved = ok(&["dlq", &file, "q.dead", "--redrive", "q", "--limit", "1"]);
    assert_eq!(moved, "moved 1 message from `q.dead` to `q`\n");
    let full = ok(&["dlq", &file, "q.dead", "--redrive", "q"]);
    assert_eq!(
        full, "moved 0 messages from `q.dead` to `q`\n",
        "q is at capacity"
    );
    let q_lines = lines(&ok(&["tail", &file, "q"]));
    let payloads: Vec<_> = q_lines.iter().map(|l| l["payload"].clone()).collect();
    assert_eq!(payloads, [serde_json::json!(9), serde_json::json!(0)]);
    assert_eq!(q_lines[1]["delivery_count"], 0);
    assert_eq!(lines(&ok(&["tail", &file, "q.dead"])).len(), 3);
}

#[test]
fn follow_prints_what_a_broker_stores_after_it_closes_the_file() {
    let (path, file) = store("cli-follow", CodecKind::Json);
    let mut child = Command::new(env!("CARGO_BIN_EXE_embus"))
        .args(["tail", &file, "orders", "--follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    for _ in 0..3 {
        rx.recv_timeout(WAIT).expect("the stored messages");
    }
    // The tool opens the file now and then: a broker may find it held for a moment.
    let deadline = std::time::Instant::now() + WAIT;
    let clock = clock();
    clock.advance(Duration::from_secs(10));
    let bus = loop {
        match Broker::builder()
            .path(&path)
            .codec(CodecKind::Json)
            .clock(clock.clone())
            .open()
        {
            Ok(bus) => break bus,
            Err(embus::Error::Storage { .. }) if std::time::Instant::now() < deadline => {
                std::thread::yield_now();
            }
            Err(e) => panic!("{e}"),
        }
    };
    let orders = bus.topic::<Order>("orders").unwrap();
    let record = Record::new(Order {
        id: 4,
        item: "plum".to_owned(),
    })
    .key("customer-4");
    let receipt = orders.producer().send_record(record).unwrap();
    bus.close().unwrap();
    let line = rx.recv_timeout(WAIT).expect("the new message");
    let line: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(line["payload"]["item"], "plum");
    assert_eq!(line["partition"], receipt.partition);
    assert_eq!(line["offset"], receipt.offset);
    assert!(
        rx.recv_timeout(Duration::from_millis(1200)).is_err(),
        "printed once"
    );
    child.kill().unwrap();
    let _ = child.wait();
}

#[test]
fn a_long_read_shows_no_progress_bar_when_stderr_is_piped() {
    let path = fresh_dir("cli-progress").join("app.embus");
    let file = path.to_str().unwrap().to_owned();
    let bus = Broker::open(&path).unwrap();
    let numbers = bus.topic::<u64>("numbers").unwrap();
    numbers
        .producer()
        .send_batch((0..12_000).collect::<Vec<u64>>())
        .unwrap();
    bus.close().unwrap();
    let out = embus(&["tail", &file, "numbers"]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    assert_eq!(out.stdout.iter().filter(|b| **b == b'\n').count(), 12_000);
}
