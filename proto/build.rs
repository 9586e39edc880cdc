//! Compiles `ferry/v1/*.proto` (the public API) and `ferry/internal/v1/*.proto`
//! (between hosts) with protox (pure Rust, no system `protoc`) and generates prost
//! messages and tonic clients and servers.

use std::path::PathBuf;

use prost::Message;

const PROTO_FILES: &[&str] = &[
    "ferry/v1/common.proto",
    "ferry/v1/admin.proto",
    "ferry/v1/topic.proto",
    "ferry/v1/group.proto",
    "ferry/v1/metadata.proto",
    "ferry/v1/queue.proto",
    "ferry/v1/access.proto",
];

const INTERNAL_PROTO_FILES: &[&str] = &["ferry/internal/v1/replica.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for file in PROTO_FILES.iter().chain(INTERNAL_PROTO_FILES) {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(PROTO_FILES, ["."])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    // Server reflection serves this set so grpcurl and friends work without .proto
    // files: the public API only.
    std::fs::write(
        out_dir.join("ferry_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    tonic_prost_build::configure()
        .bytes(".ferry.v1")
        .compile_fds(descriptors)?;
    let internal = protox::compile(INTERNAL_PROTO_FILES, ["."])?;
    tonic_prost_build::configure()
        .bytes(".ferry.internal.v1")
        .compile_fds(internal)?;
    Ok(())
}
