//! Fuzzes `storage::codec::decode` with arbitrary stored values (what a
//! shared Redis or a damaged disk could hand back): it never panics, and
//! whatever it accepts is an answer the codec stores and reads back as is.
#![no_main]

use enrichd::storage::codec::{decode, encode, stored_at_ms};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let stamp = stored_at_ms(data);
    if let Ok(d) = decode("/r", "i", data) {
        assert_eq!(
            stamp,
            Some(d.stored_at_ms),
            "the header agrees with the value"
        );
        let again = encode(&d);
        assert_eq!(decode(&d.route, &d.id, &again).ok(), Some(d));
    }
});
