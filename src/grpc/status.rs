//! The one place where errors become gRPC statuses, as `api::envelope` is for HTTP:
//! the same kinds, the same messages as REST's TCP listener, the codes Qdrant's gRPC
//! API uses. gRPC is served on TCP only, so an internal error is answered with a
//! short reason and logged in full, and no message names the daemon's directories
//! (`service::remote::remote_text`).

use tonic::{Code, Status};

use crate::service::listen::KeyRefusal;
use crate::service::remote::{is_private, remote_text};
use crate::storage::StorageError;
use crate::storage::error::ErrorKind;

pub fn from_storage(err: StorageError) -> Status {
    let code = match err.kind() {
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::Exists => Code::AlreadyExists,
        ErrorKind::Invalid => Code::InvalidArgument,
        ErrorKind::NoSpace => Code::ResourceExhausted,
        // The other server is unreachable or refused; the request may be retried.
        ErrorKind::Unavailable | ErrorKind::Peer => Code::Unavailable,
        ErrorKind::Internal => Code::Internal,
        ErrorKind::Forbidden => Code::PermissionDenied,
    };
    let message = err.to_string();
    if code == Code::Internal {
        tracing::error!(%code, error = %message, "gRPC request failed");
    } else {
        tracing::debug!(%code, error = %message, "gRPC request refused");
    }
    Status::new(code, remote_text(is_private(&err), &message).into_owned())
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
        ];
        for (err, code) in cases {
            let text = err.to_string();
            let status = from_storage(err);
            assert_eq!(status.code(), code);
            assert_eq!(status.message(), text);
        }
        // Internal errors: a short reason, never the text (host paths, engine words).
        for err in [
            StorageError::internal("cannot load shard /var/lib/snapfs/storage/c/0: boom"),
            StorageError::Io(std::io::Error::other("/var/lib/snapfs/tmp/x: EIO")),
        ] {
            let status = from_storage(err);
            assert_eq!(status.code(), Code::Internal);
            assert_eq!(
                status.message(),
                crate::service::remote::INTERNAL_REASON,
                "{status:?}"
            );
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
