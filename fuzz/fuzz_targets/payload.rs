//! Fuzzes `payload::parse` with arbitrary bodies: it never panics, and a
//! parsed delivery agrees with the JSON it came from.
#![no_main]

use enrichd::emailgistics::payload::{parse, Parsed, EVENT_RECEIVED};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    match parse(data) {
        Ok(Parsed::Received(d)) => {
            assert_eq!(d.raw_json.as_bytes(), data, "raw_json is the body as sent");
            // serde_json skips ignored fields leniently (a lone surrogate
            // escape such as "\ud800x" in an unknown field passes), so the
            // body may not read as a `Value`; then there is nothing to compare.
            let Ok(v) = serde_json::from_slice::<Value>(data) else {
                return;
            };
            assert_eq!(v["event"], EVENT_RECEIVED);
            assert_eq!(v["id"].as_str(), Some(d.id.as_str()));
            assert_eq!(v["mailbox"].as_str(), Some(d.mailbox.as_str()));
            assert_eq!(v["subject"].as_str(), Some(d.subject.as_str()));
            assert_eq!(
                v["from"]["emailAddress"]["address"].as_str(),
                Some(d.from.address.as_str())
            );
            let len = |key: &str| v[key].as_array().map_or(0, Vec::len);
            assert_eq!((len("to"), len("cc")), (d.to.len(), d.cc.len()));
            assert_eq!(v["bodyText"].as_str(), d.body_text.as_deref());
        }
        Ok(Parsed::UnknownEvent(event)) => assert_ne!(event, EVENT_RECEIVED),
        Err(_) => {}
    }
});
