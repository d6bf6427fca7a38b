"""A self-contained HTML page per labelled run: the operando figure with the label band, the
alarm timeline and a summary of the model and inputs."""
from __future__ import annotations

import base64
import html
import os
from collections import Counter
from pathlib import Path

from lisentry.datasets.frame import CLASSES


def write_report(out: Path, run, rows: list[dict], figure: Path, bundle) -> Path:
    """Write ``out`` (HTML, atomically) for one run."""
    from lisentry.detector.label import _episodes
    img = ""
    if figure.exists():
        img = base64.b64encode(figure.read_bytes()).decode()
    counts = Counter(r["label"] for r in rows)
    eps = _episodes(rows)
    ood = sum(1 for r in rows if "ood" in str(r["status"]))
    esc = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>lisentry: {esc(run.run_id)}</title>",
        "<style>body{font-family:sans-serif;max-width:1000px;margin:2em auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px}</style>",
        "</head><body>",
        f"<h1>{esc(run.run_id)}</h1>",
        f"<p>{len(rows)} frames labelled, {len(run.skipped)} skipped; model "
        f"<code>{esc(str(bundle.card.get('name', bundle.path)))}</code> "
        f"(sha256 {esc(bundle.sha256[:12])}); {ood} frames flagged out of distribution.</p>",
        f"<img style='width:100%' src='data:image/png;base64,{img}'>" if img else "<p>(no figure)</p>",
        "<h2>Frames per label</h2><table><tr>" + "".join(f"<th>{c}</th>" for c in CLASSES) + "</tr><tr>"
        + "".join(f"<td>{counts.get(c, 0)}</td>" for c in CLASSES) + "</tr></table>",
        "<h2>Alarm timeline</h2>",
    ]
    if eps:
        parts.append("<table><tr><th>alarm</th><th>first frame</th><th>start (UTC)</th>"
                     "<th>t (h)</th><th>frames</th></tr>")
        for e in eps:
            parts.append(f"<tr><td>{esc(e['label'])}</td><td>{e['start_frame']}</td>"
                         f"<td>{esc(e['start'])}</td><td>{e['start_t_s'] / 3600:.2f}</td>"
                         f"<td>{e['n_frames']}</td></tr>")
        parts.append("</table>")
    else:
        parts.append("<p>No plating or short alarm.</p>")
    if run.skipped:
        parts.append("<h2>Skipped frames</h2><ul>")
        parts += [f"<li>{e}: {esc(str(p))}: {esc(r)}</li>" for e, p, r in run.skipped[:200]]
        parts.append("</ul>")
    parts.append("</body></html>")
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    tmp.write_text("\n".join(parts), encoding="utf-8")
    os.replace(tmp, out)
    return out
