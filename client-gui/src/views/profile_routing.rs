//! A profile's routing and auto-connect, on its card: which routes go into the tunnel (as
//! the gateway says, everything, or only the gateway's networks), extra routes, connecting
//! by itself on untrusted networks, and trusting the network the computer is on.

use egui::RichText;
use gatehouse_client::StoredProfile;
use gatehouse_client::profile_settings::SettingsChange;
use gatehouse_client::routing::{ClientRouting, Routing};
use gatehouse_client::trusted::AutoConnect;

use crate::app::GatehouseApp;
use crate::worker::Command;

/// What the user sees for each choice.
fn routing_label(r: Routing) -> &'static str {
    match r {
        Routing::Gateway => "As the gateway says",
        Routing::Full => "Full tunnel: all traffic",
        Routing::Split => "Split tunnel: only the gateway's networks",
    }
}

pub(super) fn show(app: &mut GatehouseApp, ui: &mut egui::Ui, profile: &StoredProfile) {
    let name = profile.name.clone();
    let mut changes: Vec<SettingsChange> = Vec::new();
    let fixed = profile.client_routing == ClientRouting::Fixed;
    egui::CollapsingHeader::new("Routing and auto-connect")
        .id_salt(("routing", &name))
        .show(ui, |ui| {
            ui.label(RichText::new("Routes").strong());
            for r in Routing::ALL {
                let radio = ui.add_enabled(
                    !fixed || r == Routing::Gateway,
                    egui::RadioButton::new(profile.routing == r, routing_label(r)),
                );
                let radio = radio.on_disabled_hover_text(
                    "The gateway fixes the routes (client_routing = \"fixed\")",
                );
                if radio.clicked() && profile.routing != r {
                    changes.push(SettingsChange {
                        routing: Some(r),
                        ..SettingsChange::default()
                    });
                }
            }
            if !fixed {
                extra_routes(app, ui, profile, &mut changes);
            }
            ui.add_space(6.0);
            let mut auto = profile.auto_connect == AutoConnect::Untrusted;
            if ui
                .checkbox(&mut auto, "Connect automatically on untrusted networks")
                .changed()
            {
                changes.push(SettingsChange {
                    auto_connect: Some(if auto {
                        AutoConnect::Untrusted
                    } else {
                        AutoConnect::Off
                    }),
                    ..SettingsChange::default()
                });
            }
            ui.horizontal(|ui| {
                if ui.button("Trust this network").clicked() {
                    app.send(Command::TrustNetwork { name: name.clone() });
                }
                let n = profile.trusted_networks.len();
                ui.label(RichText::new(format!("{n} trusted network(s)")).weak());
            });
        });
    for change in changes {
        app.send(Command::UpdateProfile {
            name: name.clone(),
            change,
        });
    }
}

/// The extra routes with a Remove button each, and a field to add one.
fn extra_routes(
    app: &mut GatehouseApp,
    ui: &mut egui::Ui,
    profile: &StoredProfile,
    changes: &mut Vec<SettingsChange>,
) {
    ui.add_space(4.0);
    ui.label(RichText::new("Extra routes").strong());
    for (i, net) in profile.extra_routes.iter().enumerate() {
        ui.horizontal(|ui| {
            ui.label(net.to_string());
            if ui
                .add(egui::Button::new(format!("Remove {net}")).small())
                .clicked()
            {
                let mut rest = profile.extra_routes.clone();
                rest.remove(i);
                changes.push(SettingsChange {
                    clear_routes: true,
                    add_routes: rest,
                    ..SettingsChange::default()
                });
            }
        });
    }
    let input = app.route_input.entry(profile.name.clone()).or_default();
    let mut add = false;
    let mut error = None;
    ui.horizontal(|ui| {
        let label = ui.label("New route");
        let field = ui.add(
            egui::TextEdit::singleline(input)
                .hint_text("10.9.0.0/16 or fd00:9::/48")
                .desired_width(200.0),
        );
        let field = field.labelled_by(label.id);
        let entered = field.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
        if ui.button("Add route").clicked() || entered {
            add = true;
        }
    });
    if add {
        match input.trim().parse::<ipnet::IpNet>() {
            Ok(net) => {
                changes.push(SettingsChange {
                    add_routes: vec![net],
                    ..SettingsChange::default()
                });
                input.clear();
            }
            Err(_) if input.trim().is_empty() => {}
            Err(_) => {
                error = Some(format!(
                    "{:?} is not a prefix: write an address, a slash and a length, e.g. 10.9.0.0/16",
                    input.trim()
                ))
            }
        }
    }
    if let Some(e) = error {
        app.set_notice(crate::logbook::Level::Error, "Route not added", vec![e]);
    }
}
