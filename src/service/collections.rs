//! Collections: create, delete, list, inspect.

use std::collections::BTreeMap;

use qdrant_edge::PayloadIndexInfo;

use super::Service;
use crate::storage::{CollectionConfig, CollectionStats, CreateCollection, Result};

/// Create collection `name` from Qdrant's create request (config diffs over Qdrant's
/// defaults; every field checked).
pub async fn create_collection(app: &Service, name: &str, request: CreateCollection) -> Result<()> {
    app.storage().check_writable(name)?;
    let config = request.into_config()?;
    app.storage().create_collection(name, config).await
}

/// Delete collection `name`; `false` if there was none.
pub async fn delete_collection(app: &Service, name: &str) -> Result<bool> {
    app.storage().check_writable(name)?;
    app.storage().delete_collection(name).await
}

pub fn collection_names(app: &Service) -> Vec<String> {
    app.storage().collection_names()
}

pub fn collection_exists(app: &Service, name: &str) -> bool {
    app.storage().collection(name).is_ok()
}

/// What `GET /collections/{name}` shows: the config, the counts, the payload indexes.
pub struct CollectionOverview {
    pub config: CollectionConfig,
    pub stats: CollectionStats,
    pub payload_schema: BTreeMap<String, PayloadIndexInfo>,
}

pub async fn collection_overview(app: &Service, name: &str) -> Result<CollectionOverview> {
    let collection = app.storage().collection(name)?;
    let config = collection.config().clone();
    let (stats, payload_schema) =
        super::run_blocking(move || Ok((collection.stats()?, collection.payload_schema()?)))
            .await?;
    Ok(CollectionOverview {
        config,
        stats,
        payload_schema,
    })
}
