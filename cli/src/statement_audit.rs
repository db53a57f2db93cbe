//! The filters of `sluice audit --statements` (the search itself, over the workers'
//! statement event files and the session recordings, is `crate::recordings::statements`).

/// Filters for statement events.
#[derive(clap::Args, Debug, Default)]
pub struct StatementFilter {
    /// Only this user's statements.
    #[arg(long, requires = "statements")]
    pub user: Option<String>,
    /// Only statements on this resource.
    #[arg(long, requires = "statements")]
    pub resource: Option<String>,
    /// Only this class (read, write, ddl, ...).
    #[arg(long, requires = "statements")]
    pub class: Option<String>,
    /// Only this decision: allow, deny, approved, refused.
    #[arg(long, requires = "statements")]
    pub decision: Option<String>,
}
