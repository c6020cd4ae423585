use super::*;
use analytics_event::Properties;
use analytics_store::EventRow;
use serde_json::json;

/// An event as the enricher reads it: the SDK's page keys in their fields.
fn raw(kind: EventKind, properties: Value) -> RawEvent<'static> {
    let mut raw = written_before_hoisting(kind, properties);
    raw.hoist_page();
    raw
}

/// An event as an edge wrote it before it read the page keys itself.
fn written_before_hoisting(kind: EventKind, properties: Value) -> RawEvent<'static> {
    RawEvent {
        client_sent_at_ms: None,
        id_from_client: false,
        previous_device_id: "".into(),
        id: "ev1".into(),
        project_id: "p1".into(),
        kind,
        name: if kind == EventKind::Track {
            "screen_view".into()
        } else {
            kind.as_str().into()
        },
        device_id: "d1".into(),
        profile_id: "u1".into(),
        session_id: "".into(),
        client_time_ms: None,
        received_at_ms: 1_767_607_200_500,
        ip: "1.2.3.4".into(),
        user_agent: "ua".into(),
        origin: "".into(),
        sdk_name: "node".into(),
        sdk_version: "1.3.1".into(),
        path: "".into(),
        referrer: "".into(),
        properties: Properties::from_map(properties.as_object().unwrap()),
        traits: Map::new(),
        property: None,
        value: None,
        alias: None,
    }
}

fn row(raw: &RawEvent) -> EventRow {
    let identity = Identity {
        device_id: raw.device_id.to_string(),
        profile_id: raw.profile_id.to_string(),
        session_id: "s1".into(),
    };
    Enrichment::default()
        .event_row(raw, &UserAgent::default(), &identity)
        .decode()
}

#[test]
fn track_becomes_an_event_row_with_page_and_campaign() {
    let row = row(&raw(
        EventKind::Track,
        json!({"__path": "https://shop.example/p/1?utm_source=news&utm_campaign=spring#x",
               "__referrer": "https://www.google.com/search?q=a", "plan": "pro"}),
    ));
    assert_eq!(row.session_id, "s1");
    assert_eq!(row.origin, "https://shop.example");
    assert_eq!(row.path, "/p/1");
    assert_eq!(row.utm_source, "news");
    assert_eq!(row.utm_campaign, "spring");
    assert_eq!(row.referrer_name, "Google");
    assert_eq!(row.referrer_type, "search");
    assert_eq!(row.created_at, 1_767_607_200);
    let props: Value = serde_json::from_str(&row.properties).unwrap();
    assert_eq!(props, json!({"plan": "pro"}));
}

#[test]
fn future_client_times_are_clamped_and_past_ones_kept() {
    let mut r = raw(EventKind::Track, json!({}));
    r.client_time_ms = Some(r.received_at_ms + 3_600_000);
    assert_eq!(row(&r).created_at, 1_767_607_200);
    r.client_time_ms = Some(r.received_at_ms - 60_000);
    assert_eq!(row(&r).created_at, 1_767_607_140);
    assert_eq!(row(&r).received_at, 1_767_607_200);
}

#[test]
fn client_clock_skew_is_corrected_by_its_send_time() {
    let mut r = raw(EventKind::Track, json!({}));
    // The client's clock is 10 minutes fast: it stamped the event at +9 min
    // (a minute before it sent it, at +10 min by its clock).
    r.client_time_ms = Some(r.received_at_ms + 540_000);
    r.client_sent_at_ms = Some(r.received_at_ms + 600_000);
    assert_eq!(event_time_ms(&r), r.received_at_ms - 60_000);
    // Slow clock: skew pushes the time forward, never past receipt.
    r.client_time_ms = Some(r.received_at_ms - 3_600_000);
    r.client_sent_at_ms = Some(r.received_at_ms - 3_500_000);
    assert_eq!(event_time_ms(&r), r.received_at_ms - 100_000);
}

#[test]
fn referrer_types() {
    let page = parse_page("/x?gclid=abc");
    assert_eq!(classify_referrer("", "", &Page::default()).kind, "direct");
    assert_eq!(classify_referrer("", "", &page).kind, "ad");
    let newsletter = parse_page("/x?utm_source=weekly&utm_medium=email");
    assert_eq!(classify_referrer("", "", &newsletter).kind, "email");
    for (url, name, kind) in [
        ("https://www.baidu.com/s?wd=a", "Baidu", "search"),
        ("https://yandex.ru/search/?text=a", "Yandex", "search"),
        ("https://www.google.co.kr/", "Google", "search"),
        (
            "https://m.search.naver.com/search.naver?query=a",
            "Naver",
            "search",
        ),
        ("https://blog.naver.com/some/post", "Naver Blog", "social"),
        ("https://story.kakao.com/x", "Kakao", "social"),
        ("https://l.facebook.com/l.php?u=x", "Facebook", "social"),
        ("https://www.linkedin.com/feed/", "LinkedIn", "social"),
        ("https://outlook.live.com/mail/0/", "Outlook", "email"),
        ("https://www.pinterest.co.uk/pin/1", "Pinterest", "social"),
    ] {
        let class = classify_referrer(url, "https://shop.example", &Page::default());
        assert_eq!((class.name.as_str(), class.kind), (name, kind), "{url}");
    }
    assert_eq!(
        classify_referrer(
            "https://shop.example/a",
            "https://www.shop.example",
            &Page::default()
        )
        .kind,
        "internal"
    );
    let naver = classify_referrer("https://search.naver.com/x", "", &Page::default());
    assert_eq!((naver.name.as_str(), naver.kind), ("Naver", "search"));
    assert_eq!(
        classify_referrer("https://t.co/abc", "", &Page::default()).kind,
        "social"
    );
    assert_eq!(
        classify_referrer("https://mail.google.com/", "", &Page::default()).kind,
        "email"
    );
    let other = classify_referrer("https://blog.example.org/post", "", &Page::default());
    assert_eq!(
        (other.name.as_str(), other.kind),
        ("blog.example.org", "other")
    );
}

#[test]
fn bare_paths_drop_query_and_fragment() {
    let page = parse_page("/a/b?utm_medium=email#top");
    assert_eq!(page.path, "/a/b");
    assert_eq!(page.origin, "");
    assert_eq!(page.utm("utm_medium"), "email");
    assert_eq!(
        parse_page(&format!("/{}", "é".repeat(3000))).path.len(),
        1999
    );
}

#[test]
fn profile_state_becomes_a_profile_row() {
    let state = ProfileState::from_hash(
        [
            ("fn", "Ann"),
            ("em", "a@b.c"),
            ("p:plan", "\"pro\""),
            ("p:logins", "3"),
            ("p:odd", "not json"),
            ("created", "1767607200500"),
            ("version", "4"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    let p = profile_row("p1", "u1", &state);
    assert_eq!(
        (p.id.as_str(), p.first_name.as_str(), p.email.as_str()),
        ("u1", "Ann", "a@b.c")
    );
    let props: Value = serde_json::from_str(&p.properties).unwrap();
    assert_eq!(
        props,
        json!({"plan": "pro", "logins": 3, "odd": "not json"})
    );
    assert_eq!((p.created_at, p.version), (1_767_607_200, 4));
}

#[test]
fn identify_rows_keep_their_traits() {
    let mut r = raw(EventKind::Identify, json!({"plan": "pro"}));
    r.traits = json!({"firstName": "Ann"}).as_object().cloned().unwrap();
    let props: Value = serde_json::from_str(&row(&r).properties).unwrap();
    assert_eq!(
        props,
        json!({"plan": "pro", "traits": {"firstName": "Ann"}})
    );
}

#[test]
fn increment_keeps_its_operation() {
    let mut r = raw(EventKind::Increment, json!({}));
    r.property = Some("credits".into());
    r.value = Some(5.0);
    let props: Value = serde_json::from_str(&row(&r).properties).unwrap();
    assert_eq!(props, json!({"property": "credits", "value": 5.0}));
}

#[test]
fn events_written_before_the_edge_read_the_page_read_as_it_writes_them_now() {
    let r = raw(
        EventKind::Track,
        json!({"__path": "/a", "__referrer": "https://r.example/", "z": [1, {"b": null, "a": "é\"\n"}],
               "a": 1.5, "m": {"y": true, "x": "1"}}),
    );
    assert_eq!((&*r.path, &*r.referrer), ("/a", "https://r.example/"));
    assert_eq!(
        row(&r).properties,
        r#"{"a":1.5,"m":{"x":"1","y":true},"z":[1,{"a":"é\"\n","b":null}]}"#
    );
    // Already hoisted, or only mentioned deeper down: left as it is.
    let mut again = r.clone();
    again.hoist_page();
    assert_eq!(again, r);
    let nested = raw(EventKind::Track, json!({"a": {"__path": "/deep"}}));
    assert_eq!(nested.path, "");
    assert_eq!(nested.properties.text(), r#"{"a":{"__path":"/deep"}}"#);
}
