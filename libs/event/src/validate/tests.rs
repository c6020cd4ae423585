use super::*;
use serde_json::json;

fn run(route: Route, body: &str) -> Result<Vec<Incoming>, ValidationError> {
    validate(body.as_bytes(), route, &Limits::default())
}

fn field_of(route: Route, body: &str) -> Option<String> {
    run(route, body).expect_err(body).field
}

#[test]
fn accepts_an_openpanel_track() {
    let events = run(
        Route::Envelope,
        r#"{"type":"track","payload":{"name":"screen_view","profileId":"u1",
            "properties":{"__path":"/a","__timestamp":"2026-01-05T10:00:00.000Z","plan":"pro"}}}"#,
    )
    .unwrap();
    let e = &events[0];
    assert_eq!(e.kind, EventKind::Track);
    assert_eq!(e.name, "screen_view");
    assert_eq!(e.profile_id.as_deref(), Some("u1"));
    assert_eq!(e.client_time_ms, Some(1_767_607_200_000));
    assert_eq!(e.path, "/a");
    assert_eq!(e.properties.text(), r#"{"plan":"pro"}"#);
}

#[test]
fn properties_are_stored_compact_in_key_order_without_the_keys_the_edge_reads() {
    let e = &run(
        Route::Envelope,
        r#"{"type":"track","payload":{"name":"a","properties":{
            "z": [1, 2.50, {"b" : null, "a": "x y"}], "__referrer": "https://r.example/",
            "é\"k": "v\n", "a": 1, "__id": "i", "__deviceId": "d", "a": 2,
            "__sentAt": 1767607200000, "__path": 7, "m\u0041": true}}}"#,
    )
    .unwrap()[0];
    assert_eq!(e.referrer, "https://r.example/");
    // A page that is not a string is no page, and still not a property.
    assert_eq!(e.path, "");
    assert_eq!(e.client_sent_at_ms, Some(1_767_607_200_000));
    assert_eq!(
        e.properties.text(),
        r#"{"a":2,"mA":true,"z":[1,2.50,{"b":null,"a":"x y"}],"é\"k":"v\n"}"#
    );
    // What a parser reads from it is what the client sent, less the read keys.
    assert_eq!(
        e.properties.to_map(),
        *json!({"a": 2, "mA": true, "z": [1, 2.5, {"a": "x y", "b": null}], "é\"k": "v\n"})
            .as_object()
            .unwrap()
    );
    let none = &run(
        Route::Envelope,
        r#"{"type":"track","payload":{"name":"a","properties":null}}"#,
    )
    .unwrap()[0];
    assert_eq!(none.properties.text(), "{}");
}

#[test]
fn client_ids_come_from_payload_or_properties() {
    let e = &run(
        Route::Envelope,
        r#"{"type":"track","payload":{"name":"a","properties":{"__id":"ev-1","__deviceId":"d-9"}}}"#,
    )
    .unwrap()[0];
    assert_eq!(e.event_id.as_deref(), Some("ev-1"));
    assert_eq!(e.device_id.as_deref(), Some("d-9"));
    let e = &run(
        Route::Envelope,
        r#"{"type":"track","payload":{"name":"a","id":"ev-2","deviceId":"d-1","profileId":42}}"#,
    )
    .unwrap()[0];
    assert_eq!(e.event_id.as_deref(), Some("ev-2"));
    assert_eq!(e.device_id.as_deref(), Some("d-1"));
    assert_eq!(e.profile_id.as_deref(), Some("42"));
}

#[test]
fn every_required_field_is_named_when_missing() {
    let cases = [
        (Route::Envelope, r#"{"payload":{"name":"a"}}"#, "type"),
        (Route::Envelope, r#"{"type":"track"}"#, "payload"),
        (
            Route::Envelope,
            r#"{"type":"track","payload":{}}"#,
            "payload.name",
        ),
        (
            Route::Envelope,
            r#"{"type":"track","payload":{"name":""}}"#,
            "payload.name",
        ),
        (
            Route::Envelope,
            r#"{"type":"identify","payload":{"email":"a@b"}}"#,
            "payload.profileId",
        ),
        (
            Route::Envelope,
            r#"{"type":"increment","payload":{"property":"x"}}"#,
            "payload.profileId",
        ),
        (
            Route::Envelope,
            r#"{"type":"decrement","payload":{"profileId":"u"}}"#,
            "payload.property",
        ),
        (
            Route::Envelope,
            r#"{"type":"alias","payload":{"profileId":"u"}}"#,
            "payload.alias",
        ),
        (
            Route::Direct(EventKind::Identify),
            r#"{"email":"a@b"}"#,
            "profileId",
        ),
        (
            Route::Direct(EventKind::Increment),
            r#"{"profileId":"u"}"#,
            "property",
        ),
        (
            Route::Batch,
            r#"[{"type":"track","payload":{"name":"a"}},{"type":"track","payload":{}}]"#,
            "[1].payload.name",
        ),
    ];
    for (route, body, field) in cases {
        assert_eq!(field_of(route, body).as_deref(), Some(field), "{body}");
    }
}

#[test]
fn wrong_types_are_named() {
    let cases = [
        (r#"{"type":7,"payload":{"name":"a"}}"#, "type"),
        (r#"{"type":"track","payload":[1]}"#, "payload"),
        (r#"{"type":"track","payload":{"name":5}}"#, "payload.name"),
        (
            r#"{"type":"track","payload":{"name":"a","properties":"x"}}"#,
            "payload.properties",
        ),
        (
            r#"{"type":"track","payload":{"name":"a","profileId":{"a":1}}}"#,
            "payload.profileId",
        ),
        (
            r#"{"type":"track","payload":{"name":"a","timestamp":"soon"}}"#,
            "payload.timestamp",
        ),
        (
            r#"{"type":"track","payload":{"name":"a","properties":{"__timestamp":false}}}"#,
            "payload.properties.__timestamp",
        ),
        (
            r#"{"type":"increment","payload":{"profileId":"u","property":"p","value":"3"}}"#,
            "payload.value",
        ),
        (
            r#"{"type":"identify","payload":{"profileId":"u","email":3}}"#,
            "payload.email",
        ),
        (r#"{"type":"launch","payload":{}}"#, "type"),
        (r#"{"type":"group","payload":{"id":"g"}}"#, "type"),
    ];
    for (body, field) in cases {
        assert_eq!(
            field_of(Route::Envelope, body).as_deref(),
            Some(field),
            "{body}"
        );
    }
}

#[test]
fn misshapen_batch_items_are_named() {
    let cases = [
        (r#"{"type":"track"}"#, None),
        (
            r#"[{"type":"track","payload":{"name":"a"}},7]"#,
            Some("[1]"),
        ),
        (r#"[{"type":"track","payload":"x"}]"#, Some("[0].payload")),
        (
            r#"[{"type":"track","payload":{"name":"a"}},{"type":"track","payload":{"name":"a","properties":[1]}}]"#,
            Some("[1].payload.properties"),
        ),
    ];
    for (body, field) in cases {
        let error = run(Route::Batch, body).expect_err(body);
        assert_eq!(error.field.as_deref(), field, "{body}");
    }
    assert!(
        run(Route::Batch, r#"{"type":"track"}"#)
            .unwrap_err()
            .message
            .contains("JSON array")
    );
}

#[test]
fn oversize_names_and_ids_are_refused() {
    let long = "x".repeat(MAX_NAME_LEN + 1);
    let body = format!(r#"{{"type":"track","payload":{{"name":"{long}"}}}}"#);
    assert_eq!(
        field_of(Route::Envelope, &body).as_deref(),
        Some("payload.name")
    );
    let body = format!(r#"{{"type":"track","payload":{{"name":"a","profileId":"{long}"}}}}"#);
    assert_eq!(
        field_of(Route::Envelope, &body).as_deref(),
        Some("payload.profileId")
    );
}

#[test]
fn batch_limits_apply() {
    let one = r#"{"type":"track","payload":{"name":"a"}}"#;
    let body = format!("[{}]", [one; 3].join(","));
    let limits = Limits {
        max_batch_events: 2,
        max_depth: 32,
        ..Limits::default()
    };
    let err = validate(body.as_bytes(), Route::Batch, &limits).unwrap_err();
    assert!(err.message.contains("more than the limit of 2"), "{err}");
    assert!(run(Route::Batch, "[]").is_err());
    assert!(run(Route::Batch, one).is_err());
}

#[test]
fn non_utf8_empty_and_malformed_bodies_are_refused() {
    let bytes = b"{\"type\":\"track\",\"payload\":{\"name\":\"\xff\xfe\"}}".to_vec();
    let err = validate(&bytes, Route::Envelope, &Limits::default()).unwrap_err();
    assert!(err.message.contains("UTF-8"), "{err}");
    for body in [
        "",
        "   \n",
        "{",
        "{\"type\":\"track\",}",
        "nul",
        "{\"a\":NaN}",
        "[Infinity]",
    ] {
        assert!(run(Route::Envelope, body).is_err(), "{body:?}");
    }
    assert!(
        run(Route::Envelope, "")
            .unwrap_err()
            .message
            .contains("empty")
    );
}

#[test]
fn deep_nesting_is_refused_before_parsing() {
    let deep = format!(
        r#"{{"type":"track","payload":{{"name":"a","properties":{{"x":{}{}}}}}}}"#,
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let err = run(Route::Envelope, &deep).unwrap_err();
    assert!(err.message.contains("nested deeper"), "{err}");
    assert_eq!(max_json_depth(br#"{"a":"[[[[{{{{","b":[1,{"c":2}]}"#), 3);
    assert_eq!(max_json_depth(br#"["\"[["]"#), 1);
}

#[test]
fn the_depth_limit_holds_whether_or_not_brackets_hide_in_strings() {
    let limits = Limits {
        max_depth: 3,
        ..Limits::default()
    };
    let body = |inner: &str| {
        format!(r#"{{"type":"track","payload":{{"name":"a","properties":{inner}}}}}"#)
    };
    // The envelope, the payload and the properties: at the limit.
    let shallow = body(r#"{"x":1}"#);
    assert!(validate(shallow.as_bytes(), Route::Envelope, &limits).is_ok());
    // Brackets in strings outnumber the limit, the nesting does not.
    let noisy = body(r#"{"x":"[[[[{{{{"}"#);
    assert!(validate(noisy.as_bytes(), Route::Envelope, &limits).is_ok());
    // One level too deep, with and without brackets in strings beside it.
    for inner in [r#"{"x":[1]}"#, r#"{"x":[1],"y":"[[[[{{{{"}"#] {
        let deep = body(inner);
        let err = validate(deep.as_bytes(), Route::Envelope, &limits).unwrap_err();
        assert!(
            err.message.contains("nested deeper than 3"),
            "{inner}: {err}"
        );
    }
}

#[test]
fn huge_numbers_never_panic() {
    for body in [
        r#"{"type":"increment","payload":{"profileId":"u","property":"p","value":1e400}}"#,
        r#"{"type":"increment","payload":{"profileId":"u","property":"p","value":123456789012345678901234567890}}"#,
        r#"{"type":"track","payload":{"name":"a","properties":{"n":1e999}}}"#,
    ] {
        if let Ok(events) = run(Route::Envelope, body) {
            assert!(events[0].value.is_none_or(f64::is_finite), "{body}");
        }
    }
}

#[test]
fn identify_keeps_extra_top_level_keys_as_traits() {
    let e = &run(
        Route::Direct(EventKind::Identify),
        r#"{"profileId":"u1","email":"a@b.c","name":"Ann","firstName":"Ann","properties":{"plan":"pro"}}"#,
    )
    .unwrap()[0];
    assert_eq!(e.kind, EventKind::Identify);
    assert_eq!(e.traits.get("email"), Some(&json!("a@b.c")));
    assert_eq!(e.traits.get("name"), Some(&json!("Ann")));
    assert_eq!(e.traits.get("firstName"), Some(&json!("Ann")));
    assert_eq!(e.properties.text(), r#"{"plan":"pro"}"#);
}

#[test]
fn increment_defaults_to_one() {
    let e = &run(
        Route::Envelope,
        r#"{"type":"decrement","payload":{"profileId":"u","property":"credits"}}"#,
    )
    .unwrap()[0];
    assert_eq!(e.kind, EventKind::Decrement);
    assert_eq!(e.property.as_deref(), Some("credits"));
    assert_eq!(e.value, Some(1.0));
}

#[test]
fn batch_items_are_measured_one_by_one() {
    let item = |n: usize| {
        format!(
            r#"{{"type":"track","payload":{{"name":"{}"}}}}"#,
            "x".repeat(n)
        )
    };
    let oversized = |body: &str, limit| shape(body.as_bytes(), limit).oversized;
    let body = format!("[{}, {} ,{}]", item(10), item(100), item(10));
    assert_eq!(oversized(&body, 200), None);
    assert_eq!(oversized(&body, 100), Some(1));
    // Brackets, braces, commas and escaped quotes inside strings are text.
    let tricky = format!(r#"[{{"a":"],[{{\"}},"}}, {}]"#, item(100));
    assert_eq!(oversized(&tricky, 100), Some(1));
    assert_eq!(oversized(&tricky, 200), None);
    let last = format!("[{}]", item(1_000));
    assert_eq!(oversized(&last, 1_000), Some(0));
    assert_eq!(oversized("[]", 10), None);
}

#[test]
fn an_oversized_batch_event_is_named_after_the_batch_validates() {
    let limits = Limits {
        max_item_bytes: 60,
        ..Limits::default()
    };
    let small = r#"{"type":"track","payload":{"name":"a"}}"#;
    let large = format!(
        r#"{{"type":"track","payload":{{"name":"{}"}}}}"#,
        "x".repeat(60)
    );
    let body = format!("[{small},{large}]").into_bytes();
    let err = validate(&body, Route::Batch, &limits).unwrap_err();
    assert_eq!(err.field.as_deref(), Some("[1]"));
    assert_eq!(
        err.message,
        "event 1 is larger than 60 bytes, the limit of one event"
    );
    // An invalid event is named first, as the batch's own error.
    let body = format!(r#"[{large},{{"type":"track","payload":{{}}}}]"#).into_bytes();
    let err = validate(&body, Route::Batch, &limits).unwrap_err();
    assert_eq!(err.field.as_deref(), Some("[1].payload.name"));
}

#[test]
fn values_a_profile_operation_parses_later_are_checked_now() {
    for (body, field) in [
        (
            r#"{"profileId":"u","properties":{"p":"\ud800"}}"#,
            "properties",
        ),
        (r#"{"profileId":"u","plan":1e400}"#, "plan"),
    ] {
        let error = run(Route::Direct(EventKind::Identify), body).expect_err(body);
        assert!(error.message.starts_with("malformed JSON"), "{error}");
        assert_eq!(error.field.as_deref(), Some(field), "{body}");
    }
    // A tracked event's properties are stored as text, as sent.
    let e = &run(
        Route::Envelope,
        r#"{"type":"track","payload":{"name":"a","properties":{"n":1e400}}}"#,
    )
    .unwrap()[0];
    assert_eq!(e.properties.text(), r#"{"n":1e400}"#);
}
