//! Compiles snapfs's own protocol definitions (`proto/qdrant/*.proto`: the part of
//! Qdrant's gRPC API that snapfs serves) into Rust, with protox — a protobuf compiler
//! written in Rust — so a build needs no system `protoc`. The compiled descriptors are
//! also kept (`qdrant_descriptors.bin` in `OUT_DIR`): the server reads them to name
//! fields a request carries that snapfs does not know (`src/grpc/codec.rs`).

use std::path::PathBuf;

const PROTO_DIR: &str = "proto/qdrant";
const PROTOS: [&str; 6] = [
    "json_value.proto",
    "common.proto",
    "health.proto",
    "snapshots.proto",
    "collections.proto",
    "points.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed={PROTO_DIR}");
    let mut compiler = protox::Compiler::new([PROTO_DIR])?;
    compiler
        .include_source_info(true)
        .include_imports(true)
        .open_files(PROTOS)?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("qdrant_descriptors.bin"),
        compiler.encode_file_descriptor_set(),
    )?;
    let mut config = tonic_prost_build::Config::new();
    // Each message knows its full name (`qdrant.UpsertPoints`), which the codec uses
    // to find its descriptor.
    config.enable_type_names();
    tonic_prost_build::configure()
        .build_server(true)
        // The client serves the tests (tests/integration/grpc.rs) and Rust callers of the library.
        .build_client(true)
        .codec_path("crate::grpc::codec::StrictCodec")
        .compile_fds_with_config(compiler.file_descriptor_set(), config)?;
    Ok(())
}
