//! Redis keys of one raw partition and of the enricher's shared state.

use analytics_streams::{Topic, stream_key};

/// Keys one partition task works with.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
    partition: u16,
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

    /// Open session of a device (hash: id, start, last).
    pub fn session(&self, project: &str, device: &str) -> String {
        format!("{}:session:{{{project}:{device}}}", self.prefix)
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

    /// Dedupe buckets from `current` back `count - 1` buckets, in this
    /// partition's slot so the commit script can use them with the streams.
    pub fn dedupe_buckets(&self, current: u64, count: u64) -> Vec<String> {
        (0..count)
            .map(|back| {
                format!(
                    "{}:dedupe:{{p{}}}:{}",
                    self.prefix,
                    self.partition,
                    current.saturating_sub(back)
                )
            })
            .collect()
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
        let buckets = keys.dedupe_buckets(10, 3);
        assert_eq!(
            buckets,
            ["a:dedupe:{p3}:10", "a:dedupe:{p3}:9", "a:dedupe:{p3}:8"]
        );
        let (hash, applied) = keys.profile("proj", "user");
        assert_eq!(hash, "a:profile:{proj:user}");
        assert_eq!(applied, "a:profile:{proj:user}:applied");
    }
}
