//! Redis keys of one raw partition, of its owner's changelog and of the
//! enricher's shared state.

use analytics_streams::{Topic, stream_key};

/// Keys one partition task works with.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
    pub partition: u16,
    pub raw: String,
    pub enriched: String,
    pub dead: String,
}

impl Keys {
    pub fn new(prefix: &str, partition: u16) -> Keys {
        Keys {
            prefix: prefix.to_owned(),
            partition,
            raw: stream_key(prefix, Topic::Raw, partition),
            enriched: stream_key(prefix, Topic::Enriched, partition),
            dead: stream_key(prefix, Topic::Dead, partition),
        }
    }

    /// The partition's sessions log (see [`crate::state`]).
    pub fn sessions_log(&self) -> String {
        format!("{}:sessions-log:{{p{}}}", self.prefix, self.partition)
    }

    /// The partition's open sessions as the earlier layout kept them (a
    /// hash: device key → session); read by a restore, deleted by the
    /// snapshot that follows.
    pub fn legacy_sessions(&self) -> String {
        format!("{}:sessions:{{p{}}}", self.prefix, self.partition)
    }

    /// The profile a device was last identified as.
    pub fn device_profile(&self, project: &str, device: &str) -> String {
        format!("{}:device-profile:{{{project}:{device}}}", self.prefix)
    }

    /// The profile an alias stands for.
    pub fn alias(&self, project: &str, alias: &str) -> String {
        format!("{}:alias:{{{project}:{alias}}}", self.prefix)
    }

    /// A profile's hash and the set of event ids already applied to it
    /// (same hash tag, so one script may use both).
    pub fn profile(&self, project: &str, profile: &str) -> (String, String) {
        let hash = format!("{}:profile:{{{project}:{profile}}}", self.prefix);
        let applied = format!("{hash}:applied");
        (hash, applied)
    }

    /// The log of dedupe bucket number `bucket` (the keys committed in
    /// it), in this partition's slot so the commit script can use it with
    /// the streams.
    pub fn dedupe_log(&self, bucket: u64) -> String {
        format!(
            "{}:dedupe-log:{{p{}}}:{bucket}",
            self.prefix, self.partition
        )
    }

    /// The log of the content keys (events without a client id) received
    /// in receive-time bucket `bucket`.
    pub fn content_log(&self, bucket: u64) -> String {
        format!(
            "{}:dedupe-content:{{p{}}}:{bucket}",
            self.prefix, self.partition
        )
    }

    /// The newest receive-time bucket of content keys the owner committed.
    pub fn content_head(&self) -> String {
        format!(
            "{}:dedupe-content-head:{{p{}}}",
            self.prefix, self.partition
        )
    }

    /// Dedupe bucket number `bucket` as the earlier layout kept it (a hash
    /// of the keys); read by a restore until it expires with the window.
    pub fn legacy_dedupe_bucket(&self, bucket: u64) -> String {
        format!("{}:dedupe:{{p{}}}:{bucket}", self.prefix, self.partition)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_that_are_used_together_share_a_hash_tag() {
        let keys = Keys::new("a", 3);
        assert_eq!(keys.raw, "a:raw:{p3}");
        assert_eq!(keys.enriched, "a:enriched:{p3}");
        assert_eq!(keys.dedupe_log(10), "a:dedupe-log:{p3}:10");
        assert_eq!(keys.legacy_dedupe_bucket(10), "a:dedupe:{p3}:10");
        assert_eq!(keys.sessions_log(), "a:sessions-log:{p3}");
        assert_eq!(keys.content_log(9), "a:dedupe-content:{p3}:9");
        assert_eq!(keys.content_head(), "a:dedupe-content-head:{p3}");
        assert_eq!(keys.legacy_sessions(), "a:sessions:{p3}");
        let (hash, applied) = keys.profile("proj", "user");
        assert_eq!(hash, "a:profile:{proj:user}");
        assert_eq!(applied, "a:profile:{proj:user}:applied");
    }
}
