//! Channel seal + open per MAC suite against the raw primitive (the limit) and against
//! `snow` transport messages and rustls TLS 1.3 records, on the same bytes.

use std::hint::black_box;
use std::time::Duration;

use boarding::suite::MacSuite;
use boarding_benches::{
    ChannelPair, RAW_KEY, SIZES, SnowPair, TlsConfigs, TlsPair, hmac_prepared, payload, raw_blake3_tag_verify,
    raw_hmac_tag_verify, size_label,
};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn throughput(c: &mut Criterion) {
    let tls = TlsConfigs::new();
    let hmac = hmac_prepared(&RAW_KEY);
    for len in SIZES {
        let data = payload(len);
        let mut group = c.benchmark_group(format!("throughput-{}", size_label(len)));
        group.throughput(Throughput::Bytes(len as u64));

        for (name, suite) in [("hmac", MacSuite::HmacSha256), ("blake3", MacSuite::Blake3)] {
            let mut pair = ChannelPair::new(suite, &data);
            group.bench_function(format!("{name}-channel"), |b| b.iter(|| black_box(pair.seal_in_place_open())));
            let mut pair = ChannelPair::new(suite, &data);
            group.bench_function(format!("{name}-channel-copy"), |b| {
                b.iter(|| black_box(pair.seal_open(black_box(&data))))
            });
        }

        assert!(raw_hmac_tag_verify(&hmac, &data));
        group.bench_function("hmac-raw", |b| b.iter(|| black_box(raw_hmac_tag_verify(&hmac, black_box(&data)))));
        assert!(raw_blake3_tag_verify(&RAW_KEY, &data));
        group.bench_function("blake3-raw", |b| b.iter(|| black_box(raw_blake3_tag_verify(&RAW_KEY, black_box(&data)))));

        let mut snow = SnowPair::new(&data);
        group.bench_function("snow-chachapoly", |b| b.iter(|| black_box(snow.send(black_box(&data)))));
        let mut rustls = TlsPair::new(&tls, &data);
        group.bench_function("rustls-aes128gcm", |b| b.iter(|| black_box(rustls.send(black_box(&data)))));
        group.finish();
    }
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_millis(2500))
        .sample_size(40)
        .noise_threshold(0.05)
}

criterion_group! { name = benches; config = config(); targets = throughput }
criterion_main!(benches);
