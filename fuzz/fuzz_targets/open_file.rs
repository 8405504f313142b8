//! File opening: arbitrary bytes, or patches to a small valid store, opened as a store file
//! and read through (see `embus_fuzz::open_file`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| embus_fuzz::open_file::run(data));
