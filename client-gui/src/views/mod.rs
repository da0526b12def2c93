//! What the app draws. Each file holds one part of the window; all of them read the app's
//! state and turn clicks into worker commands, never waiting on anything.

mod banners;
pub(crate) mod file_picker;
mod log;
mod profile_routing;
mod profiles;
mod settings;
mod status;
mod throughput;

use egui::{Align, Layout, RichText};

use crate::app::{GatehouseApp, ServiceState, TITLE, Tab};
use crate::theme;

/// Draws the whole window.
pub(crate) fn show(app: &mut GatehouseApp, ui: &mut egui::Ui) {
    egui::Panel::top("top_bar")
        .frame(
            egui::Frame::side_top_panel(ui.style()).inner_margin(egui::Margin::symmetric(16, 10)),
        )
        .show(ui, |ui| top_bar(app, ui));
    egui::CentralPanel::default()
        .frame(egui::Frame::central_panel(ui.style()).inner_margin(egui::Margin::same(16)))
        .show(ui, |ui| {
            banners::service(app, ui);
            banners::notice(app, ui);
            match app.tab {
                Tab::Profiles => profiles::show(app, ui),
                Tab::Log => log::show(app, ui),
                Tab::Settings => settings::show(app, ui),
            }
        });
    let ctx = ui.ctx().clone();
    file_picker::show(app, &ctx);
    profiles::confirm_remove(app, &ctx);
    drop_overlay(&ctx);
}

fn top_bar(app: &mut GatehouseApp, ui: &mut egui::Ui) {
    ui.horizontal(|ui| {
        ui.label(RichText::new(TITLE).heading().strong());
        ui.add_space(16.0);
        ui.selectable_value(&mut app.tab, Tab::Profiles, "Profiles");
        ui.selectable_value(&mut app.tab, Tab::Log, "Log");
        ui.selectable_value(&mut app.tab, Tab::Settings, "Settings");
        ui.with_layout(Layout::right_to_left(Align::Center), |ui| {
            let palette = theme::palette(ui);
            let (color, text) = match app.service {
                ServiceState::Up => (palette.good, "Service running"),
                ServiceState::Down(_) => (palette.bad, "Service not reachable"),
                ServiceState::Unknown => (palette.idle, "Looking for the service"),
            };
            ui.label(RichText::new(text).color(color));
            status::dot(ui, color);
        });
    });
}

/// Dims the window while files are dragged over it, saying what a drop does.
fn drop_overlay(ctx: &egui::Context) {
    if ctx.input(|i| i.raw.hovered_files.is_empty()) {
        return;
    }
    let painter = ctx.layer_painter(egui::LayerId::new(
        egui::Order::Foreground,
        egui::Id::unique("drop_overlay"),
    ));
    let rect = ctx.content_rect();
    painter.rect_filled(rect, 0.0, egui::Color32::from_black_alpha(170));
    painter.text(
        rect.center(),
        egui::Align2::CENTER_CENTER,
        "Drop the profile file to import it",
        theme::large(),
        egui::Color32::WHITE,
    );
}
