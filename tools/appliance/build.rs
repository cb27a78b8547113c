//! Links the image: no C runtime, no libraries, a static executable laid out by `link.ld`.

use std::env;

fn main() {
    let target = env::var("TARGET").unwrap_or_default();
    let flags = env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    if target != "x86_64-unknown-linux-gnu" || !flags.split('\x1f').any(|f| f == "relocation-model=static") {
        panic!(
            "erpc-appliance builds only from its own directory, whose .cargo/config.toml sets the target \
             (x86_64-unknown-linux-gnu) and the flags: run `cd tools/appliance && cargo build --release` \
             (or tests/appliance/run), not `cargo build --manifest-path ...` from elsewhere"
        );
    }
    let dir = env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    // The C runtime's start files and libraries do not exist on bare metal: the image brings its
    // own entry point (src/boot.s) and mem* functions (src/mem.rs).
    for arg in ["-nostartfiles", "-nostdlib", "-static", "-Wl,--build-id=none", "-Wl,--orphan-handling=error"] {
        println!("cargo:rustc-link-arg-bins={arg}");
    }
    println!("cargo:rustc-link-arg-bins=-Wl,-T,{dir}/link.ld");
    println!("cargo:rerun-if-changed=link.ld");
    println!("cargo:rerun-if-changed=build.rs");
}
