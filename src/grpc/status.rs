//! The one place where errors become gRPC statuses, as `api::envelope` is for HTTP:
//! the same kinds, the same messages, the codes Qdrant's gRPC API uses.

use tonic::{Code, Status};

use crate::api::server::KeyRefusal;
use crate::snapshot::SnapshotError;
use crate::storage::StorageError;

pub fn from_storage(err: StorageError) -> Status {
    let code = match &err {
        StorageError::CollectionNotFound(_)
        | StorageError::PointNotFound(_)
        | StorageError::NotFound(_) => Code::NotFound,
        StorageError::CollectionExists(_) => Code::AlreadyExists,
        StorageError::BadRequest(_) => Code::InvalidArgument,
        StorageError::ShuttingDown => Code::Unavailable,
        StorageError::Snapshot(err) if err.is_no_space() => Code::ResourceExhausted,
        StorageError::Snapshot(SnapshotError::Io(_)) => Code::Internal,
        StorageError::Snapshot(_) => Code::InvalidArgument,
        // The other server is unreachable or refused; the request may be retried.
        StorageError::Peer(_) => Code::Unavailable,
        StorageError::AlreadyInProgress(_) => Code::Unavailable,
        StorageError::Internal(_) | StorageError::Io(_) | StorageError::StaleFreeze { .. } => {
            Code::Internal
        }
    };
    let message = err.to_string();
    if code == Code::Internal {
        tracing::error!(%code, error = %message, "gRPC request failed");
    } else {
        tracing::debug!(%code, error = %message, "gRPC request refused");
    }
    Status::new(code, message)
}

/// A refused API key: missing → UNAUTHENTICATED, wrong → PERMISSION_DENIED (the
/// REST listener's 401 and 403), with the REST listener's words.
pub fn from_key_refusal(refusal: KeyRefusal) -> Status {
    let code = match refusal {
        KeyRefusal::Missing => Code::Unauthenticated,
        KeyRefusal::Wrong => Code::PermissionDenied,
    };
    Status::new(code, refusal.message())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_map_to_qdrants_codes_with_rests_messages() {
        let cases = [
            (StorageError::CollectionNotFound("c".into()), Code::NotFound),
            (
                StorageError::CollectionExists("c".into()),
                Code::AlreadyExists,
            ),
            (StorageError::bad_request("bad"), Code::InvalidArgument),
            (StorageError::ShuttingDown, Code::Unavailable),
            (StorageError::internal("boom"), Code::Internal),
        ];
        for (err, code) in cases {
            let text = err.to_string();
            let status = from_storage(err);
            assert_eq!(status.code(), code);
            assert_eq!(status.message(), text);
        }
        assert_eq!(
            from_key_refusal(KeyRefusal::Missing).code(),
            Code::Unauthenticated
        );
        assert_eq!(
            from_key_refusal(KeyRefusal::Wrong).code(),
            Code::PermissionDenied
        );
    }
}
