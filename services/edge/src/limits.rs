//! Ingest rate limits per client and per source IP, enforced in memory
//! (governor, no Redis round trip). Each project may set its own rates;
//! otherwise the edge's configured defaults apply, and 0 means no limit.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Mutex;

use analytics_meta::{Project, RateLimits};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Most projects with limiters kept at once; past it they start afresh.
const MAX_PROJECTS: usize = 10_000;

struct ProjectLimiters {
    limits: RateLimits,
    per_client: Option<DefaultKeyedRateLimiter<String>>,
    per_ip: Option<DefaultKeyedRateLimiter<String>>,
}

fn limiter(per_second: u32) -> Option<DefaultKeyedRateLimiter<String>> {
    NonZeroU32::new(per_second).map(|rate| RateLimiter::keyed(Quota::per_second(rate)))
}

/// Which limit a request ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exceeded {
    Client,
    Ip,
}

pub struct IngestLimits {
    defaults: RateLimits,
    projects: Mutex<HashMap<String, ProjectLimiters>>,
}

impl IngestLimits {
    pub fn new(defaults: RateLimits) -> Self {
        IngestLimits {
            defaults,
            projects: Mutex::new(HashMap::new()),
        }
    }

    fn effective(&self, project: &Project) -> RateLimits {
        let pick = |own: u32, default: u32| if own > 0 { own } else { default };
        RateLimits {
            per_client: pick(project.rate_limits.per_client, self.defaults.per_client),
            per_ip: pick(project.rate_limits.per_ip, self.defaults.per_ip),
        }
    }

    /// Counts one request of `client` from `ip`.
    pub fn check(&self, project: &Project, client: &str, ip: &str) -> Result<(), Exceeded> {
        let limits = self.effective(project);
        if limits == RateLimits::default() {
            return Ok(());
        }
        let Ok(mut projects) = self.projects.lock() else {
            return Ok(());
        };
        if projects.len() >= MAX_PROJECTS && !projects.contains_key(&project.id) {
            projects.clear();
        }
        let entry = projects
            .entry(project.id.clone())
            .or_insert_with(|| ProjectLimiters {
                limits,
                per_client: limiter(limits.per_client),
                per_ip: limiter(limits.per_ip),
            });
        if entry.limits != limits {
            *entry = ProjectLimiters {
                limits,
                per_client: limiter(limits.per_client),
                per_ip: limiter(limits.per_ip),
            };
        }
        if let Some(l) = &entry.per_client
            && l.check_key(&client.to_owned()).is_err()
        {
            return Err(Exceeded::Client);
        }
        if let Some(l) = &entry.per_ip
            && l.check_key(&ip.to_owned()).is_err()
        {
            return Err(Exceeded::Ip);
        }
        Ok(())
    }

    /// Forgets keys whose limits are back to full, so memory follows the
    /// number of recently active clients and IPs.
    pub fn shrink(&self) {
        if let Ok(projects) = self.projects.lock() {
            for p in projects.values() {
                if let Some(l) = &p.per_client {
                    l.retain_recent();
                }
                if let Some(l) = &p.per_ip {
                    l.retain_recent();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project(per_client: u32, per_ip: u32) -> Project {
        Project {
            id: "p".into(),
            name: "p".into(),
            allowed_origins: vec![],
            rate_limits: RateLimits { per_client, per_ip },
        }
    }

    #[test]
    fn off_by_default_and_per_project_when_set() {
        let limits = IngestLimits::new(RateLimits::default());
        assert!((0..1_000).all(|_| limits.check(&project(0, 0), "c", "1.1.1.1").is_ok()));
        let p = project(0, 3);
        let results: Vec<_> = (0..5).map(|_| limits.check(&p, "c", "1.1.1.1")).collect();
        assert_eq!(results[..3], [Ok(()), Ok(()), Ok(())]);
        assert_eq!(results[4], Err(Exceeded::Ip));
        assert!(
            limits.check(&p, "c", "2.2.2.2").is_ok(),
            "another IP has its own budget"
        );
    }

    #[test]
    fn defaults_apply_when_a_project_sets_nothing() {
        let limits = IngestLimits::new(RateLimits {
            per_client: 2,
            per_ip: 0,
        });
        let p = project(0, 0);
        assert!(limits.check(&p, "c", "1.1.1.1").is_ok());
        assert!(limits.check(&p, "c", "1.1.1.2").is_ok());
        assert_eq!(limits.check(&p, "c", "1.1.1.3"), Err(Exceeded::Client));
        assert!(limits.check(&p, "other", "1.1.1.3").is_ok());
        limits.shrink();
    }
}
