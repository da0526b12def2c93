//! `gatehouse-loadgen`: many OpenVPN and IKEv2 client sessions from one process, on the
//! engine's client state machines (`ClientSession`, `IkeInitiator`), against a gateway.
//! Reports handshakes per second, sessions held, the gateway's memory per session and the
//! aggregate throughput of inner packets. See bench/loadgen/README.md.

mod creds;
mod packet;
mod procfs;
mod report;
mod session;
mod site_config;
mod site_layout;
mod site_report;
mod site_session;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinHandle;

use report::{GatewayMemory, PhaseReport, Report, TrafficReport};
use session::{Counters, Ctx, Phase, Proto, SessionEnd, SessionEvent};
use site_layout::{SiteArgs, SiteSpec};

#[derive(Parser, Debug)]
#[command(
    name = "gatehouse-loadgen",
    version,
    about = "Many OpenVPN and IKEv2 client sessions and IKEv2 site-to-site peers from one process, against a Gatehouse gateway",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Issue the client certificates PREFIX00000.. that the PKI lacks (ECDSA P-256), then exit.
    Issue(IssueArgs),
    /// Write a random pre-shared key file per site (--site-psk-dir, mode 0600) and print the
    /// gateway's matching `[[connection]]` entries for gateway.toml, then exit.
    SitesConfig(SiteArgs),
}

#[derive(Args, Debug)]
struct IssueArgs {
    /// The gateway's PKI folder (DATA_DIR/pki).
    #[arg(long)]
    pki: PathBuf,
    /// How many certificates there must be.
    #[arg(long)]
    count: usize,
    /// Certificate name prefix.
    #[arg(long, default_value = "lg-")]
    prefix: String,
    /// Threads issuing in parallel (each its own registry connection).
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

#[derive(Args, Debug)]
struct RunArgs {
    /// The gateway's address (what clients dial).
    #[arg(long)]
    gateway: Option<IpAddr>,
    /// The gateway's name in its certificate (TLS server name, IKEv2 identity); default: --gateway.
    #[arg(long)]
    gateway_id: Option<String>,
    /// OpenVPN UDP port.
    #[arg(long, default_value_t = 1194)]
    openvpn_port: u16,
    /// IKEv2 port.
    #[arg(long, default_value_t = 500)]
    ike_port: u16,
    /// OpenVPN (UDP) sessions.
    #[arg(long, default_value_t = 0)]
    openvpn: usize,
    /// IKEv2 sessions.
    #[arg(long, default_value_t = 0)]
    ikev2: usize,
    /// New handshakes started per second (0: as fast as --concurrency allows).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Handshakes in flight at most.
    #[arg(long, default_value_t = 128)]
    concurrency: usize,
    /// Seconds to hold every session up after all handshakes (keepalives keep them alive).
    #[arg(long, default_value_t = 0)]
    hold: u64,
    /// The gateway's PKI folder (DATA_DIR/pki): CA and client certificates PREFIX*.
    #[arg(long)]
    pki: Option<PathBuf>,
    /// Certificate name prefix (one certificate per session).
    #[arg(long, default_value = "lg-")]
    prefix: String,
    /// Issue missing client certificates first.
    #[arg(long)]
    issue: bool,
    /// Sample this process's (the gateway's) VmRSS from /proc.
    #[arg(long)]
    gateway_pid: Option<u32>,
    /// Inner packets (ICMP echo requests) per second per session during the hold (0: none).
    #[arg(long, default_value_t = 0.0)]
    pps: f64,
    /// Size of each inner packet, bytes (IPv4 header included; 28..=1400).
    #[arg(long, default_value_t = 100)]
    packet_size: usize,
    /// Where the echo requests go (default for OpenVPN: the pushed gateway address; IKEv2
    /// sessions need it).
    #[arg(long)]
    target: Option<Ipv4Addr>,
    /// Worker threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// A handshake not done after this many seconds fails.
    #[arg(long, default_value_t = 30)]
    handshake_timeout: u64,
    /// IKEv2 dead peer detection after this many idle seconds.
    #[arg(long, default_value_t = 30)]
    ike_dpd: u64,
    /// Send from this many consecutive addresses starting at --source-first (they must be
    /// on an interface of the namespace), session i from address i mod N: real clients
    /// come from many addresses, and the gateway caps handshakes per address.
    #[arg(long, default_value_t = 0)]
    sources: u32,
    /// The first source address (with --sources).
    #[arg(long)]
    source_first: Option<Ipv4Addr>,
    /// A held session that received nothing for this many seconds counts as silent.
    #[arg(long, default_value_t = 60)]
    silent_after: u64,
    /// Seconds each session may take to disconnect cleanly at the end.
    #[arg(long, default_value_t = 5)]
    linger: u64,
    /// Print the summary as JSON on stdout (progress stays on stderr).
    #[arg(long)]
    json: bool,
    /// No progress lines on stderr.
    #[arg(long)]
    quiet: bool,
    #[command(flatten)]
    site: SiteArgs,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Issue(a)) => {
            let n = creds::issue(&a.pki, &a.prefix, a.count, a.threads)?;
            eprintln!(
                "{} client certificates {}* present ({n} new)",
                a.count, a.prefix
            );
            return Ok(());
        }
        Some(Command::SitesConfig(a)) => {
            print!("{}", site_config::generate(&a)?);
            return Ok(());
        }
        None => {}
    }
    let args = cli.run;
    let threads = if args.threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        args.threads
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let report = rt.block_on(run(threads, &args))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.text());
    }
    Ok(())
}

/// What one session of a phase is.
enum Job {
    Openvpn(Arc<creds::Credential>),
    Ikev2(Arc<creds::Credential>),
    Site(Arc<SiteSpec>),
}

/// One protocol's handshake phase, as the controller counts it.
#[derive(Default)]
struct PhaseCount {
    up: usize,
    failed: usize,
    latencies: Vec<Duration>,
    failures: BTreeMap<String, usize>,
}

/// Sessions lost during the run (were up, then ended), by protocol and reason.
#[derive(Default)]
struct Lost {
    by_proto: BTreeMap<Proto, BTreeMap<String, usize>>,
}

impl Lost {
    fn add(&mut self, proto: Proto, reason: String) {
        *self
            .by_proto
            .entry(proto)
            .or_default()
            .entry(reason)
            .or_default() += 1;
    }
    fn count(&self, proto: Proto) -> usize {
        self.by_proto.get(&proto).map_or(0, |m| m.values().sum())
    }
}

impl PartialOrd for Proto {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Proto {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (*self as u8).cmp(&(*other as u8))
    }
}

/// Short form of a failure reason for grouping (numbers and addresses vary per session).
fn reason_key(reason: &str) -> String {
    let r: String = reason.chars().take(160).collect();
    r.chars()
        .map(|c| if c.is_ascii_digit() { '#' } else { c })
        .collect()
}

struct Controller {
    ctx: Arc<Ctx>,
    events: mpsc::UnboundedReceiver<SessionEvent>,
    lost: Lost,
    handles: Vec<JoinHandle<SessionEnd>>,
    gateway_pid: Option<String>,
    quiet: bool,
}

impl Controller {
    fn note(&mut self, ev: SessionEvent, proto: Proto, count: &mut PhaseCount) {
        match ev {
            SessionEvent::Up { proto: p, latency } if p == proto => {
                count.up += 1;
                count.latencies.push(latency);
            }
            SessionEvent::Failed { proto: p, reason } if p == proto => {
                count.failed += 1;
                *count.failures.entry(reason_key(&reason)).or_default() += 1;
            }
            SessionEvent::Lost { proto: p, reason } => self.lost.add(p, reason_key(&reason)),
            // Stragglers of another phase (cannot happen: phases run one after the other).
            SessionEvent::Up { .. } | SessionEvent::Failed { .. } => {}
        }
    }

    /// Starts `jobs.len()` sessions of `proto` and waits until each is up or failed.
    async fn phase(
        &mut self,
        proto: Proto,
        jobs: Vec<Job>,
        rate: f64,
        concurrency: usize,
        first_index: usize,
    ) -> PhaseReport {
        let n = jobs.len();
        let gw_cpu0 = self.gateway_pid.as_deref().and_then(procfs::cpu_time);
        let own_cpu0 = procfs::cpu_time("self");
        let started = Instant::now();
        let sem = Arc::new(Semaphore::new(concurrency.max(1)));
        let ctx = self.ctx.clone();
        let spawner = tokio::spawn(async move {
            let mut handles = Vec::with_capacity(jobs.len());
            let mut tick = (rate > 0.0).then(|| {
                let mut t = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
                t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                t
            });
            for (i, job) in jobs.into_iter().enumerate() {
                if let Some(t) = &mut tick {
                    t.tick().await;
                }
                let Ok(permit) = sem.clone().acquire_owned().await else {
                    break;
                };
                let ctx = ctx.clone();
                let index = first_index + i;
                handles.push(tokio::spawn(async move {
                    match job {
                        Job::Openvpn(cred) => session::openvpn(index, cred, ctx, permit).await,
                        Job::Ikev2(cred) => session::ikev2(index, cred, ctx, permit).await,
                        Job::Site(spec) => site_session::site(spec, ctx, permit).await,
                    }
                }));
            }
            handles
        });
        let mut count = PhaseCount::default();
        let mut progress = tokio::time::interval(Duration::from_secs(2));
        progress.tick().await;
        let mut last_done = Instant::now();
        while count.up + count.failed < n {
            tokio::select! {
                ev = self.events.recv() => {
                    let Some(ev) = ev else { break };
                    self.note(ev, proto, &mut count);
                    last_done = Instant::now();
                }
                _ = progress.tick() => {
                    if !self.quiet {
                        let secs = started.elapsed().as_secs_f64();
                        eprintln!(
                            "  {proto}: {}/{n} up, {} failed after {secs:.1} s ({:.0} handshakes/s){}",
                            count.up,
                            count.failed,
                            count.up as f64 / secs.max(1e-3),
                            self.rss_note()
                        );
                    }
                }
            }
        }
        let elapsed = last_done.saturating_duration_since(started);
        let gw_cpu = gw_cpu0.and_then(|c0| {
            let c1 = self.gateway_pid.as_deref().and_then(procfs::cpu_time)?;
            Some(c1.saturating_sub(c0))
        });
        let own_cpu = own_cpu0.and_then(|c0| Some(procfs::cpu_time("self")?.saturating_sub(c0)));
        if let Ok(h) = spawner.await {
            self.handles.extend(h);
        }
        PhaseReport::new(
            proto,
            n,
            count.up,
            count.failed,
            elapsed,
            count.latencies,
            count.failures,
            gw_cpu,
            own_cpu,
        )
    }

    fn rss_note(&self) -> String {
        match self.gateway_pid.as_deref().and_then(procfs::memory) {
            Some(m) => format!(", gateway RSS {:.1} MiB", m.rss_kib as f64 / 1024.0),
            None => String::new(),
        }
    }

    /// Drains events that arrived without blocking (sessions lost during the hold).
    fn drain_events(&mut self) {
        while let Ok(ev) = self.events.try_recv() {
            if let SessionEvent::Lost { proto, reason } = ev {
                self.lost.add(proto, reason_key(&reason));
            }
        }
    }
}

fn check_fd_limit(sessions: usize) -> Result<()> {
    let need = sessions as u64 + 64;
    if let Some(limit) = procfs::open_files_limit()
        && limit < need
    {
        bail!(
            "{sessions} sessions need {need} open files (one UDP socket each), the limit is {limit}: \
             raise it first (`ulimit -n {}`)",
            need.max(65536)
        );
    }
    Ok(())
}

async fn run(threads: usize, args: &RunArgs) -> Result<Report> {
    let settings = report::Settings {
        gateway: args.gateway.map(|g| g.to_string()).unwrap_or_default(),
        threads,
        concurrency: args.concurrency,
        rate: args.rate,
        hold_secs: args.hold,
        pps: args.pps,
        packet_size: args.packet_size,
        sites: args.site.sites,
    };
    let Some(gateway) = args.gateway else {
        bail!("--gateway ADDR is required (the address clients dial)");
    };
    let total = args.openvpn + args.ikev2;
    if total + args.site.sites == 0 {
        bail!("nothing to do: give --openvpn N, --ikev2 N and/or --sites N");
    }
    if args.pps > 0.0 && args.ikev2 + args.site.sites > 0 && args.target.is_none() {
        bail!(
            "--pps with IKEv2 sessions or sites needs --target IP (e.g. the gateway's tunnel address or a LAN host)"
        );
    }
    check_fd_limit(total + args.site.sites)?;
    let creds = match &args.pki {
        _ if total == 0 => creds::Credentials {
            ca: Vec::new(),
            clients: Vec::new(),
        },
        None => bail!(
            "--pki DIR is required (the gateway's DATA_DIR/pki, for the CA and client certificates)"
        ),
        Some(pki) => {
            if args.issue {
                let (pki, prefix) = (pki.clone(), args.prefix.clone());
                tokio::task::spawn_blocking(move || creds::issue(&pki, &prefix, total, 2))
                    .await
                    .context("issuing certificates")??;
            }
            let pki_dir = pki.clone();
            let prefix = args.prefix.clone();
            tokio::task::spawn_blocking(move || creds::load(&pki_dir, &prefix, total))
                .await
                .context("loading credentials")??
        }
    };
    let sites: Vec<Arc<SiteSpec>> = if args.site.sites > 0 {
        args.site.load()?.into_iter().map(Arc::new).collect()
    } else {
        Vec::new()
    };
    let rng = Arc::new(ring::rand::SystemRandom::new());
    let site_ctx = if sites.is_empty() {
        None
    } else {
        Some(site_session::SiteCtx::new(args.site.clone(), &rng)?)
    };
    let gateway_pid = args.gateway_pid.map(|p| p.to_string());
    if let Some(pid) = &gateway_pid
        && procfs::memory(pid).is_none()
    {
        bail!("--gateway-pid {pid}: no such process (or /proc/{pid}/status unreadable)");
    }
    let mem_before = gateway_pid.as_deref().and_then(procfs::memory);

    let (phase_tx, phase_rx) = watch::channel(Phase::Establish);
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let sources: Vec<Ipv4Addr> = match (args.sources, args.source_first) {
        (0, _) => Vec::new(),
        (n, Some(first)) => (0..n)
            .map(|i| Ipv4Addr::from(u32::from(first).wrapping_add(i)))
            .collect(),
        (_, None) => bail!("--sources N needs --source-first IP"),
    };
    let ctx = Arc::new(Ctx {
        ca: creds.ca.clone(),
        openvpn_addr: SocketAddr::new(gateway, args.openvpn_port),
        ike_addr: SocketAddr::new(gateway, args.ike_port),
        gateway_id: args
            .gateway_id
            .clone()
            .unwrap_or_else(|| gateway.to_string()),
        handshake_timeout: Duration::from_secs(args.handshake_timeout.max(1)),
        ike_dpd: Duration::from_secs(args.ike_dpd),
        silent_after: Duration::from_secs(args.silent_after),
        linger: Duration::from_secs(args.linger),
        pps: args.pps,
        packet_size: args.packet_size,
        target: args.target,
        counters: Counters::default(),
        events: events_tx,
        phase: phase_rx,
        rng,
        site: site_ctx,
        sources,
    });
    // Peak gateway RSS, sampled every 250 ms for the whole run.
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = gateway_pid.clone().map(|pid| {
        let peak = peak.clone();
        tokio::spawn(async move {
            let mut t = tokio::time::interval(Duration::from_millis(250));
            loop {
                t.tick().await;
                if let Some(m) = procfs::memory(&pid) {
                    peak.fetch_max(m.rss_kib, Ordering::Relaxed);
                }
            }
        })
    });

    let mut c = Controller {
        ctx: ctx.clone(),
        events: events_rx,
        lost: Lost::default(),
        handles: Vec::with_capacity(total + sites.len()),
        gateway_pid: gateway_pid.clone(),
        quiet: args.quiet,
    };
    let mut phases = Vec::new();
    let (ovpn_creds, ike_creds) = creds.clients.split_at(args.openvpn);
    if !args.quiet {
        eprintln!(
            "gatehouse-loadgen: {} OpenVPN + {} IKEv2 sessions + {} sites to {gateway}, {threads} threads, \
             {} in flight at most, rate {}",
            args.openvpn,
            args.ikev2,
            sites.len(),
            args.concurrency,
            if args.rate > 0.0 {
                format!("{}/s", args.rate)
            } else {
                "unlimited".into()
            }
        );
    }
    if !ovpn_creds.is_empty() {
        phases.push(
            c.phase(
                Proto::Openvpn,
                ovpn_creds.iter().cloned().map(Job::Openvpn).collect(),
                args.rate,
                args.concurrency,
                0,
            )
            .await,
        );
    }
    if !ike_creds.is_empty() {
        phases.push(
            c.phase(
                Proto::Ikev2,
                ike_creds.iter().cloned().map(Job::Ikev2).collect(),
                args.rate,
                args.concurrency,
                args.openvpn,
            )
            .await,
        );
    }
    if !sites.is_empty() {
        phases.push(
            c.phase(
                Proto::Site,
                sites.iter().cloned().map(Job::Site).collect(),
                args.rate,
                args.concurrency,
                total,
            )
            .await,
        );
    }
    c.drain_events();
    let mem_established = gateway_pid.as_deref().and_then(procfs::memory);

    // Hold: everyone up, keepalives (and traffic) flowing.
    let _ = phase_tx.send(Phase::Hold);
    let hold_start = Instant::now();
    let hold = Duration::from_secs(args.hold);
    let up_total: usize = phases.iter().map(|p| p.established).sum();
    if !hold.is_zero() && !args.quiet {
        eprintln!(
            "  holding {up_total} sessions for {} s{}",
            hold.as_secs(),
            if args.pps > 0.0 {
                format!(
                    ", {} inner packets/s each ({} bytes)",
                    args.pps, args.packet_size
                )
            } else {
                String::new()
            }
        );
    }
    let mut progress = tokio::time::interval(Duration::from_secs(10));
    progress.tick().await;
    let deadline = tokio::time::Instant::now() + hold;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => break,
            _ = progress.tick() => {
                c.drain_events();
                if !args.quiet {
                    let lost = c.lost.count(Proto::Openvpn)
                        + c.lost.count(Proto::Ikev2)
                        + c.lost.count(Proto::Site);
                    let secs = hold_start.elapsed().as_secs_f64();
                    let rx = ctx.counters.rx_bytes.load(Ordering::Relaxed) as f64;
                    eprintln!(
                        "  hold {secs:.0}/{} s: {} up, {lost} lost, rx {:.1} Mbit/s{}",
                        hold.as_secs(),
                        up_total.saturating_sub(lost),
                        rx * 8.0 / secs.max(1e-3) / 1e6,
                        c.rss_note()
                    );
                }
            }
            _ = tokio::signal::ctrl_c() => {
                eprintln!("  interrupted: ending the hold now");
                break;
            }
        }
    }
    let hold_secs = hold_start.elapsed();
    let mem_end = gateway_pid.as_deref().and_then(procfs::memory);
    let counters = &ctx.counters;
    let traffic = TrafficReport {
        pps_per_session: args.pps,
        packet_size: args.packet_size,
        seconds: hold_secs.as_secs_f64(),
        sent_packets: counters.tx_packets.load(Ordering::Relaxed),
        sent_bytes: counters.tx_bytes.load(Ordering::Relaxed),
        received_packets: counters.rx_packets.load(Ordering::Relaxed),
        received_bytes: counters.rx_bytes.load(Ordering::Relaxed),
        echo_replies: counters.echo_replies.load(Ordering::Relaxed),
        send_drops: counters.send_drops.load(Ordering::Relaxed),
        malformed: counters.malformed.load(Ordering::Relaxed),
    };

    // Stop: each session notes whether it is still up, then disconnects.
    let _ = phase_tx.send(Phase::Stop);
    let mut held: BTreeMap<Proto, (usize, usize)> = BTreeMap::new();
    let wait = Duration::from_secs(args.linger + 5);
    let teardown = Instant::now();
    for h in std::mem::take(&mut c.handles) {
        let left = wait.saturating_sub(teardown.elapsed());
        if let Ok(Ok(end)) = tokio::time::timeout(left, h).await {
            let e = held.entry(end.proto).or_default();
            e.0 += usize::from(end.held);
            e.1 += usize::from(end.held && end.silent);
        }
    }
    c.drain_events();
    // Let the gateway free what the deletes and EXITs released.
    let mem_after = if gateway_pid.is_some() {
        tokio::time::sleep(Duration::from_secs(2)).await;
        gateway_pid.as_deref().and_then(procfs::memory)
    } else {
        None
    };
    if let Some(s) = sampler {
        s.abort();
    }
    for p in &mut phases {
        let (h, s) = held.get(&p.proto).copied().unwrap_or_default();
        p.held = h;
        p.silent = s;
        p.lost = c.lost.count(p.proto);
        p.lost_reasons = c.lost.by_proto.remove(&p.proto).unwrap_or_default();
    }
    let held_total: usize = phases.iter().map(|p| p.held).sum();
    let memory = mem_before.map(|before| {
        GatewayMemory::new(
            args.gateway_pid.unwrap_or(0),
            before,
            mem_established,
            mem_end,
            mem_after,
            peak.load(Ordering::Relaxed),
            held_total,
            up_total,
        )
    });
    Ok(Report {
        settings,
        phases,
        hold_seconds: hold_secs.as_secs_f64(),
        held: held_total,
        gateway_memory: memory,
        traffic: (args.pps > 0.0).then_some(traffic),
        sites: ctx
            .site
            .as_ref()
            .map(|sc| site_report::SitesReport::new(&sites, &sc.stats)),
    })
}
