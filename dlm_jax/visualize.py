"""Pictures of the denoising process: a self-contained HTML page with a step slider, and terminal frames.

Like the paper's Figures 2 and 7: masks are greyed, tokens unmasked at this step are highlighted, tokens that
were remasked at this step are marked.
"""
from __future__ import annotations

import html
import json
from typing import Callable, Sequence

import numpy as np

Decode = Callable[[int], str]


def step_cells(trajectory: np.ndarray, response: np.ndarray, mask_id: int, token_text: Decode) -> list[list[dict]]:
    """Per step, per response position: {"text", "state"} with state in masked / new / remasked / kept.

    trajectory: [steps, length] token ids of one example; response: [length] bool.
    """
    pos = np.flatnonzero(response)
    prev = np.full(len(pos), mask_id)
    steps = []
    for row in trajectory:
        cur = row[pos]
        cells = []
        for p_tok, c_tok in zip(prev, cur):
            if c_tok == mask_id:
                state = "remasked" if p_tok != mask_id else "masked"
            else:
                state = "new" if p_tok != c_tok else "kept"
            cells.append({"text": "[MASK]" if c_tok == mask_id else token_text(int(c_tok)), "state": state})
        steps.append(cells)
        prev = cur
    return steps


_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>dlm_jax denoising trajectory</title>
<style>body{font-family:sans-serif;margin:2em;max-width:70em}.tok{display:inline-block;padding:2px 4px;margin:2px;
border-radius:4px;font-family:monospace}.masked{background:#ddd;color:#888}.new{background:#ffe066}
.remasked{background:#ffb3b3;text-decoration:line-through}.kept{background:#e6f2ff}#steps div{display:none}
#steps div.on{display:block}.prompt{color:#555}</style></head><body>
<h2>Denoising trajectory</h2><p class="prompt"><b>Prompt:</b> PROMPT</p>
<p><label>step <input type="range" id="s" min="1" max="NSTEPS" value="NSTEPS" oninput="show(this.value)"></label>
<span id="lbl"></span></p><div id="steps">ROWS</div>
<p><span class="tok masked">[MASK]</span> masked <span class="tok new">new</span> unmasked at this step
<span class="tok remasked">x</span> remasked at this step <span class="tok kept">kept</span> unchanged</p>
<script>function show(i){document.querySelectorAll('#steps div').forEach(d=>d.classList.toggle('on',
d.dataset.step==i));document.getElementById('lbl').textContent=i+' / NSTEPS';}show(NSTEPS);</script>
<script type="application/json" id="data">DATA</script></body></html>"""


def trajectory_html(prompt: str, steps: Sequence[Sequence[dict]]) -> str:
    """A self-contained page: one <div data-step=i> per step (all present in the file) and a slider."""
    rows = []
    for i, cells in enumerate(steps, 1):
        toks = "".join(f'<span class="tok {c["state"]}">{html.escape(c["text"])}</span>' for c in cells)
        rows.append(f'<div data-step="{i}">{toks}</div>')
    data = json.dumps([[c["text"] for c in cells] for cells in steps]).replace("</", "<\\/")
    return (_PAGE.replace("PROMPT", html.escape(prompt)).replace("NSTEPS", str(len(steps)))
            .replace("ROWS", "\n".join(rows)).replace("DATA", data))


_ANSI = {"masked": "\x1b[90m", "new": "\x1b[1;33m", "remasked": "\x1b[9;31m", "kept": ""}


def terminal_frames(steps: Sequence[Sequence[dict]], *, color: bool = True) -> list[str]:
    """One line per step, e.g. for `--show-steps`."""
    out = []
    for i, cells in enumerate(steps, 1):
        words = [f"{_ANSI[c['state']]}{c['text']}\x1b[0m" if color and _ANSI[c["state"]] else c["text"]
                 for c in cells]
        out.append(f"step {i:>3}: " + " ".join(words))
    return out
