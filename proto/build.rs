//! Compiles `proto/belay/v1/*.proto` with protox (pure Rust, so no `protoc` on the build
//! machines) and generates prost messages plus tonic clients and servers from the result.

use std::path::Path;

const PROTO_ROOT: &str = "proto";
const PROTO_FILES: &[&str] = &[
    "proto/belay/v1/common.proto",
    "proto/belay/v1/agent.proto",
    "proto/belay/v1/reviewer.proto",
    "proto/belay/v1/enroll.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // compile_fds does not emit rerun-if-changed lines the way compile_protos does.
    println!("cargo:rerun-if-changed={PROTO_ROOT}");
    for file in PROTO_FILES {
        assert!(Path::new(file).exists(), "missing {file}");
        println!("cargo:rerun-if-changed={file}");
    }

    let descriptors = protox::compile(PROTO_FILES, [PROTO_ROOT])?;
    tonic_prost_build::configure()
        // A fleet policy (up to 1 MiB) goes to every agent: shared, not copied per stream.
        .bytes(".belay.v1.PolicyUpdate.text")
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
