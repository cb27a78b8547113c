//! A client and a server endpoint with RPCs in flight, every frame between them, injected
//! frames and the clock in the fuzzer's hands (`erpc_tests::fuzzing::endpoint`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| erpc_tests::fuzzing::endpoint(data));
