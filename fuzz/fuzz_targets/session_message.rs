#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tribes_fuzz::targets::session_message(data));
