//! Error answers: `{"code": <http>, "message": "..."}` everywhere, as IPFS
//! Cluster sends them; an invalid manifest adds its located problems.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One located problem of an invalid manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Problem {
    /// Name the document was parsed as.
    pub file: String,
    /// 1-based line; 0 when the whole document is concerned.
    pub line: u32,
    /// 1-based column; 0 when the whole document is concerned.
    pub col: u32,
    /// What is wrong.
    pub message: String,
}

/// The JSON body of an error answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorBody {
    /// The HTTP status code.
    pub code: u16,
    /// Lower-case description.
    pub message: String,
    /// Located problems (422 invalid manifest only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<Problem>,
}

impl ErrorBody {
    /// An answer with HTTP status `code` and `message`, no located problems.
    pub fn new(code: u16, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            errors: Vec::new(),
        }
    }
}
