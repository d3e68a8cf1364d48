"""The HTML report: one self-contained page (inline CSS, no script, no external resource).

Everything from the scanned tree is escaped by jinja2's autoescape, so a function named
``<script>`` or a path with ``&`` shows as text. The page then has its control characters and the
undecodable bytes of file names shown as ``\\xNN`` (the template itself holds neither), so any file
name can be written as UTF-8.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, TextIO

from jinja2 import Environment

from mtpeft import __version__
from mtpeft.report.console import printable
from mtpeft.scan.clones import ClonePair
from mtpeft.scan.result import Finding, ScanResult, Thresholds
from mtpeft.scan.units import readable

_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>mtpeft scan: {{ root }}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 2em; }
h3 { font-size: 1em; font-family: monospace; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
code { font-size: 0.95em; }
.error { color: #b00020; font-weight: bold; }
.warning { color: #a15c00; } .note { color: #0b5394; }
.bar { display: inline-block; height: 0.7em; background: #b00020; vertical-align: middle;
       margin-left: 0.4em; }
.muted { color: #666; }
</style>
</head>
<body>
<h1>mtpeft scan of <code>{{ root }}</code></h1>
<p class="muted">mtpeft {{ version }}{% for k, v in info %} &middot; {{ k }}: {{ v }}{% endfor %}</p>
<ul>{% for line in summary %}<li>{{ line }}</li>{% endfor %}</ul>
<p class="muted">Levels from the positive-class probability: error &ge; {{ th.error }},
warning &ge; {{ th.warning }}, note &ge; {{ th.note }}{% if th.per_task %}; except, at level error only,
{% for task, cut in th.per_task.items() %}{{ task }} &ge; {{ "%.4f"|format(cut) }}{{ ", " if not loop.last }}
{%- endfor %} (chosen for a validation precision){% endif %}. A model's prediction, not a proof.</p>

<h2>Findings ({{ n_findings }})</h2>
{% for path, rows in by_file %}
<h3>{{ path }}</h3>
<table>
<tr><th>lines</th><th>unit</th><th>task</th><th>prediction</th><th>probability</th><th>level</th></tr>
{% for f in rows %}
<tr><td class="num">{{ f.unit.start_line }}&ndash;{{ f.unit.end_line }}</td>
<td><code>{{ f.unit.name }}</code>
<span class="muted">{{ f.unit.kind }}</span></td><td>{{ f.task.name }}</td><td>{{ f.answer.label }}</td>
<td class="num">{{ "%.2f"|format(f.probability) }}
<span class="bar" style="width: {{ (f.probability * 60)|round|int }}px"></span></td>
<td class="{{ f.level }}">{{ f.level }}</td></tr>
{% endfor %}
</table>
{% else %}
<p>No findings at or above the note threshold.</p>
{% endfor %}

{% if clones %}
<h2>Clone pairs ({{ clones|length }})</h2>
<table>
<tr><th>first</th><th>second</th><th>similarity</th><th>probability</th><th>level</th></tr>
{% for c in clones %}
<tr><td><code>{{ c.a.name }}</code> <span class="muted">{{ c.a.location }}</span></td>
<td><code>{{ c.b.name }}</code> <span class="muted">{{ c.b.location }}</span></td>
<td class="num">{{ "%.2f"|format(c.similarity) }}</td><td class="num">{{ c.probability }}</td>
<td class="{{ c.level }}">{{ c.level }}</td></tr>
{% endfor %}
</table>
{% endif %}

{% if skipped %}
<h2>Skipped files ({{ skipped|length }})</h2>
<table>
<tr><th>path</th><th>reason</th></tr>
{% for s in skipped %}<tr><td><code>{{ s.path }}</code></td><td>{{ s.reason }}</td></tr>{% endfor %}
</table>
{% endif %}
</body>
</html>
"""

_ENV = Environment(autoescape=True, keep_trailing_newline=True)


def render_html(result: ScanResult, thresholds: Thresholds | None = None) -> str:
    thresholds = thresholds or Thresholds()
    findings = result.findings(thresholds)
    page = _ENV.from_string(_TEMPLATE).render(
        root=str(result.root),
        version=__version__,
        info=sorted(result.info.items()),
        summary=result.summary(),
        th=thresholds,
        n_findings=len(findings),
        by_file=_by_file(findings),
        clones=[_clone_row(result, p, thresholds) for p in result.clone_pairs],
        skipped=result.skipped,
    )
    return printable(readable(page))


def write_html(result: ScanResult, out: TextIO, thresholds: Thresholds | None = None) -> None:
    out.write(render_html(result, thresholds))


def _by_file(findings: list[Finding]) -> list[tuple[str, list[Finding]]]:
    groups: dict[str, list[Finding]] = defaultdict(list)
    for f in findings:
        groups[f.unit.path].append(f)
    return sorted(groups.items())


def _clone_row(result: ScanResult, pair: ClonePair, thresholds: Thresholds) -> dict[str, Any]:
    return {
        "a": result.units[pair.a],
        "b": result.units[pair.b],
        "similarity": pair.similarity,
        "probability": "exact" if pair.exact else f"{pair.probability:.2f}",
        "level": result.clone_level(pair, thresholds),
    }
