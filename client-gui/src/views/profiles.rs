//! The profiles view: one card per profile with its big Connect / Disconnect button, its
//! state, and for the profile in use the connection details and the throughput graph; plus
//! import, rename and remove.

use egui::{Align, Layout, RichText};
use gatehouse_client::StoredProfile;
use gatehouse_client::status::ConnectionState;

use crate::app::{GatehouseApp, ServiceState};
use crate::theme;
use crate::views::{status, throughput};
use crate::worker::Command;

/// Width of the connection details beside the graph.
const DETAILS_WIDTH: f32 = 340.0;

/// What a click on a card asks for; applied after the cards are drawn.
enum Action {
    Connect(String),
    Disconnect,
    StartRename(String),
    SaveRename,
    CancelRename,
    AskRemove(String),
}

pub(super) fn show(app: &mut GatehouseApp, ui: &mut egui::Ui) {
    ui.horizontal(|ui| {
        ui.heading("Profiles");
        ui.with_layout(Layout::right_to_left(Align::Center), |ui| {
            if ui.button("Import profile").clicked() {
                let list = app.picker.open();
                app.send(list);
            }
        });
    });
    ui.add_space(4.0);
    if !app.profiles_loaded {
        ui.horizontal(|ui| {
            ui.spinner();
            ui.label("Reading the profiles...");
        });
        return;
    }
    if app.profiles.is_empty() {
        empty(ui);
        return;
    }
    let mut actions = Vec::new();
    // Cloned so the cards can borrow the rest of the app mutably (the rename field).
    let profiles = app.profiles.clone();
    egui::ScrollArea::vertical()
        .auto_shrink([false, false])
        .show(ui, |ui| {
            for profile in &profiles {
                card(app, ui, profile, &mut actions);
                ui.add_space(10.0);
            }
        });
    for action in actions {
        match action {
            Action::Connect(name) => app.connect(&name),
            Action::Disconnect => app.disconnect(),
            Action::StartRename(name) => app.renaming = Some((name.clone(), name)),
            Action::SaveRename => {
                if let Some((old, new)) = app.renaming.clone() {
                    app.send(Command::Rename {
                        old,
                        new: new.trim().to_owned(),
                    });
                }
            }
            Action::CancelRename => app.renaming = None,
            Action::AskRemove(name) => app.confirm_remove = Some(name),
        }
    }
}

fn empty(ui: &mut egui::Ui) {
    ui.add_space(24.0);
    ui.vertical_centered(|ui| {
        ui.label(
            RichText::new("No profiles yet")
                .font(theme::large())
                .strong(),
        );
        ui.label(
            "Import the profile file your administrator sent you: a Gatehouse profile \
             (.toml) or an OpenVPN profile (.ovpn).",
        );
        ui.label("Press Import profile, or drop the file on this window.");
    });
}

fn card(
    app: &mut GatehouseApp,
    ui: &mut egui::Ui,
    profile: &StoredProfile,
    actions: &mut Vec<Action>,
) {
    let palette = theme::palette(ui);
    let service_up = app.service == ServiceState::Up;
    let live = status::is_live(&app.status, &profile.name);
    egui::Frame::group(ui.style())
        .inner_margin(egui::Margin::same(16))
        .corner_radius(10.0)
        .show(ui, |ui| {
            ui.set_width(ui.available_width());
            ui.horizontal(|ui| {
                ui.vertical(|ui| title(app, ui, profile, actions));
                ui.with_layout(Layout::right_to_left(Align::Center), |ui| {
                    let (label, fill) = if live {
                        ("Disconnect", palette.bad)
                    } else {
                        ("Connect", palette.good)
                    };
                    let button = egui::Button::new(
                        RichText::new(label)
                            .font(theme::large())
                            .color(egui::Color32::WHITE),
                    )
                    .fill(fill)
                    .corner_radius(8.0)
                    .min_size(egui::vec2(160.0, 46.0));
                    let enabled = service_up && !app.pending;
                    let response = ui.add_enabled(enabled, button);
                    let response = if service_up {
                        response.on_disabled_hover_text("Waiting for the client service to answer")
                    } else {
                        response.on_disabled_hover_text(
                            "The client service is not reachable; see the message above",
                        )
                    };
                    if response.clicked() {
                        actions.push(if live {
                            Action::Disconnect
                        } else {
                            Action::Connect(profile.name.clone())
                        });
                    }
                });
            });
            ui.add_space(6.0);
            if service_up {
                let now = app.now();
                let up = status::status_profile(&app.status) == Some(profile.name.as_str())
                    && matches!(
                        app.status.state,
                        ConnectionState::Connected { .. } | ConnectionState::Reconnecting { .. }
                    );
                let state = |ui: &mut egui::Ui| {
                    status::state(ui, &palette, profile, &app.status, now, &app.throughput);
                };
                if !up {
                    state(ui);
                } else if ui.available_width() >= 720.0 {
                    // Details on the left, the graph beside them.
                    ui.horizontal_top(|ui| {
                        ui.vertical(|ui| {
                            ui.set_width(DETAILS_WIDTH);
                            state(ui);
                        });
                        ui.vertical(|ui| {
                            throughput::show(
                                ui,
                                &app.throughput,
                                app.clock.unix_secs(),
                                &profile.name,
                            );
                        });
                    });
                } else {
                    state(ui);
                    ui.add_space(6.0);
                    throughput::show(ui, &app.throughput, app.clock.unix_secs(), &profile.name);
                }
            } else {
                ui.label(
                    RichText::new("Status unknown: the client service is not reachable")
                        .color(palette.idle),
                );
            }
            ui.add_space(4.0);
            super::profile_routing::show(app, ui, profile);
            if app.renaming.is_none() {
                ui.add_space(4.0);
                ui.horizontal(|ui| {
                    if ui.small_button("Rename").clicked() {
                        actions.push(Action::StartRename(profile.name.clone()));
                    }
                    let remove = ui.add_enabled(!live, egui::Button::new("Remove").small());
                    let remove = remove.on_disabled_hover_text("Disconnect before removing");
                    if remove.clicked() {
                        actions.push(Action::AskRemove(profile.name.clone()));
                    }
                });
            }
        });
}

/// The profile's name (or the rename field) and what it connects to.
fn title(
    app: &mut GatehouseApp,
    ui: &mut egui::Ui,
    profile: &StoredProfile,
    actions: &mut Vec<Action>,
) {
    match &mut app.renaming {
        Some((old, new)) if *old == profile.name => {
            ui.horizontal(|ui| {
                let label = ui.label("New name");
                let field = ui.add(
                    egui::TextEdit::singleline(new)
                        .desired_width(200.0)
                        .font(theme::large()),
                );
                let field = field.labelled_by(label.id);
                let entered = field.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
                if ui.button("Save").clicked() || entered {
                    actions.push(Action::SaveRename);
                }
                if ui.button("Cancel").clicked() {
                    actions.push(Action::CancelRename);
                }
            });
        }
        _ => {
            ui.label(RichText::new(&profile.name).size(20.0).strong());
        }
    }
    let protocols: Vec<String> = profile
        .protocols
        .iter()
        .map(|p| crate::format::protocol(p.kind).to_owned())
        .collect();
    ui.label(RichText::new(format!("{}  ·  {}", profile.gateway, protocols.join(", "))).weak());
}

/// Asks before deleting a profile and its key.
pub(super) fn confirm_remove(app: &mut GatehouseApp, ctx: &egui::Context) {
    let Some(name) = app.confirm_remove.clone() else {
        return;
    };
    let mut close = false;
    let modal = egui::Modal::new(egui::Id::unique("confirm_remove"))
        .frame(theme::dialog_frame(ctx))
        .show(ctx, |ui| {
            ui.set_max_width(420.0);
            ui.label(
                RichText::new(format!("Remove profile {name}?"))
                    .font(theme::large())
                    .strong(),
            );
            ui.label(
                "This deletes the profile and its private key from this computer. To use it \
             again you need the file from your administrator.",
            );
            ui.add_space(8.0);
            ui.horizontal(|ui| {
                if ui.button("Remove profile").clicked() {
                    app.send(Command::Remove { name: name.clone() });
                    close = true;
                }
                if ui.button("Cancel").clicked() {
                    close = true;
                }
            });
        });
    if close || modal.should_close() {
        app.confirm_remove = None;
    }
}
