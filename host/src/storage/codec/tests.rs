//! Format v1 round trips, its size on the example chain, older values, and
//! hostile bytes.

use std::time::Instant;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::*;

const ROUTE: &str = "/emailgistics-webhook";
const ID: &str = "ex-1-28896-17773-1-21988";

/// The answer of the example chain (`/work/…/example-record.json`, as
/// `enrichd deliveries show` prints it): the envelope as the handler writes
/// it, and the record whose plugins repeat its actions.
fn example() -> StoredDelivery {
    let set_fields = json!({"name":"Apply CRM context","type":"setCustomFields","value":{"claimNumber":"CLM-556677","policyNumber":"POL-889900","region":"EMEA"}});
    let tag = json!({"name":"Tag VIP customers","type":"tag","value":{"tags":["VIP"]}});
    let assign = json!({"name":"Route by keyword \"coverage\"","type":"assign","value":{"backupAssignments":[{"assignToAnyUser":true}],"mainAssignment":{"ignoreMaxMessages":true,"users":["Policy Desk"]}}});
    let body = concat!(
        r#"{"status":"success","message":"3 actions from crm-enrich (2), keyword-router (1)","actions":["#,
        r#"{"name":"Apply CRM context","type":"setCustomFields","value":{"claimNumber":"CLM-556677","policyNumber":"POL-889900","region":"EMEA"}},"#,
        r#"{"name":"Tag VIP customers","type":"tag","value":{"tags":["VIP"]}},"#,
        r#"{"name":"Route by keyword \"coverage\"","type":"assign","value":{"mainAssignment":{"users":["Policy Desk"],"ignoreMaxMessages":true},"backupAssignments":[{"assignToAnyUser":true}]}}]}"#,
    );
    let record = json!({
        "answeredAtMs": 1796123218786u64,
        "conversationId": "2L8WYB89Z",
        "delivery": ID,
        "elapsedMs": 10,
        "httpStatus": 200,
        "mailbox": "info@pinnilly.com",
        "message": "3 actions from crm-enrich (2), keyword-router (1)",
        "plugins": [
            {"actions": [set_fields, tag], "dropped": [], "elapsed_us": 384,
             "message": "enriched from CRM record for rstorrie@pinnilly.com", "notes": [],
             "outcome": "applied", "plugin": "crm-enrich"},
            {"actions": [], "dropped": [], "elapsed_us": 5655,
             "message": "no engagement recorded for rstorrie@pinnilly.com", "notes": [],
             "outcome": "applied", "plugin": "engagement-enrich"},
            {"actions": [assign], "dropped": [], "elapsed_us": 885,
             "message": "routed by keyword \"coverage\" to Policy Desk", "notes": [],
             "outcome": "applied", "plugin": "keyword-router"},
        ],
        "route": ROUTE,
        "status": "success",
        "subject": "Coverage",
    });
    StoredDelivery {
        route: ROUTE.into(),
        id: ID.into(),
        stored_at_ms: 1796123218790,
        status: 200,
        body: body.into(),
        record,
    }
}

fn round_trip(d: &StoredDelivery) -> Vec<u8> {
    let bytes = encode(d);
    let back = decode(&d.route, &d.id, &bytes).expect("decodes");
    assert_eq!(&back, d);
    assert_eq!(back.body.as_bytes(), d.body.as_bytes());
    assert_eq!(stored_at_ms(&bytes), Some(d.stored_at_ms));
    bytes
}

/// Most bytes of the example answer in format v1: measured 337 (the JSON
/// of `StoredDelivery` is 1 850), rounded up a little.
const EXAMPLE_MAX_BYTES: usize = 360;

#[test]
fn the_example_answer_is_compact() {
    let d = example();
    let json = serde_json::to_vec(&d).unwrap();
    let v1 = round_trip(&d);
    let refs = shared_actions(&d.body, &d.record);
    assert_eq!(
        refs,
        [(0, 2), (2, 1)],
        "both plugins' actions are references"
    );
    println!(
        "example answer: JSON {} bytes, format v1 {} bytes (payload {} bytes before zstd)",
        json.len(),
        v1.len(),
        payload(&d).len()
    );
    assert_eq!(v1[HEADER_LEN - 1], ZSTD);
    assert!(v1.len() <= EXAMPLE_MAX_BYTES, "{} bytes", v1.len());
}

#[test]
fn compression_levels_on_the_example() {
    // Figures for the choice of LEVEL (printed, not asserted).
    let payload = payload(&example());
    for level in [1, 3, 5, 6, 9, 19] {
        let dict = EncoderDictionary::copy(DICTIONARY_V1, level);
        let mut c = Compressor::with_prepared_dictionary(&dict).unwrap();
        let started = Instant::now();
        let mut len = 0;
        for _ in 0..200 {
            len = c.compress(&payload).unwrap().len();
        }
        println!(
            "level {level}: {len} bytes, {:?} per answer",
            started.elapsed() / 200
        );
    }
    let plain = zstd::bulk::compress(&payload, LEVEL).unwrap();
    println!(
        "level {LEVEL} without the dictionary: {} bytes",
        plain.len()
    );
}

#[test]
fn encode_and_decode_times() {
    let d = example();
    let n = 500;
    let started = Instant::now();
    let mut bytes = Vec::new();
    for _ in 0..n {
        bytes = encode(&d);
    }
    let enc = started.elapsed() / n;
    let started = Instant::now();
    for _ in 0..n {
        decode(ROUTE, ID, &bytes).unwrap();
    }
    let dec = started.elapsed() / n;
    let started = Instant::now();
    for _ in 0..n {
        serde_json::to_vec(&d).unwrap();
    }
    let json_enc = started.elapsed() / n;
    let json = serde_json::to_vec(&d).unwrap();
    let started = Instant::now();
    for _ in 0..n {
        serde_json::from_slice::<StoredDelivery>(&json).unwrap();
    }
    let json_dec = started.elapsed() / n;
    println!("per answer (this build): encode {enc:?}, decode {dec:?}; JSON encode {json_enc:?}, decode {json_dec:?}");
}

#[test]
fn actions_that_do_not_match_the_envelope_are_kept() {
    let base = example();
    let mut cases = Vec::new();
    // A plugin's actions differ from the envelope's.
    let mut d = base.clone();
    d.record["plugins"][0]["actions"][1]["value"]["tags"] = json!(["VIP", "extra"]);
    cases.push((d, vec![]));
    // A record cut down by its bound: actions left out, counts instead.
    let mut d = base.clone();
    for p in d.record["plugins"].as_array_mut().unwrap() {
        let n = p["actions"].as_array().unwrap().len();
        p.as_object_mut().unwrap().remove("actions");
        p["counts"] = json!({ "actions": n });
    }
    d.record["truncated"] = json!({"leftOut": {"actions": 3}});
    cases.push((d, vec![]));
    // More actions in the record than in the envelope.
    let mut d = base.clone();
    d.record["plugins"][1]["actions"] = json!([{"type": "tag", "value": {"tags": ["x"]}}]);
    cases.push((d, vec![(0, 2), (2, 1)]));
    // Actions that are not an array, plugins that are not objects.
    let mut d = base.clone();
    d.record["plugins"][1]["actions"] = json!("none");
    d.record["plugins"].as_array_mut().unwrap().push(json!(7));
    cases.push((d, vec![(0, 2), (2, 1)]));
    // The last plugin's actions first: only the entry that starts the
    // envelope becomes a reference.
    let mut d = base.clone();
    let plugins = d.record["plugins"].as_array_mut().unwrap();
    plugins.swap(0, 2);
    cases.push((d, vec![(2, 2)]));
    // A body with the actions but another shape around them.
    let mut d = base.clone();
    d.body = format!("[{}]", d.body);
    cases.push((d, vec![]));
    // Envelope actions not an array.
    let mut d = base.clone();
    d.body = r#"{"status":"success","message":"m","actions":{"0":1}}"#.into();
    cases.push((d, vec![]));
    for (d, want) in cases {
        assert_eq!(shared_actions(&d.body, &d.record), want, "{}", d.record);
        round_trip(&d);
    }
}

#[test]
fn odd_answers_round_trip() {
    let base = example();
    let empty = StoredDelivery {
        route: String::new(),
        id: String::new(),
        stored_at_ms: 0,
        status: 0,
        body: String::new(),
        record: Value::Null,
    };
    let bad_request = StoredDelivery {
        status: 400,
        body: r#"{"status":"error","message":"invalid payload"}"#.into(),
        record: json!({"message": "invalid payload", "plugins": []}),
        ..base.clone()
    };
    let not_json = StoredDelivery {
        body: "not JSON at all {".into(),
        ..base.clone()
    };
    let unicode = StoredDelivery {
        route: "/ré".into(),
        id: "id\0with nul ✉ 𝄞".into(),
        stored_at_ms: u64::MAX,
        status: u16::MAX,
        body: "{\"message\":\"héllo 𝄞 \\u00e9\",\"actions\":[]}  ".into(),
        record: json!({"message": "ünï 🚀", "plugins": [{"actions": []}], "f": 0.1, "n": -3, "big": u64::MAX}),
    };
    let floats = StoredDelivery {
        record: json!([1.0e300, -2.5e-308, 0.30000000000000004, 5e-324, f64::MAX]),
        ..base.clone()
    };
    for d in [empty, bad_request, not_json, unicode, floats] {
        round_trip(&d);
    }
}

#[test]
fn payloads_zstd_cannot_shrink_are_stored_raw() {
    // A few bytes: a zstd frame would be longer.
    let tiny = StoredDelivery {
        body: "{}".into(),
        record: json!(1),
        ..example()
    };
    let bytes = round_trip(&tiny);
    assert_eq!(bytes[HEADER_LEN - 1], RAW);
    assert_eq!(bytes.len(), HEADER_LEN + 5);
    let huge = StoredDelivery {
        body: "x".repeat(MAX_ZSTD_PAYLOAD_BYTES + 1),
        ..example()
    };
    let bytes = round_trip(&huge);
    assert_eq!(bytes[HEADER_LEN - 1], RAW, "over the bound: not compressed");
}

#[test]
fn legacy_json_values_still_decode() {
    let d = example();
    let legacy = serde_json::to_vec(&d).unwrap();
    assert_eq!(legacy[0], b'{');
    assert_eq!(decode(ROUTE, ID, &legacy).unwrap(), d);
    assert_eq!(stored_at_ms(&legacy), Some(d.stored_at_ms));
    assert!(matches!(
        decode(ROUTE, ID, b"{not json"),
        Err(CodecError::Legacy(_))
    ));
    assert_eq!(stored_at_ms(b"{not json"), None);
}

/// The example answer as format v1 wrote it when v1 was made: it must
/// decode forever, whatever zstd version later encodes with.
const GOLDEN_V1: &str = concat!(
    "01000001a23149536600c80128b52ffd60fe03dd0900820a282a8019b8013330033330138425e2498656d845",
    "28426356c083240f63c6286494e4ca2209e94e2c4a83fe1f128642b9bfcb58ca29ff6a9db54c4faf071cd996",
    "7531be18416ec0d7bd4284520adfaceef1c1b7fd42f50285046fe274ea3022110614054051656f608de81d18",
    "f443e4c988dc96dc6319287396815cb238cb71d4eafe1a044be99c523ea751a4ebe140db9cf3286e5b18963c",
    "4ae788fdd5a527818937a0d19d826ed2acb51a208222300c391d9790793e2fcd57d60464ddcc6a2c78742053",
    "81533ccc65236546a121b8fd34c109387870c318d6b54b7f1bba3123ddc3a90cb7f18937287d209e737a5171",
    "7af674b8ea7cd9235eab6d2123929ed93433ea22c80946d999e7fd7ddbac305cc6c1c77acd9bba10ddbbb8ff",
    "5a1a5e3db4fd4c33a9055136cfc575f54a9b2bc1dc1ef9cd198dd41c76",
);

#[test]
fn a_value_written_by_v1_still_decodes() {
    let golden = decode_hex(GOLDEN_V1);
    assert_eq!(decode(ROUTE, ID, &golden).unwrap(), example());
}

#[test]
fn the_dictionary_is_pinned() {
    // Changing the dictionary breaks every stored v1 value: a new format
    // version needs a new dictionary constant, never an edit of this one.
    let hash = hex::encode(Sha256::digest(DICTIONARY_V1));
    assert_eq!(
        hash,
        "c4eac5f370fc5d27fade0ec4d71b0bdf5b75646e94c171f66368c1fce63bb4b2"
    );
}

#[test]
fn the_stamp_is_read_from_the_header_alone() {
    let mut bytes = encode(&example());
    bytes.truncate(HEADER_LEN + 3);
    assert_eq!(stored_at_ms(&bytes), Some(example().stored_at_ms));
    assert!(decode(ROUTE, ID, &bytes).is_err());
    assert_eq!(stored_at_ms(&bytes[..8]), None, "a cut header has no stamp");
    assert_eq!(stored_at_ms(&[]), None);
    assert_eq!(stored_at_ms(&[0x02; 20]), None);
}

#[test]
fn every_cut_of_a_value_is_an_error() {
    for d in [
        example(),
        StoredDelivery {
            body: "x".repeat(500),
            ..example()
        },
    ] {
        let bytes = encode(&d);
        for n in 0..bytes.len() {
            assert!(decode(ROUTE, ID, &bytes[..n]).is_err(), "cut at {n}");
        }
    }
}

#[test]
fn damaged_values_are_errors() {
    let good = encode(&example());
    assert!(matches!(decode(ROUTE, ID, &[]), Err(CodecError::Empty)));
    assert!(matches!(
        decode(ROUTE, ID, &[0x02, 0, 0]),
        Err(CodecError::UnknownFormat(0x02))
    ));
    let mut bad = good.clone();
    bad[HEADER_LEN - 1] = 9;
    assert!(matches!(
        decode(ROUTE, ID, &bad),
        Err(CodecError::Malformed(_))
    ));
    // Every single flipped byte of the frame: an error or (zstd has no
    // checksum here) some other answer, never a panic.
    for i in HEADER_LEN..good.len() {
        let mut bad = good.clone();
        bad[i] ^= 0x5a;
        let _ = decode(ROUTE, ID, &bad);
    }
    // Two frames where one is declared.
    let mut two = good.clone();
    two.extend_from_slice(&good[HEADER_LEN..]);
    assert!(decode(ROUTE, ID, &two).is_err());
}

fn raw_value(payload: &[u8]) -> Vec<u8> {
    let mut v = vec![VERSION_1];
    v.extend_from_slice(&7u64.to_be_bytes());
    v.extend_from_slice(&200u16.to_be_bytes());
    v.push(RAW);
    v.extend_from_slice(payload);
    v
}

#[test]
fn malformed_payloads_are_errors() {
    let body = r#"{"actions":[1,2]}"#;
    let mut good = Vec::new();
    put_varint(&mut good, body.len() as u64);
    good.extend_from_slice(body.as_bytes());
    good.extend_from_slice(&[1, 0, 2]);
    good.extend_from_slice(br#"{"plugins":[{"actions":[]}]}"#);
    let d = decode("/r", "i", &raw_value(&good)).unwrap();
    assert_eq!(d.record, json!({"plugins": [{"actions": [1, 2]}]}));
    assert_eq!((d.stored_at_ms, d.status, d.body.as_str()), (7, 200, body));

    let mut cases: Vec<Vec<u8>> = vec![
        // Body length past the end; a varint that never ends; one over 64 bits.
        vec![0x7f, b'x'],
        vec![0xff; 12],
        [&[0xff; 9][..], &[0x02]].concat(),
        // A body that is not UTF-8.
        vec![1, 0xff, 0, b'1'],
        // A reference count larger than the rest could hold.
        vec![0, 0xff, 0xff, 0x03, b'1'],
    ];
    // References past the envelope, to a missing plugin, to actions that
    // are not empty, of count 0, and with no envelope at all.
    let with = |refs: &[u8], record: &str, body: &str| {
        let mut p = Vec::new();
        put_varint(&mut p, body.len() as u64);
        p.extend_from_slice(body.as_bytes());
        p.extend_from_slice(refs);
        p.extend_from_slice(record.as_bytes());
        p
    };
    cases.push(with(&[1, 0, 3], r#"{"plugins":[{"actions":[]}]}"#, body));
    cases.push(with(&[1, 1, 1], r#"{"plugins":[{"actions":[]}]}"#, body));
    cases.push(with(&[1, 0, 1], r#"{"plugins":[{"actions":[0]}]}"#, body));
    cases.push(with(&[1, 0, 0], r#"{"plugins":[{"actions":[]}]}"#, body));
    cases.push(with(&[1, 0, 1], r#"{"plugins":[{"actions":[]}]}"#, "4xx"));
    cases.push(with(&[1, 0, 1], r#"{"other":[]}"#, body));
    cases.push(with(
        &[2, 0, 1, 0, 2],
        r#"{"plugins":[{"actions":[]}]}"#,
        body,
    ));
    // A record that is not JSON.
    cases.push(with(&[0], "{", body));
    for (i, payload) in cases.iter().enumerate() {
        assert!(decode("/r", "i", &raw_value(payload)).is_err(), "case {i}");
    }
}

fn zstd_value(frame: &[u8]) -> Vec<u8> {
    let mut v = raw_value(&[]);
    v[HEADER_LEN - 1] = ZSTD;
    v.extend_from_slice(frame);
    v
}

#[test]
fn a_decompression_bomb_is_refused_before_allocating() {
    // 16 MiB of zeros compress to a few hundred bytes.
    let bomb = zstd::bulk::compress(&vec![0u8; 2 * MAX_ZSTD_PAYLOAD_BYTES], 1).unwrap();
    assert!(bomb.len() < 4096);
    match decode("/r", "i", &zstd_value(&bomb)) {
        Err(CodecError::TooLarge(n)) => assert_eq!(n, 2 * MAX_ZSTD_PAYLOAD_BYTES as u64),
        other => panic!("expected TooLarge, got {other:?}"),
    }
    // A frame that does not declare its size is refused too.
    let mut c = Compressor::new(1).unwrap();
    c.include_contentsize(false).unwrap();
    let undeclared = c.compress(&[0u8; 1000]).unwrap();
    assert!(matches!(
        decode("/r", "i", &zstd_value(&undeclared)),
        Err(CodecError::Compressed(_))
    ));
    // Garbage where the frame should be.
    assert!(matches!(
        decode("/r", "i", &zstd_value(b"not a zstd frame at all")),
        Err(CodecError::Compressed(_))
    ));
}

fn decode_hex(s: &str) -> Vec<u8> {
    hex::decode(s).expect("hex")
}

/// Issue 12: a record carrying its replay input (the payload, each
/// plugin's host calls) is stored and read back exactly, compressed; the
/// golden v1 value above, written before, still decodes without them.
#[test]
fn issue_12_a_record_with_its_replay_input_round_trips() {
    let mut d = example();
    let plain = encode(&d).len();
    d.record["payload"] = json!(include_str!("../../../../examples/seed-payload.json"));
    d.record["plugins"][0]["host_calls"] = json!({"calls": [
        {"call": "config.get-all", "args": [], "ok": [["vip_tiers", "gold,platinum"]]},
        {"call": "crm.lookup-email", "args": ["rstorrie@pinnilly.com"], "ok": {
            "fields": [["claimNumber", "CLM-556677"], ["policyNumber", "POL-889900"],
                       ["region", "EMEA"], ["tier", "gold"]],
            "provenance": "fresh", "age_ms": 0, "source": "crm"}},
    ]});
    d.record["plugins"][1]["host_calls"] = json!({"calls": [
        {"call": "kv.get-from", "args": ["engagement-tracker", "rstorrie@pinnilly.com"], "ok": null},
    ]});
    let v1 = round_trip(&d);
    assert_eq!(v1[HEADER_LEN - 1], ZSTD);
    println!(
        "example answer with its replay input: format v1 {} bytes (without: {plain})",
        v1.len()
    );
    // The payload and recording cost far less than a kilobyte stored.
    assert!(v1.len() < plain + 1024, "{} bytes", v1.len());
}
