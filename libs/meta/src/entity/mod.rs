//! sea-orm entities of the metadata tables.
//!
//! Every string column has an explicit type: keys and indexed columns a
//! bounded `varchar` (MySQL cannot index unbounded text, and its default
//! `varchar(255)` is too short for a list of origins), free text `Text`.

pub mod client;
pub mod project;
pub mod project_limit;
pub mod project_setting;
pub mod salt;
pub mod share;
