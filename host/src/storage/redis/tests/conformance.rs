//! The shared port suite (`storage::conformance`) on Redis: each case on a
//! key prefix of its own, the cross-host case on two hosts sharing one.

use crate::storage::conformance::limits;
use crate::storage::redis::test_util::{host, redis_url, skipped, two_hosts, unique_prefix};
use crate::storage::{Limits, Storage};

/// A host on a prefix no other test uses.
async fn make(limits: Limits) -> ((), Storage) {
    let url = redis_url().expect("not skipped");
    ((), host(&url, &unique_prefix("conformance"), &limits).await)
}

/// Two hosts on one prefix.
async fn two() -> ((), Storage, Storage) {
    let url = redis_url().expect("not skipped");
    let (a, b) = two_hosts(&url, "conformance-two", &limits()).await;
    ((), a, b)
}

crate::conformance_tests!(make, two, skip_if = skipped);
