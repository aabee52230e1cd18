//! The run report: a timeline plot of a run as one self-contained SVG ([`timeline_svg`]) and an
//! HTML page that shows it beside the summary, the faults and the violations ([`html_page`]).
//!
//! The plot follows Jepsen's rate and latency plots: throughput per outcome class over time on
//! top, every operation's latency on a log axis below, and each fault as a translucent band
//! across both panels, with a tooltip naming its kind, nodes and detail. Faults that overlap in
//! time are also drawn in separate narrow lanes above the panels, so each stays visible. The SVG
//! is written by hand (no fonts, scripts or links to fetch), derived only from its inputs, so a
//! run renders to the same bytes every time.

use std::collections::{BTreeMap, HashSet};
use std::fmt::{self, Display, Write};

use crate::model::{FaultSpan, Op, Outcome, Record};

/// The most operations drawn in the latency panel. Operations that would land on the same pixel
/// with the same look are drawn once; if more remain, every k-th ok is kept (and, only if the
/// failures and unknowns alone are too many, every j-th of those), which the panel title says.
pub const MAX_LATENCY_POINTS: usize = 20_000;
/// The most lanes of the fault strip; further overlapping faults share the lane freed first.
const MAX_FAULT_LANES: usize = 6;
/// The most throughput buckets across a run (buckets are at least 1 s in runs of 10 s or more).
const MAX_THROUGHPUT_BUCKETS: u64 = 300;
/// Fault kinds named in the legend; any others are counted on one line.
const MAX_LEGEND_KINDS: usize = 20;
/// The longest fault kind shown in the legend, in characters.
const MAX_LEGEND_KIND_CHARS: usize = 22;

const WIDTH_PX: f64 = 1200.0;
const HEIGHT_PX: f64 = 700.0;
const PLOT_LEFT_PX: f64 = 80.0;
const PLOT_RIGHT_PX: f64 = 1000.0;
const PLOT_BOTTOM_PX: f64 = 650.0;
const LEGEND_LEFT_PX: f64 = 1020.0;
const LANES_TOP_PX: f64 = 38.0;
const LANE_HEIGHT_PX: f64 = 7.0;
const PANEL_GAP_PX: f64 = 40.0;
/// A fault shorter than this (an instant one included) is drawn this wide.
const MIN_BAND_WIDTH_PX: f64 = 2.0;

/// Fault kind colours, given to kinds in name order; none is the colour of an outcome class.
const FAULT_PALETTE: [&str; 10] = [
    "#1f77b4", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#393b79", "#aec7e8",
    "#c49c94", "#6b6ecf",
];

/// Renders a run's timeline as a self-contained SVG of 1200×700 px.
///
/// The x axis runs from the start of the run to `end_us`, stretched to the last return or fault
/// time if any lies later (an empty run spans one second). Faults with `end_us: None` reach to
/// the end of the axis; instant ones are thin lines. All text is escaped.
pub fn timeline_svg(history: &[Record], faults: &[FaultSpan], end_us: u64, title: &str) -> String {
    let mut out = String::with_capacity(64 * 1024 + history.len().min(MAX_LATENCY_POINTS) * 48);
    write_timeline(&mut out, history, faults, end_us, title)
        .expect("writing to a String never fails");
    out
}

/// Renders the report page: title, PASS/FAIL banner, summary rows, the plot (loaded from
/// `svg_file_name`, relative to the page), the faults, the violations, and relative links to
/// `history.jsonl`, `faults.jsonl`, `summary.json` and `nodes/`. Self-contained: inline CSS, no
/// scripts. All text is escaped.
pub fn html_page(
    title: &str,
    summary_rows: &[(String, String)],
    verdict_passed: bool,
    svg_file_name: &str,
    faults: &[FaultSpan],
    violations: &[String],
) -> String {
    let mut out = String::with_capacity(16 * 1024);
    let page = Page {
        title,
        summary_rows,
        verdict_passed,
        svg_file_name,
        faults,
        violations,
    };
    page.write(&mut out)
        .expect("writing to a String never fails");
    out
}

fn write_timeline(
    out: &mut String,
    history: &[Record],
    faults: &[FaultSpan],
    end_us: u64,
    title: &str,
) -> fmt::Result {
    let scale = TimeScale::new(domain_end_us(history, faults, end_us));
    let (lanes, lane_count) = fault_lanes(faults, &scale);
    let frame = Frame::new(scale, lane_count);
    let colours = kind_colours(faults);
    write!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH_PX}\" height=\"{HEIGHT_PX}\" \
         viewBox=\"0 0 {WIDTH_PX} {HEIGHT_PX}\">\n<title>{}</title>\n{STYLE}\
         <rect class=\"background\" width=\"100%\" height=\"100%\" fill=\"#fff\"/>\n",
        Esc(title)
    )?;
    write_title(out, history, faults, &frame, title)?;
    write_time_grid(out, &frame)?;
    write_faults(out, faults, &frame, &lanes, &colours)?;
    let buckets = Buckets::count(history, &frame.scale);
    write_throughput(out, &buckets, &frame)?;
    write_latency(out, history, &frame)?;
    write_legend(out, history, faults, &colours, &frame)?;
    out.push_str("</svg>\n");
    Ok(())
}

const STYLE: &str = "<style>\
text{font-family:sans-serif;font-size:11px;fill:#333}\
.title{font-size:16px;font-weight:bold}.heading{font-weight:bold}\
.grid{stroke:#e6e6e6;stroke-width:1}.axis{stroke:#555;stroke-width:1;fill:none}\
.series{fill:none;stroke-width:1.5}\
</style>\n";

/// The end of the x axis: the run's end, or a later return or fault time; never zero.
fn domain_end_us(history: &[Record], faults: &[FaultSpan], end_us: u64) -> u64 {
    let last_return_us = history.iter().map(|r| r.ret_us.max(r.call_us)).max();
    let last_fault_us = faults
        .iter()
        .map(|f| f.end_us.unwrap_or(0).max(f.start_us))
        .max();
    let end_us = end_us
        .max(last_return_us.unwrap_or(0))
        .max(last_fault_us.unwrap_or(0));
    if end_us == 0 {
        1_000_000
    } else {
        end_us
    }
}

/// Maps microseconds since the start onto the plot's x pixels.
#[derive(Clone, Copy)]
struct TimeScale {
    end_us: u64,
}

impl TimeScale {
    fn new(end_us: u64) -> TimeScale {
        assert!(end_us > 0, "the time axis must not be empty");
        TimeScale { end_us }
    }

    fn x(&self, us: u64) -> f64 {
        let fraction = us.min(self.end_us) as f64 / self.end_us as f64;
        PLOT_LEFT_PX + (PLOT_RIGHT_PX - PLOT_LEFT_PX) * fraction
    }

    /// A fault's band: its left edge and width in pixels.
    fn band(&self, fault: &FaultSpan) -> (f64, f64) {
        let left_px = self.x(fault.start_us);
        let right_px = self.x(fault.end_us.unwrap_or(self.end_us));
        (left_px, (right_px - left_px).max(MIN_BAND_WIDTH_PX))
    }
}

/// Where the fault lanes and the two panels sit vertically.
struct Frame {
    scale: TimeScale,
    lane_count: usize,
    throughput_top_px: f64,
    throughput_bottom_px: f64,
    latency_top_px: f64,
    latency_bottom_px: f64,
}

impl Frame {
    fn new(scale: TimeScale, lane_count: usize) -> Frame {
        let throughput_top_px = LANES_TOP_PX + lane_count as f64 * LANE_HEIGHT_PX + 22.0;
        let usable_px = PLOT_BOTTOM_PX - throughput_top_px - PANEL_GAP_PX;
        let throughput_bottom_px = throughput_top_px + usable_px * 0.4;
        Frame {
            scale,
            lane_count,
            throughput_top_px,
            throughput_bottom_px,
            latency_top_px: throughput_bottom_px + PANEL_GAP_PX,
            latency_bottom_px: PLOT_BOTTOM_PX,
        }
    }

    fn lane_y(&self, lane: usize) -> f64 {
        LANES_TOP_PX + lane as f64 * LANE_HEIGHT_PX
    }
}

fn write_title(
    out: &mut String,
    history: &[Record],
    faults: &[FaultSpan],
    frame: &Frame,
    title: &str,
) -> fmt::Result {
    writeln!(
        out,
        "<text class=\"title\" x=\"{PLOT_LEFT_PX}\" y=\"24\">{}</text>",
        Esc(title)
    )?;
    writeln!(
        out,
        "<text x=\"{PLOT_RIGHT_PX}\" y=\"24\" text-anchor=\"end\">{} operations, {} faults, {} s</text>",
        history.len(),
        faults.len(),
        seconds(frame.scale.end_us)
    )
}

/// Vertical grid lines and second labels shared by both panels, and the frames of the panels.
fn write_time_grid(out: &mut String, frame: &Frame) -> fmt::Result {
    let end_s = frame.scale.end_us as f64 / 1e6;
    let step_s = nice_step(end_s, 12);
    let decimals = decimals_for(step_s);
    let panels = [
        (frame.throughput_top_px, frame.throughput_bottom_px),
        (frame.latency_top_px, frame.latency_bottom_px),
    ];
    out.push_str("<g class=\"time-axis\">\n");
    let mut tick = 0u64;
    loop {
        let at_s = tick as f64 * step_s;
        if at_s > end_s * (1.0 + 1e-9) {
            break;
        }
        let x = frame.scale.x((at_s * 1e6).round() as u64);
        for (top, bottom) in panels {
            writeln!(out, "<line class=\"grid\" x1=\"{x:.1}\" y1=\"{top:.1}\" x2=\"{x:.1}\" y2=\"{bottom:.1}\"/>")?;
        }
        writeln!(
            out,
            "<text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{at_s:.decimals$}</text>",
            frame.latency_bottom_px + 15.0
        )?;
        tick += 1;
    }
    for (top, bottom) in panels {
        writeln!(
            out,
            "<rect class=\"axis\" x=\"{PLOT_LEFT_PX}\" y=\"{top:.1}\" width=\"{:.1}\" height=\"{:.1}\"/>",
            PLOT_RIGHT_PX - PLOT_LEFT_PX,
            bottom - top
        )?;
    }
    writeln!(
        out,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">seconds since the start</text>\n</g>",
        (PLOT_LEFT_PX + PLOT_RIGHT_PX) / 2.0,
        frame.latency_bottom_px + 34.0
    )
}

/// A lane for each fault (greedy, in order of start), so faults that overlap on screen get
/// different lanes; and how many lanes there are.
fn fault_lanes(faults: &[FaultSpan], scale: &TimeScale) -> (Vec<usize>, usize) {
    let mut order: Vec<usize> = (0..faults.len()).collect();
    order.sort_by_key(|&i| (faults[i].start_us, faults[i].id));
    let mut lane_ends_px: Vec<f64> = Vec::new();
    let mut lanes = vec![0; faults.len()];
    for i in order {
        let (left_px, width_px) = scale.band(&faults[i]);
        let free = lane_ends_px.iter().position(|&end| end + 1.0 <= left_px);
        let lane = match free {
            Some(lane) => lane,
            None if lane_ends_px.len() < MAX_FAULT_LANES => {
                lane_ends_px.push(f64::NEG_INFINITY);
                lane_ends_px.len() - 1
            }
            None => first_freed(&lane_ends_px),
        };
        lane_ends_px[lane] = lane_ends_px[lane].max(left_px + width_px);
        lanes[i] = lane;
    }
    (lanes, lane_ends_px.len())
}

fn first_freed(lane_ends_px: &[f64]) -> usize {
    let mut best = 0;
    for (lane, &end) in lane_ends_px.iter().enumerate() {
        if end < lane_ends_px[best] {
            best = lane;
        }
    }
    best
}

/// One colour per fault kind, given in name order.
fn kind_colours(faults: &[FaultSpan]) -> BTreeMap<&str, &'static str> {
    let mut colours: BTreeMap<&str, &'static str> =
        faults.iter().map(|f| (f.kind.as_str(), "")).collect();
    for (i, colour) in colours.values_mut().enumerate() {
        *colour = FAULT_PALETTE[i % FAULT_PALETTE.len()];
    }
    colours
}

/// Each fault as a translucent band over both panels and a strip in its lane, one `<g>` with
/// the tooltip.
fn write_faults(
    out: &mut String,
    faults: &[FaultSpan],
    frame: &Frame,
    lanes: &[usize],
    colours: &BTreeMap<&str, &'static str>,
) -> fmt::Result {
    out.push_str("<g class=\"faults\">\n");
    for (fault, &lane) in faults.iter().zip(lanes) {
        let (left_px, width_px) = frame.scale.band(fault);
        let instant = fault.end_us == Some(fault.start_us);
        let opacity = if instant { 0.6 } else { 0.15 };
        write!(
            out,
            "<g class=\"fault\" fill=\"{}\"><title>{}</title>",
            colours[fault.kind.as_str()],
            Esc(&fault_tooltip(fault))
        )?;
        writeln!(
            out,
            "<rect class=\"band\" x=\"{left_px:.1}\" y=\"{:.1}\" width=\"{width_px:.1}\" \
             height=\"{:.1}\" fill-opacity=\"{opacity}\"/><rect class=\"lane\" x=\"{left_px:.1}\" \
             y=\"{:.1}\" width=\"{width_px:.1}\" height=\"{:.1}\" fill-opacity=\"0.85\"/></g>",
            frame.throughput_top_px,
            frame.latency_bottom_px - frame.throughput_top_px,
            frame.lane_y(lane),
            LANE_HEIGHT_PX - 1.0
        )?;
    }
    if frame.lane_count > 0 {
        writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">faults</text>",
            PLOT_LEFT_PX - 6.0,
            LANES_TOP_PX + 8.0
        )?;
    }
    out.push_str("</g>\n");
    Ok(())
}

/// `kind · nodes · from – to (duration)`, then the detail on its own line.
fn fault_tooltip(fault: &FaultSpan) -> String {
    let end = match fault.end_us {
        Some(end_us) => format!("{} s", seconds(end_us)),
        None => "not healed".to_string(),
    };
    format!(
        "{} · nodes {} · {} s – {end} ({})\n{}",
        fault.kind,
        nodes_text(&fault.nodes),
        seconds(fault.start_us),
        duration_text(fault),
        fault.detail
    )
}

/// The outcome classes, in drawing order (the rarer, worse ones on top).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
enum Class {
    Ok,
    Fail,
    Unknown,
}

impl Class {
    const ALL: [Class; 3] = [Class::Ok, Class::Fail, Class::Unknown];

    fn of(outcome: &Outcome) -> Class {
        match outcome {
            Outcome::Ok(_) => Class::Ok,
            Outcome::Fail { .. } => Class::Fail,
            Outcome::Unknown { .. } => Class::Unknown,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Class::Ok => "ok",
            Class::Fail => "fail",
            Class::Unknown => "unknown",
        }
    }

    fn colour(self) -> &'static str {
        match self {
            Class::Ok => "#2ca02c",
            Class::Fail => "#ff7f0e",
            Class::Unknown => "#d62728",
        }
    }

    fn point_opacity(self) -> f64 {
        match self {
            Class::Ok => 0.5,
            Class::Fail | Class::Unknown => 0.9,
        }
    }
}

/// The marker of an op kind in the latency panel.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
enum Shape {
    Get,
    Set,
    Cas,
    Incr,
}

impl Shape {
    const ALL: [Shape; 4] = [Shape::Get, Shape::Set, Shape::Cas, Shape::Incr];

    fn of(op: &Op) -> Shape {
        match op {
            Op::Get { .. } => Shape::Get,
            Op::Set { .. } => Shape::Set,
            Op::Cas { .. } => Shape::Cas,
            Op::Incr { .. } => Shape::Incr,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Shape::Get => "get",
            Shape::Set => "set",
            Shape::Cas => "cas",
            Shape::Incr => "incr",
        }
    }

    /// A marker centred on (x, y): circle, square, triangle or diamond, about 5 px across.
    fn write(self, out: &mut String, x: i32, y: i32) -> fmt::Result {
        match self {
            Shape::Get => write!(out, "<circle cx=\"{x}\" cy=\"{y}\" r=\"2.2\"/>"),
            Shape::Set => write!(
                out,
                "<rect x=\"{}\" y=\"{}\" width=\"4\" height=\"4\"/>",
                x - 2,
                y - 2
            ),
            Shape::Cas => write!(out, "<path d=\"M{x} {}l3 5h-6z\"/>", y - 3),
            Shape::Incr => write!(out, "<path d=\"M{x} {}l3 3-3 3-3-3z\"/>", y - 3),
        }
    }
}

/// Completions per outcome class in fixed-width buckets of time.
struct Buckets {
    width_us: u64,
    end_us: u64,
    counts: [Vec<u64>; 3],
}

impl Buckets {
    fn count(history: &[Record], scale: &TimeScale) -> Buckets {
        let width_us = bucket_width_us(scale.end_us);
        // A run that ends mid-bucket gives the rest to the last whole bucket, so every
        // bucket spans at least `width_us` (unless the run is shorter) and none spikes.
        let len = (scale.end_us / width_us).max(1) as usize;
        let mut counts = [vec![0; len], vec![0; len], vec![0; len]];
        for record in history {
            let bucket = ((record.ret_us / width_us) as usize).min(len - 1);
            counts[Class::of(&record.outcome) as usize][bucket] += 1;
        }
        Buckets {
            width_us,
            end_us: scale.end_us,
            counts,
        }
    }

    /// The middle of bucket `i` and its rate in ops/s.
    fn point(&self, class: Class, i: usize) -> (u64, f64) {
        let counts = &self.counts[class as usize];
        let start_us = i as u64 * self.width_us;
        let end_us = if i + 1 == counts.len() {
            self.end_us
        } else {
            start_us + self.width_us
        };
        let span_us = end_us.saturating_sub(start_us).max(1);
        let rate = counts[i] as f64 * 1e6 / span_us as f64;
        (start_us + span_us / 2, rate)
    }

    fn max_rate(&self) -> f64 {
        let mut max: f64 = 0.0;
        for class in Class::ALL {
            for i in 0..self.counts[class as usize].len() {
                max = max.max(self.point(class, i).1);
            }
        }
        max
    }
}

/// 1-2-5 bucket widths: at least 1 s (at most [`MAX_THROUGHPUT_BUCKETS`] buckets) for runs of
/// 10 s or more, about 20 buckets for shorter runs.
fn bucket_width_us(end_us: u64) -> u64 {
    let target_us = if end_us >= 10_000_000 {
        (end_us / MAX_THROUGHPUT_BUCKETS).max(1_000_000)
    } else {
        (end_us / 20).max(1_000)
    };
    let mut magnitude = 1u64;
    while magnitude * 10 <= target_us {
        magnitude *= 10;
    }
    [1, 2, 5, 10]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|&width| width >= target_us)
        .expect("10 × magnitude exceeds the target")
}

fn write_throughput(out: &mut String, buckets: &Buckets, frame: &Frame) -> fmt::Result {
    let (top, bottom) = (frame.throughput_top_px, frame.throughput_bottom_px);
    let top_rate = buckets.max_rate().max(1.0);
    let step = nice_step(top_rate, 5);
    let y_max = (top_rate / step).ceil() * step;
    let y = |rate: f64| bottom - (bottom - top) * rate / y_max;
    writeln!(
        out,
        "<g class=\"throughput\">\n<text class=\"heading\" x=\"{PLOT_LEFT_PX}\" y=\"{:.1}\">\
         throughput (ops/s completed, {} s buckets)</text>",
        top - 6.0,
        trim_seconds(buckets.width_us)
    )?;
    write_value_ticks(out, step, y_max, &y)?;
    write_y_title(out, "ops/s", (top + bottom) / 2.0)?;
    for class in Class::ALL {
        let counts = &buckets.counts[class as usize];
        if counts.iter().all(|&count| count == 0) {
            continue;
        }
        write!(
            out,
            "<polyline class=\"series {}\" stroke=\"{}\" points=\"",
            class.name(),
            class.colour()
        )?;
        for i in 0..counts.len() {
            let (at_us, rate) = buckets.point(class, i);
            let separator = if i == 0 { "" } else { " " };
            write!(out, "{separator}{:.1},{:.1}", frame.scale.x(at_us), y(rate))?;
        }
        out.push_str("\"/>\n");
    }
    out.push_str("</g>\n");
    Ok(())
}

/// Horizontal grid lines and labels of a linear axis from 0 to `max` by `step`.
fn write_value_ticks(out: &mut String, step: f64, max: f64, y: &dyn Fn(f64) -> f64) -> fmt::Result {
    let decimals = decimals_for(step);
    let mut tick = 0u32;
    loop {
        let value = f64::from(tick) * step;
        if value > max * (1.0 + 1e-9) {
            return Ok(());
        }
        let at = y(value);
        writeln!(
            out,
            "<line class=\"grid\" x1=\"{PLOT_LEFT_PX}\" y1=\"{at:.1}\" x2=\"{PLOT_RIGHT_PX}\" y2=\"{at:.1}\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{value:.decimals$}</text>",
            PLOT_LEFT_PX - 5.0,
            at + 4.0
        )?;
        tick += 1;
    }
}

fn write_y_title(out: &mut String, text: &str, middle_px: f64) -> fmt::Result {
    writeln!(
        out,
        "<text x=\"0\" y=\"0\" text-anchor=\"middle\" transform=\"translate(22 {middle_px:.1}) \
         rotate(-90)\">{}</text>",
        Esc(text)
    )
}

/// The latency axis: whole decades of milliseconds, from 1 µs to 1000 s at most.
struct LogScale {
    low_exp: i32,
    high_exp: i32,
    top_px: f64,
    bottom_px: f64,
}

impl LogScale {
    fn new(history: &[Record], frame: &Frame) -> LogScale {
        let (mut low_ms, mut high_ms) = (f64::INFINITY, 0.0f64);
        for record in history {
            low_ms = low_ms.min(latency_ms(record));
            high_ms = high_ms.max(latency_ms(record));
        }
        let (low_exp, high_exp) = if history.is_empty() {
            (0, 3)
        } else {
            let low = (low_ms.log10().floor() as i32).clamp(-3, 5);
            (low, (high_ms.log10().ceil() as i32).clamp(low + 1, 6))
        };
        LogScale {
            low_exp,
            high_exp,
            top_px: frame.latency_top_px,
            bottom_px: frame.latency_bottom_px,
        }
    }

    fn y(&self, ms: f64) -> f64 {
        let decades = f64::from(self.high_exp - self.low_exp);
        let fraction = ((ms.log10() - f64::from(self.low_exp)) / decades).clamp(0.0, 1.0);
        self.bottom_px - (self.bottom_px - self.top_px) * fraction
    }
}

/// `ret_us - call_us` in milliseconds, at least 1 µs so that it has a logarithm.
fn latency_ms(record: &Record) -> f64 {
    record.ret_us.saturating_sub(record.call_us).max(1) as f64 / 1000.0
}

/// A decade's label: `0.01 ms`, `100 ms`, `10 s`.
fn decade_label(exp: i32) -> String {
    if exp >= 3 {
        format!("{} s", 10u64.pow((exp - 3) as u32))
    } else {
        let decimals = (-exp).max(0) as usize;
        format!("{:.decimals$} ms", 10f64.powi(exp))
    }
}

fn write_latency(out: &mut String, history: &[Record], frame: &Frame) -> fmt::Result {
    let scale = LogScale::new(history, frame);
    let (points, thinning) = latency_points(history, &frame.scale, &scale);
    writeln!(
        out,
        "<g class=\"latency\">\n<text class=\"heading\" x=\"{PLOT_LEFT_PX}\" y=\"{:.1}\">\
         latency (ms, log scale) by call time{}</text>",
        scale.top_px - 6.0,
        thinning.note()
    )?;
    for exp in scale.low_exp..=scale.high_exp {
        let at = scale.y(10f64.powi(exp));
        writeln!(
            out,
            "<line class=\"grid\" x1=\"{PLOT_LEFT_PX}\" y1=\"{at:.1}\" x2=\"{PLOT_RIGHT_PX}\" y2=\"{at:.1}\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            PLOT_LEFT_PX - 5.0,
            at + 4.0,
            decade_label(exp)
        )?;
    }
    write_y_title(out, "latency", (scale.top_px + scale.bottom_px) / 2.0)?;
    if history.is_empty() {
        writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">no operations</text>",
            (PLOT_LEFT_PX + PLOT_RIGHT_PX) / 2.0,
            (scale.top_px + scale.bottom_px) / 2.0
        )?;
    }
    write_points(out, &points)?;
    out.push_str("</g>\n");
    Ok(())
}

/// One operation's marker, on whole pixels.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Point {
    x_px: i32,
    y_px: i32,
    class: Class,
    shape: Shape,
}

/// How the latency points were thinned.
struct Thinning {
    drawn: usize,
    total: usize,
    ok_stride: usize,
    other_stride: usize,
}

impl Thinning {
    fn note(&self) -> String {
        if self.ok_stride == 1 && self.other_stride == 1 {
            return String::new();
        }
        let mut note = format!(
            " — {} of {} shown: every {} ok",
            self.drawn,
            self.total,
            ordinal(self.ok_stride)
        );
        if self.other_stride > 1 {
            let _ = write!(note, ", every {} fail/unknown", ordinal(self.other_stride));
        }
        note
    }
}

fn ordinal(n: usize) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

/// The markers to draw: one per distinct pixel and look, then thinned by strides down to
/// [`MAX_LATENCY_POINTS`], in history order so the choice is deterministic.
fn latency_points(
    history: &[Record],
    time: &TimeScale,
    scale: &LogScale,
) -> (Vec<Point>, Thinning) {
    let mut seen = HashSet::new();
    let mut distinct = Vec::new();
    for record in history {
        let point = Point {
            x_px: time.x(record.call_us).round() as i32,
            y_px: scale.y(latency_ms(record)).round() as i32,
            class: Class::of(&record.outcome),
            shape: Shape::of(&record.op),
        };
        if seen.insert(point) {
            distinct.push(point);
        }
    }
    let oks = distinct.iter().filter(|p| p.class == Class::Ok).count();
    let (ok_stride, other_stride) = strides(oks, distinct.len() - oks);
    let (mut ok_seen, mut other_seen) = (0usize, 0usize);
    distinct.retain(|point| {
        let (seen, stride) = if point.class == Class::Ok {
            (&mut ok_seen, ok_stride)
        } else {
            (&mut other_seen, other_stride)
        };
        *seen += 1;
        (*seen - 1) % stride == 0
    });
    let thinning = Thinning {
        drawn: distinct.len(),
        total: history.len(),
        ok_stride,
        other_stride,
    };
    (distinct, thinning)
}

/// Strides for oks and for the others so that at most [`MAX_LATENCY_POINTS`] remain: all
/// failures and unknowns are kept when they fit in half the budget.
fn strides(oks: usize, others: usize) -> (usize, usize) {
    if oks + others <= MAX_LATENCY_POINTS {
        return (1, 1);
    }
    let half = MAX_LATENCY_POINTS / 2;
    if others <= half {
        return (oks.div_ceil(MAX_LATENCY_POINTS - others).max(1), 1);
    }
    (oks.div_ceil(half).max(1), others.div_ceil(half))
}

/// Markers grouped by class (oks first, so the others are drawn over them) and shape.
fn write_points(out: &mut String, points: &[Point]) -> fmt::Result {
    let mut groups: BTreeMap<(Class, Shape), Vec<(i32, i32)>> = BTreeMap::new();
    for point in points {
        groups
            .entry((point.class, point.shape))
            .or_default()
            .push((point.x_px, point.y_px));
    }
    for ((class, shape), positions) in groups {
        writeln!(
            out,
            "<g class=\"points {} {}\" fill=\"{}\" fill-opacity=\"{}\">",
            class.name(),
            shape.name(),
            class.colour(),
            class.point_opacity()
        )?;
        for (i, (x, y)) in positions.into_iter().enumerate() {
            shape.write(out, x, y)?;
            if i % 16 == 15 {
                out.push('\n');
            }
        }
        out.push_str("\n</g>\n");
    }
    Ok(())
}

/// The legend at the right: outcome classes and op kinds present, with counts, then fault kinds.
fn write_legend(
    out: &mut String,
    history: &[Record],
    faults: &[FaultSpan],
    colours: &BTreeMap<&str, &'static str>,
    frame: &Frame,
) -> fmt::Result {
    let mut y = frame.throughput_top_px + 8.0;
    out.push_str("<g class=\"legend\">\n");
    if !history.is_empty() {
        write_operation_legend(out, history, &mut y)?;
    }
    write_kind_legend(out, faults, colours, &mut y)?;
    out.push_str("</g>\n");
    Ok(())
}

fn write_operation_legend(out: &mut String, history: &[Record], y: &mut f64) -> fmt::Result {
    let mut class_counts = [0usize; 3];
    let mut shape_counts = [0usize; 4];
    for record in history {
        class_counts[Class::of(&record.outcome) as usize] += 1;
        shape_counts[Shape::of(&record.op) as usize] += 1;
    }
    let (line_end_x, text_x) = (LEGEND_LEFT_PX + 18.0, LEGEND_LEFT_PX + 24.0);
    legend_heading(out, "outcomes", y)?;
    for class in Class::ALL {
        let (name, colour, count) = (class.name(), class.colour(), class_counts[class as usize]);
        if count == 0 {
            continue;
        }
        let (text_y, line_y) = (*y, *y - 4.0);
        writeln!(
            out,
            "<g class=\"legend-{name}\"><line x1=\"{LEGEND_LEFT_PX}\" y1=\"{line_y:.1}\" \
             x2=\"{line_end_x:.1}\" y2=\"{line_y:.1}\" stroke=\"{colour}\" stroke-width=\"2\"/>\
             <text x=\"{text_x:.1}\" y=\"{text_y:.1}\">{name} ({count})</text></g>"
        )?;
        *y += 16.0;
    }
    *y += 8.0;
    legend_heading(out, "operations", y)?;
    for shape in Shape::ALL {
        let (name, count) = (shape.name(), shape_counts[shape as usize]);
        if count == 0 {
            continue;
        }
        out.push_str("<g fill=\"#555\">");
        shape.write(out, (LEGEND_LEFT_PX + 9.0) as i32, (*y - 4.0) as i32)?;
        let text_y = *y;
        writeln!(
            out,
            "<text x=\"{text_x:.1}\" y=\"{text_y:.1}\">{name} ({count})</text></g>"
        )?;
        *y += 16.0;
    }
    *y += 8.0;
    Ok(())
}

fn legend_heading(out: &mut String, text: &str, y: &mut f64) -> fmt::Result {
    writeln!(
        out,
        "<text class=\"heading\" x=\"{LEGEND_LEFT_PX}\" y=\"{:.1}\">{}</text>",
        *y,
        Esc(text)
    )?;
    *y += 16.0;
    Ok(())
}

fn write_kind_legend(
    out: &mut String,
    faults: &[FaultSpan],
    colours: &BTreeMap<&str, &'static str>,
    y: &mut f64,
) -> fmt::Result {
    if faults.is_empty() {
        return Ok(());
    }
    legend_heading(out, "faults", y)?;
    for (shown, (kind, colour)) in colours.iter().enumerate() {
        if shown == MAX_LEGEND_KINDS {
            let rest = colours.len() - MAX_LEGEND_KINDS;
            writeln!(
                out,
                "<text x=\"{LEGEND_LEFT_PX}\" y=\"{:.1}\">and {rest} more kinds</text>",
                *y
            )?;
            break;
        }
        let count = faults.iter().filter(|f| f.kind == *kind).count();
        let name: String = kind.chars().take(MAX_LEGEND_KIND_CHARS).collect();
        writeln!(
            out,
            "<g class=\"legend-fault\"><title>{}</title><rect class=\"swatch\" x=\"{LEGEND_LEFT_PX}\" \
             y=\"{:.1}\" width=\"18\" height=\"10\" fill=\"{colour}\" fill-opacity=\"0.5\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\">{} ×{count}</text></g>",
            Esc(kind),
            *y - 9.0,
            LEGEND_LEFT_PX + 24.0,
            *y,
            Esc(&name)
        )?;
        *y += 16.0;
    }
    Ok(())
}

/// A 1-2-5 step giving at most about `max_ticks` ticks over `range`.
fn nice_step(range: f64, max_ticks: u32) -> f64 {
    if !range.is_finite() || range <= 0.0 {
        return 1.0;
    }
    let raw = range / f64::from(max_ticks);
    let magnitude = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|&step| step >= raw * (1.0 - 1e-9))
        .unwrap_or(10.0 * magnitude)
}

/// Decimals needed to tell ticks `step` apart.
fn decimals_for(step: f64) -> usize {
    if step >= 1.0 {
        0
    } else {
        (-step.log10()).ceil().max(0.0) as usize
    }
}

/// Microseconds as seconds with three decimals.
fn seconds(us: u64) -> String {
    format!("{:.3}", us as f64 / 1e6)
}

/// Microseconds as seconds without trailing zeros: `1`, `0.5`, `20`.
fn trim_seconds(us: u64) -> String {
    let text = format!("{:.6}", us as f64 / 1e6);
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// `1, 2, 3`, or `all` for a fault on the whole cluster.
fn nodes_text(nodes: &[u64]) -> String {
    if nodes.is_empty() {
        return "all".to_string();
    }
    let names: Vec<String> = nodes.iter().map(u64::to_string).collect();
    names.join(", ")
}

fn duration_text(fault: &FaultSpan) -> String {
    match fault.end_us {
        None => "not healed".to_string(),
        Some(end_us) if end_us <= fault.start_us => "instant".to_string(),
        Some(end_us) => format!("{} s", seconds(end_us - fault.start_us)),
    }
}

/// Text escaped for XML and HTML content and quoted attributes. Control characters that XML
/// forbids (all but tab and line breaks) become U+FFFD, so the document stays well formed.
struct Esc<'a>(&'a str);

impl Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut plain_from = 0;
        for (at, c) in self.0.char_indices() {
            let replacement = match c {
                '&' => "&amp;",
                '<' => "&lt;",
                '>' => "&gt;",
                '"' => "&quot;",
                '\'' => "&#39;",
                '\t' | '\n' | '\r' => continue,
                '\u{FFFE}' | '\u{FFFF}' => "\u{FFFD}",
                c if c.is_control() => "\u{FFFD}",
                _ => continue,
            };
            f.write_str(&self.0[plain_from..at])?;
            f.write_str(replacement)?;
            plain_from = at + c.len_utf8();
        }
        f.write_str(&self.0[plain_from..])
    }
}

/// The report page's inputs.
struct Page<'a> {
    title: &'a str,
    summary_rows: &'a [(String, String)],
    verdict_passed: bool,
    svg_file_name: &'a str,
    faults: &'a [FaultSpan],
    violations: &'a [String],
}

const PAGE_STYLE: &str = "body{font-family:sans-serif;margin:1.5em;color:#222}\
h1{margin-bottom:.3em}h2{margin-top:1.5em}\
.verdict{display:inline-block;padding:.4em 1.2em;font-size:1.6em;font-weight:bold;color:#fff;border-radius:4px}\
.pass{background:#2ca02c}.fail{background:#d62728}\
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}\
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}\
nav a{margin-right:1em}\
.plot{width:100%;max-width:1200px;height:auto;aspect-ratio:12/7;border:1px solid #ddd}\
li.violation{white-space:pre-wrap;font-family:monospace;margin-bottom:.5em}";

impl Page<'_> {
    fn write(&self, out: &mut String) -> fmt::Result {
        let title = Esc(self.title);
        writeln!(
            out,
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
             <title>{title}</title>\n<style>{PAGE_STYLE}</style>\n</head>\n<body>\n<h1>{title}</h1>"
        )?;
        let (class, word) = if self.verdict_passed {
            ("pass", "PASS")
        } else {
            ("fail", "FAIL")
        };
        writeln!(out, "<p><span class=\"verdict {class}\">{word}</span></p>")?;
        out.push_str(
            "<nav>raw data: <a href=\"history.jsonl\">history.jsonl</a> \
             <a href=\"faults.jsonl\">faults.jsonl</a> <a href=\"summary.json\">summary.json</a> \
             <a href=\"nodes/\">nodes/</a></nav>\n",
        );
        self.write_summary(out)?;
        self.write_plot(out)?;
        self.write_faults(out)?;
        self.write_violations(out)?;
        out.push_str("</body>\n</html>\n");
        Ok(())
    }

    fn write_summary(&self, out: &mut String) -> fmt::Result {
        out.push_str("<h2>Summary</h2>\n<table class=\"summary\">\n");
        for (key, value) in self.summary_rows {
            writeln!(out, "<tr><th>{}</th><td>{}</td></tr>", Esc(key), Esc(value))?;
        }
        out.push_str("</table>\n");
        Ok(())
    }

    /// An `<object>` (not an `<img>`) so that the fault tooltips work; the `<img>` inside is
    /// its fallback.
    fn write_plot(&self, out: &mut String) -> fmt::Result {
        let file = Esc(self.svg_file_name);
        writeln!(
            out,
            "<h2>Timeline</h2>\n<object class=\"plot\" data=\"{file}\" type=\"image/svg+xml\" \
             width=\"{WIDTH_PX}\" height=\"{HEIGHT_PX}\"><img class=\"plot\" src=\"{file}\" \
             alt=\"timeline plot\"></object>\n<p>Hover over a fault band for its details; \
             <a href=\"{file}\">open the plot on its own</a>.</p>"
        )
    }

    fn write_faults(&self, out: &mut String) -> fmt::Result {
        writeln!(out, "<h2>Faults ({})</h2>", self.faults.len())?;
        if self.faults.is_empty() {
            out.push_str("<p>none</p>\n");
            return Ok(());
        }
        out.push_str(
            "<table class=\"faults\">\n<tr><th>kind</th><th>nodes</th><th>start (s)</th>\
             <th>end (s)</th><th>duration</th><th>detail</th></tr>\n",
        );
        let mut faults: Vec<&FaultSpan> = self.faults.iter().collect();
        faults.sort_by_key(|f| (f.start_us, f.id));
        for fault in faults {
            let end = fault.end_us.map_or_else(|| "—".to_string(), seconds);
            writeln!(
                out,
                "<tr><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
                 <td class=\"num\">{}</td><td>{}</td></tr>",
                Esc(&fault.kind),
                Esc(&nodes_text(&fault.nodes)),
                seconds(fault.start_us),
                end,
                duration_text(fault),
                Esc(&fault.detail)
            )?;
        }
        out.push_str("</table>\n");
        Ok(())
    }

    fn write_violations(&self, out: &mut String) -> fmt::Result {
        writeln!(out, "<h2>Violations ({})</h2>", self.violations.len())?;
        if self.violations.is_empty() {
            out.push_str("<p>none</p>\n");
            return Ok(());
        }
        out.push_str("<ul class=\"violations\">\n");
        for violation in self.violations {
            writeln!(out, "<li class=\"violation\">{}</li>", Esc(violation))?;
        }
        out.push_str("</ul>\n");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::OpResult;

    fn record(id: u64, call_us: u64, latency_us: u64, op: Op, outcome: Outcome) -> Record {
        Record {
            id,
            client: id % 4,
            node: 1 + id % 3,
            call_us,
            ret_us: call_us + latency_us,
            op,
            outcome,
        }
    }

    fn get() -> Op {
        Op::Get { key: "k".into() }
    }

    fn ok() -> Outcome {
        Outcome::Ok(OpResult::Value { value: None })
    }

    fn fail() -> Outcome {
        Outcome::Fail {
            error: "no leader".into(),
        }
    }

    fn fault(id: u64, kind: &str, start_us: u64, end_us: Option<u64>, detail: &str) -> FaultSpan {
        FaultSpan {
            id,
            kind: kind.into(),
            nodes: vec![1, 2],
            start_us,
            end_us,
            detail: detail.into(),
        }
    }

    /// Ten seconds of gets and sets, with failures during the partition.
    fn sample_history() -> Vec<Record> {
        (0..200)
            .map(|i| {
                let op = if i % 2 == 0 {
                    get()
                } else {
                    Op::Set {
                        key: "k".into(),
                        value: i.to_string(),
                    }
                };
                let outcome = if (80..120).contains(&i) { fail() } else { ok() };
                record(i, i * 50_000, 500 + i * 97 % 40_000, op, outcome)
            })
            .collect()
    }

    fn sample_faults() -> Vec<FaultSpan> {
        vec![
            fault(
                1,
                "partition-isolate",
                4_000_000,
                Some(6_000_000),
                "{1} | {2,3}",
            ),
            fault(2, "latency", 5_000_000, None, "150ms ±50ms <&>\"'"),
            fault(3, "kill", 7_000_000, Some(7_000_000), "SIGKILL"),
        ]
    }

    /// Checks that every element is closed in order (a small stand-in for an XML parser: our
    /// output escapes `<` and `>` everywhere, including attribute values).
    fn assert_well_formed(document: &str) {
        let mut open: Vec<&str> = Vec::new();
        let mut rest = document;
        while let Some(at) = rest.find('<') {
            let end = rest[at..].find('>').expect("an unterminated tag") + at;
            let tag = &rest[at + 1..end];
            rest = &rest[end + 1..];
            if tag.starts_with('!') || tag.starts_with('?') {
                continue;
            }
            let name = tag
                .trim_start_matches('/')
                .split(|c: char| c.is_whitespace() || c == '/')
                .next()
                .unwrap();
            if let Some(closing) = tag.strip_prefix('/') {
                assert_eq!(open.pop(), Some(closing.trim()), "mismatched </{closing}>");
            } else if !tag.ends_with('/') && !is_void_html(name) {
                open.push(name);
            }
        }
        assert!(open.is_empty(), "unclosed elements: {open:?}");
    }

    fn is_void_html(name: &str) -> bool {
        matches!(name, "meta" | "img" | "br")
    }

    fn count(haystack: &str, needle: &str) -> usize {
        haystack.matches(needle).count()
    }

    #[test]
    fn timeline_is_one_well_formed_svg() {
        let svg = timeline_svg(&sample_history(), &sample_faults(), 10_000_000, "run 7");
        assert!(svg.starts_with("<svg "), "{}", &svg[..80]);
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_well_formed(&svg);
        for tag in ["g", "text", "title"] {
            assert_eq!(
                count(&svg, &format!("<{tag}>")) + count(&svg, &format!("<{tag} ")),
                count(&svg, &format!("</{tag}>")),
                "<{tag}> unbalanced"
            );
        }
        assert!(!svg.contains("http://") || svg.matches("http://").count() == 1);
        assert!(!svg.contains("<script"));
    }

    #[test]
    fn every_fault_has_one_band_with_a_tooltip() {
        let faults = sample_faults();
        let svg = timeline_svg(&sample_history(), &faults, 10_000_000, "t");
        assert_eq!(count(&svg, "<rect class=\"band\""), faults.len());
        assert_eq!(count(&svg, "<g class=\"fault\""), faults.len());
        assert!(svg.contains("<title>partition-isolate · nodes 1, 2 · 4.000 s – 6.000 s (2.000 s)\n{1} | {2,3}</title>"));
        assert!(svg.contains("kill · nodes 1, 2 · 7.000 s – 7.000 s (instant)"));
        assert!(svg.contains("5.000 s – not healed (not healed)"));
        for kind in ["partition-isolate", "latency", "kill"] {
            assert!(
                svg.contains(&format!(">{kind} ×1</text>")),
                "no legend for {kind}"
            );
        }
    }

    #[test]
    fn instant_fault_is_a_thin_band_reaching_to_the_end_when_unhealed() {
        let scale = TimeScale::new(10_000_000);
        let faults = sample_faults();
        assert_eq!(scale.band(&faults[2]).1, MIN_BAND_WIDTH_PX);
        let (left_px, width_px) = scale.band(&faults[1]);
        assert!((left_px + width_px - PLOT_RIGHT_PX).abs() < 1e-9);
    }

    #[test]
    fn overlapping_faults_get_separate_lanes() {
        let scale = TimeScale::new(10_000_000);
        let (lanes, lane_count) = fault_lanes(&sample_faults(), &scale);
        // The partition and the latency overlap; the kill comes after the partition healed.
        assert_eq!(lanes, vec![0, 1, 0]);
        assert_eq!(lane_count, 2);
    }

    #[test]
    fn lanes_are_bounded() {
        let faults: Vec<FaultSpan> = (0..20)
            .map(|i| fault(i, "pause", i * 1000, None, ""))
            .collect();
        let (lanes, lane_count) = fault_lanes(&faults, &TimeScale::new(1_000_000));
        assert_eq!(lane_count, MAX_FAULT_LANES);
        assert!(lanes.iter().all(|&lane| lane < MAX_FAULT_LANES));
    }

    #[test]
    fn legend_names_the_outcome_classes_present() {
        let svg = timeline_svg(&sample_history(), &[], 10_000_000, "t");
        assert!(svg.contains("<g class=\"legend-ok\">"));
        assert!(svg.contains(">ok (160)</text>"));
        assert!(svg.contains(">fail (40)</text>"));
        assert!(!svg.contains("legend-unknown"));
        assert!(svg.contains("<polyline class=\"series ok\""));
        assert!(svg.contains("<polyline class=\"series fail\""));
        assert!(!svg.contains("series unknown"));
        assert!(svg.contains(">get (100)</text>") && svg.contains(">set (100)</text>"));
    }

    #[test]
    fn text_is_escaped() {
        let svg = timeline_svg(&[], &sample_faults(), 10_000_000, "a <b> & \"c\"\u{1}");
        assert_well_formed(&svg);
        assert!(svg.contains("150ms ±50ms &lt;&amp;&gt;&quot;&#39;</title>"));
        assert!(!svg.contains("<&>"));
        assert!(svg.contains(">a &lt;b&gt; &amp; &quot;c&quot;\u{FFFD}</text>"));
    }

    #[test]
    fn empty_run_renders() {
        let svg = timeline_svg(&[], &[], 0, "");
        assert_well_formed(&svg);
        assert!(svg.contains(">no operations</text>"));
        assert_eq!(count(&svg, "class=\"band\""), 0);
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
    }

    #[test]
    fn large_history_is_thinned() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let history: Vec<Record> = (0..100_000)
            .map(|i| {
                let outcome = if i % 50 == 0 { fail() } else { ok() };
                let latency_us = 100 + next() % 5_000_000;
                record(i, i * 6_000 + next() % 1000, latency_us, get(), outcome)
            })
            .collect();
        let svg = timeline_svg(&history, &sample_faults(), 600_000_000, "big");
        assert!(svg.len() < 5_000_000, "{} bytes", svg.len());
        assert_well_formed(&svg);
        let markers = count(&svg, "<circle ");
        assert!(markers <= MAX_LATENCY_POINTS, "{markers} markers");
        assert!(markers > MAX_LATENCY_POINTS / 2, "{markers} markers");
        assert!(svg.contains("of 100000 shown: every"));
        // Every failure is still drawn (they fit in half the budget); only the few that share a
        // pixel with another are merged.
        assert!(!svg.contains("fail/unknown"));
        let fails = svg.split("<g class=\"points fail get\"").nth(1).unwrap();
        let fails = &fails[..fails.find("</g>").unwrap()];
        assert!(
            count(fails, "<circle ") > 1_950,
            "{} failures",
            count(fails, "<circle ")
        );
    }

    #[test]
    fn strides_keep_failures_while_they_fit() {
        assert_eq!(strides(10, 10), (1, 1));
        assert_eq!(strides(MAX_LATENCY_POINTS, 1), (2, 1));
        assert_eq!(strides(0, 3 * MAX_LATENCY_POINTS), (1, 6));
        assert_eq!(strides(100_000, 2_000), (6, 1));
    }

    #[test]
    fn bucket_widths_follow_the_run_length() {
        assert_eq!(bucket_width_us(1_000_000), 50_000);
        assert_eq!(bucket_width_us(60_000_000), 1_000_000);
        assert_eq!(bucket_width_us(600_000_000), 2_000_000);
        assert_eq!(bucket_width_us(3_600_000_000), 20_000_000);
    }

    #[test]
    fn throughput_counts_completions_per_second() {
        let history: Vec<Record> = (0..30)
            .map(|i| record(i, i * 100_000, 1_000, get(), ok()))
            .collect();
        let buckets = Buckets::count(&history, &TimeScale::new(10_000_000));
        assert_eq!(buckets.width_us, 1_000_000);
        assert_eq!(buckets.point(Class::Ok, 0), (500_000, 10.0));
        assert_eq!(buckets.point(Class::Ok, 6), (6_500_000, 0.0));
        // The last 0.5 s of a 10.5 s run belong to the last whole bucket.
        let buckets = Buckets::count(&history, &TimeScale::new(10_500_000));
        assert_eq!(buckets.counts[Class::Ok as usize].len(), 10);
        assert_eq!(buckets.point(Class::Ok, 9), (9_750_000, 0.0));
        // A run shorter than the narrowest bucket is one bucket.
        let buckets = Buckets::count(&history[..1], &TimeScale::new(800));
        assert_eq!(buckets.point(Class::Ok, 0), (400, 1250.0));
    }

    #[test]
    fn html_page_has_banner_rows_plot_faults_and_links() {
        let rows = vec![
            ("operations".to_string(), "200".to_string()),
            ("seed".to_string(), "<42>".to_string()),
        ];
        let violations = vec!["not linearizable: read 3 after write 4 & more".to_string()];
        let html = html_page(
            "run <7>",
            &rows,
            false,
            "timeline.svg",
            &sample_faults(),
            &violations,
        );
        assert_well_formed(&html);
        assert!(html.contains("<title>run &lt;7&gt;</title>"));
        assert!(html.contains("<span class=\"verdict fail\">FAIL</span>"));
        assert!(html.contains("<tr><th>operations</th><td>200</td></tr>"));
        assert!(html.contains("<tr><th>seed</th><td>&lt;42&gt;</td></tr>"));
        assert!(html.contains("data=\"timeline.svg\""));
        for link in ["history.jsonl", "faults.jsonl", "summary.json", "nodes/"] {
            assert!(
                html.contains(&format!("href=\"{link}\"")),
                "no link to {link}"
            );
        }
        assert!(html.contains("<td>kill</td><td>1, 2</td><td class=\"num\">7.000</td>"));
        assert!(html.contains("<td class=\"num\">—</td><td class=\"num\">not healed</td>"));
        assert!(html.contains("&lt;&amp;&gt;&quot;&#39;</td>"));
        assert!(html.contains("read 3 after write 4 &amp; more</li>"));
        assert!(!html.contains("<script"));
    }

    #[test]
    fn passing_page_says_pass_and_none() {
        let html = html_page("ok run", &[], true, "t.svg", &[], &[]);
        assert_well_formed(&html);
        assert!(html.contains("<span class=\"verdict pass\">PASS</span>"));
        assert!(html.contains("<h2>Faults (0)</h2>\n<p>none</p>"));
        assert!(html.contains("<h2>Violations (0)</h2>\n<p>none</p>"));
    }
}
