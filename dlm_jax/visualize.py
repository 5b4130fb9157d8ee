"""Pictures of the denoising process, as the paper's Figures 2 and 7: the canvas at every step as rows.

- `trajectory_html`: a self-contained page (no JavaScript, printable) whose main view is one `<table>` per example:
  one row per step from step 0 (all masked) to the last, one column per response position; cells coloured by what
  the step did (new / kept / remasked / masked, with a legend), a remasked cell shows the token it withdrew, and
  hovering a token shows its probability when it was committed. A header names the model, checkpoint, strategy,
  steps, seed and lengths; each example shows its prompt, final text and reference.
- `trajectory_svg`: the same grid as one vector figure, for papers.
- `terminal_frames`: one line per step for `generate --show_steps`.
- Comparisons (`generate --strategies a,b`, the paper's Fig. 7(d): left-to-right vs diffusive unmasking): every
  grid ends with a "settled" row, the step at which each position took its final token (the unmasking order), and
  `comparison_html` / `side_by_side_frames` put one prompt's grids / frames for several strategies side by side.
"""
from __future__ import annotations

import dataclasses
import html
import math
from typing import Callable, Sequence

import numpy as np

Decode = Callable[[int], str]
STATES = ("masked", "new", "kept", "remasked")
LEGEND = {"masked": "still masked", "new": "unmasked at this step", "kept": "unchanged since an earlier step",
          "remasked": "remasked at this step (the withdrawn token, struck through)"}
COLOURS = {"masked": ("#e4e4e4", "#888888"), "new": ("#ffe066", "#000000"), "kept": ("#dcebfa", "#000000"),
           "remasked": ("#ffb3b3", "#7a0000")}


@dataclasses.dataclass
class Example:
    """One decoded example: its prompt, final text, optional reference and its cells per step (`step_cells`)."""

    prompt: str
    output: str
    steps: list[list[dict]]
    reference: str | None = None
    strategy: str | None = None  # the sampler strategy that produced it (comparisons)


def step_cells(trajectory: np.ndarray, response: np.ndarray, mask_id: int, token_text: Decode,
               scores: np.ndarray | None = None) -> list[list[dict]]:
    """Rows for step 0 (all masked) .. S: per response position {"text", "state", "withdrawn", "prob"}.

    trajectory: [S, length] token ids of one example after each step; response: [length] bool; scores: [S, length]
    log-probabilities of the tokens as committed (optional). `withdrawn` is the token a remask took back; `prob`
    the committed token's probability (None when masked or unknown).
    """
    pos = np.flatnonzero(response)
    prev = np.full(len(pos), mask_id)
    rows = [[{"text": "[MASK]", "state": "masked", "withdrawn": None, "prob": None} for _ in pos]]
    for s, row in enumerate(trajectory):
        cur = row[pos]
        probs = None if scores is None else np.exp(np.asarray(scores[s], np.float64)[pos])
        cells = []
        for j, (p_tok, c_tok) in enumerate(zip(prev, cur)):
            masked = c_tok == mask_id
            state = ("remasked" if p_tok != mask_id else "masked") if masked else ("new" if p_tok != c_tok else "kept")
            prob = None if masked or probs is None or not math.isfinite(probs[j]) else float(probs[j])
            cells.append({"text": "[MASK]" if masked else token_text(int(c_tok)), "state": state, "prob": prob,
                          "withdrawn": token_text(int(p_tok)) if state == "remasked" else None})
        rows.append(cells)
        prev = cur
    return rows


_CSS = """body{font-family:sans-serif;margin:1.5em;color:#111}h1{font-size:1.3em}table.grid{border-collapse:collapse;
margin:.5em 0 2em}table.grid td,table.grid th{border:1px solid #fff;padding:2px 5px;font-family:monospace;
font-size:12px;white-space:nowrap}table.grid th{background:#fff;color:#555;font-weight:normal;text-align:right}
COLOURS .remasked s{opacity:.8}dl.meta{display:grid;grid-template-columns:max-content auto;gap:.1em 1em}
dl.meta dt{color:#555}dl.meta dd{margin:0}.legend span{display:inline-block;padding:2px 6px;margin-right:1em;
font-family:monospace;font-size:12px}td.order{color:#555;text-align:center}div.side{display:flex;gap:2em;
align-items:flex-start;flex-wrap:wrap}div.side h3{font-size:1em;margin:.2em 0}@media print{*{-webkit-print-color-adjust:exact;print-color-adjust:exact}}"""


def _cell_html(cell: dict) -> str:
    text = html.escape(cell["text"])
    if cell["state"] == "remasked":
        text = f"<s>{html.escape(cell['withdrawn'] or '')}</s>"
    title = f' title="p = {cell["prob"]:.3f}"' if cell["prob"] is not None else ""
    return f'<td class="{cell["state"]}"{title}>{text}</td>'


def settled_steps(steps: Sequence[Sequence[dict]]) -> list[int | None]:
    """Per response position, the step from which it holds its final token (the unmasking order; None: still
    masked at the end). Step 0 is the all-masked canvas, so settled steps are >= 1."""
    out: list[int | None] = []
    for j in range(len(steps[0]) if steps else 0):
        col = [row[j] for row in steps]
        if col[-1]["state"] == "masked" or col[-1]["state"] == "remasked":
            out.append(None)
            continue
        i = len(col) - 1
        while i > 0 and col[i]["state"] == "kept":
            i -= 1
        out.append(i)
    return out


def _grid_html(steps: Sequence[Sequence[dict]]) -> str:
    head = "<tr><th>step</th>" + "".join(f"<th>{j}</th>" for j in range(len(steps[0]))) + "</tr>"
    rows = [f"<tr><th>{i}</th>{''.join(_cell_html(c) for c in cells)}</tr>" for i, cells in enumerate(steps)]
    order = "".join(f'<td class="order">{"" if s is None else s}</td>' for s in settled_steps(steps))
    return f'<table class="grid">{head}{"".join(rows)}<tr class="settled"><th>settled</th>{order}</tr></table>'


def _meta_html(items: dict[str, object]) -> str:
    return '<dl class="meta">' + "".join(f"<dt>{html.escape(str(k))}</dt><dd>{html.escape(str(v))}</dd>"
                                         for k, v in items.items()) + "</dl>"


def _page(title: str, header: dict[str, object], parts: list[str]) -> str:
    css = _CSS.replace("COLOURS", "".join(f".{k}{{background:{b};color:{f}}}" for k, (b, f) in COLOURS.items()))
    legend = '<p class="legend">' + "".join(f'<span class="{k}">{k}</span>{html.escape(v)} ' for k, v in
                                            LEGEND.items()) + (" Hover a token for its probability; the last row "
                                                               "is the step each position settled at.</p>")
    return (f'<!doctype html><html><head><meta charset="utf-8"><title>dlm_jax {title.lower()}</title>'
            f"<style>{css}</style></head><body><h1>{title}</h1>{_meta_html(header)}{legend}{''.join(parts)}"
            "</body></html>")


def _info(ex: Example, *, output: bool = True) -> dict[str, object]:
    info: dict[str, object] = {"prompt": ex.prompt}
    if output:
        info["output"] = ex.output
    if ex.reference is not None:
        info["reference"] = ex.reference
    return info


def trajectory_html(examples: Sequence[Example], header: dict[str, object]) -> str:
    """The self-contained page (see the module docstring); `header`: model, checkpoint, strategy, steps, seed..."""
    parts = [f"<h2>Example {n}</h2>{_meta_html(_info(ex))}{_grid_html(ex.steps)}" for n, ex in enumerate(examples)]
    return _page("Denoising trajectory", header, parts)


def comparison_html(groups: Sequence[Sequence[Example]], header: dict[str, object]) -> str:
    """One section per prompt with the grids of several strategies side by side (each group: one prompt decoded
    by each strategy, `Example.strategy` set), each grid headed by its strategy and output."""
    parts = []
    for n, group in enumerate(groups):
        grids = "".join(f'<div><h3>{html.escape(ex.strategy or "")}</h3>{_meta_html({"output": ex.output})}'
                        f"{_grid_html(ex.steps)}</div>" for ex in group)
        parts.append(f'<h2>Example {n}</h2>{_meta_html(_info(group[0], output=False))}<div class="side">{grids}'
                     "</div>")
    return _page("Unmasking order by strategy", header, parts)


_CHAR_W, _ROW_H, _PAD = 7.2, 18, 6


def trajectory_svg(examples: Sequence[Example], header: dict[str, object]) -> str:
    """The grid of every example as one SVG figure that stands alone as the HTML page does: the run's header, per
    example its title, a header row of response positions, one row per step, the "settled" row (the step each
    position took its final token at), and a legend with each colour's meaning."""
    top = " | ".join(f"{k}: {v}" for k, v in header.items())
    body, y, width = [_svg_text(_PAD, _ROW_H, top, bold=True)], 2 * _ROW_H, _PAD * 2 + len(top) * _CHAR_W
    for n, ex in enumerate(examples):
        parts, y, w = _svg_grid(n, ex, y)
        body, width = body + parts, max(width, w)
    parts, y, w = _svg_legend(y)
    body, width = body + parts, max(width, w)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{y + _PAD:.0f}" '
            f'font-family="monospace" font-size="11">{"".join(body)}</svg>')


def _svg_grid(n: int, ex: Example, y: float) -> tuple[list[str], float, float]:
    """One example's title, position header, step rows and settled row from height `y`: (parts, next y, width)."""
    title = _svg_title(n, ex)
    body = [_svg_text(_PAD, y, title, bold=True)]
    y += _ROW_H * 0.4
    settled = settled_steps(ex.steps)
    cols = [max([len(_svg_label(c)) for c in col] + [len(str(j)), len(str(settled[j] or "-"))])
            for j, col in enumerate(zip(*ex.steps))]
    left = _PAD + 8 * _CHAR_W
    xs = np.concatenate([[left], left + np.cumsum([w * _CHAR_W + 8 for w in cols])])
    body.append(_svg_text(_PAD, y + _ROW_H * 0.7, "step", bold=True))
    body += [_svg_text(xs[j] + 3, y + _ROW_H * 0.7, str(j), bold=True) for j in range(len(cols))]
    y += _ROW_H
    for i, cells in enumerate(ex.steps):
        body.append(_svg_text(_PAD, y + _ROW_H * 0.7, f"{i:>4}"))
        body += [_svg_cell(xs[j], y, xs[j + 1] - xs[j] - 2, _ROW_H - 2, cell) for j, cell in enumerate(cells)]
        y += _ROW_H
    body.append(_svg_text(_PAD, y + _ROW_H * 0.7, "settled", bold=True))
    body += [_svg_text(xs[j] + 3, y + _ROW_H * 0.7, "-" if s is None else str(s)) for j, s in enumerate(settled)]
    width = max(float(xs[-1]) + _PAD, _PAD * 2 + len(title) * _CHAR_W)
    return body, y + 2 * _ROW_H, width


def _svg_legend(y: float) -> tuple[list[str], float, float]:
    """A swatch and the words of `LEGEND` for each state, one per line, and what the rows mean."""
    body = []
    for k in STATES:
        body.append(_svg_cell(_PAD, y, 9 * _CHAR_W, _ROW_H - 2, {"state": k, "text": k, "withdrawn": k}))
        body.append(_svg_text(_PAD + 10 * _CHAR_W, y + _ROW_H * 0.7, LEGEND[k]))
        y += _ROW_H
    note = ("Rows: the canvas after each step (step 0: all masked); settled: the step each position took its final "
            "token at")
    body.append(_svg_text(_PAD, y + _ROW_H * 0.7, note))
    width = _PAD * 2 + max([10 * _CHAR_W + len(v) * _CHAR_W for v in LEGEND.values()] + [len(note) * _CHAR_W])
    return body, y + 2 * _ROW_H, width


def _svg_title(n: int, ex: Example) -> str:
    return f"Example {n}{f' [{ex.strategy}]' if ex.strategy else ''}: {ex.prompt} -> {ex.output}"


def _svg_label(cell: dict) -> str:
    return cell["withdrawn"] if cell["state"] == "remasked" and cell.get("withdrawn") else cell["text"]


def _svg_text(x: float, y: float, text: str, *, bold: bool = False) -> str:
    weight = ' font-weight="bold"' if bold else ""
    return f'<text x="{x:.1f}" y="{y:.1f}"{weight}>{html.escape(text)}</text>'


def _svg_cell(x: float, y: float, w: float, h: float, cell: dict) -> str:
    bg, fg = COLOURS[cell["state"]]
    deco = ' text-decoration="line-through"' if cell["state"] == "remasked" else ""
    title = f"<title>p = {cell['prob']:.3f}</title>" if cell.get("prob") is not None else ""
    return (f'<g>{title}<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" fill="{bg}"/>'
            f'<text x="{x + 3:.1f}" y="{y + h * 0.72:.1f}" fill="{fg}"{deco}>{html.escape(_svg_label(cell))}'
            "</text></g>")


_ANSI = {"masked": "\x1b[90m", "new": "\x1b[1;33m", "remasked": "\x1b[9;31m", "kept": ""}


def _frame(cells: Sequence[dict], color: bool) -> tuple[str, int]:
    """One step's canvas as a line, and its visible width (without colour codes)."""
    words = [_ANSI[c["state"]] + _svg_label(c) + "\x1b[0m" if color and _ANSI[c["state"]] else _svg_label(c)
             for c in cells]
    return " ".join(words), len(" ".join(_svg_label(c) for c in cells))


def terminal_frames(steps: Sequence[Sequence[dict]], *, color: bool = True) -> list[str]:
    """One line per step (step 0 is the all-masked canvas), e.g. for `--show_steps`."""
    return [f"step {i:>3}: " + _frame(cells, color)[0] for i, cells in enumerate(steps)]


def side_by_side_frames(columns: dict[str, Sequence[Sequence[dict]]], *, color: bool = True) -> list[str]:
    """`terminal_frames` of several strategies in columns (`label -> steps`): a header of labels, one line per
    step (a strategy that finished earlier leaves its column blank), then the settled step of each position."""
    frames = {k: [_frame(c, color) for c in steps] for k, steps in columns.items()}
    widths = {k: max([len(k)] + [w for _, w in fr]) for k, fr in frames.items()}
    lines = [" " * 10 + " | ".join(k.ljust(widths[k]) for k in frames)]
    for i in range(max(len(fr) for fr in frames.values())):
        cols = [fr[i][0] + " " * (widths[k] - fr[i][1]) if i < len(fr) else " " * widths[k]
                for k, fr in frames.items()]
        lines.append(f"step {i:>3}: " + " | ".join(cols))
    order = [" ".join("-" if s is None else str(s) for s in settled_steps(steps)) for steps in columns.values()]
    lines.append("settled:  " + " | ".join(o.ljust(widths[k]) for o, k in zip(order, frames)))
    return [line.rstrip() for line in lines]


FIGURE_FORMATS = (".png", ".svg", ".pdf")


def curves_figure(series: dict[str, tuple[Sequence[float], Sequence[float]]], out: str, *, xlabel: str,
                  ylabel: str, title: str = "") -> None:
    """Learning curves: one labelled line (with markers) per `label -> (xs, ys)`, written to `out` (.png, .svg or
    .pdf, by its extension) with matplotlib's file backend."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=150)
    for label, (xs, ys) in series.items():
        ax.plot(xs, ys, marker="o", markersize=3, linewidth=1.5, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(frameon=False)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
