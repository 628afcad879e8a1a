//! The JSON form of a graph (serde), validated on the way in.

use crate::{Graph, IrError, Result};

/// Pretty JSON for a graph.
pub fn to_string(graph: &Graph) -> String {
    serde_json::to_string_pretty(graph).expect("a graph always serializes")
}

/// Reads a graph from JSON and checks every node's operands and declared type.
pub fn from_str(s: &str) -> Result<Graph> {
    let graph: Graph = serde_json::from_str(s).map_err(|e| IrError::Json(e.to_string()))?;
    graph.validate()?;
    Ok(graph)
}
