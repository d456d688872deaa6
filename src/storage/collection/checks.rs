//! What an update must pass before it is queued (see the collection's note: a
//! queued update may be acknowledged before it is applied, so it must not fail
//! later): points against the config's vectors, filters and limits as Qdrant
//! checks them.

use qdrant_edge::{Filter, PointStructPersisted, VectorPersisted, VectorStructPersisted};

use super::Collection;
use crate::storage::error::{Result, StorageError};

impl Collection {
    /// Reject what the engine would reject later: vector names, kinds and sizes.
    pub(super) fn check_point(&self, point: &PointStructPersisted) -> Result<()> {
        match &point.vector {
            VectorStructPersisted::Single(v) => self.check_vector("", VectorKind::Dense(v.len())),
            VectorStructPersisted::MultiDense(m) => self.check_vector("", VectorKind::Multi(m)),
            VectorStructPersisted::Named(named) => {
                for (name, vector) in named {
                    let kind = match vector {
                        VectorPersisted::Dense(v) => VectorKind::Dense(v.len()),
                        VectorPersisted::MultiDense(m) => VectorKind::Multi(m),
                        VectorPersisted::Sparse(sparse) => {
                            if sparse.indices.len() != sparse.values.len() {
                                return Err(StorageError::bad_request(format!(
                                    "Wrong input: sparse vector `{name}` has {} indices and {} values",
                                    sparse.indices.len(),
                                    sparse.values.len()
                                )));
                            }
                            let unique: std::collections::HashSet<_> =
                                sparse.indices.iter().collect();
                            if unique.len() != sparse.indices.len() {
                                return Err(StorageError::bad_request(format!(
                                    "Wrong input: sparse vector `{name}` repeats an index"
                                )));
                            }
                            VectorKind::Sparse
                        }
                    };
                    self.check_vector(name, kind)?;
                }
                Ok(())
            }
        }
    }

    /// One vector of a point against the collection's config for its name.
    pub(super) fn check_vector(&self, name: &str, kind: VectorKind<'_>) -> Result<()> {
        let sparse = self.config.sparse_vectors();
        if let VectorKind::Sparse = kind {
            if !sparse.contains_key(name) {
                return Err(StorageError::bad_request(format!(
                    "Wrong input: Not existing vector name error: {name} (not a sparse vector of this collection)"
                )));
            }
            return Ok(());
        }
        let Some(params) = self.config.params.vectors.get(name) else {
            let hint = if sparse.contains_key(name) {
                " (a sparse vector: give it as {\"indices\": [...], \"values\": [...]})".to_string()
            } else if name.is_empty() {
                format!(
                    "(unnamed vector); this collection has named vectors: {}",
                    self.vector_names()
                )
            } else {
                String::new()
            };
            return Err(StorageError::bad_request(format!(
                "Wrong input: Not existing vector name error: {name}{hint}"
            )));
        };
        let label = if name.is_empty() { "the vector" } else { name };
        let is_multi = params
            .multivector_config
            .as_ref()
            .is_some_and(|m| !m.is_null());
        let lengths: Vec<usize> = match kind {
            VectorKind::Dense(_) if is_multi => {
                return Err(StorageError::bad_request(format!(
                    "Wrong input: {label} is a multivector: give a list of vectors"
                )));
            }
            VectorKind::Multi(_) if !is_multi => {
                return Err(StorageError::bad_request(format!(
                    "Wrong input: {label} takes one vector, not a list of vectors"
                )));
            }
            VectorKind::Multi([]) => {
                return Err(StorageError::bad_request(format!(
                    "Wrong input: multivector {label} must hold at least one vector"
                )));
            }
            VectorKind::Dense(len) => vec![len],
            VectorKind::Multi(m) => m.iter().map(|v| v.len()).collect(),
            VectorKind::Sparse => unreachable!("handled above"),
        };
        if let Some(len) = lengths.into_iter().find(|len| *len != params.size as usize) {
            return Err(StorageError::bad_request(format!(
                "Wrong input: Vector dimension error: expected dim: {}, got {len}",
                params.size
            )));
        }
        Ok(())
    }

    pub(super) fn vector_names(&self) -> String {
        self.config
            .params
            .vectors
            .by_name()
            .iter()
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// What a point gives for one vector name.
pub(super) enum VectorKind<'a> {
    Dense(usize),
    Multi(&'a [Vec<f32>]),
    Sparse,
}

/// A filter the engine would misread is refused, as Qdrant refuses it: a field
/// condition with nothing but a key (under `must_not` it would match every point), a
/// nested condition without its filter, … (the engine's own validation rules).
pub(super) fn check_filter(filter: Option<&Filter>) -> Result<()> {
    use validator::Validate;
    match filter.map(Validate::validate) {
        Some(Err(errors)) => Err(StorageError::bad_request(format!(
            "Validation error in filter: {errors}"
        ))),
        _ => Ok(()),
    }
}

/// A page of no points is refused (Qdrant: `limit` must be at least 1); a scroll
/// asking for none would answer a next page that never advances.
pub(super) fn check_limit(limit: usize) -> Result<()> {
    if limit == 0 {
        return Err(StorageError::bad_request(
            "Validation error: limit must be at least 1",
        ));
    }
    Ok(())
}
