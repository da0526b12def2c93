//! A profile's connection state in words a remote worker understands, and the connection's
//! details once it is up.

use egui::{Color32, RichText};
use gatehouse_client::StoredProfile;
use gatehouse_client::status::{ConnectionState, Status};

use crate::format;
use crate::graph::Throughput;
use crate::theme::{self, Palette};

/// A small filled circle in `color`, the state's colour.
pub(super) fn dot(ui: &mut egui::Ui, color: Color32) {
    let size = egui::vec2(12.0, 12.0);
    let (rect, _) = ui.allocate_exact_size(size, egui::Sense::hover());
    ui.painter().circle_filled(rect.center(), 5.0, color);
}

fn headline(ui: &mut egui::Ui, color: Color32, text: &str, busy: bool) {
    ui.horizontal(|ui| {
        if busy {
            ui.add(egui::Spinner::new().color(color));
        } else {
            dot(ui, color);
        }
        ui.label(
            RichText::new(text)
                .font(theme::large())
                .strong()
                .color(color),
        );
    });
}

/// The state of `profile` given the service's `status` (the card of the profile in use
/// shows the service's state; the others are Disconnected).
pub(super) fn state(
    ui: &mut egui::Ui,
    palette: &Palette,
    profile: &StoredProfile,
    status: &Status,
    now: u64,
    throughput: &Throughput,
) {
    let active = status_profile(status) == Some(profile.name.as_str());
    if !active {
        headline(ui, palette.idle, "Disconnected", false);
        return;
    }
    match &status.state {
        ConnectionState::Disconnected => headline(ui, palette.idle, "Disconnected", false),
        ConnectionState::Connecting { protocol, .. } => {
            headline(ui, palette.busy, "Connecting", true);
            ui.label(format!(
                "Reaching {} over {}...",
                profile.gateway,
                format::protocol(*protocol)
            ));
        }
        ConnectionState::Connected {
            since,
            address,
            gateway,
            protocol,
            ..
        } => {
            headline(ui, palette.good, "Connected", false);
            egui::Grid::new(("details", &profile.name))
                .num_columns(2)
                .spacing(egui::vec2(24.0, 6.0))
                .show(ui, |ui| {
                    row(ui, "Address", &address.to_string());
                    row(ui, "Gateway", gateway);
                    row(ui, "Protocol", format::protocol(*protocol));
                    row(
                        ui,
                        "Connected since",
                        &format!(
                            "{} ({})",
                            format::date_time(*since),
                            format::duration(now.saturating_sub(*since))
                        ),
                    );
                    if status.path_changes > 0 {
                        row(ui, "Network changes", &roamed(status.path_changes));
                    }
                    traffic(ui, status, throughput);
                });
        }
        ConnectionState::Reconnecting {
            attempt, reason, ..
        } => {
            headline(ui, palette.busy, "Reconnecting", true);
            ui.label(format!("The connection dropped: {reason}"));
            ui.label(
                RichText::new(format!(
                    "Attempt {attempt}. Gatehouse keeps trying by itself; press Disconnect to stop."
                ))
                .weak(),
            );
            egui::Grid::new(("details", &profile.name))
                .num_columns(2)
                .spacing(egui::vec2(24.0, 6.0))
                .show(ui, |ui| traffic(ui, status, throughput));
        }
        ConnectionState::Error { reason, .. } => {
            headline(ui, palette.bad, "Error", false);
            ui.label(format::sentence(reason));
            ui.label(
                RichText::new(
                    "Do what the message says (or send the log to your administrator), then \
                     press Connect to try again.",
                )
                .weak(),
            );
        }
    }
}

fn row(ui: &mut egui::Ui, name: &str, value: &str) {
    ui.label(RichText::new(name).weak());
    ui.label(value);
    ui.end_row();
}

fn traffic(ui: &mut egui::Ui, status: &Status, throughput: &Throughput) {
    let (rx_rate, tx_rate) = throughput.latest().unwrap_or((0.0, 0.0));
    row(
        ui,
        "Received",
        &format!(
            "{} ({})",
            format::bytes(status.counters.rx_bytes),
            format::rate(rx_rate)
        ),
    );
    row(
        ui,
        "Sent",
        &format!(
            "{} ({})",
            format::bytes(status.counters.tx_bytes),
            format::rate(tx_rate)
        ),
    );
}

/// The profile the service's state is about, if any.
pub(super) fn status_profile(status: &Status) -> Option<&str> {
    match &status.state {
        ConnectionState::Disconnected => None,
        ConnectionState::Connecting { profile, .. }
        | ConnectionState::Connected { profile, .. }
        | ConnectionState::Reconnecting { profile, .. } => Some(profile),
        ConnectionState::Error { profile, .. } => profile.as_deref(),
    }
}

/// Whether the service is working on `name` (so its button says Disconnect).
pub(super) fn is_live(status: &Status, name: &str) -> bool {
    status_profile(status) == Some(name)
        && matches!(
            status.state,
            ConnectionState::Connecting { .. }
                | ConnectionState::Connected { .. }
                | ConnectionState::Reconnecting { .. }
        )
}

/// The connection moved to new networks without reconnecting (QUIC migration).
fn roamed(changes: u32) -> String {
    let times = if changes == 1 {
        "once".to_owned()
    } else {
        format!("{changes} times")
    };
    format!("{times}, still connected")
}
