//! The text forms of `inspect` and `dlq`: aligned columns.

use embus::inspect::{Entry, Summary};

/// Rows aligned in columns two spaces apart, each line indented by `indent`.
fn columns(indent: &str, rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = Vec::new();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            let n = cell.chars().count();
            match widths.get_mut(i) {
                Some(w) => *w = (*w).max(n),
                None => widths.push(n),
            }
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = indent.to_owned();
        for (i, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if i + 1 < row.len() {
                let pad = widths[i] - cell.chars().count() + 2;
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn strings<const N: usize>(cells: [&str; N]) -> Vec<String> {
    cells.iter().map(|c| (*c).to_owned()).collect()
}

fn or_dash<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

fn options(value: &serde_json::Value) -> String {
    if value.is_null() {
        "unknown (format 1 declaration)".to_owned()
    } else {
        value.to_string()
    }
}

/// `embus inspect`'s table.
pub(crate) fn summary(s: &Summary) -> String {
    let mut out = format!(
        "store: {}\ncodec: {}\nclosed cleanly: {}\n",
        s.path.display(),
        s.codec,
        if s.closed_cleanly { "yes" } else { "no" }
    );
    if s.topics.is_empty() && s.queues.is_empty() {
        out.push_str("\nno topics or queues\n");
    }
    for topic in &s.topics {
        out.push_str(&format!("\ntopic {} ({})\n", topic.name, topic.payload));
        out.push_str(&format!("  options: {}\n", options(&topic.options)));
        let mut rows = vec![strings(["partition", "first", "next", "messages", "bytes"])];
        for p in &topic.partitions {
            rows.push(vec![
                p.partition.to_string(),
                or_dash(p.first_offset),
                p.next_offset.to_string(),
                p.messages.to_string(),
                p.bytes.to_string(),
            ]);
        }
        out.push_str(&columns("  ", &rows));
        for group in &topic.groups {
            out.push_str(&format!("  group {} (lag {})\n", group.name, group.lag));
            if !group.options.is_null() {
                out.push_str(&format!("    options: {}\n", group.options));
            }
            let mut rows = vec![strings(["partition", "position", "lag"])];
            for p in &group.partitions {
                rows.push(vec![
                    p.partition.to_string(),
                    p.position.to_string(),
                    p.lag.to_string(),
                ]);
            }
            out.push_str(&columns("    ", &rows));
        }
    }
    if !s.queues.is_empty() {
        out.push_str("\nqueues\n");
        let mut rows = vec![strings([
            "name",
            "payload",
            "depth",
            "delivered",
            "next id",
            "dead-letter queue",
            "dead letters",
        ])];
        for q in &s.queues {
            rows.push(vec![
                q.name.clone(),
                q.payload.clone(),
                q.depth.to_string(),
                q.delivered.to_string(),
                q.next_id.to_string(),
                or_dash(q.dead_letter_queue.as_deref()),
                or_dash(q.dead_letters),
            ]);
        }
        out.push_str(&columns("  ", &rows));
        for q in &s.queues {
            out.push_str(&format!("  options {}: {}\n", q.name, options(&q.options)));
        }
    }
    out
}

/// A JSON value as a cell: a string as it is, anything else as JSON text.
fn cell(value: Option<&serde_json::Value>) -> String {
    match value {
        None | Some(serde_json::Value::Null) => "-".to_owned(),
        Some(serde_json::Value::String(text)) => text.clone(),
        Some(other) => other.to_string(),
    }
}

/// One row of `embus dlq`'s table, from the entry's JSON form (so bytes show as there: text,
/// or `{"base64":"..."}`).
pub(crate) fn dead_letter_row(entry: &Entry) -> Vec<String> {
    let json = serde_json::to_value(entry).unwrap_or_default();
    let header = |name: &str| cell(json["headers"].get(name));
    let payload = match json.get("payload") {
        Some(value) => value.to_string(),
        None => cell(
            json.get("payload_base64")
                .map(|b| serde_json::json!({ "base64": b }))
                .as_ref(),
        ),
    };
    vec![
        entry.position().to_string(),
        entry.timestamp(),
        header(embus::DEAD_LETTER_QUEUE),
        header(embus::DEAD_LETTER_REASON),
        header(embus::DEAD_LETTER_DELIVERIES),
        cell(json.get("key")),
        payload,
    ]
}

/// `embus dlq`'s table of `rows` ([`dead_letter_row`]).
pub(crate) fn dead_letters(rows: Vec<Vec<String>>) -> String {
    if rows.is_empty() {
        return "no messages\n".to_owned();
    }
    let mut all = vec![strings([
        "id",
        "timestamp",
        "from",
        "reason",
        "deliveries",
        "key",
        "payload",
    ])];
    all.extend(rows);
    columns("", &all)
}
