//! The desktop app driven headless through its accessibility tree (kittest), against a
//! fake client service on a Unix socket: what a remote worker does, click by click, and
//! what they see, checked against committed snapshots (tests/snapshots/).
//!
//! Snapshots: `UPDATE_SNAPSHOTS=1 cargo test -p gatehouse-gui` rewrites them after a
//! deliberate change; look at the new images before committing them.
#![cfg(unix)]
// Test helpers panic on purpose.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::{FakeService, T0, World, mask_temp_paths, step_until};
use egui_kittest::kittest::{NodeT, Queryable};
use gatehouse_certs::{CaOptions, Format, Pki, Validity};
use gatehouse_client::status::ConnectionState;
use gatehouse_client::{ProfileStore, ProtocolKind};
use gatehouse_gui::ServiceState;
use gatehouse_gui::settings::{Settings, ThemeChoice};

fn connected(profile: &str) -> ConnectionState {
    ConnectionState::Connected {
        profile: profile.into(),
        since: T0,
        address: Ipv4Addr::new(172, 16, 201, 2),
        gateway: "vpn.example.com:1194".into(),
        protocol: ProtocolKind::OpenvpnUdp,
    }
}

/// A file dropped on the window, as eframe hands it over.
#[derive(Debug)]
struct Dropped(PathBuf);

impl egui::DroppedFile for Dropped {
    fn path(&self) -> &Path {
        &self.0
    }

    fn bytes(&self) -> Result<Vec<u8>, String> {
        std::fs::read(&self.0).map_err(|e| e.to_string())
    }
}

fn drop_file(h: &mut egui_kittest::Harness<'_, gatehouse_gui::GatehouseApp>, file: &Path) {
    h.input_mut()
        .dropped_files
        .push(Arc::new(Dropped(file.to_path_buf())));
}

fn is_disabled(h: &egui_kittest::Harness<'_, gatehouse_gui::GatehouseApp>, label: &str) -> bool {
    h.get_by_label(label).accesskit_node().is_disabled()
}

#[test]
fn import_connect_watch_traffic_and_disconnect() {
    let world = World::new();
    world.settings("theme = \"light\"\n");
    let service = FakeService::start(&world.socket);
    world.profile_file("alice");
    let mut h = world.harness();

    step_until(&mut h, "the service and an empty profile list", |h| {
        *h.state().service() == ServiceState::Up && h.query_by_label("No profiles yet").is_some()
    });

    // Import through the file picker, which opens on the Downloads folder.
    h.get_by_label("Import profile").click();
    step_until(&mut h, "the picker to list alice.toml", |h| {
        h.query_by_label("alice.toml").is_some()
    });
    h.get_by_label("alice.toml").click();
    h.step();
    h.remove_cursor();
    h.run_steps(2);
    mask_temp_paths(&mut h, &world);
    let file_field = h.get_by_label("File").rect();
    h.mask(file_field);
    h.snapshot("import_picker");
    h.get_by_label("Import").click();
    step_until(&mut h, "the imported profile's card", |h| {
        h.query_by_label("alice").is_some() && h.query_by_label("Connect").is_some()
    });
    assert!(h.query_by_label("Imported profile alice").is_some());
    assert!(h.query_by_label("Import").is_none(), "the picker closed");
    assert_eq!(h.state().profiles()[0].gateway, "vpn.example.com");

    // Connect: the service gets the profile and the key from the keyring, and the card
    // says Connecting until the service says otherwise.
    h.get_by_label("Connect").click();
    step_until(&mut h, "Connecting", |h| {
        h.query_by_label("Connecting").is_some()
    });
    let requests = service.connects();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].profile.name, "alice");
    assert!(requests[0].key_pem.contains("PRIVATE KEY"));
    assert!(h.query_by_label("Disconnect").is_some());

    service.set_state(connected("alice"));
    step_until(&mut h, "Connected with the address", |h| {
        h.query_by_label("Connected").is_some() && h.query_by_label("172.16.201.2").is_some()
    });
    assert!(h.query_by_label("vpn.example.com:1194").is_some());
    assert!(h.query_by_label("OpenVPN over UDP").is_some());
    assert_eq!(
        h.state().throughput().len(),
        1,
        "first sample when connected"
    );

    // Traffic: each second the counters grow; the graph gains a point per second.
    for second in 1..=12u64 {
        let rx = second * 150_000 + (second % 3) * 40_000;
        let tx = second * 20_000;
        service.set_counters(rx, tx);
        step_until(&mut h, "the new counters", |h| {
            h.state().status().counters.rx_bytes == rx
        });
        world.clock.advance(Duration::from_secs(1));
        h.step();
        assert_eq!(h.state().throughput().len() as u64, second + 1);
    }
    let now = T0 as f64 + 12.0;
    let series = h.state().throughput().series(now);
    assert_eq!(series.rx.len(), 12);
    // 1.80 MB after 12 s, 1.73 MB after 11 s.
    assert_eq!(series.rx.last(), Some(&[0.0, 70_000.0]));
    assert!(series.tx.iter().all(|p| p[1] == 20_000.0));
    // With no new traffic the graph slides left and drops to zero.
    world.clock.advance(Duration::from_secs(1));
    h.step();
    let later = h.state().throughput().series(now + 1.0);
    assert_eq!(later.rx[later.rx.len() - 2], [-1.0, 70_000.0]);
    assert_eq!(later.rx.last(), Some(&[0.0, 0.0]));
    h.step();
    assert!(
        h.query_by_label("1.80 MB (0 B/s)").is_some(),
        "received total and rate"
    );
    h.remove_cursor();
    h.step();
    h.snapshot("connected");

    // The log panel streams the service's lines; the filter and Copy log serve support.
    service.log(
        T0 + 13,
        "warn",
        "alice over openvpn-udp: 3 keepalives missed",
    );
    h.get_by_label("Log").click();
    step_until(&mut h, "the service's log line", |h| {
        h.query_by_label_contains("3 keepalives missed").is_some()
    });
    assert!(
        h.query_by_label_contains("alice: connecting over openvpn-udp")
            .is_some()
    );
    h.get_by_label("Filter").focus();
    h.step();
    h.get_by_label("Filter").type_text("keepalive");
    h.step();
    h.step();
    assert!(h.query_by_label_contains("alice: connecting").is_none());
    h.get_by_label("Copy log").click();
    // One step runs a frame per queued event; the last one, the release, copies.
    h.step();
    let copied: Vec<String> = h
        .output()
        .platform_output
        .commands
        .iter()
        .filter_map(|c| match c {
            egui::OutputCommand::CopyText(text) => Some(text.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        copied,
        vec!["2026-11-18 11:06:53 UTC warn  alice over openvpn-udp: 3 keepalives missed\n"]
    );
    h.step();
    assert!(
        h.query_by_label("Copied 1 log line to the clipboard")
            .is_some()
    );
    h.get_by_label("Dismiss").click();
    h.get_by_label("Filter").focus();
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::A);
    h.key_press(egui::Key::Backspace);
    h.remove_cursor();
    h.run_steps(3);
    // Leave the text field so no cursor blinks in the picture.
    h.key_press(egui::Key::Escape);
    h.run_steps(3);
    h.snapshot("log");

    // Disconnect.
    h.get_by_label("Profiles").click();
    step_until(&mut h, "the profiles view", |h| {
        h.query_by_label("Disconnect").is_some()
    });
    h.get_by_label("Disconnect").click();
    step_until(&mut h, "Disconnected", |h| {
        h.query_by_label("Disconnected").is_some() && h.query_by_label("Connect").is_some()
    });
    assert_eq!(service.disconnects(), 1);
    assert_eq!(
        h.state().settings().last_profile.as_deref(),
        Some("alice"),
        "remembered for auto-connect"
    );
}

#[test]
fn unreachable_service_is_explained_until_it_starts() {
    let world = World::new();
    world.settings("theme = \"light\"\n");
    let file = world.profile_file("alice");
    ProfileStore::open(&world.home, world.keys.clone())
        .unwrap()
        .import(&file, None)
        .unwrap();
    let mut h = world.harness();

    step_until(&mut h, "the explanation", |h| {
        matches!(h.state().service(), ServiceState::Down(_))
            && h.query_by_label("Gatehouse cannot reach its client service")
                .is_some()
            && h.query_by_label("alice").is_some()
    });
    let reason = h
        .get_by_label_contains("client service is not running")
        .value()
        .unwrap_or_default();
    assert!(reason.contains("sudo gatehouse service"), "{reason}");
    assert!(
        reason.contains(&world.socket.display().to_string()),
        "{reason}"
    );
    assert!(
        is_disabled(&h, "Connect"),
        "no connecting without a service"
    );
    assert!(
        h.query_by_label("Status unknown: the client service is not reachable")
            .is_some()
    );
    h.remove_cursor();
    h.step();
    // The reason names the temporary socket path, which differs per run.
    mask_temp_paths(&mut h, &world);
    h.snapshot("service_unreachable");

    // The app keeps trying and notices when the service comes up.
    let service = FakeService::start(&world.socket);
    step_until(&mut h, "the service to be found", |h| {
        *h.state().service() == ServiceState::Up
            && h.query_by_label("Gatehouse cannot reach its client service")
                .is_none()
    });
    assert!(!is_disabled(&h, "Connect"));
    assert!(h.query_by_label("Disconnected").is_some());

    // An error says why and what to do, and Connect tries again.
    service.set_state(ConnectionState::Error {
        profile: Some("alice".into()),
        reason: "the gateway refused the certificate for alice: it was revoked; ask your \
                 administrator for a new profile"
            .into(),
    });
    step_until(&mut h, "the error", |h| h.query_by_label("Error").is_some());
    assert!(h.query_by_label_contains("it was revoked").is_some());
    assert!(
        h.query_by_label_contains("press Connect to try again")
            .is_some()
    );
    assert!(h.query_by_label("Connect").is_some());

    // A dropped connection shows Reconnecting with the reason.
    service.set_state(ConnectionState::Reconnecting {
        profile: "alice".into(),
        attempt: 2,
        reason: "the gateway stopped answering".into(),
    });
    step_until(&mut h, "Reconnecting", |h| {
        h.query_by_label("Reconnecting").is_some()
    });
    assert!(
        h.query_by_label_contains("the gateway stopped answering")
            .is_some()
    );
    assert!(h.query_by_label("Disconnect").is_some());
}

#[test]
fn dropped_ovpn_is_imported_then_renamed_and_removed() {
    let world = World::new();
    let _service = FakeService::start(&world.socket);
    let mut pki = Pki::init(world.dir.path().join("pki"), &CaOptions::default()).unwrap();
    pki.issue_client("bob", &Validity::default(), None).unwrap();
    let mut ovpn = pki
        .export("bob", "vpn.example.com", Format::Ovpn, None)
        .unwrap();
    ovpn.extend_from_slice(b"comp-lzo\n");
    let file = world.downloads.join("bob-laptop.ovpn");
    std::fs::write(&file, ovpn).unwrap();
    let mut h = world.harness();
    step_until(&mut h, "an empty profile list", |h| {
        h.query_by_label("No profiles yet").is_some()
    });

    // Dragging the file over the window and dropping it imports it.
    drop_file(&mut h, &file);
    step_until(&mut h, "the dropped profile", |h| {
        h.query_by_label("bob-laptop").is_some()
    });
    assert!(h.query_by_label("Imported profile bob-laptop").is_some());
    assert!(
        h.query_by_label_contains("comp-lzo").is_some(),
        "what Gatehouse ignores is named"
    );

    // Rename, keeping the key.
    h.get_by_label("Rename").click();
    step_until(&mut h, "the rename field", |h| {
        h.query_by_label("New name").is_some()
    });
    h.get_by_label("New name").focus();
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::A);
    h.get_by_label("New name").type_text("bob");
    h.step();
    h.get_by_label("Save").click();
    step_until(&mut h, "the renamed profile", |h| {
        h.query_by_label("bob").is_some() && h.query_by_label("bob-laptop").is_none()
    });
    let store = ProfileStore::open(&world.home, world.keys.clone()).unwrap();
    assert!(store.key_pem("bob").unwrap().contains("PRIVATE KEY"));

    // The same file again is imported under its own name, now free; a third time the name
    // is taken, and the message says so.
    drop_file(&mut h, &file);
    step_until(&mut h, "the second import", |h| {
        h.state().profiles().len() == 2
    });
    drop_file(&mut h, &file);
    step_until(&mut h, "the clash", |h| {
        h.query_by_label_contains("Could not import").is_some()
    });
    assert!(
        h.query_by_label_contains("profile named bob-laptop already exists")
            .is_some()
    );

    // Remove asks first, then deletes the profile and its key.
    h.get_by_label("Dismiss").click();
    // The click's frames, then one laid out without the notice.
    h.run_steps(2);
    let remove = h.get_all_by_label("Remove").next().unwrap();
    remove.click();
    step_until(&mut h, "the confirmation", |h| {
        h.query_by_label("Remove profile").is_some()
    });
    h.get_by_label("Remove profile").click();
    step_until(&mut h, "one profile left", |h| {
        h.state().profiles().len() == 1
    });
    assert_eq!(h.state().profiles()[0].name, "bob-laptop");
    assert!(
        store.key_pem("bob").is_err(),
        "the key went with the profile"
    );
}

#[test]
fn settings_order_protocols_auto_connect_and_persist() {
    let world = World::new();
    world.settings(
        "auto_connect = true\nlast_profile = \"alice\"\ntheme = \"dark\"\n\
         protocol_order = [\"openvpn-tcp\", \"ikev2\"]\n",
    );
    let service = FakeService::start(&world.socket);
    let file = world.profile_file("alice");
    ProfileStore::open(&world.home, world.keys.clone())
        .unwrap()
        .import(&file, None)
        .unwrap();
    let mut h = world.harness();

    // Connect on launch, with the preferred protocol first.
    step_until(&mut h, "the auto-connect", |h| {
        h.query_by_label("Connecting").is_some()
    });
    let requests = service.connects();
    assert_eq!(requests.len(), 1);
    let order: Vec<ProtocolKind> = requests[0]
        .profile
        .protocols
        .iter()
        .map(|p| p.kind)
        .collect();
    assert_eq!(order[0], ProtocolKind::OpenvpnTcp);
    assert!(order.contains(&ProtocolKind::OpenvpnUdp));

    // Change settings; every change is saved.
    h.get_by_label("Settings").click();
    step_until(&mut h, "the settings view", |h| {
        h.query_by_label("Start minimised").is_some()
    });
    h.get_by_label("Start minimised").click();
    h.get_by_label("Kill switch: block all traffic outside the tunnel")
        .click();
    h.get_all_by_label("Move down").next().unwrap().click();
    h.get_by_label("Light").click();
    h.run_steps(4);
    h.get_by_label("Dark").click();
    let expected_order = vec![
        ProtocolKind::Ikev2,
        ProtocolKind::OpenvpnTcp,
        ProtocolKind::OpenvpnUdp,
        ProtocolKind::Quic,
    ];
    step_until(&mut h, "the settings saved as shown", |h| {
        let shown = h.state().settings();
        shown.start_minimised
            && shown.kill_switch
            && !shown.allow_lan
            && shown.theme == ThemeChoice::Dark
            && shown.protocol_order == expected_order
            && Settings::load(&world.home).ok().as_ref() == Some(shown)
    });
    let settings = Settings::load(&world.home).unwrap();
    assert!(settings.auto_connect);
    assert_eq!(h.ctx.theme(), egui::Theme::Dark);
    h.remove_cursor();
    h.run_steps(3);
    mask_temp_paths(&mut h, &world);
    h.snapshot("settings_dark");
}

/// The kill switch chosen in Settings goes with every connect request; without it, none.
#[test]
fn kill_switch_setting_reaches_the_connect_request() {
    for (text, kill_switch, allow_lan) in [
        ("kill_switch = true\nallow_lan = true\n", true, true),
        // Allowing the LAN means nothing without the kill switch.
        ("allow_lan = true\n", false, false),
    ] {
        let world = World::new();
        world.settings(&format!(
            "auto_connect = true\nlast_profile = \"alice\"\n{text}"
        ));
        let service = FakeService::start(&world.socket);
        let file = world.profile_file("alice");
        ProfileStore::open(&world.home, world.keys.clone())
            .unwrap()
            .import(&file, None)
            .unwrap();
        let mut h = world.harness();
        step_until(&mut h, "the auto-connect", |h| {
            h.query_by_label("Connecting").is_some()
        });
        let requests = service.connects();
        assert_eq!(requests.len(), 1, "{text}");
        assert_eq!(requests[0].kill_switch, kill_switch, "{text}");
        assert_eq!(requests[0].allow_lan, allow_lan, "{text}");
    }
}

/// The app against client-core's real service code (not the fake): the same socket
/// protocol, found and subscribed to. (Connecting needs root and a gateway; the end-to-end
/// tests in tests/ do that.)
#[test]
fn real_client_service_is_found_and_reports_its_state() {
    use gatehouse_client::manager::{Manager, ManagerOptions};
    use gatehouse_client::platform::NetConfig;

    let world = World::new();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let state = world.dir.path().join("service-state");
    let socket = world.socket.clone();
    runtime.spawn(async move {
        let manager = Manager::spawn(ManagerOptions::default(), NetConfig::new(&state));
        gatehouse_client::service::serve(&socket, manager).await
    });
    let mut h = world.harness();
    step_until(&mut h, "the real service", |h| {
        *h.state().service() == ServiceState::Up && h.query_by_label("Service running").is_some()
    });
    assert_eq!(
        h.state().status().state,
        ConnectionState::Disconnected,
        "a fresh service is idle"
    );
}
