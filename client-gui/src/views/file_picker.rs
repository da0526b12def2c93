//! A small file picker drawn with egui itself (no native dialog, so it works the same on
//! every platform and under test): browse folders, pick a Gatehouse profile or an `.ovpn`,
//! optionally name it, import. Folder listings come from the worker.

use std::path::{Path, PathBuf};

use egui::RichText;

use crate::app::GatehouseApp;
use crate::theme;
use crate::worker::{Command, DirEntry};

/// File name endings that are likely profiles; "Show all files" lifts the filter.
const PROFILE_EXTENSIONS: [&str; 4] = ["toml", "ovpn", "conf", "profile"];

/// The picker's state.
#[derive(Debug)]
pub(crate) struct FilePicker {
    open: bool,
    start_dir: PathBuf,
    dir: PathBuf,
    /// `None` while the worker lists `dir`.
    listing: Option<Result<Vec<DirEntry>, String>>,
    /// The file to import, picked from the list or typed.
    pub(crate) path: String,
    /// The name to import it under; empty means the profile's own.
    pub(crate) name: String,
    show_all: bool,
    /// Why the last import failed.
    pub(crate) error: Option<String>,
}

impl FilePicker {
    pub(crate) fn new(start_dir: PathBuf) -> FilePicker {
        FilePicker {
            open: false,
            dir: start_dir.clone(),
            start_dir,
            listing: None,
            path: String::new(),
            name: String::new(),
            show_all: false,
            error: None,
        }
    }

    /// Opens the picker; returns the listing command for the worker.
    pub(crate) fn open(&mut self) -> Command {
        self.open = true;
        self.error = None;
        self.path.clear();
        self.name.clear();
        self.go(self.dir.clone())
    }

    pub(crate) fn is_open(&self) -> bool {
        self.open
    }

    pub(crate) fn close(&mut self) {
        self.open = false;
    }

    fn go(&mut self, dir: PathBuf) -> Command {
        self.dir = dir.clone();
        self.listing = None;
        Command::ListDir(dir)
    }

    /// Takes a listing from the worker (a stale one, for a folder left since, is dropped).
    pub(crate) fn listed(&mut self, dir: PathBuf, entries: Result<Vec<DirEntry>, String>) {
        if dir == self.dir {
            self.listing = Some(entries);
        }
    }

    fn shows(&self, entry: &DirEntry) -> bool {
        entry.is_dir
            || self.show_all
            || Path::new(&entry.name)
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| PROFILE_EXTENSIONS.iter().any(|p| e.eq_ignore_ascii_case(p)))
    }
}

/// Draws the picker when it is open.
pub(crate) fn show(app: &mut GatehouseApp, ctx: &egui::Context) {
    if !app.picker.is_open() {
        return;
    }
    let mut command = None;
    let mut close = false;
    let modal = egui::Modal::new(egui::Id::unique("import_profile"))
        .frame(theme::dialog_frame(ctx))
        .show(ctx, |ui| {
            let picker = &mut app.picker;
            ui.set_width(560.0_f32.min(ctx.content_rect().width() - 64.0));
            ui.label(
                RichText::new("Import a profile")
                    .font(theme::large())
                    .strong(),
            );
            ui.label(
                "Choose the file your administrator sent you: a Gatehouse profile (.toml) or an \
             OpenVPN profile (.ovpn).",
            );
            ui.add_space(4.0);
            ui.horizontal(|ui| {
                let parent = picker.dir.parent().map(Path::to_path_buf);
                if ui
                    .add_enabled(parent.is_some(), egui::Button::new("Up"))
                    .clicked()
                    && let Some(parent) = parent
                {
                    command = Some(picker.go(parent));
                }
                if ui.button("Home").clicked() {
                    command = Some(picker.go(picker.start_dir.clone()));
                }
                ui.label(RichText::new(picker.dir.display().to_string()).monospace());
            });
            egui::Frame::canvas(ui.style())
                .inner_margin(egui::Margin::same(6))
                .show(ui, |ui| {
                    egui::ScrollArea::vertical()
                        .max_height(240.0)
                        .min_scrolled_height(240.0)
                        .auto_shrink([false, false])
                        .show(ui, |ui| match &picker.listing {
                            None => {
                                ui.spinner();
                            }
                            Some(Err(e)) => {
                                ui.label(RichText::new(e).color(theme::palette(ui).bad));
                            }
                            Some(Ok(entries)) => {
                                let mut shown = 0;
                                let mut clicked = None;
                                for entry in entries.iter().filter(|e| picker.shows(e)) {
                                    shown += 1;
                                    let text = if entry.is_dir {
                                        format!("{}/", entry.name)
                                    } else {
                                        entry.name.clone()
                                    };
                                    let selected = !entry.is_dir
                                        && picker.path == entry.path.display().to_string();
                                    if ui.selectable_label(selected, text).clicked() {
                                        clicked = Some(entry.clone());
                                    }
                                }
                                if shown == 0 {
                                    ui.label(RichText::new("No profiles in this folder").weak());
                                }
                                if let Some(entry) = clicked {
                                    if entry.is_dir {
                                        command = Some(picker.go(entry.path));
                                    } else {
                                        picker.path = entry.path.display().to_string();
                                    }
                                }
                            }
                        });
                });
            ui.checkbox(&mut picker.show_all, "Show all files");
            egui::Grid::new("import_fields")
                .num_columns(2)
                .spacing(egui::vec2(12.0, 8.0))
                .show(ui, |ui| {
                    let label = ui.label("File");
                    ui.add(
                        egui::TextEdit::singleline(&mut picker.path)
                            .hint_text("pick a file above or type its path")
                            .desired_width(f32::INFINITY),
                    )
                    .labelled_by(label.id);
                    ui.end_row();
                    let label = ui.label("Name");
                    ui.add(
                        egui::TextEdit::singleline(&mut picker.name)
                            .hint_text("optional; default: the profile's own name")
                            .desired_width(f32::INFINITY),
                    )
                    .labelled_by(label.id);
                    ui.end_row();
                });
            if let Some(error) = &picker.error {
                ui.label(RichText::new(error).color(theme::palette(ui).bad));
            }
            ui.add_space(4.0);
            ui.horizontal(|ui| {
                let path = picker.path.trim();
                if ui
                    .add_enabled(!path.is_empty(), egui::Button::new("Import"))
                    .clicked()
                {
                    picker.error = None;
                    let name = picker.name.trim();
                    command = Some(Command::Import {
                        path: PathBuf::from(path),
                        name: (!name.is_empty()).then(|| name.to_owned()),
                    });
                }
                if ui.button("Cancel").clicked() {
                    close = true;
                }
            });
        });
    if let Some(command) = command {
        app.send(command);
    }
    if close || modal.should_close() {
        app.picker.close();
    }
}
