//! The wire and session-management parsers on arbitrary bytes (`erpc_tests::fuzzing::parsers`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| erpc_tests::fuzzing::parsers(data));
