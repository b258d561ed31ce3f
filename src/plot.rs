//! Line charts as PNG files: a run's loss and learning rate per step, a label-efficiency
//! chart, several runs' losses overlaid. Drawn with plotters into a pixel buffer, encoded
//! with `image`, written atomically; text in DejaVu Sans from the `dejavu` crate, so no
//! system font is needed.

use std::path::Path;
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::error::{Error, Result};

/// One line: its legend and its points.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// One chart of a picture.
#[derive(Debug, Clone)]
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    /// Logarithmic x axis (label fractions).
    pub log_x: bool,
}

const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

fn font() -> std::result::Result<(), String> {
    static REGISTERED: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
                .map_err(|_| "the embedded DejaVu Sans font does not load".to_string())
        })
        .clone()
}

/// Draws `charts` stacked in one picture, `width` pixels wide (each chart 300 high), into
/// `path`. Charts with no points are drawn empty, saying so.
pub fn save(charts: &[Chart], width: u32, path: &Path) -> Result<()> {
    let height = 300 * charts.len().max(1) as u32;
    render((width, height), path, |root| {
        let areas = root.split_evenly((charts.len().max(1), 1));
        for (chart, area) in charts.iter().zip(&areas) {
            draw(chart, area)?;
        }
        Ok(())
    })
}

/// A confusion matrix `counts[true][predicted]` as a picture: rows numbered and named by
/// `classes`, columns numbered alike, each cell its count on a shade from white (none of the
/// row's examples) to dark blue (all of them); `title` above.
pub fn confusion(
    title: &str,
    classes: &[String],
    counts: &[Vec<usize>],
    path: &Path,
) -> Result<()> {
    let n = classes.len().max(1) as i32;
    let cell = (640 / n).clamp(22, 64);
    let longest = classes.iter().map(|c| c.chars().count()).max().unwrap_or(1) as i32;
    let left = (longest + 5) * 8 + 16;
    let (top, pad) = (64, 16);
    let width = (left + n * cell + pad).max(360) as u32;
    let height = (top + n * cell + pad) as u32;
    let size = (cell / 3).clamp(10, 16);
    render((width, height), path, |root| {
        let err = |e: &dyn std::fmt::Display| e.to_string();
        fn text(size: i32, colour: &RGBColor) -> TextStyle<'_> {
            TextStyle::from(("sans-serif", size).into_font()).color(colour)
        }
        root.draw(&Text::new(title.to_string(), (pad, 10), text(16, &BLACK)))
            .map_err(|e| err(&e))?;
        for j in 0..n {
            let x = left + j * cell + cell / 2 - size / 2;
            root.draw(&Text::new(
                j.to_string(),
                (x, top - size - 6),
                text(size, &BLACK),
            ))
            .map_err(|e| err(&e))?;
        }
        for (i, row) in counts.iter().enumerate() {
            let y = top + i as i32 * cell;
            let name = format!("{i} {}", classes.get(i).map_or("", String::as_str));
            root.draw(&Text::new(
                name,
                (pad, y + cell / 2 - size / 2),
                text(size, &BLACK),
            ))
            .map_err(|e| err(&e))?;
            let total: usize = row.iter().sum();
            for (j, &v) in row.iter().enumerate() {
                let share = if total == 0 {
                    0.0
                } else {
                    v as f64 / total as f64
                };
                let shade = |full: f64, none: f64| (none + (full - none) * share) as u8;
                let fill = RGBColor(shade(8.0, 255.0), shade(48.0, 255.0), shade(107.0, 255.0));
                let x = left + j as i32 * cell;
                root.draw(&Rectangle::new(
                    [(x, y), (x + cell, y + cell)],
                    fill.filled(),
                ))
                .map_err(|e| err(&e))?;
                root.draw(&Rectangle::new(
                    [(x, y), (x + cell, y + cell)],
                    RGBColor(200, 200, 200).stroke_width(1),
                ))
                .map_err(|e| err(&e))?;
                let ink = if share > 0.5 { WHITE } else { BLACK };
                let label = v.to_string();
                let w = label.len() as i32 * size * 3 / 5;
                root.draw(&Text::new(
                    label,
                    (x + cell / 2 - w / 2, y + cell / 2 - size / 2),
                    text(size, &ink),
                ))
                .map_err(|e| err(&e))?;
            }
        }
        Ok(())
    })
}

/// Draws with `f` on a white `size` picture and writes it to `path` as a PNG.
fn render(
    (width, height): (u32, u32),
    path: &Path,
    f: impl FnOnce(&DrawingArea<BitMapBackend, Shift>) -> std::result::Result<(), String>,
) -> Result<()> {
    let fail = |e: String| Error::data(path, format!("cannot draw this picture: {e}"));
    font().map_err(fail)?;
    let mut pixels = vec![255u8; (width * height * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (width, height)).into_drawing_area();
        f(&root).map_err(fail)?;
        root.present().map_err(|e| fail(e.to_string()))?;
    }
    let img = image::RgbImage::from_raw(width, height, pixels)
        .ok_or_else(|| fail("pixel buffer of the wrong size".into()))?;
    let mut png = std::io::Cursor::new(Vec::new());
    img.write_to(&mut png, image::ImageFormat::Png)
        .map_err(|e| fail(e.to_string()))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    crate::tensor_io::write_atomic(path, &png.into_inner())
}

/// An axis label on an axis whose values reach `scale` in size: at most four decimals and
/// no trailing zeros (`0.3`, not `0.30000000000000004`); an axis of large values without
/// decimals, one of small values (learning rates) all as `1.5e-4`; rounding noise as `0`.
fn tick(v: f64, scale: f64) -> String {
    if v.abs() <= scale * 1e-9 {
        return "0".into();
    }
    if scale >= 1000.0 {
        return format!("{v:.0}");
    }
    if scale < 1e-2 {
        return format!("{v:.1e}");
    }
    let s = format!("{v:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".into()
    } else {
        s.into()
    }
}

/// The range the finite values of `v` span, widened a little (and made non-empty).
fn span(v: impl Iterator<Item = f64>, log: bool) -> (f64, f64) {
    let (lo, hi) = v
        .filter(|x| x.is_finite() && (!log || *x > 0.0))
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
            (a.min(x), b.max(x))
        });
    if lo > hi {
        return if log { (0.01, 1.0) } else { (0.0, 1.0) };
    }
    if log {
        return (lo / 1.5, hi * 1.5);
    }
    let pad = ((hi - lo) * 0.05).max(hi.abs() * 1e-3).max(1e-9);
    (lo - pad, hi + pad)
}

fn draw(c: &Chart, area: &DrawingArea<BitMapBackend, Shift>) -> std::result::Result<(), String> {
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let points = || c.series.iter().flat_map(|s| s.points.iter());
    let (x0, x1) = span(points().map(|p| p.0), c.log_x);
    let (y0, y1) = span(points().map(|p| p.1), false);
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(&c.title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70);
    macro_rules! finish {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_desc(c.x_label.as_str())
                .y_desc(c.y_label.as_str())
                .label_style(("sans-serif", 13))
                .x_labels(if c.log_x { 6 } else { 10 })
                .x_label_formatter(&|x| tick(*x, x0.abs().max(x1.abs())))
                .y_label_formatter(&|y| tick(*y, y0.abs().max(y1.abs())))
                .draw()
                .map_err(|e| err(&e))?;
            for (i, s) in c.series.iter().enumerate() {
                let colour = PALETTE[i % PALETTE.len()];
                let finite = s
                    .points
                    .iter()
                    .copied()
                    .filter(|(x, y)| x.is_finite() && y.is_finite() && (!c.log_x || *x > 0.0));
                chart
                    .draw_series(LineSeries::new(finite.clone(), colour.stroke_width(2)))
                    .map_err(|e| err(&e))?
                    .label(s.name.as_str())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2))
                    });
                if s.points.len() <= 12 {
                    chart
                        .draw_series(finite.map(|p| Circle::new(p, 3, colour.filled())))
                        .map_err(|e| err(&e))?;
                }
            }
            if c.series.len() > 1 || c.series.iter().any(|s| !s.name.is_empty()) {
                chart
                    .configure_series_labels()
                    .background_style(WHITE.mix(0.85))
                    .border_style(BLACK.mix(0.4))
                    .label_font(("sans-serif", 13))
                    // Losses fall (the upper right is free); accuracies rise with labels.
                    .position(if c.log_x {
                        SeriesLabelPosition::UpperLeft
                    } else {
                        SeriesLabelPosition::UpperRight
                    })
                    .draw()
                    .map_err(|e| err(&e))?;
            }
        }};
    }
    if c.log_x {
        finish!(builder
            .build_cartesian_2d((x0..x1).log_scale(), y0..y1)
            .map_err(|e| err(&e))?);
    } else {
        finish!(builder
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(|e| err(&e))?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_labels_are_short() {
        assert_eq!(tick(0.30000000000000004, 1.0), "0.3");
        assert_eq!(tick(1.0, 1.0), "1");
        assert_eq!(tick(12345.6, 20000.0), "12346");
        // A learning-rate axis: every label in one form, and rounding noise as zero.
        assert_eq!(tick(0.0015, 0.0015), "1.5e-3");
        assert_eq!(tick(0.0004, 0.0015), "4.0e-4");
        assert_eq!(tick(-2.7e-20, 0.0015), "0");
        assert_eq!(tick(0.0, 1.0), "0");
    }

    #[test]
    fn a_picture_of_two_charts_is_written_as_a_png_of_the_size_asked() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("p/loss.png");
        let curve = |k: f64| Series {
            name: format!("k = {k}"),
            points: (1..50).map(|i| (i as f64, k / i as f64)).collect(),
        };
        let charts = [
            Chart {
                title: "loss".into(),
                x_label: "step".into(),
                y_label: "loss".into(),
                series: vec![curve(1.0), curve(2.0)],
                log_x: false,
            },
            Chart {
                title: "label efficiency".into(),
                x_label: "labels".into(),
                y_label: "accuracy".into(),
                series: vec![Series {
                    name: String::new(),
                    points: vec![(0.01, 0.5), (0.1, 0.7), (1.0, 0.9), (f64::NAN, 0.1)],
                }],
                log_x: true,
            },
        ];
        save(&charts, 640, &path).unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        assert_eq!((img.width(), img.height()), (640, 600));
        // Something was drawn in the charts' colours, not just a white page.
        let blue = img.pixels().filter(|p| p.0 == [31, 119, 180]).count();
        let orange = img.pixels().filter(|p| p.0 == [255, 127, 14]).count();
        assert!(blue > 100 && orange > 100, "{blue} {orange}");
        // Nothing to plot is still a picture.
        let empty = Chart {
            series: vec![],
            ..charts[0].clone()
        };
        save(&[empty], 320, &tmp.path().join("empty.png")).unwrap();
    }
}
