//! `erpc-fuzz-corpus DIR`: writes the seed corpus of the fuzz targets into `DIR/parsers/` and
//! `DIR/endpoint/`, from the frames real endpoints send (`erpc_tests::fuzzing::seed_corpus`).
//! `fuzz/run` calls it before fuzzing.

use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "fuzz/corpus".into()));
    let (parsers, endpoint) = erpc_tests::fuzzing::seed_corpus();
    for (target, seeds) in [("parsers", parsers), ("endpoint", endpoint)] {
        let d = dir.join(target);
        std::fs::create_dir_all(&d)?;
        for (i, s) in seeds.iter().enumerate() {
            std::fs::write(d.join(format!("seed-{i:03}")), s)?;
        }
        println!("{}: {} seeds", d.display(), seeds.len());
    }
    Ok(())
}
