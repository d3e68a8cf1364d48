"""The report document as one self-contained HTML page (figures embedded as base64 PNG; no network)."""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING

import jinja2

if TYPE_CHECKING:  # the document model lives in build.py, which imports this module lazily
    from mtpeft.report.build import Document

_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{{ doc.title }}</title>
<style>
  body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em; }
  body { color: #222; }
  h1 { border-bottom: 2px solid #444; }
  h2 { margin-top: 2em; border-bottom: 1px solid #bbb; }
  table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
  caption { caption-side: top; text-align: left; padding-bottom: 0.4em; }
  caption .title { font-weight: bold; display: block; }
  caption .note { color: #555; font-style: italic; }
  th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
  th { background: #f0f0f0; }
  td:first-child, th:first-child { text-align: left; }
  figure { margin: 1em 1em 2em 0; display: inline-block; vertical-align: top; width: min-content; }
  figure img { max-width: 1150px; border: 1px solid #eee; }
  figcaption { color: #555; font-style: italic; font-size: 0.9em; }
  nav a { margin-right: 1em; }
</style>
</head>
<body>
<h1>{{ doc.title }}</h1>
<nav>{% for s in doc.sections %}<a href="#s{{ loop.index }}">{{ s.title }}</a>{% endfor %}</nav>
{% for s in doc.sections %}
<section id="s{{ loop.index }}">
<h2>{{ s.title }}</h2>
{% for b in s.blocks %}
{% if b is string %}
<p>{{ b }}</p>
{% elif b.png is defined %}
<figure>
<img class="figure" data-kind="{{ b.kind }}" alt="{{ b.title }}"
     src="data:image/png;base64,{{ b.png | b64 }}">
<figcaption>{{ b.caption }}</figcaption>
</figure>
{% else %}
<table>
<caption><span class="title">{{ b.title }}</span><span class="note">{{ b.caption }}</span></caption>
<thead><tr>{% for c in b.columns %}<th>{{ c }}</th>{% endfor %}</tr></thead>
<tbody>
{% for row in b.rows %}<tr>{% for cell in row %}<td>{{ cell }}</td>{% endfor %}</tr>
{% endfor %}</tbody>
</table>
{% endif %}
{% endfor %}
</section>
{% endfor %}
</body>
</html>
"""


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True)
    env.filters["b64"] = lambda data: base64.b64encode(data).decode("ascii")
    return env


def render_html(document: Document) -> str:
    return _environment().from_string(_TEMPLATE).render(doc=document)
