//! The sites' part of the summary: how many came up and stayed up, echo replies per site,
//! CHILD and IKE SA rekeys per site, and one row per site (JSON).

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use serde::Serialize;

use crate::site_layout::SiteSpec;
use crate::site_session::SiteStats;

/// One site at the end of the run.
#[derive(Debug, Clone, Serialize)]
pub struct SiteRow {
    pub name: String,
    pub source: String,
    pub space: String,
    pub up: bool,
    pub held: bool,
    pub sent: u64,
    pub replies: u64,
    pub child_rekeys: u64,
    pub ike_rekeys: u64,
}

/// Smallest, median and largest of a per-site count.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Spread {
    pub min: u64,
    pub median: u64,
    pub max: u64,
    pub total: u64,
    /// Sites with at least one.
    pub sites_with_any: usize,
}

impl Spread {
    fn of(mut v: Vec<u64>) -> Self {
        if v.is_empty() {
            return Spread::default();
        }
        v.sort_unstable();
        Spread {
            min: v[0],
            median: v[v.len() / 2],
            max: v[v.len() - 1],
            total: v.iter().sum(),
            sites_with_any: v.iter().filter(|n| **n > 0).count(),
        }
    }
}

/// All sites.
#[derive(Debug, Clone, Serialize)]
pub struct SitesReport {
    pub sites: usize,
    /// Came up.
    pub up: usize,
    /// Still up when the hold ended.
    pub held: usize,
    pub sent: Spread,
    pub replies: Spread,
    pub child_rekeys: Spread,
    pub ike_rekeys: Spread,
    pub per_site: Vec<SiteRow>,
}

impl SitesReport {
    pub fn new(specs: &[std::sync::Arc<SiteSpec>], stats: &[SiteStats]) -> Self {
        let per_site: Vec<SiteRow> = specs
            .iter()
            .zip(stats)
            .map(|(s, st)| SiteRow {
                name: s.name.clone(),
                source: s.source.to_string(),
                space: s.space.to_string(),
                up: st.up.load(Ordering::Relaxed),
                held: st.held.load(Ordering::Relaxed),
                sent: st.sent.load(Ordering::Relaxed),
                replies: st.replies.load(Ordering::Relaxed),
                child_rekeys: st.child_rekeys.load(Ordering::Relaxed),
                ike_rekeys: st.ike_rekeys.load(Ordering::Relaxed),
            })
            .collect();
        let spread = |f: fn(&SiteRow) -> u64| Spread::of(per_site.iter().map(f).collect());
        SitesReport {
            sites: per_site.len(),
            up: per_site.iter().filter(|r| r.up).count(),
            held: per_site.iter().filter(|r| r.held).count(),
            sent: spread(|r| r.sent),
            replies: spread(|r| r.replies),
            child_rekeys: spread(|r| r.child_rekeys),
            ike_rekeys: spread(|r| r.ike_rekeys),
            per_site,
        }
    }

    /// Sites matching `f`, named (at most 10).
    fn names(&self, f: impl Fn(&SiteRow) -> bool) -> String {
        let v: Vec<&str> = self
            .per_site
            .iter()
            .filter(|r| f(r))
            .map(|r| r.name.as_str())
            .collect();
        let more = v.len().saturating_sub(10);
        let mut s = v.into_iter().take(10).collect::<Vec<_>>().join(", ");
        if more > 0 {
            let _ = write!(s, " and {more} more");
        }
        s
    }

    /// Lines for the text summary.
    pub fn text(&self) -> String {
        let mut o = String::new();
        let line = |name: &str, s: &Spread| {
            format!(
                "{name} per site min {} / median {} / max {} (total {}, {} of the sites had any)",
                s.min, s.median, s.max, s.total, s.sites_with_any
            )
        };
        let _ = writeln!(
            o,
            "sites    {} configured, {} came up, {} still up at the end of the hold",
            self.sites, self.up, self.held
        );
        let _ = writeln!(o, "         {}", line("echo requests", &self.sent));
        let _ = writeln!(o, "         {}", line("echo replies", &self.replies));
        let _ = writeln!(
            o,
            "         {}",
            line("CHILD SA rekeys", &self.child_rekeys)
        );
        let _ = writeln!(o, "         {}", line("IKE SA rekeys", &self.ike_rekeys));
        if self.held < self.sites {
            let _ = writeln!(o, "         not up at the end: {}", self.names(|r| !r.held));
        }
        let silent = self.names(|r| r.held && r.replies == 0);
        if !silent.is_empty() {
            let _ = writeln!(o, "         up but no echo reply: {silent}");
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spreads() {
        let s = Spread::of(vec![3, 0, 5, 4]);
        assert_eq!(
            (s.min, s.median, s.max, s.total, s.sites_with_any),
            (0, 4, 5, 12, 3)
        );
        let e = Spread::of(Vec::new());
        assert_eq!(e.total, 0);
    }
}
