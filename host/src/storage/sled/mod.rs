//! The sled backend of the storage ports (being built: see issue 10).

use super::{Limits, OpenError, Storage};
use crate::clock::Clock;

/// Open the sled backend.
pub async fn open(
    settings: &super::SledSettings,
    limits: &Limits,
    clock: Clock,
) -> Result<Storage, OpenError> {
    let _ = (settings, limits, clock);
    Err(OpenError {
        backend: "sled",
        target: String::new(),
        detail: "not built yet".into(),
    })
}
