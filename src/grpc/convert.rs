//! Translation between our protobuf messages and the types the REST layer and the
//! engine use. Nothing here decides anything: what a request does is in the
//! protocol-neutral functions of `crate::service`. A message that cannot be translated —
//! a required part missing, an option snapfs does not serve — is a
//! `StorageError::BadRequest`, which becomes `INVALID_ARGUMENT` (`super::status`).

pub mod collections;
pub mod filter;
pub mod json;
pub mod points;
pub mod snapshots;

use crate::storage::StorageError;

/// A refusal of something a client asked for that snapfs does not serve, naming it.
pub fn unsupported(what: &str) -> StorageError {
    StorageError::bad_request(format!("{what} is not supported by snapfs"))
}

/// A required part of a message that is missing.
pub fn missing(what: &str) -> StorageError {
    StorageError::bad_request(format!("Wrong input: {what} is required"))
}

/// Refuse `field` when the client set it (a field declared only to be refused).
pub fn refuse_if_set<T>(field: &Option<T>, what: &str) -> Result<(), StorageError> {
    match field {
        Some(_) => Err(unsupported(what)),
        None => Ok(()),
    }
}

/// An enum value as its generated type; a number our definitions do not have is
/// refused (prost keeps unknown enum numbers as plain integers).
pub fn known_enum<E: TryFrom<i32>>(value: i32, what: &str) -> Result<E, StorageError> {
    E::try_from(value)
        .map_err(|_| StorageError::bad_request(format!("Wrong input: unknown {what} {value}")))
}
