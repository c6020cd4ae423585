//! How many ids that are not known clients one address may have looked up
//! in the metadata database: a budget per address (IPv4, or IPv6 /64, the
//! smallest network one host is given), refilling over time.

use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Lookups per second an address regains. Known clients cost nothing, so
/// honest callers spend this only on a client's first request after a
/// start (or after its id was mistyped).
const PER_SECOND: NonZeroU32 = NonZeroU32::new(10).unwrap();
/// Lookups an address may make at once, e.g. a server sending for many
/// projects right after a restart of the edge.
const BURST: NonZeroU32 = NonZeroU32::new(50).unwrap();
/// Addresses tracked before those with a full budget are forgotten.
const TRACKED: usize = 10_000;

pub struct LookupBudget {
    /// `None`: callers whose address is not known, sharing one budget.
    limiter: DefaultKeyedRateLimiter<Option<IpAddr>>,
    shrunk_at: Mutex<Instant>,
}

impl LookupBudget {
    pub fn new() -> Self {
        LookupBudget {
            limiter: RateLimiter::keyed(Quota::per_second(PER_SECOND).allow_burst(BURST)),
            shrunk_at: Mutex::new(Instant::now()),
        }
    }

    /// Spends one lookup of `address`'s budget; false when it is used up.
    pub fn spend(&self, address: Option<IpAddr>) -> bool {
        let allowed = self.limiter.check_key(&address.map(network)).is_ok();
        self.shrink();
        allowed
    }

    /// Forgets addresses back to a full budget, at most once a second.
    fn shrink(&self) {
        if self.limiter.len() <= TRACKED {
            return;
        }
        if let Ok(mut at) = self.shrunk_at.try_lock()
            && at.elapsed() >= Duration::from_secs(1)
        {
            self.limiter.retain_recent();
            *at = Instant::now();
        }
    }
}

/// The network an address pays for: itself for IPv4, its /64 for IPv6.
fn network(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn each_address_has_a_budget_of_its_own() {
        let budget = LookupBudget::new();
        let spent = (0..BURST.get() + 5)
            .filter(|_| budget.spend(ip("192.0.2.1")))
            .count();
        assert_eq!(spent, BURST.get() as usize);
        assert!(budget.spend(ip("192.0.2.2")));
        assert!(budget.spend(None), "unknown callers share their own budget");
    }

    #[test]
    fn an_ipv6_64_pays_as_one_address() {
        let budget = LookupBudget::new();
        for n in 0..BURST.get() {
            assert!(budget.spend(ip(&format!("2001:db8:1:2::{n:x}"))));
        }
        assert!(!budget.spend(ip("2001:db8:1:2:ffff::1")));
        assert!(budget.spend(ip("2001:db8:1:3::1")));
        assert_eq!(
            network("::ffff:192.0.2.7".parse().unwrap()),
            ip("192.0.2.7").unwrap()
        );
    }
}
