//! `/collections/{name}/index`: payload field indexes, as Qdrant's
//! `PUT …/index` and `DELETE …/index/{field}`. The index lives in the engine's
//! segments; the collection info's `payload_schema` and every archive's
//! `payload_index.json` are read back from them.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use qdrant_edge::{JsonPath, PayloadFieldSchema};
use serde::Deserialize;
use serde_json::Value;

use super::Service;
use super::envelope::{ApiError, ApiJson, ApiResult, Timer};
use super::points::{WaitParam, update_answer};

/// Qdrant's `CreateFieldIndex`.
#[derive(Debug, Deserialize)]
pub struct CreateIndexBody {
    field_name: String,
    /// A type name (`keyword`, `integer`, `float`, `bool`, `geo`, `datetime`,
    /// `text`, `uuid`) or `{"type": …, params}`.
    field_schema: Option<Value>,
}

fn field_path(name: &str) -> Result<JsonPath, ApiError> {
    name.parse().map_err(|_| {
        ApiError::bad_request(format!("Wrong input: `{name}` is not a payload field path"))
    })
}

pub async fn create(
    timer: Timer,
    State(app): State<Arc<Service>>,
    Path(name): Path<String>,
    Query(params): Query<WaitParam>,
    ApiJson(body): ApiJson<CreateIndexBody>,
) -> ApiResult {
    app.storage().check_writable(&name)?;
    let collection = app.storage().collection(&name)?;
    let field = field_path(&body.field_name)?;
    let schema = body.field_schema.filter(|s| !s.is_null()).ok_or_else(|| {
        ApiError::bad_request(
            "Wrong input: `field_schema` is required (snapfs does not guess the type): e.g. \"keyword\" or {\"type\": \"text\", \"tokenizer\": \"word\"}",
        )
    })?;
    let schema: PayloadFieldSchema = serde_json::from_value(schema.clone()).map_err(|e| {
        ApiError::bad_request(format!(
            "Wrong input: field_schema {schema} is not an index type: {e}"
        ))
    })?;
    collection.create_index(field, schema, params.wait).await?;
    update_answer(&timer, params.wait)
}

pub async fn delete(
    timer: Timer,
    State(app): State<Arc<Service>>,
    Path((name, field)): Path<(String, String)>,
    Query(params): Query<WaitParam>,
) -> ApiResult {
    app.storage().check_writable(&name)?;
    let collection = app.storage().collection(&name)?;
    let field = field_path(&field)?;
    collection.delete_index(field, params.wait).await?;
    update_answer(&timer, params.wait)
}
