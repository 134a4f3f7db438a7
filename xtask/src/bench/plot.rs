//! The SVG plots of a bench report ([`super::report`]), drawn with `plotters`:
//!
//! - one chart per distribution a bench recorded (`Outcome::samples` grouped by chart): the
//!   empirical CDF of each series, e.g. vc's boot times against the floor's;
//! - `throughput.svg`: every throughput figure of the run that has a goal against a floor, as a
//!   bar beside its floor's bar;
//! - `density-pss.svg`: host PSS per idle pod against the number of pods, with the goal line.
//!
//! Text is written as SVG `<text>`: no font files are read, the viewer renders it.

use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use super::report::{Goal, Outcome, Samples, Unit};

/// Size of every chart, in SVG pixels.
const SIZE: (u32, u32) = (800, 440);
/// The figure names `bench density` reports, plotted against N.
pub(crate) const DENSITY_IDLE: &str = "host PSS per pod, idle";
/// See [`DENSITY_IDLE`].
pub(crate) const DENSITY_AFTER: &str = "host PSS per pod, after freeing";

/// One written plot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Drawn {
    /// The bench it belongs to (`None`: across benches).
    pub bench: Option<&'static str>,
    /// The outcome's scale, for a bench run at several (see `Outcome::pods`).
    pub pods: Option<u32>,
    /// Its caption.
    pub title: String,
    /// Its file name in the report directory.
    pub file: String,
}

impl Drawn {
    /// A plot across benches.
    fn across(title: &str, file: &str) -> Self {
        Self {
            bench: None,
            pods: None,
            title: title.to_owned(),
            file: file.to_owned(),
        }
    }
}

/// Draws every plot the outcomes allow into `dir`.
pub(crate) fn draw_all(dir: &Path, outcomes: &[Outcome]) -> Result<Vec<Drawn>> {
    let mut drawn = Vec::new();
    for o in outcomes {
        let mut charts: Vec<&str> = Vec::new();
        for s in &o.samples {
            if !charts.contains(&s.chart.as_str()) {
                charts.push(&s.chart);
            }
        }
        for chart in charts {
            let series: Vec<&Samples> = o.samples.iter().filter(|s| s.chart == chart).collect();
            let scale = o.pods.map_or(String::new(), |n| format!("-{n}"));
            let file = format!("{}{scale}-{}.svg", o.bench, slug(chart));
            let title = format!("{}: {chart}", o.bench);
            cdf(&dir.join(&file), &title, &series)?;
            drawn.push(Drawn {
                bench: Some(o.bench),
                pods: o.pods,
                title,
                file,
            });
        }
    }
    let bars: Vec<Bar> = outcomes
        .iter()
        .flat_map(|o| {
            o.figures
                .iter()
                // The throughputs held to a goal against a floor; the rest (reference lines,
                // paths kept for comparison) are in the tables.
                .filter(|f| f.unit.is_throughput() && f.floor.is_some() && f.goal.is_some())
                .map(move |f| Bar {
                    label: format!("{}: {}", o.bench, f.name),
                    value: f.unit.to_mib_per_s(f.value),
                    floor: f.floor.as_ref().map(|fl| f.unit.to_mib_per_s(fl.value)),
                })
        })
        .collect();
    if !bars.is_empty() {
        let plot = Drawn::across("throughput against floors (MiB/s)", "throughput.svg");
        throughput(&dir.join(&plot.file), &plot.title, &bars)?;
        drawn.push(plot);
    }
    let density: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| o.bench == "density" && o.pods.is_some())
        .collect();
    if !density.is_empty() {
        let plot = Drawn::across(
            "host PSS per idle pod against the number of pods",
            "density-pss.svg",
        );
        density_pss(&dir.join(&plot.file), &plot.title, &density)?;
        drawn.push(plot);
    }
    Ok(drawn)
}

/// `chart` as a file name part: lower-case letters and digits, runs of anything else as `-`.
fn slug(chart: &str) -> String {
    let mut out = String::new();
    for c in chart.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_owned()
}

/// The steps of the empirical CDF of `values`: (value, fraction of samples at or below it).
fn cdf_points(values: &[f64]) -> Vec<(f64, f64)> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    let n = v.len() as f64;
    let mut points = Vec::with_capacity(v.len() * 2);
    for (i, x) in v.iter().enumerate() {
        points.push((*x, i as f64 / n));
        points.push((*x, (i + 1) as f64 / n));
    }
    points
}

/// An axis label: whole numbers without decimals.
fn tick(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// The palette, by series index.
fn color(i: usize) -> RGBColor {
    const COLORS: [RGBColor; 5] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
    ];
    COLORS[i % COLORS.len()]
}

/// A chart with `f64` axes on an SVG file.
type Chart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// What drawing returns; plotters' errors carry the backend's error type, boxed here.
type Drawing<T = ()> = Result<T, Box<dyn std::error::Error>>;

/// Draws one chart into `path`: a white `size` canvas, `title`, axes over `x` and `y`; `body`
/// draws the mesh and the series and says where the legend goes.
fn svg_chart(
    path: &Path,
    size: (u32, u32),
    title: &str,
    (x, y): (std::ops::Range<f64>, std::ops::Range<f64>),
    body: impl FnOnce(&mut Chart<'_, '_>) -> Drawing<SeriesLabelPosition>,
) -> Result<()> {
    let draw = || -> Drawing {
        let root = SVGBackend::new(path, size).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(x, y)?;
        let legend = body(&mut chart)?;
        chart
            .configure_series_labels()
            .position(legend)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| anyhow!("cannot draw {}: {e}", path.display()))
}

/// The CDF of each series on one chart.
fn cdf(path: &Path, title: &str, series: &[&Samples]) -> Result<()> {
    let unit = series.first().map_or(Unit::Ms, |s| s.unit);
    let all: Vec<f64> = series
        .iter()
        .flat_map(|s| s.values.iter().copied())
        .collect();
    let (lo, hi) = all
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
            (lo.min(*x), hi.max(*x))
        });
    let (lo, hi) = if lo.is_finite() && hi > lo {
        let pad = (hi - lo) * 0.05;
        ((lo - pad).max(0.0), hi + pad)
    } else if lo.is_finite() {
        ((lo * 0.9).max(0.0), lo * 1.1 + 1.0)
    } else {
        (0.0, 1.0)
    };
    svg_chart(path, SIZE, title, (lo..hi, 0f64..1f64), |chart| {
        chart
            .configure_mesh()
            .x_label_formatter(&|x| tick(*x))
            .x_desc(unit.symbol())
            .y_desc("fraction of runs at or below")
            .draw()?;
        for (i, s) in series.iter().enumerate() {
            let c = color(i);
            chart
                .draw_series(LineSeries::new(cdf_points(&s.values), c.stroke_width(2)))?
                .label(format!("{} ({} runs)", s.series, s.values.len()))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                });
        }
        Ok(SeriesLabelPosition::LowerRight)
    })
}

/// One throughput figure.
#[derive(Debug, Clone, PartialEq)]
struct Bar {
    label: String,
    value: f64,
    floor: Option<f64>,
}

/// Grouped bars: each figure beside its floor.
fn throughput(path: &Path, title: &str, bars: &[Bar]) -> Result<()> {
    let top = bars
        .iter()
        .flat_map(|b| [Some(b.value), b.floor])
        .flatten()
        .fold(0f64, f64::max)
        * 1.15;
    let n = bars.len();
    let labels: Vec<String> = bars.iter().map(|b| b.label.clone()).collect();
    let size = (SIZE.0.max(140 * n as u32), SIZE.1);
    let axes = (-0.5f64..(n as f64 - 0.5), 0f64..top.max(1.0));
    svg_chart(path, size, title, axes, |chart| {
        let formatter = |x: &f64| {
            let i = x.round();
            if (x - i).abs() < 1e-6 && i >= 0.0 {
                labels.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        };
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(n)
            .x_label_formatter(&formatter)
            .y_label_formatter(&|y| tick(*y))
            .y_desc("MiB/s")
            .draw()?;
        let (vc, floor) = (color(0), color(1));
        chart
            .draw_series(bars.iter().enumerate().map(|(i, b)| {
                let x = i as f64;
                Rectangle::new([(x - 0.35, 0.0), (x, b.value)], vc.filled())
            }))?
            .label("vc")
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 15, y + 5)], vc.filled()));
        chart
            .draw_series(bars.iter().enumerate().filter_map(|(i, b)| {
                let x = i as f64;
                b.floor
                    .map(|f| Rectangle::new([(x, 0.0), (x + 0.35, f)], floor.filled()))
            }))?
            .label("floor (named in the report's tables)")
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 15, y + 5)], floor.filled()));
        chart.draw_series(bars.iter().enumerate().flat_map(|(i, b)| {
            let x = i as f64;
            let mut texts = vec![Text::new(
                super::report::num(b.value),
                (x - 0.3, b.value + top * 0.02),
                ("sans-serif", 13),
            )];
            if let Some(f) = b.floor {
                texts.push(Text::new(
                    super::report::num(f),
                    (x + 0.05, f + top * 0.02),
                    ("sans-serif", 13),
                ));
            }
            texts
        }))?;
        Ok(SeriesLabelPosition::UpperRight)
    })
}

/// PSS per pod against N, idle and after freeing, with the goal.
fn density_pss(path: &Path, title: &str, outcomes: &[&Outcome]) -> Result<()> {
    let series = |name: &str| -> Vec<(f64, f64)> {
        let mut v: Vec<(f64, f64)> = outcomes
            .iter()
            .filter_map(|o| Some((f64::from(o.pods?), o.figure(name)?.value)))
            .collect();
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
        v
    };
    let idle = series(DENSITY_IDLE);
    let after = series(DENSITY_AFTER);
    let goal = outcomes
        .iter()
        .filter_map(|o| o.figure(DENSITY_IDLE)?.goal)
        .find_map(|g| match g {
            Goal::AtMost(v) => Some(v),
            _ => None,
        });
    let max_n = idle.iter().chain(&after).map(|p| p.0).fold(1f64, f64::max);
    let top = idle
        .iter()
        .chain(&after)
        .map(|p| p.1)
        .chain(goal)
        .fold(0f64, f64::max)
        * 1.15;
    let axes = (0f64..max_n + 1.0, 0f64..top.max(1.0));
    svg_chart(path, SIZE, title, axes, |chart| {
        chart
            .configure_mesh()
            .x_labels(max_n as usize + 2)
            .x_label_formatter(&|x| {
                if x.fract() == 0.0 {
                    tick(*x)
                } else {
                    String::new()
                }
            })
            .y_label_formatter(&|y| tick(*y))
            .x_desc("idle pods on the host")
            .y_desc("MiB per pod")
            .draw()?;
        for (i, (name, points)) in [("idle", &idle), ("after each freed 100 MiB", &after)]
            .into_iter()
            .enumerate()
        {
            let c = color(i);
            chart
                .draw_series(LineSeries::new(points.iter().copied(), c.stroke_width(2)))?
                .label(name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                });
            chart.draw_series(points.iter().map(|p| Circle::new(*p, 4, c.filled())))?;
        }
        if let Some(g) = goal {
            let c = color(3);
            chart
                .draw_series(LineSeries::new(
                    [(0.0, g), (max_n + 1.0, g)],
                    c.stroke_width(1),
                ))?
                .label(format!("goal: {g} MiB"))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c));
        }
        Ok(SeriesLabelPosition::LowerRight)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::report::Figure;

    #[test]
    fn cdf_steps_reach_one_in_order() {
        let p = cdf_points(&[3.0, 1.0, f64::NAN, 2.0]);
        assert_eq!(
            p,
            vec![
                (1.0, 0.0),
                (1.0, 1.0 / 3.0),
                (2.0, 1.0 / 3.0),
                (2.0, 2.0 / 3.0),
                (3.0, 2.0 / 3.0),
                (3.0, 1.0)
            ]
        );
        assert!(cdf_points(&[]).is_empty());
    }

    #[test]
    fn slugs() {
        assert_eq!(slug("Boot time (ms)"), "boot-time-ms");
        assert_eq!(slug("pod to first byte"), "pod-to-first-byte");
    }

    #[test]
    fn every_plot_is_written_as_svg() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut boot = Outcome::new("boot", "b");
        boot.samples.push(Samples {
            chart: "boot time".to_owned(),
            series: "vc".to_owned(),
            unit: Unit::Ms,
            values: vec![1200.0, 1100.0, 1300.0],
        });
        boot.samples.push(Samples {
            chart: "boot time".to_owned(),
            series: "floor".to_owned(),
            unit: Unit::Ms,
            values: vec![1000.0],
        });
        let mut io = Outcome::new("io", "i");
        io.figures.push(
            Figure::new("stdout", Unit::MbPerS, 30.0)
                .floor("raw vsock", 70.0)
                .goal(Goal::RatioAtLeast(0.8)),
        );
        io.figures
            .push(Figure::new("a reference", Unit::MbPerS, 90.0).floor("veth", 900.0));
        let density: Vec<Outcome> = [1, 2, 4]
            .into_iter()
            .map(|n| {
                let mut d = Outcome::new("density", "d");
                d.pods = Some(n);
                d.figures.push(
                    Figure::new(DENSITY_IDLE, Unit::Mib, 160.0 + f64::from(n))
                        .goal(Goal::AtMost(64.0)),
                );
                d.figures.push(Figure::new(DENSITY_AFTER, Unit::Mib, 170.0));
                d
            })
            .collect();
        let mut all = vec![boot, io];
        all.extend(density);
        let drawn = draw_all(dir.path(), &all).expect("draw");
        let files: Vec<&str> = drawn.iter().map(|d| d.file.as_str()).collect();
        assert_eq!(
            files,
            ["boot-boot-time.svg", "throughput.svg", "density-pss.svg"]
        );
        for f in files {
            let svg = std::fs::read_to_string(dir.path().join(f)).expect("read");
            assert!(
                svg.starts_with("<svg"),
                "{f}: {}",
                &svg[..svg.len().min(80)]
            );
            assert!(svg.contains("</svg>"), "{f}");
        }
        let boot = std::fs::read_to_string(dir.path().join("boot-boot-time.svg")).expect("read");
        assert!(boot.contains("floor (1 runs)") && boot.contains("vc (3 runs)"));
        let bars = std::fs::read_to_string(dir.path().join("throughput.svg")).expect("read");
        assert!(bars.contains("io: stdout"), "the bar's label is drawn");
        assert!(
            !bars.contains("a reference"),
            "figures without a goal are left out"
        );
        let pss = std::fs::read_to_string(dir.path().join("density-pss.svg")).expect("read");
        assert!(pss.contains("goal: 64 MiB"));
    }
}
