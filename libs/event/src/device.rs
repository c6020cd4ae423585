//! Cookieless device ids.

use sha2::{Digest, Sha256};

/// A device id for a client that sent none: a hash of the day's salt, the
/// project, the IP and the user agent. The salt rotates daily, so ids cannot
/// be linked across days, and nothing personal is stored.
pub fn cookieless_device_id(salt: &str, project_id: &str, ip: &str, user_agent: &str) -> String {
    let mut hash = Sha256::new();
    for part in [salt, project_id, ip, user_agent] {
        hash.update(part.as_bytes());
        hash.update([0u8]);
    }
    hex::encode(&hash.finalize()[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookieless_ids_depend_on_every_input() {
        let base = cookieless_device_id("s", "p", "1.2.3.4", "ua");
        assert_eq!(base.len(), 32);
        assert_eq!(base, cookieless_device_id("s", "p", "1.2.3.4", "ua"));
        assert_ne!(base, cookieless_device_id("t", "p", "1.2.3.4", "ua"));
        assert_ne!(base, cookieless_device_id("s", "q", "1.2.3.4", "ua"));
        assert_ne!(base, cookieless_device_id("s", "p", "1.2.3.5", "ua"));
        assert_ne!(base, cookieless_device_id("s", "p", "1.2.3.4", "ub"));
    }
}
