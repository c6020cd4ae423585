//! CPU time of the processes a measurement involves: the pipeline (a child
//! of the harness), and the Redis and ClickHouse servers it was pointed at,
//! found by the loopback port they listen on. The generator (this process)
//! is left out.

use std::time::{Duration, Instant};

use serde::Serialize;

/// CPU seconds (user + system, with its reaped children) and peak
/// resident memory (MB) of a process.
pub fn process_usage(pid: u32) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // Own time and that of reaped children: Redis's AOF rewrites run in a
    // fork, and their CPU is as much the pipeline's cost as the parent's.
    let cpu = (ticks(11) + ticks(12) + ticks(13) + ticks(14)) / 100.0;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let peak_kb = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .unwrap_or(0.0);
    (cpu, peak_kb / 1024.0)
}

/// The process listening on TCP `port`: the socket's inode from
/// `/proc/net/tcp{,6}`, then the process holding it among `/proc/*/fd`.
pub fn listener_pid(port: u16) -> Option<u32> {
    let wanted = format!(":{port:04X}");
    let inode = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .flat_map(|table| {
            table
                .lines()
                .skip(1)
                .filter_map(|line| {
                    let f: Vec<&str> = line.split_whitespace().collect();
                    // local address, state 0A = LISTEN, inode
                    (f.len() > 9 && f[1].ends_with(&wanted) && f[3] == "0A")
                        .then(|| f[9].to_owned())
                })
                .collect::<Vec<_>>()
        })
        .next()?;
    let socket = format!("socket:[{inode}]");
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|dir| {
        let pid: u32 = dir.file_name().to_str()?.parse().ok()?;
        let holds = std::fs::read_dir(dir.path().join("fd"))
            .ok()?
            .flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l.to_str() == Some(&socket)));
        holds.then_some(pid)
    })
}

fn port_of(url: &str) -> Option<u16> {
    let rest = url.split("://").nth(1)?;
    let host_port = rest.split(['/', '?']).next()?;
    host_port.rsplit(':').next()?.parse().ok()
}

/// The servers of a run, by process id (absent when not found: then their
/// CPU is reported as zero and said so).
#[derive(Debug, Clone, Copy)]
pub struct Servers {
    pub redis: Option<u32>,
    pub clickhouse: Option<u32>,
}

impl Servers {
    pub fn find(redis_url: &str, clickhouse_url: &str) -> Servers {
        let servers = Servers {
            redis: port_of(redis_url).and_then(listener_pid),
            clickhouse: port_of(clickhouse_url).and_then(listener_pid),
        };
        if servers.redis.is_none() || servers.clickhouse.is_none() {
            eprintln!("cannot find the server processes ({servers:?}); their CPU counts as 0");
        }
        servers
    }

    pub fn clickhouse_seconds(&self) -> f64 {
        self.clickhouse.map_or(0.0, |pid| process_usage(pid).0)
    }

    pub fn redis_seconds(&self) -> f64 {
        self.redis.map_or(0.0, |pid| process_usage(pid).0)
    }
}

/// CPU seconds of each process at one moment.
#[derive(Debug, Clone, Copy)]
pub struct Reading {
    pipeline: f64,
    redis: f64,
    clickhouse: f64,
}

/// CPU microseconds per item of each process between two readings.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct PerItem {
    pub pipeline_us: f64,
    pub redis_us: f64,
    pub clickhouse_us: f64,
    pub total_us: f64,
}

impl Reading {
    pub fn take(pipeline: Option<u32>, servers: &Servers) -> Reading {
        Reading {
            pipeline: pipeline.map_or(0.0, |pid| process_usage(pid).0),
            redis: servers.redis_seconds(),
            clickhouse: servers.clickhouse_seconds(),
        }
    }

    pub fn per_item(&self, after: &Reading, items: u64) -> PerItem {
        let per = |a: f64, b: f64| (b - a) * 1e6 / (items.max(1) as f64);
        let pipeline_us = per(self.pipeline, after.pipeline);
        let redis_us = per(self.redis, after.redis);
        let clickhouse_us = per(self.clickhouse, after.clickhouse);
        PerItem {
            pipeline_us,
            redis_us,
            clickhouse_us,
            total_us: pipeline_us + redis_us + clickhouse_us,
        }
    }
}

/// Waits (at most a minute) until ClickHouse runs no merge, so that the CPU
/// read afterwards includes the merges the inserts caused.
pub async fn settle_merges(clickhouse_url: &str) {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(60) {
        let running = crate::clickhouse_query(
            clickhouse_url,
            "default",
            "SELECT count() FROM system.merges",
        )
        .ok()
        .and_then(|n| n.parse::<u64>().ok());
        if running == Some(0) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_come_from_redis_and_http_urls() {
        assert_eq!(port_of("redis://127.0.0.1:6390"), Some(6390));
        assert_eq!(port_of("redis://127.0.0.1:6390/0"), Some(6390));
        assert_eq!(port_of("http://127.0.0.1:8123"), Some(8123));
        assert_eq!(port_of("http://localhost:8123/?database=x"), Some(8123));
    }

    #[test]
    fn a_listening_socket_is_found_in_this_process() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert_eq!(listener_pid(port), Some(std::process::id()));
    }
}
