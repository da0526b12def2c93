//! `gatehouse-gui`: the desktop app remote workers launch. It will be an eframe/egui front end
//! to the client service in `gatehouse-client`; no protocol code lives here. Until the desktop
//! issue lands it only says so.
fn main() {
    eprintln!(
        "gatehouse-gui: the desktop client is not built yet; use the stock OpenVPN client with a \
         profile from `gatehouse-certs export --format ovpn`"
    );
    std::process::exit(2);
}
