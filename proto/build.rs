//! Compiles `proto/wxpay/v1/wxpay.proto` with protox (pure Rust, no system
//! protoc) and emits a file descriptor set for gRPC server reflection.

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/wxpay/v1/wxpay.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["proto"])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    let descriptor_path = out.join("wxpay_descriptor.bin");
    std::fs::write(&descriptor_path, prost::Message::encode_to_vec(&fds))?;
    // Stubs only with the `grpc` feature: the core crate takes the messages alone.
    let grpc = env::var_os("CARGO_FEATURE_GRPC").is_some();
    tonic_prost_build::configure()
        .build_server(grpc)
        .build_client(grpc)
        // Small per-call buffers: see src/codec.rs.
        .codec_path("crate::codec::SmallCodec")
        .compile_fds(fds)?;
    Ok(())
}
