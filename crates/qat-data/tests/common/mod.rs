//! Shared by the source tests.

use qat_data::SourceConfig;
use qat_data::source::{Document, for_each_document};

/// Every document of a source, or its error as text.
pub fn docs(c: &SourceConfig) -> Result<Vec<Document>, String> {
    let mut v = Vec::new();
    for_each_document(c, |d| {
        v.push(d);
        Ok(())
    })
    .map_err(|e| e.to_string())?;
    Ok(v)
}
