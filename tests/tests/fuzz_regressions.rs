//! The fuzz harnesses (`erpc_tests::fuzzing`) on fixed inputs, in the normal test suite: the
//! seed corpus, pseudo-random inputs, and every input the fuzzer ever found a crash with
//! (`tests/fuzz-regressions/<target>/`, replayed as they are).

use erpc_tests::fuzzing;
use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz-regressions").join(target);
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let p = e.unwrap().path();
        if p.is_file() {
            run(&std::fs::read(&p).unwrap());
            n += 1;
        }
    }
    n
}

#[test]
fn parser_crashes_found_by_the_fuzzer_stay_fixed() {
    assert!(replay("parsers", fuzzing::parsers) > 0);
}

#[test]
fn endpoint_crashes_found_by_the_fuzzer_stay_fixed() {
    assert!(replay("endpoint", fuzzing::endpoint) > 0);
}

#[test]
fn the_seed_corpus_passes_both_harnesses() {
    let (parsers, endpoint) = fuzzing::seed_corpus();
    assert!(parsers.len() >= 10 && endpoint.len() == parsers.len());
    for s in &parsers {
        fuzzing::parsers(s);
    }
    for s in &endpoint {
        fuzzing::endpoint(s);
    }
}

/// Pseudo-random inputs of every length: the harness's oracles hold on the stable toolchain too,
/// without libFuzzer.
#[test]
fn the_endpoint_harness_holds_on_random_inputs() {
    let mut x = 0x243F_6A88_85A3_08D3u64;
    for len in (0..4000).step_by(40) {
        let input: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        fuzzing::parsers(&input);
        fuzzing::endpoint(&input);
    }
}
