//! The updates a shard's writer applies, in a form that can be logged durably
//! (JSON) while a shard is frozen and converted to the engine's operations when applied.

use qdrant_edge::{
    CreateIndex, FieldIndexOperations, Filter, JsonPath, PayloadFieldSchema, PointId,
    PointInsertOperations, PointOperations, PointStructPersisted, UpdateOperation,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ShardOp {
    Upsert(Vec<PointStructPersisted>),
    Delete(Vec<PointId>),
    DeleteByFilter(Filter),
    /// A payload field index, on every shard.
    CreateIndex {
        field_name: JsonPath,
        field_schema: Box<PayloadFieldSchema>,
    },
    DeleteIndex(JsonPath),
}

impl ShardOp {
    pub fn into_engine(self) -> UpdateOperation {
        let op = match self {
            ShardOp::CreateIndex {
                field_name,
                field_schema,
            } => {
                return UpdateOperation::FieldIndexOperation(FieldIndexOperations::CreateIndex(
                    CreateIndex {
                        field_name,
                        field_schema: Some(*field_schema),
                    },
                ));
            }
            ShardOp::DeleteIndex(field) => {
                return UpdateOperation::FieldIndexOperation(FieldIndexOperations::DeleteIndex(
                    field,
                ));
            }
            ShardOp::Upsert(points) => {
                PointOperations::UpsertPoints(PointInsertOperations::PointsList(points))
            }
            ShardOp::Delete(ids) => PointOperations::DeletePoints { ids },
            ShardOp::DeleteByFilter(filter) => PointOperations::DeletePointsByFilter(filter),
        };
        UpdateOperation::PointOperation(op)
    }
}
