//! How the app looks: egui's own fonts a little larger than egui's defaults, roomier
//! spacing, and the status colours shared by every view.

use egui::{Color32, FontFamily, FontId, TextStyle};

use crate::settings::ThemeChoice;

/// Sizes and spacing for both themes.
pub fn install(ctx: &egui::Context) {
    ctx.all_styles_mut(|style| {
        style.text_styles = [
            (
                TextStyle::Heading,
                FontId::new(22.0, FontFamily::Proportional),
            ),
            (TextStyle::Body, FontId::new(15.0, FontFamily::Proportional)),
            (
                TextStyle::Button,
                FontId::new(15.0, FontFamily::Proportional),
            ),
            (
                TextStyle::Small,
                FontId::new(12.5, FontFamily::Proportional),
            ),
            (
                TextStyle::Monospace,
                FontId::new(13.5, FontFamily::Monospace),
            ),
        ]
        .into();
        style.spacing.item_spacing = egui::vec2(10.0, 8.0);
        style.spacing.button_padding = egui::vec2(12.0, 5.0);
        style.spacing.interact_size.y = 26.0;
        style.spacing.window_margin = egui::Margin::same(16);
    });
}

/// Applies the user's theme choice.
pub fn apply(ctx: &egui::Context, choice: ThemeChoice) {
    ctx.set_theme(match choice {
        ThemeChoice::System => egui::ThemePreference::System,
        ThemeChoice::Light => egui::ThemePreference::Light,
        ThemeChoice::Dark => egui::ThemePreference::Dark,
    });
}

/// The frame of a dialog: a popup with room to breathe.
pub fn dialog_frame(ctx: &egui::Context) -> egui::Frame {
    egui::Frame::popup(&ctx.global_style())
        .inner_margin(egui::Margin::same(20))
        .corner_radius(10.0)
}

/// A larger text style for the one big button per profile and the state line.
pub fn large() -> FontId {
    FontId::new(18.0, FontFamily::Proportional)
}

/// Colours that mean the same in both themes, readable on either background.
pub struct Palette {
    /// Connected, success.
    pub good: Color32,
    /// Connecting, reconnecting, warnings.
    pub busy: Color32,
    /// Errors.
    pub bad: Color32,
    /// Disconnected, unknown.
    pub idle: Color32,
    /// Received bytes in the graph.
    pub rx: Color32,
    /// Sent bytes in the graph.
    pub tx: Color32,
}

/// The palette for the current theme.
pub fn palette(ui: &egui::Ui) -> Palette {
    if ui.visuals().dark_mode {
        Palette {
            good: Color32::from_rgb(0x4c, 0xc3, 0x6a),
            busy: Color32::from_rgb(0xe8, 0xb3, 0x39),
            bad: Color32::from_rgb(0xf0, 0x6a, 0x5f),
            idle: Color32::from_gray(0x9a),
            rx: Color32::from_rgb(0x5a, 0xa9, 0xf0),
            tx: Color32::from_rgb(0xe0, 0x8a, 0x3c),
        }
    } else {
        Palette {
            good: Color32::from_rgb(0x1e, 0x8a, 0x3e),
            busy: Color32::from_rgb(0xa8, 0x6a, 0x00),
            bad: Color32::from_rgb(0xc0, 0x2b, 0x22),
            idle: Color32::from_gray(0x70),
            rx: Color32::from_rgb(0x1f, 0x6f, 0xc4),
            tx: Color32::from_rgb(0xc4, 0x62, 0x0c),
        }
    }
}
