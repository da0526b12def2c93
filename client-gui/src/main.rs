//! `gatehouse-gui`: the Gatehouse desktop client.
//!
//! Environment: `GATEHOUSE_HOME` (profiles and settings), `GATEHOUSE_SOCKET` (the client
//! service), `GATEHOUSE_KEYSTORE=file` (key files instead of the OS keyring).

use std::process::ExitCode;

use gatehouse_gui::{AppConfig, GatehouseApp, TITLE};

fn main() -> ExitCode {
    if std::env::args()
        .skip(1)
        .any(|a| a == "--version" || a == "-V")
    {
        println!("gatehouse-gui {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let config = AppConfig::from_env();
    let options = eframe::NativeOptions {
        // OpenGL runs everywhere, down to Mesa's software rasteriser on a bare VM.
        renderer: eframe::Renderer::Glow,
        viewport: egui::ViewportBuilder::default()
            .with_title(TITLE)
            .with_app_id("gatehouse-gui")
            .with_inner_size([920.0, 680.0])
            .with_min_inner_size([600.0, 440.0]),
        ..Default::default()
    };
    let result = eframe::run_native(
        TITLE,
        options,
        Box::new(|cc| Ok(Box::new(GatehouseApp::new(&cc.egui_ctx, config)?))),
    );
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "gatehouse-gui: cannot open the window: {e}\n(is there a desktop session? the \
                 command-line client `gatehouse` works without one)"
            );
            ExitCode::FAILURE
        }
    }
}
