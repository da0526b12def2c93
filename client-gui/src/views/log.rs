//! The log panel: the service's events as they stream in, filterable, copyable for support.

use egui::RichText;

use crate::app::GatehouseApp;
use crate::format;
use crate::logbook::Level;
use crate::theme;

pub(super) fn show(app: &mut GatehouseApp, ui: &mut egui::Ui) {
    ui.heading("Log");
    ui.horizontal(|ui| {
        let label = ui.label("Filter");
        ui.add(
            egui::TextEdit::singleline(&mut app.log_filter.text)
                .hint_text("text to look for")
                .desired_width(220.0),
        )
        .labelled_by(label.id);
        ui.add_space(8.0);
        let label = ui.label("Show");
        egui::ComboBox::from_id_salt("log_level")
            .selected_text(level_name(app.log_filter.min_level))
            .show_ui(ui, |ui| {
                for level in [Level::Info, Level::Warn, Level::Error] {
                    ui.selectable_value(&mut app.log_filter.min_level, level, level_name(level));
                }
            })
            .response
            .labelled_by(label.id);
        ui.add_space(8.0);
        if ui.button("Copy log").clicked() {
            let text = app.log.to_text(&app.log_filter);
            let count = text.lines().count();
            ui.ctx().copy_text(text);
            app.set_notice(
                Level::Info,
                format!(
                    "Copied {count} log {} to the clipboard",
                    if count == 1 { "line" } else { "lines" }
                ),
                vec!["Paste them into your message to support.".into()],
            );
        }
    });
    let lines: Vec<_> = app.log.filtered(&app.log_filter).collect();
    ui.label(RichText::new(format!("{} of {} lines", lines.len(), app.log.len())).weak());
    let palette = theme::palette(ui);
    let row_height = ui.text_style_height(&egui::TextStyle::Monospace);
    egui::Frame::canvas(ui.style())
        .inner_margin(egui::Margin::same(8))
        .show(ui, |ui| {
            egui::ScrollArea::vertical()
                .auto_shrink([false, false])
                .stick_to_bottom(true)
                .show_rows(ui, row_height, lines.len(), |ui, rows| {
                    for line in &lines[rows] {
                        let level = Level::of(line);
                        let color = match level {
                            Level::Info => ui.visuals().text_color(),
                            Level::Warn => palette.busy,
                            Level::Error => palette.bad,
                        };
                        ui.label(
                            RichText::new(format!(
                                "{}  {:5}  {}",
                                format::clock_time(line.time),
                                level.as_str(),
                                line.message
                            ))
                            .monospace()
                            .color(color),
                        );
                    }
                });
        });
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::Info => "Everything",
        Level::Warn => "Warnings and errors",
        Level::Error => "Errors only",
    }
}
