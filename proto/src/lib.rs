//! The `wxpay.v1` gRPC contract, generated once from `proto/wxpay/v1/wxpay.proto`.
//! Every other crate depends on this one instead of compiling the proto itself.

#![allow(clippy::all, missing_docs)]

pub mod v1 {
    tonic::include_proto!("wxpay.v1");
}

/// Encoded `FileDescriptorSet` for `tonic-reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("wxpay_descriptor");
