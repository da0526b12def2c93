//! The app's state and its frame loop: drain the worker's events, sample the counters, draw.
//! Every slow thing is a [`Command`] to the worker; nothing here waits.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use gatehouse_client::status::{ConnectionState, Status};
use gatehouse_client::{KeyStore, StoredProfile};

use crate::clock::{Clock, SystemClock};
use crate::graph::Throughput;
use crate::logbook::{Filter, Level, Logbook};
use crate::profile_settings::NetworkSource;
use crate::settings::{Settings, ThemeChoice};
use crate::views::file_picker::FilePicker;
use crate::worker::{Command, Event, Worker, WorkerConfig};
use crate::{theme, views};

/// The window title (and the name screen readers announce).
pub const TITLE: &str = "Gatehouse";

/// Everything the app needs from outside. `main` fills it from the environment; tests fill
/// it with temporary folders, a fake service's socket and a hand-driven clock.
#[derive(Clone)]
pub struct AppConfig {
    /// The client home (`GATEHOUSE_HOME`): profiles, key files, `gui.toml`.
    pub home: PathBuf,
    /// The client service's socket (`GATEHOUSE_SOCKET`).
    pub socket: PathBuf,
    /// Where imported keys go; `None` detects the OS keyring (key files where none answers,
    /// or with `GATEHOUSE_KEYSTORE=file`).
    pub keys: Option<KeyStore>,
    /// The time source.
    pub clock: Arc<dyn Clock>,
    /// Pause between attempts to reach the client service.
    pub retry_every: Duration,
    /// The folder the file picker opens first.
    pub start_dir: PathBuf,
    /// Which network the computer is on ("Trust this network").
    pub network: NetworkSource,
}

impl AppConfig {
    /// The configuration `gatehouse-gui` runs with: `GATEHOUSE_HOME` and `GATEHOUSE_SOCKET`
    /// (read by client-core), the OS keyring, the wall clock, a retry every 2 s.
    pub fn from_env() -> AppConfig {
        let user_home = ["HOME", "USERPROFILE"]
            .iter()
            .find_map(|v| std::env::var_os(v).filter(|h| !h.is_empty()))
            .map_or_else(|| PathBuf::from("."), PathBuf::from);
        AppConfig {
            home: gatehouse_client::home_dir(),
            socket: gatehouse_client::service::socket_path(),
            keys: None,
            clock: Arc::new(SystemClock),
            retry_every: Duration::from_secs(2),
            start_dir: user_home,
            network: crate::profile_settings::system_network(),
        }
    }
}

/// Whether the client service answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceState {
    /// The first attempt is still under way.
    Unknown,
    /// Subscribed: status and log lines flow.
    Up,
    /// Not reachable; the reason says why and how to start it.
    Down(String),
}

/// Which view fills the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tab {
    Profiles,
    Log,
    Settings,
}

/// A message at the top of the window about something the user did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Notice {
    pub level: Level,
    pub title: String,
    pub lines: Vec<String>,
}

/// The desktop app.
pub struct GatehouseApp {
    pub(crate) worker: Worker,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) config: AppConfig,
    pub(crate) service: ServiceState,
    pub(crate) status: Status,
    pub(crate) profiles: Vec<StoredProfile>,
    pub(crate) profiles_loaded: bool,
    pub(crate) throughput: Throughput,
    pub(crate) log: Logbook,
    pub(crate) log_filter: Filter,
    pub(crate) settings: Settings,
    pub(crate) tab: Tab,
    pub(crate) picker: FilePicker,
    /// The profile being renamed and the name typed so far.
    pub(crate) renaming: Option<(String, String)>,
    /// The profile whose removal awaits confirmation.
    pub(crate) confirm_remove: Option<String>,
    /// The extra route being typed, per profile.
    pub(crate) route_input: std::collections::HashMap<String, String>,
    pub(crate) notice: Option<Notice>,
    /// A connect or disconnect the service has not answered yet.
    pub(crate) pending: bool,
    /// Auto-connect still to do once the service's status is known.
    auto_connect: bool,
    /// "Start minimised" still to do (on the first frame: the window must exist).
    minimise: bool,
    applied_theme: Option<ThemeChoice>,
}

impl GatehouseApp {
    /// Starts the worker and returns the app. Reads the small settings file right away: the
    /// first frame must already have the user's theme. Fails only if no thread can be
    /// started.
    pub fn new(ctx: &egui::Context, config: AppConfig) -> std::io::Result<GatehouseApp> {
        theme::install(ctx);
        let clock = config.clock.clone();
        let now = clock.unix_secs() as u64;
        let mut log = Logbook::default();
        let mut notice = None;
        let settings = match Settings::load(&config.home) {
            Ok(settings) => settings,
            Err(e) => {
                log.note(now, Level::Warn, e.to_string());
                notice = Some(Notice {
                    level: Level::Warn,
                    title: "Settings were not read".into(),
                    lines: vec![e.to_string()],
                });
                Settings::default()
            }
        };
        let repaint = ctx.clone();
        let worker = Worker::spawn(
            WorkerConfig {
                home: config.home.clone(),
                socket: config.socket.clone(),
                keys: config.keys.clone(),
                retry_every: config.retry_every,
                network: config.network.clone(),
            },
            move || repaint.request_repaint(),
        )?;
        let picker = FilePicker::new(config.start_dir.clone());
        Ok(GatehouseApp {
            worker,
            clock,
            service: ServiceState::Unknown,
            status: Status::default(),
            profiles: Vec::new(),
            profiles_loaded: false,
            throughput: Throughput::default(),
            log,
            log_filter: Filter::default(),
            auto_connect: settings.auto_connect,
            minimise: settings.start_minimised,
            settings,
            tab: Tab::Profiles,
            picker,
            renaming: None,
            confirm_remove: None,
            route_input: Default::default(),
            notice,
            pending: false,
            applied_theme: None,
            config,
        })
    }

    /// Whether the client service answers.
    pub fn service(&self) -> &ServiceState {
        &self.service
    }

    /// The service's latest status.
    pub fn status(&self) -> &Status {
        &self.status
    }

    /// The profiles, sorted by name.
    pub fn profiles(&self) -> &[StoredProfile] {
        &self.profiles
    }

    /// The throughput graph's samples.
    pub fn throughput(&self) -> &Throughput {
        &self.throughput
    }

    /// The log panel's lines.
    pub fn log(&self) -> &Logbook {
        &self.log
    }

    /// The settings in force.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub(crate) fn now(&self) -> u64 {
        self.clock.unix_secs() as u64
    }

    pub(crate) fn send(&self, command: Command) {
        self.worker.send(command);
    }

    /// Stores changed settings (the worker writes the file).
    pub(crate) fn settings_changed(&mut self) {
        self.send(Command::SaveSettings(self.settings.clone()));
    }

    pub(crate) fn set_notice(
        &mut self,
        level: Level,
        title: impl Into<String>,
        lines: Vec<String>,
    ) {
        self.notice = Some(Notice {
            level,
            title: title.into(),
            lines,
        });
    }

    /// Asks the service to connect `name`, with the user's protocol order.
    pub(crate) fn connect(&mut self, name: &str) {
        self.pending = true;
        self.send(Command::Connect {
            name: name.to_owned(),
            protocol_order: self.settings.protocol_order.clone(),
            kill_switch: self.settings.kill_switch,
            allow_lan: self.settings.allow_lan,
        });
        if self.settings.last_profile.as_deref() != Some(name) {
            self.settings.last_profile = Some(name.to_owned());
            self.settings_changed();
        }
    }

    /// Asks the service to disconnect.
    pub(crate) fn disconnect(&mut self) {
        self.pending = true;
        self.send(Command::Disconnect);
    }

    /// Applies everything the worker reported since the last frame.
    fn drain_events(&mut self) {
        while let Some(event) = self.worker.try_recv() {
            self.apply(event);
        }
    }

    fn apply(&mut self, event: Event) {
        let now = self.now();
        match event {
            Event::Profiles(profiles) => {
                if let Some((old, _)) = &self.renaming
                    && !profiles.iter().any(|p| &p.name == old)
                {
                    self.renaming = None;
                }
                self.profiles = profiles;
                self.profiles_loaded = true;
            }
            Event::Imported {
                name,
                warnings,
                key_note,
            } => {
                self.log.note(
                    now,
                    Level::Info,
                    format!("imported profile {name}; {key_note}"),
                );
                for w in &warnings {
                    self.log.note(now, Level::Warn, format!("{name}: {w}"));
                }
                let mut lines = vec![key_note];
                lines.extend(warnings.into_iter().map(|w| format!("Not used: {w}")));
                self.set_notice(Level::Info, format!("Imported profile {name}"), lines);
                self.picker.close();
            }
            Event::Renamed { old, new } => {
                self.log
                    .note(now, Level::Info, format!("renamed profile {old} to {new}"));
                self.renaming = None;
                if self.settings.last_profile.as_deref() == Some(old.as_str()) {
                    self.settings.last_profile = Some(new.clone());
                    self.settings_changed();
                }
                self.set_notice(Level::Info, format!("Renamed {old} to {new}"), Vec::new());
            }
            Event::Removed { name } => {
                self.log.note(
                    now,
                    Level::Info,
                    format!("removed profile {name} and its key"),
                );
                if self.settings.last_profile.as_deref() == Some(name.as_str()) {
                    self.settings.last_profile = None;
                    self.settings_changed();
                }
                self.set_notice(
                    Level::Info,
                    format!("Removed profile {name}"),
                    vec!["Its private key was deleted too.".into()],
                );
            }
            Event::ServiceUp => {
                if self.service != ServiceState::Up {
                    self.log
                        .note(now, Level::Info, "connected to the client service");
                    // The service keeps auto-connect profiles in memory: hand them over.
                    self.send(Command::ArmAutoConnect);
                }
                self.service = ServiceState::Up;
            }
            Event::ServiceDown { reason } => {
                if self.service != ServiceState::Down(reason.clone()) {
                    self.log.note(now, Level::Warn, reason.clone());
                }
                self.service = ServiceState::Down(reason);
            }
            Event::Status(status) => {
                self.status = status;
                self.maybe_auto_connect();
            }
            Event::Log(line) => self.log.push(line),
            // The subscription carries the status: a reply's snapshot may be older than what
            // it already delivered.
            Event::Accepted => self.pending = false,
            Event::Failed { what, message } => {
                self.pending = false;
                self.log
                    .note(now, Level::Error, format!("could not {what}: {message}"));
                if self.picker.is_open() && what.starts_with("import") {
                    self.picker.error = Some(message.clone());
                }
                self.set_notice(Level::Error, format!("Could not {what}"), vec![message]);
            }
            Event::SettingsSaved => {}
            Event::Listing { dir, entries } => self.picker.listed(dir, entries),
        }
    }

    /// Connects the last used profile once, when the app starts with auto-connect on and the
    /// service is idle.
    fn maybe_auto_connect(&mut self) {
        if !self.auto_connect || self.service != ServiceState::Up || !self.profiles_loaded {
            return;
        }
        self.auto_connect = false;
        let idle = matches!(
            self.status.state,
            ConnectionState::Disconnected | ConnectionState::Error { .. }
        );
        let Some(name) = self.settings.last_profile.clone() else {
            return;
        };
        if idle && self.profiles.iter().any(|p| p.name == name) {
            self.log.note(
                self.now(),
                Level::Info,
                format!("connecting {name} on launch"),
            );
            self.connect(&name);
        }
    }

    /// Samples the counters for the graph while a connection is up.
    fn sample(&mut self, ctx: &egui::Context) {
        match self.status.state {
            ConnectionState::Connected { .. } | ConnectionState::Reconnecting { .. } => {
                self.throughput
                    .offer(self.clock.unix_secs(), self.status.counters);
                // Keep the graph sliding and "connected for" counting.
                ctx.request_repaint_after(Duration::from_secs(1));
            }
            ConnectionState::Connecting { .. } => self.throughput.clear(),
            ConnectionState::Disconnected | ConnectionState::Error { .. } => {}
        }
    }

    /// Imports files dropped on the window (on the desktop every drop has a path; the
    /// worker reads it).
    fn take_dropped_files(&mut self, ctx: &egui::Context) {
        let dropped = ctx.input(|i| i.raw.dropped_files.clone());
        for file in dropped {
            self.send(Command::Import {
                path: file.path().to_path_buf(),
                name: None,
            });
        }
    }

    fn apply_theme(&mut self, ctx: &egui::Context) {
        if self.applied_theme != Some(self.settings.theme) {
            theme::apply(ctx, self.settings.theme);
            self.applied_theme = Some(self.settings.theme);
        }
    }
}

impl eframe::App for GatehouseApp {
    fn logic(&mut self, ctx: &egui::Context, _frame: &mut eframe::Frame) {
        if std::mem::take(&mut self.minimise) {
            ctx.send_viewport_cmd(egui::ViewportCommand::Minimized(true));
        }
        self.drain_events();
        // Profiles may arrive after the first status; auto-connect waits for both.
        self.maybe_auto_connect();
        self.take_dropped_files(ctx);
        self.sample(ctx);
        self.apply_theme(ctx);
    }

    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        views::show(self, ui);
    }
}
