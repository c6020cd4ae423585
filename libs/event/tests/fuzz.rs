//! Property tests of the request parser and validator: arbitrary bytes and
//! arbitrary JSON documents never panic, and whatever is accepted respects
//! the limits. `PROPTEST_CASES=100000 cargo test -p analytics-event --test fuzz`
//! runs them longer.

use analytics_event::{Limits, Route, max_json_depth, validate};
use proptest::prelude::*;
use serde_json::{Value, json};

fn routes() -> impl Strategy<Value = Route> {
    prop_oneof![
        Just(Route::Envelope),
        Just(Route::Batch),
        Just(Route::Direct(analytics_event::EventKind::Identify)),
        Just(Route::Direct(analytics_event::EventKind::Increment)),
        Just(Route::Direct(analytics_event::EventKind::Decrement)),
    ]
}

/// JSON values of any shape, with the keys the validator looks at over-represented.
fn json_value() -> impl Strategy<Value = Value> {
    let keys = prop_oneof![
        Just("type".to_owned()),
        Just("payload".to_owned()),
        Just("name".to_owned()),
        Just("profileId".to_owned()),
        Just("deviceId".to_owned()),
        Just("properties".to_owned()),
        Just("timestamp".to_owned()),
        Just("value".to_owned()),
        Just("property".to_owned()),
        Just("alias".to_owned()),
        Just("__timestamp".to_owned()),
        Just("__id".to_owned()),
        ".{0,12}".prop_map(|s| s),
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        ".{0,40}".prop_map(Value::String),
        prop_oneof![
            Just("track"),
            Just("identify"),
            Just("increment"),
            Just("alias"),
            Just("group")
        ]
        .prop_map(|s| Value::String(s.to_owned())),
    ];
    leaf.prop_recursive(6, 64, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((keys.clone(), inner), 0..6)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
        ]
    })
}

/// Depth by walking every byte: the plain definition the fast scan must match.
fn depth_byte_by_byte(bytes: &[u8]) -> usize {
    let (mut depth, mut max, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn depth_scan_matches_the_byte_walk(bytes in prop::collection::vec(prop::sample::select(b"[]{}\"\\ab".to_vec()), 0..200)) {
        prop_assert_eq!(max_json_depth(&bytes), depth_byte_by_byte(&bytes));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512), route in routes()) {
        let buf = bytes.clone();
        let _ = validate(&buf, route, &Limits::default());
        let _ = max_json_depth(&bytes);
    }

    #[test]
    fn arbitrary_json_is_accepted_only_within_limits(value in json_value(), route in routes()) {
        let buf = value.to_string().into_bytes();
        match validate(&buf, route, &Limits::default()) {
            Ok(events) => {
                prop_assert!(!events.is_empty() && events.len() <= Limits::default().max_batch_events);
                for e in events {
                    prop_assert!(!e.name.is_empty() && e.name.len() <= 200);
                    prop_assert!(e.value.is_none_or(f64::is_finite));
                    prop_assert!(e.profile_id.as_ref().is_none_or(|p| !p.is_empty() && p.len() <= 200));
                }
            }
            Err(error) => prop_assert!(!error.message.is_empty()),
        }
    }

    #[test]
    fn valid_events_survive_arbitrary_properties(props in json_value(), name in "[a-z_]{1,30}") {
        // Reserved `__` keys have rules of their own (times, ids); leave them out.
        let mut props = if props.is_object() { props } else { json!({"x": props}) };
        if let Some(map) = props.as_object_mut() {
            map.retain(|k, _| !k.starts_with("__"));
        }
        let body = json!({"type": "track", "payload": {"name": name, "properties": props}});
        let buf = body.to_string().into_bytes();
        let depth = max_json_depth(&buf);
        let result = validate(&buf, Route::Envelope, &Limits::default());
        prop_assert_eq!(result.is_ok(), depth <= Limits::default().max_depth, "{}", body);
        if let Ok(events) = result {
            // The stored text reads back as the properties sent, whatever
            // blanks the body held between tokens.
            let pretty = serde_json::to_string_pretty(&body).unwrap();
            let again = validate(pretty.as_bytes(), Route::Envelope, &Limits::default()).unwrap();
            prop_assert_eq!(&events[0].properties, &again[0].properties);
            // Read by the same parser as the text sent (it rounds some floats).
            let sent: Value = serde_json::from_str(&props.to_string()).unwrap();
            prop_assert_eq!(Value::Object(events[0].properties.to_map()), sent);
        }
    }
}
