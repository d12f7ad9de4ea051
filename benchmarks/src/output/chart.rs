//! One SVG chart per suite: throughput against the swept parameter (calls in flight,
//! concurrent tasks) with one line per system / cluster / level where the suite has such
//! series, otherwise horizontal bars of each figure grouped by unit.

use std::path::Path;

use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::output::json::{Figure, SuiteRecord};
use crate::report::count;

/// Width of every chart, in pixels.
const WIDTH: u32 = 1_000;
/// Line and bar colours (the "tab10" palette), used in turn.
const COLORS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

fn color(i: usize) -> RGBColor {
    COLORS[i % COLORS.len()]
}

/// Writes the chart of `record` to `path`.
pub(crate) fn write_chart(record: &SuiteRecord, path: &Path) -> anyhow::Result<()> {
    let lines = throughput_lines(&record.figures);
    if lines.is_empty() {
        bars(record, path)
    } else {
        line_chart(record, &lines, path)
    }
}

/// One line of a throughput chart.
#[derive(Debug, Clone, PartialEq)]
struct Line {
    name: String,
    x_label: String,
    points: Vec<(f64, f64)>,
}

/// Where `figure` sits on a throughput chart: `(line, x label, x)`. Figures that say so
/// themselves are used as they are; otherwise a scenario ending in `", <n> tasks"` or
/// `", <n> in flight"` is read as a point at `n` on the line named by the rest.
fn point_of(figure: &Figure) -> Option<(String, String, f64)> {
    figure.ops_per_sec?;
    if let (Some(line), Some(x)) = (&figure.line, figure.x) {
        let x_label = figure.x_label.clone().unwrap_or_default();
        return Some((line.clone(), x_label, x));
    }
    let (rest, last) = figure.scenario.rsplit_once(", ")?;
    let (n, x_label) = if let Some(n) = last.strip_suffix(" tasks") {
        (n, "concurrent tasks")
    } else if let Some(n) = last.strip_suffix(" in flight") {
        (n, "calls in flight")
    } else {
        return None;
    };
    let x: f64 = n.trim().replace(',', "").parse().ok()?;
    Some((rest.to_string(), x_label.to_string(), x))
}

/// The throughput lines among `figures`, in order of first appearance, points sorted by x.
fn throughput_lines(figures: &[Figure]) -> Vec<Line> {
    let mut lines: Vec<Line> = Vec::new();
    for figure in figures {
        let (Some((name, x_label, x)), Some(ops)) = (point_of(figure), figure.ops_per_sec) else {
            continue;
        };
        if x <= 0.0 {
            continue;
        }
        match lines.iter_mut().find(|l| l.name == name) {
            Some(line) => line.points.push((x, ops)),
            None => lines.push(Line {
                name,
                x_label,
                points: vec![(x, ops)],
            }),
        }
    }
    for line in &mut lines {
        line.points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    lines
}

fn line_chart(record: &SuiteRecord, lines: &[Line], path: &Path) -> anyhow::Result<()> {
    let xs = lines.iter().flat_map(|l| l.points.iter().map(|p| p.0));
    let x_min = xs.clone().fold(f64::INFINITY, f64::min);
    let x_max = xs.fold(f64::NEG_INFINITY, f64::max);
    let y_max = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.1))
        .fold(0.0, f64::max);
    let x_label = lines[0].x_label.clone();

    let root = SVGBackend::new(path, (WIDTH, 620)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{}: throughput against {x_label}", record.suite),
            ("sans-serif", 22),
        )
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(
            (x_min / 1.5..x_max * 1.5).log_scale(),
            0.0..(y_max * 1.15).max(1.0),
        )?;
    chart
        .configure_mesh()
        .x_desc(x_label.as_str())
        .y_desc("operations per second")
        .label_style(("sans-serif", 13))
        .axis_desc_style(("sans-serif", 14))
        .light_line_style(WHITE)
        .x_label_formatter(&|x| count(*x))
        .y_label_formatter(&|y| count(*y))
        .draw()?;
    for (i, line) in lines.iter().enumerate() {
        let color = color(i);
        chart
            .draw_series(LineSeries::new(
                line.points.iter().copied(),
                color.stroke_width(2),
            ))?
            .label(line.name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart.draw_series(
            line.points
                .iter()
                .map(|&p| Circle::new(p, 3, color.filled())),
        )?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// The unit a figure is charted in, and its value in that unit.
fn bar_value(figure: &Figure) -> Option<(String, f64)> {
    if let Some(ops) = figure.ops_per_sec {
        Some(("operations per second".to_string(), ops))
    } else if let (Some(v), Some(unit)) = (figure.value, &figure.unit) {
        Some((unit.clone(), v))
    } else {
        figure
            .p50_us
            .map(|p50| ("p50 latency, µs".to_string(), p50))
    }
}

fn bars(record: &SuiteRecord, path: &Path) -> anyhow::Result<()> {
    let mut panels: Vec<(String, Vec<(String, f64)>)> = Vec::new();
    for figure in &record.figures {
        let Some((unit, v)) = bar_value(figure) else {
            continue;
        };
        let mut label = format!("{} · {}", figure.system, figure.scenario);
        if label.chars().count() > 72 {
            label = label.chars().take(71).collect::<String>() + "…";
        }
        match panels.iter_mut().find(|(u, _)| *u == unit) {
            Some((_, items)) => items.push((label, v)),
            None => panels.push((unit, vec![(label, v)])),
        }
    }
    let heights: Vec<u32> = panels
        .iter()
        .map(|(_, items)| 90 + 30 * items.len() as u32)
        .collect();
    let total = heights.iter().sum::<u32>().max(100);
    let root = SVGBackend::new(path, (WIDTH, total)).into_drawing_area();
    root.fill(&WHITE)?;
    let label_width = panels
        .iter()
        .flat_map(|(_, items)| items.iter().map(|(l, _)| l.chars().count() as u32))
        .max()
        .unwrap_or(10)
        * 6
        + 16;

    let mut rest = root.clone();
    for (i, ((unit, items), height)) in panels.iter().zip(&heights).enumerate() {
        let (area, below) = rest.split_vertically(*height);
        rest = below;
        let n = items.len();
        let max = items.iter().map(|(_, v)| *v).fold(0.0, f64::max);
        let caption = format!("{}: {unit}", record.suite);
        let mut chart = ChartBuilder::on(&area)
            .caption(caption, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(30)
            .y_label_area_size(label_width.min(WIDTH / 2))
            .build_cartesian_2d(0.0..(max * 1.2).max(1e-9), (0..n - 1).into_segmented())?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .light_line_style(WHITE)
            .label_style(("sans-serif", 12))
            .y_labels(n)
            .y_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => {
                    items.get(*i).map(|(l, _)| l.clone()).unwrap_or_default()
                }
                _ => String::new(),
            })
            .x_label_formatter(&|x| count(*x))
            .draw()?;
        let color = color(i);
        chart.draw_series(items.iter().enumerate().map(|(i, (_, v))| {
            let mut bar = Rectangle::new(
                [
                    (0.0, SegmentValue::Exact(i)),
                    (*v, SegmentValue::Exact(i + 1)),
                ],
                color.filled(),
            );
            bar.set_margin(5, 5, 0, 0);
            bar
        }))?;
        chart.draw_series(items.iter().enumerate().map(|(i, (_, v))| {
            Text::new(
                format!(" {}", short(*v)),
                (*v, SegmentValue::CenterOf(i)),
                ("sans-serif", 12)
                    .into_font()
                    .color(&BLACK)
                    .pos(Pos::new(HPos::Left, VPos::Center)),
            )
        }))?;
    }
    root.present()?;
    Ok(())
}

/// A value for a bar label.
fn short(v: f64) -> String {
    if v.abs() >= 10_000.0 {
        count(v)
    } else {
        format!("{v:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figure(scenario: &str, ops: Option<f64>) -> Figure {
        Figure {
            scenario: scenario.to_string(),
            system: "datacake-ec".to_string(),
            ops_per_sec: ops,
            p50_us: None,
            p99_us: None,
            p999_us: None,
            max_us: None,
            value: None,
            unit: None,
            ratio: None,
            target: None,
            line: None,
            x_label: None,
            x: None,
        }
    }

    #[test]
    fn scenarios_with_a_swept_parameter_become_lines() {
        let figures = vec![
            figure("3 nodes, ALL, Put x1000, serial", Some(1.0)),
            figure("3 nodes, ALL, Put x1000, 512 tasks", Some(3.0)),
            figure("3 nodes, ALL, Put x1000, 10 tasks", Some(2.0)),
            figure("1 nodes, ONE, Del x1000, 10 tasks", Some(5.0)),
            figure("memory per key", None),
        ];
        let lines = throughput_lines(&figures);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].name, "3 nodes, ALL, Put x1000");
        assert_eq!(lines[0].points, vec![(10.0, 2.0), (512.0, 3.0)]);
        assert_eq!(lines[0].x_label, "concurrent tasks");
    }

    #[test]
    fn both_kinds_of_chart_are_written() {
        let dir = std::env::temp_dir().join(format!("datacake-chart-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut in_flight = figure("echo, 64 in flight", Some(1e5));
        in_flight.line = Some("datacake-rpc".into());
        in_flight.x = Some(64.0);
        let mut other = in_flight.clone();
        other.x = Some(1.0);
        let lines = SuiteRecord {
            suite: "rpc".into(),
            seconds: 1.0,
            figures: vec![in_flight, other],
        };
        let mut ms = figure("full membership, 5 nodes", None);
        ms.value = Some(250.0);
        ms.unit = Some("ms".into());
        let bars = SuiteRecord {
            suite: "gossip".into(),
            seconds: 1.0,
            figures: vec![ms, figure("stamps", Some(3e7))],
        };
        for record in [lines, bars] {
            let path = dir.join(format!("{}.svg", record.suite));
            write_chart(&record, &path).unwrap();
            let svg = std::fs::read_to_string(&path).unwrap();
            assert!(svg.starts_with("<svg"), "{svg}");
            assert!(svg.contains(&record.suite), "{svg}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
