//! The summary: text for people, JSON (`--json`) for scripts. Field names are the JSON keys.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::procfs::Memory;
use crate::session::Proto;

/// The run's settings, repeated in the report.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub gateway: String,
    pub threads: usize,
    pub concurrency: usize,
    /// New handshakes per second asked for (0: unlimited).
    pub rate: f64,
    pub hold_secs: u64,
    pub pps: f64,
    pub packet_size: usize,
    /// Site-to-site peers.
    pub sites: usize,
}

/// Handshake latency percentiles, milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Latency {
    fn of(mut l: Vec<Duration>) -> Self {
        if l.is_empty() {
            return Latency::default();
        }
        l.sort_unstable();
        let at = |q: f64| {
            let i = ((l.len() as f64 * q).ceil() as usize).clamp(1, l.len()) - 1;
            l[i].as_secs_f64() * 1000.0
        };
        Latency {
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            max: at(1.0),
        }
    }
}

/// One protocol: its handshake phase and how its sessions fared in the hold.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseReport {
    pub proto: Proto,
    pub requested: usize,
    pub established: usize,
    pub failed: usize,
    /// From the first handshake started to the last one finished.
    pub seconds: f64,
    pub handshakes_per_sec: f64,
    pub latency_ms: Latency,
    /// Failure reasons (digits replaced by '#') and how often.
    pub failures: BTreeMap<String, usize>,
    /// Gateway CPU time during the phase per established handshake (needs --gateway-pid).
    pub gateway_cpu_ms_per_handshake: Option<f64>,
    /// Handshakes per second one gateway core would do at that cost (1000 / the above).
    pub gateway_handshakes_per_core_sec: Option<f64>,
    /// Gateway CPU use during the phase, % of one core.
    pub gateway_cpu_percent: Option<f64>,
    /// This process's CPU time per established handshake.
    pub loadgen_cpu_ms_per_handshake: Option<f64>,
    /// Up and not closed when the hold ended.
    pub held: usize,
    /// Held, but nothing from the gateway for --silent-after seconds.
    pub silent: usize,
    /// Were up, then ended before the hold was over.
    pub lost: usize,
    pub lost_reasons: BTreeMap<String, usize>,
}

impl PhaseReport {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        proto: Proto,
        requested: usize,
        established: usize,
        failed: usize,
        elapsed: Duration,
        latencies: Vec<Duration>,
        failures: BTreeMap<String, usize>,
        gateway_cpu: Option<Duration>,
        own_cpu: Option<Duration>,
    ) -> Self {
        let secs = elapsed.as_secs_f64();
        let per = |cpu: Option<Duration>| {
            cpu.filter(|_| established > 0)
                .map(|c| c.as_secs_f64() * 1000.0 / established as f64)
        };
        let gw_ms = per(gateway_cpu);
        PhaseReport {
            proto,
            requested,
            established,
            failed,
            seconds: secs,
            handshakes_per_sec: if secs > 0.0 {
                established as f64 / secs
            } else {
                0.0
            },
            latency_ms: Latency::of(latencies),
            failures,
            gateway_cpu_ms_per_handshake: gw_ms,
            gateway_handshakes_per_core_sec: gw_ms.filter(|m| *m > 0.0).map(|m| 1000.0 / m),
            gateway_cpu_percent: gateway_cpu
                .filter(|_| secs > 0.0)
                .map(|c| c.as_secs_f64() / secs * 100.0),
            loadgen_cpu_ms_per_handshake: per(own_cpu),
            held: 0,
            silent: 0,
            lost: 0,
            lost_reasons: BTreeMap::new(),
        }
    }
}

/// The gateway's resident memory (KiB) at each point of the run.
#[derive(Debug, Clone, Serialize)]
pub struct GatewayMemory {
    pub pid: u32,
    pub before_kib: u64,
    pub established_kib: Option<u64>,
    pub end_of_hold_kib: Option<u64>,
    pub after_teardown_kib: Option<u64>,
    /// Highest VmRSS sampled (every 250 ms).
    pub peak_sampled_kib: u64,
    /// VmHWM at the end of the hold (the kernel's peak since the gateway started).
    pub hwm_kib: Option<u64>,
    /// (end of hold - before) / sessions held; falls back to established when nothing was held.
    pub per_session_kib: Option<f64>,
}

impl GatewayMemory {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        pid: u32,
        before: Memory,
        established: Option<Memory>,
        end: Option<Memory>,
        after: Option<Memory>,
        peak: u64,
        held: usize,
        up: usize,
    ) -> Self {
        let per_session_kib = match (end, established) {
            (Some(e), _) if held > 0 => {
                Some(e.rss_kib.saturating_sub(before.rss_kib) as f64 / held as f64)
            }
            (_, Some(e)) if up > 0 => {
                Some(e.rss_kib.saturating_sub(before.rss_kib) as f64 / up as f64)
            }
            _ => None,
        };
        GatewayMemory {
            pid,
            before_kib: before.rss_kib,
            established_kib: established.map(|m| m.rss_kib),
            end_of_hold_kib: end.map(|m| m.rss_kib),
            after_teardown_kib: after.map(|m| m.rss_kib),
            peak_sampled_kib: peak.max(before.rss_kib),
            hwm_kib: end.map(|m| m.hwm_kib),
            per_session_kib,
        }
    }
}

/// Inner packets during the hold, all sessions together.
#[derive(Debug, Clone, Serialize)]
pub struct TrafficReport {
    pub pps_per_session: f64,
    pub packet_size: usize,
    pub seconds: f64,
    pub sent_packets: u64,
    pub sent_bytes: u64,
    pub received_packets: u64,
    pub received_bytes: u64,
    /// Echo replies to our own requests.
    pub echo_replies: u64,
    pub send_drops: u64,
    pub malformed: u64,
}

impl TrafficReport {
    fn mbit(&self, bytes: u64) -> f64 {
        bytes as f64 * 8.0 / self.seconds.max(1e-3) / 1e6
    }
}

/// Everything the run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub settings: Settings,
    pub phases: Vec<PhaseReport>,
    pub hold_seconds: f64,
    /// Sessions up when the hold ended, all protocols.
    pub held: usize,
    pub gateway_memory: Option<GatewayMemory>,
    pub traffic: Option<TrafficReport>,
    /// Per-site figures (with --sites).
    pub sites: Option<crate::site_report::SitesReport>,
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

impl Report {
    /// The human-readable summary.
    pub fn text(&self) -> String {
        let mut o = String::new();
        let s = &self.settings;
        let _ = writeln!(
            o,
            "gatehouse-loadgen summary: gateway {}, {} threads, {} handshakes in flight at most, rate {}",
            s.gateway,
            s.threads,
            s.concurrency,
            if s.rate > 0.0 {
                format!("{}/s", s.rate)
            } else {
                "unlimited".into()
            }
        );
        for p in &self.phases {
            let _ = writeln!(
                o,
                "{:<8} {} requested: {} established, {} failed in {:.2} s -> {:.0} handshakes/s \
                 (latency p50 {:.0} ms, p90 {:.0} ms, p99 {:.0} ms, max {:.0} ms)",
                p.proto.to_string(),
                p.requested,
                p.established,
                p.failed,
                p.seconds,
                p.handshakes_per_sec,
                p.latency_ms.p50,
                p.latency_ms.p90,
                p.latency_ms.p99,
                p.latency_ms.max
            );
            if let (Some(ms), Some(pct)) = (p.gateway_cpu_ms_per_handshake, p.gateway_cpu_percent) {
                let _ = writeln!(
                    o,
                    "         gateway CPU {ms:.3} ms per handshake ({pct:.0}% of a core during the phase; \
                     = {:.0} handshakes per gateway core-second)",
                    p.gateway_handshakes_per_core_sec.unwrap_or(0.0)
                );
            }
            if let Some(ms) = p.loadgen_cpu_ms_per_handshake {
                let _ = writeln!(o, "         load generator CPU {ms:.3} ms per handshake");
            }
            for (why, n) in &p.failures {
                let _ = writeln!(o, "         failed x{n}: {why}");
            }
            let _ = writeln!(
                o,
                "         held at end of hold: {} of {} ({} silent), lost during the run: {}",
                p.held, p.established, p.silent, p.lost
            );
            for (why, n) in &p.lost_reasons {
                let _ = writeln!(o, "         lost x{n}: {why}");
            }
        }
        let up: usize = self.phases.iter().map(|p| p.established).sum();
        let _ = writeln!(
            o,
            "held     {} of {} sessions up after a {:.0} s hold",
            self.held, up, self.hold_seconds
        );
        if let Some(m) = &self.gateway_memory {
            let opt = |v: Option<u64>| v.map_or("-".into(), mib);
            let _ = writeln!(
                o,
                "gateway  pid {} RSS before {}, all up {}, end of hold {}, after teardown {}; peak sampled {}, VmHWM {}",
                m.pid,
                mib(m.before_kib),
                opt(m.established_kib),
                opt(m.end_of_hold_kib),
                opt(m.after_teardown_kib),
                mib(m.peak_sampled_kib),
                opt(m.hwm_kib)
            );
            if let Some(per) = m.per_session_kib {
                let _ = writeln!(o, "         {per:.1} KiB per session");
            }
        }
        if let Some(t) = &self.traffic {
            let loss = if t.sent_packets > 0 {
                100.0 * (1.0 - t.echo_replies as f64 / t.sent_packets as f64)
            } else {
                0.0
            };
            let _ = writeln!(
                o,
                "traffic  {:.0} s: sent {} packets ({:.2} Mbit/s), received {} ({:.2} Mbit/s), \
                 {} echo replies ({loss:.2}% without reply), {} send drops",
                t.seconds,
                t.sent_packets,
                t.mbit(t.sent_bytes),
                t.received_packets,
                t.mbit(t.received_bytes),
                t.echo_replies,
                t.send_drops
            );
        }
        if let Some(s) = &self.sites {
            o.push_str(&s.text());
        }
        o
    }
}
