//! The live throughput graph: receive and send rates over the last five minutes.

use egui_plot::{Corner, GridInput, GridMark, Legend, Line, Plot};

use crate::format;
use crate::graph::{Throughput, WINDOW_SECS};
use crate::theme;

/// Draws the graph for `throughput` as of `now` (seconds since the epoch).
pub(super) fn show(ui: &mut egui::Ui, throughput: &Throughput, now: f64, id: &str) {
    let palette = theme::palette(ui);
    let series = throughput.series(now);
    ui.label(egui::RichText::new("Throughput, last 5 minutes").weak());
    Plot::new(("throughput", id))
        .height(190.0)
        .allow_drag(false)
        .allow_zoom(false)
        .allow_scroll(false)
        .allow_boxed_zoom(false)
        .allow_double_click_reset(false)
        .show_x(false)
        .show_y(false)
        .include_x(-WINDOW_SECS)
        .include_x(0.0)
        .include_y(0.0)
        .include_y(1000.0)
        .legend(Legend::default().position(Corner::LeftTop))
        .x_grid_spacer(minutes)
        .x_axis_formatter(|mark, _| {
            let minutes = (-mark.value / 60.0).round();
            if minutes < 0.5 {
                "now".into()
            } else {
                format!("{minutes:.0} min ago")
            }
        })
        .y_axis_formatter(|mark, _| format::rate(mark.value))
        .y_axis_min_width(64.0)
        .show(ui, |plot| {
            plot.line(
                Line::new("Received", series.rx)
                    .color(palette.rx)
                    .width(2.0),
            );
            plot.line(Line::new("Sent", series.tx).color(palette.tx).width(2.0));
        });
}

/// Grid lines every minute (labelled) and every 15 s (faint): "3 min ago" reads better than
/// "200 s ago".
fn minutes(input: GridInput) -> Vec<GridMark> {
    let (min, max) = input.bounds;
    let mut marks = Vec::new();
    let mut t = (min / 15.0).ceil() * 15.0;
    while t <= max {
        let on_minute = (t / 60.0).fract().abs() < 1e-9;
        marks.push(GridMark {
            value: t,
            step_size: if on_minute { 60.0 } else { 15.0 },
        });
        t += 15.0;
    }
    marks
}
