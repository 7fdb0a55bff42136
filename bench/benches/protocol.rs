//! Criterion micro-benchmarks: parsing and verifying a typical paid notification
//! (the gateway's CPU work before it touches the database) against MD5 of the
//! same bytes, the floor that work is built on. `cargo bench -p wxpay-bench`.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use md5::{Digest, Md5};
use wxpay_core::wechat::{sign, xml, SignType};

fn notification(c: &mut Criterion) {
    let merchant = wechat_sandbox::SandboxConfig::for_tests().merchant;
    let body = wxpay_bench::notification::paid_xml(&merchant, "B01J0000000000000000000042", 1)
        .expect("the notification encodes");
    let bytes = body.as_bytes();
    let mut group = c.benchmark_group("notification");
    group.throughput(Throughput::Bytes(bytes.len() as u64));
    group.bench_function("xml_decode_and_verify_md5", |b| {
        b.iter(|| {
            let fields = xml::decode(black_box(bytes)).expect("valid XML");
            black_box(sign::verify(&fields, &merchant.api_key, SignType::Md5).is_ok())
        })
    });
    group.bench_function("xml_decode", |b| b.iter(|| xml::decode(black_box(bytes))));
    group.bench_function("md5_of_same_bytes", |b| {
        b.iter(|| Md5::digest(black_box(bytes)))
    });
    group.finish();
}

criterion_group!(benches, notification);
criterion_main!(benches);
