//! Fuzzes `validate::check` with arbitrary actions: it never panics, what it
//! accepts re-validates to itself and keeps the documented limits.
#![no_main]

use arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(caps) = enrichd_fuzz::caps(&mut u) else {
        return;
    };
    if let Ok(action) = enrichd_fuzz::action(&mut u) {
        enrichd_fuzz::check_validate(action, &caps);
    }
});
