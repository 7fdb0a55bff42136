//! The `wxpay.v1` gRPC contract, generated once from `proto/wxpay/v1/wxpay.proto`.
//! Every other crate depends on this one instead of compiling the proto itself.
//! The `grpc` feature (default) adds the tonic client and server stubs.

#![allow(clippy::all, missing_docs)]

#[cfg(feature = "grpc")]
pub mod codec;

pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/wxpay.v1.rs"));
}

/// Encoded `FileDescriptorSet` for `tonic-reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/wxpay_descriptor.bin"));
