//! The settings view: protocol preference, start-up behaviour, the kill switch, theme. Every change is saved
//! at once (by the worker).

use egui::RichText;

use crate::app::GatehouseApp;
use crate::format;
use crate::settings::{Settings, ThemeChoice};

pub(super) fn show(app: &mut GatehouseApp, ui: &mut egui::Ui) {
    let before = app.settings.clone();
    egui::ScrollArea::vertical()
        .auto_shrink([false, false])
        .show(ui, |ui| {
            ui.heading("Settings");
            section(ui, "Protocols", |ui| protocols(&mut app.settings, ui));
            section(ui, "Start-up", |ui| {
                ui.checkbox(&mut app.settings.auto_connect, "Connect on launch");
                let which = match &app.settings.last_profile {
                    Some(name) => format!("Connects {name}, the profile you used last."),
                    None => "Connects the profile you use next.".into(),
                };
                ui.label(RichText::new(which).weak());
                ui.checkbox(&mut app.settings.start_minimised, "Start minimised");
            });
            section(ui, "Privacy", |ui| {
                ui.checkbox(
                    &mut app.settings.kill_switch,
                    "Kill switch: block all traffic outside the tunnel",
                );
                ui.label(
                    RichText::new(
                        "While connected or reconnecting, and after a crash until you \
                         disconnect. Linux (nftables); takes effect on the next connect.",
                    )
                    .weak(),
                );
                ui.add_enabled(
                    app.settings.kill_switch,
                    egui::Checkbox::new(
                        &mut app.settings.allow_lan,
                        "Allow the local network (printers, file shares)",
                    ),
                );
            });
            section(ui, "Appearance", |ui| {
                ui.horizontal(|ui| {
                    ui.radio_value(
                        &mut app.settings.theme,
                        ThemeChoice::System,
                        "Like the system",
                    );
                    ui.radio_value(&mut app.settings.theme, ThemeChoice::Light, "Light");
                    ui.radio_value(&mut app.settings.theme, ThemeChoice::Dark, "Dark");
                });
            });
            section(ui, "Where things are", |ui| {
                let home = &app.config.home;
                ui.label(format!("Profiles: {}", home.join("profiles").display()));
                ui.label(format!("Settings: {}", Settings::path(home).display()));
                ui.label(format!(
                    "Client service socket: {}",
                    app.config.socket.display()
                ));
            });
        });
    if app.settings != before {
        app.settings_changed();
    }
}

fn section(ui: &mut egui::Ui, title: &str, add: impl FnOnce(&mut egui::Ui)) {
    ui.add_space(10.0);
    ui.label(RichText::new(title).strong().size(17.0));
    egui::Frame::group(ui.style())
        .inner_margin(egui::Margin::same(12))
        .corner_radius(8.0)
        .show(ui, |ui| {
            ui.set_width(ui.available_width());
            add(ui);
        });
}

fn protocols(settings: &mut Settings, ui: &mut egui::Ui) {
    ui.label("Gatehouse tries your profile's protocols in this order:");
    let mut moved = None;
    let count = settings.protocol_order.len();
    egui::Grid::new("protocol_order")
        .num_columns(3)
        .spacing(egui::vec2(16.0, 6.0))
        .show(ui, |ui| {
            for (i, kind) in settings.protocol_order.iter().enumerate() {
                ui.label(format!("{}. {}", i + 1, format::protocol(*kind)));
                if ui
                    .add_enabled(i > 0, egui::Button::new("Move up").small())
                    .clicked()
                {
                    moved = Some((i, true));
                }
                if ui
                    .add_enabled(i + 1 < count, egui::Button::new("Move down").small())
                    .clicked()
                {
                    moved = Some((i, false));
                }
                ui.end_row();
            }
        });
    if let Some((i, up)) = moved {
        settings.move_protocol(i, up);
    }
    ui.label(
        RichText::new(
            "Protocols a profile does not offer are skipped; if one fails the next is tried.",
        )
        .weak(),
    );
}
