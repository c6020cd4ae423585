//! Stream key names and partition choice.

/// A topic of the log; each has `partitions` stream keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topic {
    Raw,
    Enriched,
    /// Entries that failed too many deliveries, with the reason.
    Dead,
}

impl Topic {
    pub fn as_str(self) -> &'static str {
        match self {
            Topic::Raw => "raw",
            Topic::Enriched => "enriched",
            Topic::Dead => "dead",
        }
    }
}

/// `analytics:raw:{p3}`: the hash tag keeps partition 3 of every topic in one cluster slot.
pub fn stream_key(prefix: &str, topic: Topic, partition: u16) -> String {
    format!("{prefix}:{}:{{p{partition}}}", topic.as_str())
}

/// Partition of a (project, device) pair: stable across processes and
/// releases (FNV-1a), so one device's events always share a partition and
/// keep their order.
pub fn partition_for(project_id: &str, device_id: &str, partitions: u16) -> u16 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in project_id.bytes().chain([0xff]).chain(device_id.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % u64::from(partitions.max(1))) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_a_hash_tag_per_partition() {
        assert_eq!(stream_key("analytics", Topic::Raw, 3), "analytics:raw:{p3}");
        assert_eq!(stream_key("a", Topic::Enriched, 3), "a:enriched:{p3}");
    }

    #[test]
    fn partitions_are_stable_and_spread() {
        assert_eq!(partition_for("p", "d1", 8), partition_for("p", "d1", 8));
        let used: std::collections::HashSet<u16> = (0..200)
            .map(|i| partition_for("p", &format!("device-{i}"), 8))
            .collect();
        assert_eq!(used.len(), 8);
        assert!(used.iter().all(|p| *p < 8));
        // The separator keeps ("ab", "c") and ("a", "bc") apart.
        let a: Vec<u16> = (0..32).map(|n| partition_for("ab", "c", 64 + n)).collect();
        let b: Vec<u16> = (0..32).map(|n| partition_for("a", "bc", 64 + n)).collect();
        assert_ne!(a, b);
    }
}
