//! sea-orm entities of the metadata tables.

pub mod client;
pub mod project;
pub mod project_limit;
pub mod project_setting;
pub mod salt;
