"""The page frame every dashboard page and the HTML export share: inline style (light and
dark), navigation, the filter form, and small HTML helpers. Nothing is fetched: no font,
no script and no image comes from anywhere but the page itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from html import escape
from typing import Any

from ccmeter.money import format_usd

#: The served pages' Content-Security-Policy (the export carries it as a meta tag): nothing
#: may load from the network, and the only place a script may talk to is this server.
CSP = ("default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
       "img-src data:; connect-src 'self'; form-action 'self'; base-uri 'none'")

STYLE = """
:root{--bg:#fff;--fg:#1b1f24;--muted:#5c6670;--line:#d8dee4;--card:#f6f8fa;--link:#0b5cad;
--c0:#2f6fde;--c1:#e5832b;--c2:#2e9e5b;--c3:#c2417c;--c4:#7a55d1;--c5:#1f9aa8;--c6:#b7a21a;
--c7:#8a8f98;--ok:#2e9e5b;--warn:#d98b00;--over:#cf2f2f;color-scheme:light dark}
@media (prefers-color-scheme:dark){:root{--bg:#14171b;--fg:#e3e7eb;--muted:#9aa5b1;
--line:#313841;--card:#1c2127;--link:#7cb4ff;--c0:#5b93f5;--c1:#f0a050;--c2:#4cc27c;
--c3:#e2689f;--c4:#a485f0;--c5:#3dc0cf;--c6:#d9c53c;--c7:#8f96a0;--ok:#4cc27c;
--warn:#f0b429;--over:#ff6b6b}}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);font:15px/1.45 system-ui,-apple-system,
"Segoe UI",Roboto,sans-serif}
a{color:var(--link)}
a:focus-visible,button:focus-visible,input:focus-visible,select:focus-visible,
summary:focus-visible{outline:3px solid var(--c1);outline-offset:2px}
.skip{position:absolute;left:-999px}.skip:focus{left:8px;top:8px;background:var(--card);
padding:4px 8px;z-index:2}
header{display:flex;flex-wrap:wrap;gap:4px 18px;align-items:center;padding:10px 20px;
border-bottom:1px solid var(--line);background:var(--card)}
header .brand{font-weight:700;margin-right:8px}
nav a{margin-right:14px;text-decoration:none}nav a[aria-current]{font-weight:700;
text-decoration:underline}
#live{margin-left:auto;color:var(--muted);font-size:13px}
main{padding:16px 20px 40px;max-width:1180px}
h1{font-size:22px;margin:6px 0 12px}h2{font-size:17px;margin:26px 0 8px}
form.filters{display:flex;flex-wrap:wrap;gap:8px 14px;align-items:end;margin:4px 0 14px}
form.filters label{display:flex;flex-direction:column;font-size:12px;color:var(--muted)}
input,select,button{font:inherit;padding:4px 6px;border:1px solid var(--line);
border-radius:4px;background:var(--bg);color:var(--fg)}
button{cursor:pointer;background:var(--card)}
.cards{display:flex;flex-wrap:wrap;gap:12px}
.card{background:var(--card);border:1px solid var(--line);border-radius:6px;padding:10px 14px;
min-width:220px}
.card .big{font-size:24px;font-weight:650}.muted,.card .sub{color:var(--muted);font-size:13px}
table{border-collapse:collapse;margin:6px 0;font-variant-numeric:tabular-nums}
th,td{padding:4px 10px;border-bottom:1px solid var(--line);text-align:left;white-space:nowrap}
th{font-size:12px;color:var(--muted);font-weight:600}
td.n,th.n{text-align:right}
.scroll{overflow-x:auto;max-width:100%}
svg.chart{max-width:100%;height:auto;display:block}
svg .grid{stroke:var(--line);stroke-width:1}svg .axis-line{stroke:var(--muted)}
svg text{fill:var(--muted);font-size:11px}svg text.label,svg text.value{fill:var(--fg);
font-size:12px}svg a text.label{fill:var(--link)}
.c0{fill:var(--c0);background:var(--c0)}.c1{fill:var(--c1);background:var(--c1)}
.c2{fill:var(--c2);background:var(--c2)}.c3{fill:var(--c3);background:var(--c3)}
.c4{fill:var(--c4);background:var(--c4)}.c5{fill:var(--c5);background:var(--c5)}
.c6{fill:var(--c6);background:var(--c6)}.c7{fill:var(--c7);background:var(--c7)}
svg .refused{fill:var(--over)}svg .failed{fill:var(--warn)}
svg .track{fill:var(--line)}svg .fill.ok{fill:var(--ok)}svg .fill.warn{fill:var(--warn)}
svg .fill.over{fill:var(--over)}
.legend{list-style:none;padding:0;margin:4px 0 0;display:flex;flex-wrap:wrap;gap:4px 14px;
font-size:13px}.swatch{display:inline-block;width:11px;height:11px;border-radius:2px;
margin-right:5px;vertical-align:-1px}
.state-reached,.status-refused{color:var(--over);font-weight:600}
.state-warning,.status-failed{color:var(--warn);font-weight:600}
.error{border:1px solid var(--over);padding:8px 12px;border-radius:6px}
"""

#: The live view: poll a tiny endpoint; when the database changed, fetch this same page and
#: swap its ``<main>`` in (no reload, no scroll jump). Only while the tab is visible.
LIVE_SCRIPT = """
(function(){var b=document.body,v=b.getAttribute('data-version'),s=document.getElementById('live');
if(!v||!window.fetch||!window.DOMParser)return;var busy=false;
function tick(){if(busy||document.hidden)return;busy=true;
fetch('/api/version',{cache:'no-store'}).then(function(r){return r.json();}).then(function(d){
if(String(d.version)===v)return;return fetch(location.href,{cache:'no-store'}).then(function(r){
return r.text();}).then(function(t){var doc=new DOMParser().parseFromString(t,'text/html');
var m=doc.querySelector('main');if(m)document.querySelector('main').replaceWith(m);
v=doc.body.getAttribute('data-version')||String(d.version);b.setAttribute('data-version',v);
if(s)s.textContent='live \\u00b7 updated '+new Date().toLocaleTimeString();});
}).catch(function(){if(s)s.textContent='live \\u00b7 dashboard unreachable';})
.then(function(){busy=false;});}
if(s)s.textContent='live';setInterval(tick,1000);})();
"""

NAV = (("/", "Overview"), ("/projects", "Projects"), ("/sessions", "Sessions"),
       ("/caps", "Caps & plan"), ("/waste", "Waste"))


def page(title: str, body: str, *, active: str | None = None, version: str | None = None,
         nav: bool = True) -> str:
    """A whole HTML document. ``version`` (the database's, served pages only) turns on the
    live view; without it the page has no script at all."""
    links = "".join(
        f'<a href="{href}"{" aria-current=page" if href == active else ""}>{name}</a>'
        for href, name in NAV) if nav else ""
    script = f"<script>{LIVE_SCRIPT}</script>" if version is not None else ""
    data = f' data-version="{escape(version)}"' if version is not None else ""
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        '<meta name="color-scheme" content="light dark"><link rel="icon" href="data:,">'
        f"<title>{escape(title)} · ccmeter</title><style>{STYLE}</style></head>"
        f'<body{data}><a class="skip" href="#main">Skip to content</a>'
        f'<header><span class="brand">ccmeter</span><nav aria-label="Pages">{links}</nav>'
        f'<span id="live" role="status" aria-live="polite"></span></header>'
        f'<main id="main" tabindex="-1"><h1>{escape(title)}</h1>{body}</main>{script}'
        "</body></html>")


def usd(pico: int | None, *, places: int | None = None, id_: str | None = None) -> str:
    """An amount for people, with the exact picodollars in ``data-picousd`` (tests and
    scripts read that; ``unpriced`` has none)."""
    ident = f' id="{id_}"' if id_ else ""
    if pico is None:
        return f'<span class="usd"{ident} data-picousd="">unpriced</span>'
    return (f'<span class="usd"{ident} data-picousd="{int(pico)}">'
            f"{escape(format_usd(pico, places))}</span>")


def usd_axis(pico: float) -> str:
    """An axis tick: ``$12``, ``$0.50``, ``$1.2k``."""
    dollars = pico / 1e12
    if dollars >= 1000:
        return f"${dollars / 1000:.1f}k"
    if dollars >= 10 or dollars == 0:
        return f"${dollars:.0f}"
    return f"${dollars:.2f}"


def num(value: Any) -> str:
    return "" if value is None else f"{int(value):,}"


def when(ts: float | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
    return "" if ts is None else datetime.fromtimestamp(ts).strftime(fmt)


def percent(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.0f}%"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, numeric: Sequence[int] = (),
          caption: str | None = None, id_: str | None = None) -> str:
    """A table of already-escaped cells; columns in ``numeric`` align right."""
    ident = f' id="{id_}"' if id_ else ""
    cap = f"<caption class=muted>{escape(caption)}</caption>" if caption else ""

    def cls(i: int) -> str:
        return ' class="n"' if i in numeric else ""

    head = "".join(f'<th scope="col"{cls(i)}>{escape(h)}</th>' for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(f"<td{cls(i)}>{cell}</td>" for i, cell in enumerate(row))
                   + "</tr>" for row in rows)
    return (f'<div class="scroll"><table{ident}>{cap}<thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>")


def filter_form(action: str, pf: Any, *, project: bool = True, stack: bool = True,
                model: bool = True) -> str:
    """The time range, project and model filters as a plain GET form (works without JS)."""

    def field(name: str, label: str, value: str | None, hint: str) -> str:
        return (f'<label>{label}<input name="{name}" value="{escape(value or "")}" '
                f'placeholder="{escape(hint)}" size="11"></label>')

    parts = [field("since", "Since", pf.since_text, "30d, 2026-11, all"),
             field("until", "Until", pf.until_text, "now")]
    if project:
        parts.append(field("project", "Project", pf.project, "any"))
    if model:
        parts.append(field("model", "Model contains", pf.model, "any"))
    if stack:
        options = "".join(f'<option value="{s}"{" selected" if s == pf.stack else ""}>{s}'
                          "</option>" for s in ("project", "model"))
        parts.append(f'<label>Stack by<select name="stack">{options}</select></label>')
    parts.append('<button type="submit">Apply</button>')
    return (f'<form class="filters" method="get" action="{escape(action)}" '
            f'aria-label="Filters">{"".join(parts)}</form>')


def error_page(status: int, message: str) -> str:
    return page(f"{status}", f'<p class="error" id="error">{escape(message)}</p>')


def filter_error(message: str, path: str) -> str:
    """A filter the page cannot use: what is wrong, and the page without filters."""
    return (f'<p class="error" id="error">{escape(message)}</p>'
            f'<p><a href="{escape(path)}">Show this page without filters</a></p>')
