//! The background worker: a thread with its own tokio runtime that owns every slow thing the
//! app does - the client-service socket, the profile store and keyring, the settings file,
//! folder listings for the file picker. The UI thread sends it [`Command`]s and drains
//! [`Event`]s without ever waiting; the worker wakes the UI (`request_repaint`) after each
//! event.
//!
//! Two activities run side by side on the runtime:
//! - the subscription: one long-lived connection to the service that streams status and log
//!   lines; when the service is not there it says why and tries again every
//!   [`WorkerConfig::retry_every`];
//! - the command loop: commands one at a time, in order (an import followed by a rename of
//!   the same profile must not swap), store work on the blocking pool.

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use gatehouse_client::manager::{ConnectRequest, LogLine};
use gatehouse_client::service::client::{ServiceClient, ServiceError};
use gatehouse_client::service::{Reply, Request};
use gatehouse_client::status::Status;
use gatehouse_client::{KeyStore, ProfileStore, ProtocolKind, StoredProfile};
use tokio::sync::mpsc as async_mpsc;

use crate::profile_settings::NetworkSource;
use crate::settings::{Settings, order_protocols};
use gatehouse_client::profile_settings::SettingsChange;

/// How long a command to the service may take before the app gives up on it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the worker finds things.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The client home: profiles, key files, the app's settings.
    pub home: PathBuf,
    /// The client service's socket.
    pub socket: PathBuf,
    /// Where new keys go; `None` finds out ([`KeyStore::detect`], which may take a moment,
    /// so it runs on the worker).
    pub keys: Option<KeyStore>,
    /// Pause between attempts to reach the service.
    pub retry_every: Duration,
    /// Which network the computer is on ("Trust this network").
    pub network: NetworkSource,
}

/// What the UI asks for.
#[derive(Debug)]
pub enum Command {
    /// List the profiles again.
    ReloadProfiles,
    /// Import a profile file (Gatehouse profile or `.ovpn`).
    Import {
        /// The file.
        path: PathBuf,
        /// Name to keep it under (default: the profile's own).
        name: Option<String>,
    },
    /// Rename a profile (its key moves along).
    Rename {
        /// Current name.
        old: String,
        /// New name.
        new: String,
    },
    /// Delete a profile and its key.
    Remove {
        /// The profile.
        name: String,
    },
    /// Ask the service to connect a profile, trying protocols in `protocol_order`.
    Connect {
        /// The profile.
        name: String,
        /// The user's protocol preference.
        protocol_order: Vec<ProtocolKind>,
        /// Connect with the kill switch, and whether it lets the local networks through.
        kill_switch: bool,
        allow_lan: bool,
    },
    /// Ask the service to disconnect.
    Disconnect,
    /// Change a profile's routing or auto-connect, then tell the service.
    UpdateProfile {
        /// The profile.
        name: String,
        /// What to change.
        change: SettingsChange,
    },
    /// Trust the network the computer is on now (no auto-connect here).
    TrustNetwork {
        /// The profile.
        name: String,
    },
    /// Hand the auto-connect profiles to the service (it just came up).
    ArmAutoConnect,
    /// Write the settings file.
    SaveSettings(Settings),
    /// List a folder for the file picker.
    ListDir(PathBuf),
}

/// One entry of a folder listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// File name.
    pub name: String,
    /// Full path.
    pub path: PathBuf,
    /// Whether it is a folder.
    pub is_dir: bool,
}

/// What the worker reports.
#[derive(Debug)]
pub enum Event {
    /// The current profiles, sorted by name.
    Profiles(Vec<StoredProfile>),
    /// A profile was imported.
    Imported {
        /// Its name.
        name: String,
        /// What in the file Gatehouse ignores.
        warnings: Vec<String>,
        /// Where its key went.
        key_note: String,
    },
    /// A profile was renamed.
    Renamed {
        /// Old name.
        old: String,
        /// New name.
        new: String,
    },
    /// A profile was removed.
    Removed {
        /// Its name.
        name: String,
    },
    /// The subscription to the service is up.
    ServiceUp,
    /// The service cannot be reached; `reason` says why and how to start it.
    ServiceDown {
        /// The explanation.
        reason: String,
    },
    /// A status update from the service.
    Status(Status),
    /// A log line from the service.
    Log(LogLine),
    /// The service took a connect or disconnect (the subscription reports what follows).
    Accepted,
    /// Something the user asked for failed.
    Failed {
        /// What was being done, as a phrase ("import alice.ovpn").
        what: String,
        /// Why, and what to do.
        message: String,
    },
    /// The settings file was written.
    SettingsSaved,
    /// A folder listing for the file picker.
    Listing {
        /// The folder.
        dir: PathBuf,
        /// Its entries (folders first) or why it could not be read.
        entries: Result<Vec<DirEntry>, String>,
    },
}

/// Sends events to the UI and wakes it.
#[derive(Clone)]
struct EventSink {
    tx: mpsc::Sender<Event>,
    wake: Arc<dyn Fn() + Send + Sync>,
}

impl EventSink {
    fn send(&self, event: Event) {
        // The UI is gone when this fails; the worker is about to be dropped too.
        let _ = self.tx.send(event);
        (self.wake)();
    }
}

/// The UI's handle on the worker. Dropping it stops the worker.
pub struct Worker {
    commands: async_mpsc::UnboundedSender<Command>,
    events: mpsc::Receiver<Event>,
}

impl Worker {
    /// Starts the worker thread; `wake` is called after every event (the app passes
    /// `ctx.request_repaint`).
    pub fn spawn(
        config: WorkerConfig,
        wake: impl Fn() + Send + Sync + 'static,
    ) -> std::io::Result<Worker> {
        let (commands, command_rx) = async_mpsc::unbounded_channel();
        let (tx, events) = mpsc::channel();
        let sink = EventSink {
            tx,
            wake: Arc::new(wake),
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name("gatehouse-worker".into())
            .spawn(move || {
                runtime.block_on(run(config, command_rx, sink));
                // Do not wait for a keyring call that hangs: the app is closing.
                runtime.shutdown_background();
            })?;
        Ok(Worker { commands, events })
    }

    /// Queues a command; never blocks.
    pub fn send(&self, command: Command) {
        // Fails only once the worker has stopped, when nothing can be done anyway.
        let _ = self.commands.send(command);
    }

    /// The next event, if one is waiting; never blocks.
    pub fn try_recv(&self) -> Option<Event> {
        self.events.try_recv().ok()
    }
}

async fn run(
    config: WorkerConfig,
    mut commands: async_mpsc::UnboundedReceiver<Command>,
    sink: EventSink,
) {
    let subscription = tokio::spawn(subscribe(
        config.socket.clone(),
        config.retry_every,
        sink.clone(),
    ));
    let store = open_store(&config).await;
    match &store {
        Ok(store) => list(store, &sink).await,
        Err(message) => sink.send(Event::Failed {
            what: "open the profile store".into(),
            message: message.clone(),
        }),
    }
    while let Some(command) = commands.recv().await {
        match command {
            Command::SaveSettings(settings) => {
                let home = config.home.clone();
                match blocking(move || settings.save(&home).map_err(|e| e.to_string())).await {
                    Ok(()) => sink.send(Event::SettingsSaved),
                    Err(message) => sink.send(Event::Failed {
                        what: "save the settings".into(),
                        message,
                    }),
                }
            }
            Command::ListDir(dir) => {
                let listed = dir.clone();
                let entries = blocking(move || list_dir(&listed)).await;
                sink.send(Event::Listing { dir, entries });
            }
            Command::Disconnect => {
                let reply = request(&config.socket, Request::Disconnect).await;
                report(reply, "disconnect", &sink);
            }
            Command::UpdateProfile { name, change } => {
                if let Ok(store) = &store {
                    let what = format!("change {name}");
                    let done =
                        crate::profile_settings::update(store, &config.socket, name, change).await;
                    settled(store, what, done, &sink).await;
                }
            }
            Command::TrustNetwork { name } => {
                if let Ok(store) = &store {
                    let what = format!("trust this network for {name}");
                    let done = crate::profile_settings::trust_here(
                        store,
                        &config.socket,
                        name,
                        &config.network,
                    )
                    .await;
                    settled(store, what, done, &sink).await;
                }
            }
            Command::ArmAutoConnect => {
                if let Ok(store) = &store {
                    crate::profile_settings::arm_all(store, &config.socket).await;
                }
            }
            other => match &store {
                Ok(store) => store_command(store, other, &config.socket, &sink).await,
                Err(message) => sink.send(Event::Failed {
                    what: "use the profile store".into(),
                    message: message.clone(),
                }),
            },
        }
    }
    subscription.abort();
}

async fn open_store(config: &WorkerConfig) -> Result<Arc<ProfileStore>, String> {
    let home = config.home.clone();
    let keys = config.keys.clone();
    blocking(move || {
        let keys = keys.unwrap_or_else(|| KeyStore::detect(&home));
        ProfileStore::open(&home, keys)
            .map(Arc::new)
            .map_err(|e| e.to_string())
    })
    .await
}

/// After a settings change: the profiles again (the cards show what was saved), or why not.
async fn settled(
    store: &Arc<ProfileStore>,
    what: String,
    done: Result<(), String>,
    sink: &EventSink,
) {
    if let Err(message) = done {
        sink.send(Event::Failed { what, message });
    }
    list(store, sink).await;
}

/// Runs blocking work (files, keyring) off the runtime's thread.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|e| Err(format!("internal error: {e}")))
}

async fn list(store: &Arc<ProfileStore>, sink: &EventSink) {
    let store = store.clone();
    match blocking(move || store.list().map_err(|e| e.to_string())).await {
        Ok(profiles) => sink.send(Event::Profiles(profiles)),
        Err(message) => sink.send(Event::Failed {
            what: "list the profiles".into(),
            message,
        }),
    }
}

async fn store_command(
    store: &Arc<ProfileStore>,
    command: Command,
    socket: &Path,
    sink: &EventSink,
) {
    let s = store.clone();
    let (what, result) = match command {
        Command::ReloadProfiles => {
            list(store, sink).await;
            return;
        }
        Command::Import { path, name } => (
            format!("import {}", path.display()),
            blocking(move || s.import(&path, name.as_deref()).map_err(|e| e.to_string()))
                .await
                .map(|i| Event::Imported {
                    name: i.profile.name,
                    warnings: i.warnings,
                    key_note: i.key_note,
                }),
        ),
        Command::Rename { old, new } => (
            format!("rename {old}"),
            blocking(move || {
                s.rename(&old, &new)
                    .map(|p| Event::Renamed { old, new: p.name })
                    .map_err(|e| e.to_string())
            })
            .await,
        ),
        Command::Remove { name } => (
            format!("remove {name}"),
            blocking(move || {
                s.remove(&name)
                    .map(|p| Event::Removed { name: p.name })
                    .map_err(|e| e.to_string())
            })
            .await,
        ),
        Command::Connect {
            name,
            protocol_order,
            kill_switch,
            allow_lan,
        } => {
            let what = format!("connect {name}");
            let prepared = blocking(move || {
                connect_request(&s, &name, &protocol_order)
                    .map(|mut req| {
                        req.kill_switch = kill_switch;
                        req.allow_lan = kill_switch && allow_lan;
                        req
                    })
                    .map_err(|e| e.to_string())
            })
            .await;
            match prepared {
                Ok(req) => {
                    let reply = request(
                        socket,
                        Request::Connect {
                            request: Box::new(req),
                        },
                    )
                    .await;
                    report(reply, &what, sink);
                }
                Err(message) => sink.send(Event::Failed { what, message }),
            }
            return;
        }
        // Handled by the caller; listed so a new command is not forgotten here.
        Command::Disconnect
        | Command::SaveSettings(_)
        | Command::ListDir(_)
        | Command::UpdateProfile { .. }
        | Command::TrustNetwork { .. }
        | Command::ArmAutoConnect => return,
    };
    match result {
        Ok(event) => {
            sink.send(event);
            list(store, sink).await;
        }
        Err(message) => sink.send(Event::Failed { what, message }),
    }
}

/// The request the service needs to connect profile `name`: the stored profile with its
/// protocols in the user's order, and the private key from the keyring (no kill switch).
pub fn connect_request(
    store: &ProfileStore,
    name: &str,
    protocol_order: &[ProtocolKind],
) -> gatehouse_client::Result<ConnectRequest> {
    let mut profile = store.get(name)?;
    profile.protocols = order_protocols(&profile.protocols, protocol_order);
    let key_pem = store.key_pem(name)?;
    Ok(ConnectRequest {
        profile,
        key_pem,
        protocol: None,
        kill_switch: false,
        allow_lan: false,
    })
}

/// One request on its own connection, as the CLI does, bounded by [`REQUEST_TIMEOUT`].
pub(crate) async fn request(socket: &Path, req: Request) -> Result<Reply, ServiceError> {
    let exchange = async {
        let mut client = ServiceClient::connect(socket).await?;
        client.request(&req).await
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
        Ok(result) => result,
        Err(_) => Err(ServiceError::Protocol(format!(
            "no answer within {} s; is the client service stuck? Restart it",
            REQUEST_TIMEOUT.as_secs()
        ))),
    }
}

fn report(reply: Result<Reply, ServiceError>, what: &str, sink: &EventSink) {
    match reply {
        Ok(Reply::Ok { .. } | Reply::Status { .. }) => sink.send(Event::Accepted),
        Ok(other) => sink.send(Event::Failed {
            what: what.into(),
            message: format!("unexpected answer from the client service: {other:?}"),
        }),
        Err(e) => sink.send(Event::Failed {
            what: what.into(),
            message: e.to_string(),
        }),
    }
}

/// Keeps one subscription open; reports why whenever the service is out of reach.
async fn subscribe(socket: PathBuf, retry_every: Duration, sink: EventSink) {
    loop {
        let Err(e) = follow(&socket, &sink).await;
        let reason = match e {
            ServiceError::Io(e) => {
                format!("lost the connection to the client service ({e}); is it still running?")
            }
            e => e.to_string(),
        };
        sink.send(Event::ServiceDown { reason });
        tokio::time::sleep(retry_every).await;
    }
}

/// Subscribes and forwards every update until the connection fails.
async fn follow(socket: &Path, sink: &EventSink) -> Result<Infallible, ServiceError> {
    let mut client = ServiceClient::connect(socket).await?;
    let mut reply = client.request(&Request::Subscribe).await?;
    sink.send(Event::ServiceUp);
    loop {
        match reply {
            Reply::Status { status } => sink.send(Event::Status(status)),
            Reply::Log { line } => sink.send(Event::Log(line)),
            Reply::Ok { .. } | Reply::Error { .. } => {}
        }
        reply = client.next().await?;
    }
}

fn list_dir(dir: &Path) -> Result<Vec<DirEntry>, String> {
    let read = std::fs::read_dir(dir).map_err(|e| format!("cannot open {}: {e}", dir.display()))?;
    let mut entries: Vec<DirEntry> = read
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                return None;
            }
            let path = entry.path();
            // Follows symbolic links, so a linked folder opens like a folder.
            let is_dir = path.is_dir();
            Some(DirEntry { name, path, is_dir })
        })
        .collect();
    entries.sort_by(|a, b| {
        b.is_dir
            .cmp(&a.is_dir)
            .then_with(|| a.name.to_lowercase().cmp(&b.name.to_lowercase()))
    });
    Ok(entries)
}
