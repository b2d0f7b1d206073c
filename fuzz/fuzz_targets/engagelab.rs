//! Fuzzes the EngageLab side: `event::parse` with the input as a callback
//! body, and `verify::verify` with headers, keys, clock and window drawn from
//! the same input and checked against a model of the documented rules.
#![no_main]

use arbitrary::Unstructured;
use enrichd::engagelab::event::{self, Kind};
use enrichd::engagelab::wit_event;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(callback) = event::parse(data) {
        assert_eq!(callback.raw.as_bytes(), data, "raw is the body as sent");
        assert!(!callback.kind.name().is_empty());
        assert_eq!(Kind::from_name(callback.kind.name()), callback.kind);
        let address = callback.address();
        assert!(address.is_empty() || address.contains('@'), "{address:?}");
        let wit = wit_event(&callback);
        assert_eq!(wit.address, address);
    }
    let _ = enrichd_fuzz::check_verify(&mut Unstructured::new(data));
});
