//! Messages across the top of the window: whether the client service can be reached, and
//! the outcome of the user's last action.

use egui::{Color32, RichText};

use crate::app::{GatehouseApp, ServiceState};
use crate::format;
use crate::logbook::Level;
use crate::theme;

/// Says plainly when the client service is out of reach, why, and how to start it.
pub(super) fn service(app: &GatehouseApp, ui: &mut egui::Ui) {
    let palette = theme::palette(ui);
    match &app.service {
        ServiceState::Up => {}
        ServiceState::Unknown => {
            ui.horizontal(|ui| {
                ui.spinner();
                ui.label("Looking for the Gatehouse client service...");
            });
            ui.add_space(8.0);
        }
        ServiceState::Down(reason) => {
            callout(ui, palette.bad, |ui| {
                ui.label(
                    RichText::new("Gatehouse cannot reach its client service")
                        .font(theme::large())
                        .strong()
                        .color(palette.bad),
                );
                ui.label(format::sentence(reason));
                ui.label(
                    "The client service does the connecting for this app. Until it runs, \
                     you can import and manage profiles but not connect.",
                );
                ui.label(
                    RichText::new(format!(
                        "Trying again every {}.",
                        format::interval(app.config.retry_every)
                    ))
                    .weak(),
                );
            });
            ui.add_space(8.0);
        }
    }
}

/// The outcome of the last import, rename, removal or failed command, until dismissed.
pub(super) fn notice(app: &mut GatehouseApp, ui: &mut egui::Ui) {
    let Some(notice) = &app.notice else {
        return;
    };
    let palette = theme::palette(ui);
    let color = match notice.level {
        Level::Info => palette.good,
        Level::Warn => palette.busy,
        Level::Error => palette.bad,
    };
    let mut dismiss = false;
    callout(ui, color, |ui| {
        ui.horizontal(|ui| {
            ui.label(RichText::new(&notice.title).strong().color(color));
            ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                dismiss = ui.small_button("Dismiss").clicked();
            });
        });
        for line in &notice.lines {
            ui.label(format::sentence(line));
        }
    });
    ui.add_space(8.0);
    if dismiss {
        app.notice = None;
    }
}

/// A tinted box with a coloured edge.
pub(super) fn callout(ui: &mut egui::Ui, color: Color32, add: impl FnOnce(&mut egui::Ui)) {
    egui::Frame::new()
        .fill(color.gamma_multiply(0.12))
        .stroke(egui::Stroke::new(1.0, color.gamma_multiply(0.7)))
        .corner_radius(8.0)
        .inner_margin(egui::Margin::same(12))
        .show(ui, |ui| {
            ui.set_width(ui.available_width());
            add(ui);
        });
}
