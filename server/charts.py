"""Geometry of the client page's activity chart, drawn as inline SVG by the template.

Only numbers and our own fixed words reach the SVG; the template escapes them all the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from core.activity import BUCKET_SECONDS, Timeline

WIDTH, HEIGHT = 900, 156
LEFT, RIGHT = 34, 2  # room for the y-axis labels
PLOT_TOP, PLOT_HEIGHT = 8, 110
STRIP_TOP, STRIP_HEIGHT = PLOT_TOP + PLOT_HEIGHT + 4, 10
LABEL_Y = STRIP_TOP + STRIP_HEIGHT + 16
TICK_HOURS = 3
TICK_ROOM = 16  # half the width of an hour label


@dataclass
class Chart:
    width: int
    height: int
    left: int
    plot_top: int
    baseline: float
    strip_top: int
    strip_height: int
    label_y: int
    y_max: int
    summary: str
    bars: list[dict] = field(default_factory=list)
    runs: list[dict] = field(default_factory=list)
    ticks: list[dict] = field(default_factory=list)


def duration_text(seconds: int) -> str:
    """'23 h 40 min', '24 h', '35 min', '0 min'."""
    hours, minutes = divmod(seconds // 60, 60)
    if not hours:
        return f"{minutes} min"
    return f"{hours} h" if not minutes else f"{hours} h {minutes} min"


def nice_ceiling(value: int) -> int:
    """The smallest of 1, 2, 5, 10, 20, 50, ... that is at least `value`."""
    step = 1
    while True:
        for factor in (1, 2, 5):
            if step * factor >= value:
                return step * factor
        step *= 10


def summary_text(timeline: Timeline) -> str:
    hours = len(timeline.buckets) * BUCKET_SECONDS // 3600
    return (f"online {duration_text(timeline.online_seconds)} of the last {hours} h; "
            f"{timeline.heartbeats:,} heartbeat{'' if timeline.heartbeats == 1 else 's'}")


def activity_chart(timeline: Timeline) -> Chart:
    """Bars of heartbeats per bucket over a strip of online / offline / no-data runs."""
    pitch = (WIDTH - LEFT - RIGHT) / len(timeline.buckets)
    y_max = nice_ceiling(max((b.heartbeats for b in timeline.buckets), default=0) or 1)
    baseline = PLOT_TOP + PLOT_HEIGHT
    chart = Chart(WIDTH, HEIGHT, LEFT, PLOT_TOP, baseline, STRIP_TOP, STRIP_HEIGHT, LABEL_Y,
                  y_max, summary_text(timeline))
    for i, b in enumerate(timeline.buckets):
        x = round(LEFT + i * pitch, 2)
        if b.heartbeats:
            height = round(b.heartbeats / y_max * PLOT_HEIGHT, 2)
            chart.bars.append({
                "x": x, "y": round(baseline - height, 2), "width": round(pitch * 0.8, 2),
                "height": height,
                "title": f"{b.start:%H:%M} UTC: {b.heartbeats} heartbeats, "
                         f"{b.messages} messages",
            })
        if chart.runs and chart.runs[-1]["state"] == b.state:
            chart.runs[-1]["width"] = round(chart.runs[-1]["width"] + pitch, 2)
        else:
            chart.runs.append({"x": x, "width": round(pitch, 2), "state": b.state})
        # An hour label needs room to either side: none too close to the "UTC" at the left.
        if (b.start.minute == 0 and b.start.hour % TICK_HOURS == 0
                and LEFT + TICK_ROOM <= x <= WIDTH - RIGHT - TICK_ROOM):
            chart.ticks.append({"x": x, "label": f"{b.start:%H}:00"})
    return chart
