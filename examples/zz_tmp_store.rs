use embus::{Broker, QueueOptions, Record, TopicOptions};
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::path::Path::new("/tmp/demo.embus");
    let _ = std::fs::remove_file(path);
    let bus = Broker::open(path)?;
    let orders = bus.topic_with::<String>("orders", TopicOptions::default().partitions(2))?;
    for i in 0..20 {
        orders.producer().send_record(
            Record::new(format!("order {i}"))
                .key(format!("c{}", i % 3))
                .header("trace", b"x"),
        )?;
    }
    let mut billing = orders.join_group("billing")?;
    for _ in 0..7 {
        billing.recv()?.ack()?;
    }
    let jobs = bus.queue_with::<u32>(
        "jobs",
        QueueOptions::default()
            .max_deliveries(1)
            .dead_letter("jobs.dead"),
    )?;
    jobs.producer().send_batch((0..5).collect())?;
    let mut w = jobs.consumer();
    w.recv()?.nack()?;
    w.recv()?.ack()?;
    drop((w, billing, orders, jobs));
    bus.close()?;
    Ok(())
}
