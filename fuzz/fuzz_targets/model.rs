//! The model operations: a sequence of queue operations, reopens included, against a durable
//! broker on an in-memory backend (see `embus_fuzz::model`).
#![no_main]

libfuzzer_sys::fuzz_target!(|ops: Vec<embus_fuzz::model::Op>| embus_fuzz::model::run(&ops));
