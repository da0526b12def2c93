//! What the GUI tests share: a fake client service speaking the real JSON-lines protocol
//! (client-core's `Request` / `Reply` types) on a temporary Unix socket, a profile exported
//! by the real PKI library, and the app in a kittest harness with a hand-driven clock.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use egui_kittest::Harness;
use egui_kittest::kittest::{NodeT, Queryable};
use gatehouse_certs::{CaOptions, Format, Pki, Validity};
use gatehouse_client::KeyStore;
use gatehouse_client::manager::{ConnectRequest, LogLine};
use gatehouse_client::service::{Reply, Request};
use gatehouse_client::status::{ConnectionState, Counters, Status};
use gatehouse_client::trusted::NetworkId;
use gatehouse_gui::clock::ManualClock;
use gatehouse_gui::{AppConfig, GatehouseApp};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::broadcast;

/// The moment every test starts at (2026-11-18 11:06:40 UTC).
pub const T0: u64 = 1_795_000_000;

/// What the fake service knows and was told.
#[derive(Default)]
struct Shared {
    status: Status,
    connects: Vec<ConnectRequest>,
    disconnects: usize,
    auto_connects: Vec<ConnectRequest>,
}

/// A client service that answers like the real one but whose connection state the test
/// drives: Connect moves it to Connecting, and the test says when it is Connected.
pub struct FakeService {
    socket: PathBuf,
    shared: Arc<Mutex<Shared>>,
    updates: broadcast::Sender<Reply>,
    _runtime: tokio::runtime::Runtime,
}

impl FakeService {
    /// Starts listening on `socket`.
    pub fn start(socket: &Path) -> FakeService {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let shared = Arc::new(Mutex::new(Shared::default()));
        let (updates, _) = broadcast::channel(1024);
        let listener = {
            let _guard = runtime.enter();
            UnixListener::bind(socket).unwrap()
        };
        let (s, u) = (shared.clone(), updates.clone());
        runtime.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(serve(stream, s.clone(), u.clone()));
            }
        });
        FakeService {
            socket: socket.to_path_buf(),
            shared,
            updates,
            _runtime: runtime,
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sets the state and tells subscribers.
    pub fn set_state(&self, state: ConnectionState) {
        let status = {
            let mut shared = self.shared.lock().unwrap();
            shared.status.state = state;
            shared.status.clone()
        };
        let _ = self.updates.send(Reply::Status { status });
    }

    /// Sets the counters and tells subscribers.
    pub fn set_counters(&self, rx_bytes: u64, tx_bytes: u64) {
        let status = {
            let mut shared = self.shared.lock().unwrap();
            shared.status.counters = Counters {
                rx_bytes,
                tx_bytes,
                rx_packets: rx_bytes / 1000,
                tx_packets: tx_bytes / 1000,
            };
            shared.status.clone()
        };
        let _ = self.updates.send(Reply::Status { status });
    }

    /// Sets how often the connection moved to a new network, and tells subscribers.
    pub fn set_path_changes(&self, path_changes: u32) {
        let status = {
            let mut shared = self.shared.lock().unwrap();
            shared.status.path_changes = path_changes;
            shared.status.clone()
        };
        let _ = self.updates.send(Reply::Status { status });
    }

    /// Streams a log line to subscribers.
    pub fn log(&self, time: u64, level: &str, message: &str) {
        let _ = self.updates.send(Reply::Log {
            line: LogLine {
                time,
                level: level.into(),
                message: message.into(),
            },
        });
    }

    /// The connect requests received so far.
    pub fn connects(&self) -> Vec<ConnectRequest> {
        self.shared.lock().unwrap().connects.clone()
    }

    /// The auto-connect settings received so far.
    pub fn auto_connects(&self) -> Vec<ConnectRequest> {
        self.shared.lock().unwrap().auto_connects.clone()
    }

    /// How many disconnects were asked for.
    pub fn disconnects(&self) -> usize {
        self.shared.lock().unwrap().disconnects
    }
}

async fn send(stream: &mut tokio::net::unix::OwnedWriteHalf, reply: &Reply) -> bool {
    let mut line = serde_json::to_string(reply).unwrap();
    line.push('\n');
    stream.write_all(line.as_bytes()).await.is_ok()
}

async fn serve(stream: UnixStream, shared: Arc<Mutex<Shared>>, updates: broadcast::Sender<Reply>) {
    let (rd, mut wr) = stream.into_split();
    let mut lines = BufReader::new(rd).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let request: Request = match serde_json::from_str(&line) {
            Ok(r) => r,
            Err(e) => {
                let message = format!("bad request: {e}");
                send(&mut wr, &Reply::Error { message }).await;
                continue;
            }
        };
        let reply = match request {
            Request::Status => Reply::Status {
                status: shared.lock().unwrap().status.clone(),
            },
            Request::Connect { request } => {
                let profile = request.profile.name.clone();
                let protocol = request.profile.protocols[0].kind;
                let status = {
                    let mut s = shared.lock().unwrap();
                    s.connects.push(*request);
                    let request = s.status.request + 1;
                    s.status = Status {
                        state: ConnectionState::Connecting {
                            profile: profile.clone(),
                            protocol,
                        },
                        counters: Counters::default(),
                        request,
                        path_changes: 0,
                        kill_switch: false,
                    };
                    s.status.clone()
                };
                let _ = updates.send(Reply::Status {
                    status: status.clone(),
                });
                let _ = updates.send(Reply::Log {
                    line: LogLine {
                        time: T0,
                        level: "info".into(),
                        message: format!("{profile}: connecting over {protocol}"),
                    },
                });
                Reply::Ok { status }
            }
            Request::AutoConnect { request } => {
                let mut s = shared.lock().unwrap();
                s.auto_connects.push(*request);
                Reply::Ok {
                    status: s.status.clone(),
                }
            }
            Request::Disconnect => {
                let status = {
                    let mut s = shared.lock().unwrap();
                    s.disconnects += 1;
                    s.status.state = ConnectionState::Disconnected;
                    s.status.clone()
                };
                let _ = updates.send(Reply::Status {
                    status: status.clone(),
                });
                Reply::Ok { status }
            }
            Request::Subscribe => {
                // Subscribe before reading the status, so no change falls in between.
                let mut rx = updates.subscribe();
                let first = shared.lock().unwrap().status.clone();
                if !send(&mut wr, &Reply::Status { status: first }).await {
                    return;
                }
                while let Ok(update) = rx.recv().await {
                    if !send(&mut wr, &update).await {
                        return;
                    }
                }
                return;
            }
        };
        if !send(&mut wr, &reply).await {
            return;
        }
    }
}

/// A temporary world: client home, socket path, a folder holding the admin's profile files.
pub struct World {
    pub dir: tempfile::TempDir,
    pub home: PathBuf,
    pub socket: PathBuf,
    pub downloads: PathBuf,
    pub clock: ManualClock,
    pub keys: KeyStore,
    /// The network "Trust this network" sees.
    pub network: Arc<Mutex<Option<NetworkId>>>,
}

impl World {
    pub fn new() -> World {
        // A name of digits only, the same length on every run: the snapshots mask the texts
        // that show it, and those must not change width (or wrap) from run to run.
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "gatehouse-gui-{:07}-{:02}",
            std::process::id() % 10_000_000,
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        let _ = std::fs::remove_dir_all(Path::new("/tmp").join(&name));
        let dir = tempfile::Builder::new()
            .prefix(&name)
            .rand_bytes(0)
            .tempdir_in("/tmp")
            .unwrap();
        let home = dir.path().join("home");
        let downloads = dir.path().join("Downloads");
        std::fs::create_dir_all(&downloads).unwrap();
        World {
            socket: dir.path().join("client.sock"),
            home,
            downloads,
            clock: ManualClock::at(T0),
            keys: KeyStore::mock(),
            network: Arc::new(Mutex::new(None)),
            dir,
        }
    }

    /// Exports a Gatehouse profile for `name` (gateway vpn.example.com) into Downloads.
    pub fn profile_file(&self, name: &str) -> PathBuf {
        let mut pki = Pki::init(self.dir.path().join("pki"), &CaOptions::default()).unwrap();
        pki.issue_client(name, &Validity::default(), None).unwrap();
        let text = pki
            .export(name, "vpn.example.com", Format::Gatehouse, None)
            .unwrap();
        let path = self.downloads.join(format!("{name}.toml"));
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Writes the app's settings file before the app starts.
    pub fn settings(&self, toml: &str) {
        std::fs::create_dir_all(&self.home).unwrap();
        std::fs::write(self.home.join("gui.toml"), toml).unwrap();
    }

    pub fn config(&self) -> AppConfig {
        AppConfig {
            home: self.home.clone(),
            socket: self.socket.clone(),
            keys: Some(self.keys.clone()),
            clock: Arc::new(self.clock.clone()),
            retry_every: Duration::from_millis(100),
            start_dir: self.downloads.clone(),
            network: {
                let network = self.network.clone();
                gatehouse_gui::profile_settings::NetworkSource(Arc::new(move || {
                    network.lock().unwrap().clone()
                }))
            },
        }
    }

    /// The real app in a headless harness.
    pub fn harness(&self) -> Harness<'static, GatehouseApp> {
        let config = self.config();
        Harness::builder()
            .with_size(egui::vec2(900.0, 680.0))
            .build_eframe(move |cc| GatehouseApp::new(&cc.egui_ctx, config).unwrap())
    }
}

/// Steps the app until `done` holds, for at most ten seconds (the worker and the fake
/// service run on their own threads; each step shows what they reported so far).
#[track_caller]
pub fn step_until(
    harness: &mut Harness<'_, GatehouseApp>,
    what: &str,
    done: impl Fn(&Harness<'_, GatehouseApp>) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        harness.step();
        if done(harness) {
            // One more frame, so the tree reflects a state the app has fully laid out.
            harness.step();
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for: {what}; the window shows:\n{}",
            outline(harness)
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The window's accessibility tree as indented lines of role and text, for failure messages.
pub fn outline(harness: &Harness<'_, GatehouseApp>) -> String {
    fn walk(node: egui_kittest::kittest::AccessKitNode<'_>, depth: usize, out: &mut String) {
        let text = node.label().or_else(|| node.value()).unwrap_or_default();
        let disabled = if node.is_disabled() {
            " (disabled)"
        } else {
            ""
        };
        out.push_str(&format!(
            "{:indent$}{:?} {text:?}{disabled}\n",
            "",
            node.role(),
            indent = depth * 2
        ));
        for child in node.children() {
            walk(child, depth + 1, out);
        }
    }
    let mut out = String::new();
    walk(harness.root().accesskit_node(), 0, &mut out);
    out
}

/// Covers every text that names the test's temporary folder (it differs per run), so
/// snapshots compare what stays the same.
pub fn mask_temp_paths(harness: &mut Harness<'_, GatehouseApp>, world: &World) {
    let dir = world.dir.path().display().to_string();
    let right = harness.ctx.content_rect().max.x;
    let rects: Vec<egui::Rect> = harness
        .query_all_by_label_contains(&dir)
        .map(|n| n.rect())
        .collect();
    for rect in rects {
        // The whole width: where a long text wraps may shift a little with the digits.
        harness.mask(egui::Rect::from_x_y_ranges(
            rect.min.x..=right,
            rect.y_range(),
        ));
    }
}
