//! Record decoding: arbitrary bytes as a stored record value (see `embus::__fuzz::record`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| embus::__fuzz::record(data));
