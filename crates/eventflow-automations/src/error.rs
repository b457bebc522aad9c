//! Why the engine could not perform a run's step before trying it: the
//! run's workflow or step is gone, or a template of the step's settings did
//! not render. Each case carries what a caller tells apart (the field, the
//! step path); its text is the line the run record shows.

/// Why a run's step could not be performed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunError {
    /// The run's workflow is not loaded any more.
    #[error("workflow {workflow} is not loaded any more (deleted, renamed or broken)")]
    NotLoaded { workflow: String },
    /// A run's step path (`2`, `2.1`) is not numbers joined by dots.
    #[error("bad step path {path}")]
    BadPath { path: String },
    /// The workflow has no step at the run's path.
    #[error("the workflow has no step {path} any more")]
    NoStep { path: String },
    /// The step at the run's path is not a `schedule` (whose steps the run
    /// executes) any more.
    #[error("step {path} of the workflow is not a schedule any more")]
    NotSchedule { path: String },
    /// The run is past the workflow's last step (the file lost steps).
    #[error("workflow {workflow} has no step {number} any more")]
    NoStepNumber { workflow: String, number: usize },
    /// A template of one of the step's settings did not render.
    #[error("{field}: {reason}")]
    Render {
        /// The setting: `to`, `body.name`, `headers.x-id`, `items[0]`.
        field: String,
        /// Why, as the template environment said it.
        reason: String,
    },
}

impl RunError {
    /// The step setting the error is about, when it is about one.
    pub fn field(&self) -> Option<&str> {
        match self {
            RunError::Render { field, .. } => Some(field),
            _ => None,
        }
    }
}
