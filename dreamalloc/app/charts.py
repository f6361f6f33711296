"""The app's Plotly figures: memory maps (one row per method or per step), curves over a run, adaptation curves.

Colours follow the project's timeline PNGs (``dreamalloc.report.plots``): one hue per block, free cells light
grey; blocks of the starting layout are dark grey. A map wider than ``engine.MAP_WIDTH`` cells is drawn
downsampled (each column the mean colour of its cells), so a 65,536-cell heap costs the browser no more than a
1,024-cell one.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from PIL import Image

from dreamalloc.app.engine import MAP_WIDTH, MethodRun, downsample
from dreamalloc.report.plots import block_colours

LAYOUT_COLOUR = np.array([0.35, 0.35, 0.35])


def colours(labels: np.ndarray, layout_label: bool = True) -> np.ndarray:
    """[..., N] labels (-1 free, 0 starting layout when ``layout_label``, k a block) -> [..., N, 3] RGB floats."""
    lab = np.asarray(labels)
    if layout_label:
        rgb = block_colours(np.where(lab > 0, lab - 1, -1))
        rgb[lab == 0] = LAYOUT_COLOUR
    else:
        rgb = block_colours(lab)
    return rgb


def map_image(labels: np.ndarray, layout_label: bool = True, width: int = MAP_WIDTH) -> np.ndarray:
    """[rows, N] labels -> [rows, min(N, width), 3] uint8, downsampled when the heap is wider than ``width``."""
    rgb = downsample(colours(labels, layout_label), width)
    return np.clip(np.rint(rgb * 255), 0, 255).astype(np.uint8)


def png_source(img: np.ndarray) -> str:
    """[H, W, 3] uint8 as a PNG data URI: the browser gets a few kB instead of a JSON list of every pixel."""
    buf = io.BytesIO()
    Image.fromarray(img, "RGB").save(buf, format="PNG", optimize=False)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def decode_source(source: str) -> np.ndarray:
    """The pixels of a ``png_source`` data URI (for tests)."""
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1]))).convert("RGB"))


def map_figure(labels: np.ndarray, row_names: Sequence[str], title: str = "", layout_label: bool = True,
               row_height: int = 28, plot_width: int = 900, max_height: int = 900) -> go.Figure:
    """A memory map: one horizontal band per row of ``labels`` [rows, N], cell 0 on the left. Plotly draws images
    with square pixels, so each row's band is ``dy`` cells tall: ``row_height`` screen pixels at ``plot_width``
    (less when the rows would pass ``max_height``; then only every k-th row is labelled)."""
    labels = np.asarray(labels)
    rows, n = labels.shape
    img = map_image(labels, layout_label)
    scale = n / img.shape[1]
    band = max(2.0, min(float(row_height), max_height / max(rows, 1)))  # screen pixels per row
    dy = band * n / plot_width
    fig = go.Figure(go.Image(source=png_source(img), dx=scale, dy=dy, x0=scale / 2 - 0.5, y0=dy / 2,
                             hovertemplate="cell %{x:.0f}<extra></extra>"))
    every = max(1, int(np.ceil(12 / band)))  # labels at least ~12 px apart
    ticks = list(range(0, rows, every))
    fig.update_yaxes(tickvals=[dy / 2 + i * dy for i in ticks], ticktext=[row_names[i] for i in ticks],
                     autorange="reversed")
    if band >= 8:  # a white line between bands
        for i in range(1, rows):
            fig.add_hline(y=i * dy, line_color="white", line_width=2)
    note = f" (drawn in {img.shape[1]} bins of {scale:.1f} cells)" if scale > 1 else ""
    fig.update_xaxes(title=f"cell (0 .. {n - 1}){note}")
    fig.update_layout(title=title, height=int(110 + band * rows), margin=dict(l=10, r=10, t=40, b=40))
    return fig


def curves_figure(runs: Sequence[MethodRun], metric: str, title: str, marks: Sequence[tuple[int, str]] = (),
                  cumulative_failures: bool = False) -> go.Figure:
    """One line per method over the steps of a run: a metric, or the cumulative number of failed requests."""
    fig = go.Figure()
    for r in runs:
        y = np.cumsum(r.failed) if cumulative_failures else r.metrics[metric]
        x = np.arange(1, len(y) + 1) if cumulative_failures else np.arange(len(y))
        fig.add_trace(go.Scatter(x=x, y=y, mode="lines", name=r.name))
    for x, text in marks:
        fig.add_vline(x=x, line_dash="dot", annotation_text=text)
    fig.update_layout(title=title, height=260, margin=dict(l=10, r=10, t=40, b=30), xaxis_title="step")
    return fig


def animation_figure(runs: Sequence[MethodRun], max_frames: int = 120) -> go.Figure:
    """The methods' maps over the run, with a play button and a slider (played in the browser)."""
    steps = runs[0].maps.shape[0]
    idx = np.unique(np.linspace(0, steps - 1, min(steps, max_frames)).astype(int))
    names = [r.name for r in runs]
    first = map_figure(np.stack([r.maps[0] for r in runs]), names, layout_label=False)
    base = first.data[0]
    frames = [go.Frame(data=[go.Image(source=png_source(map_image(np.stack([r.maps[t] for r in runs]), False)),
                                      dx=base.dx, dy=base.dy, x0=base.x0, y0=base.y0)], name=str(t)) for t in idx]
    first.frames = frames
    first.update_layout(
        title="Maps over the run (play in the browser)",
        updatemenus=[dict(type="buttons", showactive=False, x=0, y=-0.35, xanchor="left", buttons=[
            dict(label="Play", method="animate", args=[None, dict(frame=dict(duration=120, redraw=True),
                                                                  fromcurrent=True)]),
            dict(label="Pause", method="animate", args=[[None], dict(mode="immediate")])])],
        sliders=[dict(active=0, y=-0.2, currentvalue=dict(prefix="step ", font=dict(size=13, color="#444")),
                      font=dict(size=1, color="rgba(0,0,0,0)"), ticklen=2,
                      steps=[dict(label=str(t), method="animate",
                                  args=[[str(t)], dict(mode="immediate", frame=dict(redraw=True))]) for t in idx])])
    first.update_layout(height=first.layout.height + 120)
    return first


def adaptation_figure(curves: dict[str, Sequence[tuple[float, float, float]]], title: str) -> go.Figure:
    """Return by episode index within a trial, one line per curve with its 95 % band where it has one."""
    fig = go.Figure()
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
    for i, (name, pts) in enumerate(curves.items()):
        a = np.asarray(pts, dtype=float)
        x = list(range(1, len(a) + 1))
        c = palette[i % len(palette)]
        fig.add_trace(go.Scatter(x=x, y=a[:, 0].tolist(), mode="lines+markers", name=name, line=dict(color=c)))
        if np.isfinite(a[:, 1:]).all():
            fig.add_trace(go.Scatter(x=x + x[::-1], y=np.concatenate([a[:, 2], a[::-1, 1]]).tolist(), mode="lines",
                                     fill="toself", fillcolor=c, opacity=0.15, line=dict(width=0), showlegend=False,
                                     hoverinfo="skip", name=f"{name} 95 %"))
    fig.update_layout(title=title, height=320, margin=dict(l=10, r=10, t=40, b=30),
                      xaxis_title="episode in the trial", yaxis_title="return")
    fig.update_xaxes(dtick=1)
    return fig


__all__ = ["adaptation_figure", "animation_figure", "colours", "curves_figure", "decode_source", "map_figure",
           "map_image", "png_source"]
