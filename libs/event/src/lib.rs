//! The event wire model shared by every stage, and the validation of what
//! clients send.
//!
//! Clients speak the OpenPanel body, `{"type": T, "payload": {...}}`, or post
//! a payload directly to a per-type route. [`validate`] turns a request body
//! into [`Incoming`] events or a [`ValidationError`] that names the offending
//! field. The edge stamps each incoming event with what only the server knows
//! (project, receive time, IP, user agent) to make a [`RawEvent`], which is
//! what travels on the raw stream in a binary form of its own, several to a
//! stream entry ([`push_raw_event`], [`raw_documents`]).

pub mod binary;
mod bundle;
mod device;
mod properties;
mod raw;
mod time;
mod validate;

pub use bundle::{RawDocument, bundle_documents, push_raw_event, raw_documents};
pub use device::cookieless_device_id;
pub use properties::{CONSUMED_PROPERTIES, Properties};
pub use raw::{EventKind, RawEvent};
pub use time::{format_rfc3339_millis, now_ms, parse_timestamp};
pub use validate::{Incoming, Limits, Route, ValidationError, max_json_depth, validate};
