"""report.html: the same report as report.md, self-contained: inline CSS, and every image and animation inlined
as a base64 data: URI, so that it opens offline."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from ..runinfo import json_safe
from .style import clip
from .text import ReportMedia, case_table, choices_table, definitions, meta_rows, summary_table
from .videos import DIFF_GAIN

__all__ = ["render_html"]


_CSS = """
body{margin:0;background:#eef1f4;color:#1f2328;font:15px/1.5 -apple-system,"Segoe UI",Roboto,"Helvetica Neue",
Arial,sans-serif}
main{max-width:1120px;margin:0 auto;padding:28px 36px 48px;background:#fff;min-height:100vh}
h1{font-size:26px;margin:0 0 16px}
h2{font-size:20px;margin:36px 0 12px;padding-bottom:4px;border-bottom:1px solid #d0d7de}
table{border-collapse:collapse;margin:8px 0 16px;font-size:14px}
th,td{border:1px solid #d0d7de;padding:5px 10px;text-align:left;vertical-align:top}
th{background:#f3f5f7;font-weight:600}
tbody tr:nth-child(even) td{background:#fafbfc}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
table.meta th{width:150px}
code{font:13px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;background:#f3f5f7;padding:1px 5px;
border-radius:4px;overflow-wrap:anywhere}
.note{background:#fff8e1;border:1px solid #ecd9a0;border-radius:6px;padding:8px 12px;margin:12px 0}
ul.defs{color:#57606a;font-size:13.5px;padding-left:20px}
ul.fallbacks li{color:#8a5a00}
figure{margin:14px 0 22px}
figure img{display:block;max-width:100%;height:auto;border:1px solid #d0d7de;border-radius:4px}
figcaption{color:#57606a;font-size:13px;margin-top:4px}
"""


def _data_uri(path: Path) -> str:
    mime = {".png": "image/png", ".gif": "image/gif"}[path.suffix]
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def _html_table(header: list[str], rows: list[list[str]], numeric_from: int = 1, cls: str = "") -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(
            f"<td class=\"num\">{esc(v)}</td>" if i >= numeric_from else f"<td>{esc(v)}</td>" for i, v in enumerate(row)
        ) + "</tr>"
        for row in rows
    )
    cls_attr = f' class="{cls}"' if cls else ""
    return f"<table{cls_attr}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _html_figure(out_dir: Path, name: str, caption: str) -> str:
    esc = html.escape
    return (f'<figure><img src="{_data_uri(out_dir / name)}" alt="{esc(caption)}">'
            f"<figcaption>{esc(caption)}</figcaption></figure>")


def render_html(raw: dict, media: ReportMedia, out_dir: Path) -> str:
    esc, meta, ref = html.escape, raw["meta"], raw["methods"][0]["name"]
    title = f"vidsparse compare: {meta.get('model', '')}".rstrip(": ")
    meta_html = "".join(
        f"<tr><th>{esc(k)}</th><td>{f'<code>{esc(v)}</code>' if k == 'command' else esc(v)}</td></tr>"
        for k, v in meta_rows(meta)
    )
    body = [
        f"<h1>{esc(title)}</h1>",
        f'<table class="meta"><tbody>{meta_html}</tbody></table>',
        "<h2>Summary</h2>", _html_table(*summary_table(raw)),
        f'<p class="note">{esc(raw["lpips"]["reason"])}</p>',
        '<ul class="defs">' + "".join(f"<li>{esc(line)}</li>" for line in definitions(raw)) + "</ul>",
        "<h2>Density against quality</h2>",
        _html_figure(out_dir, media.tradeoff_plot, "Realised attention density against mean PSNR, one point per method"),
        f"<h2>Quality per frame against {esc(ref)}</h2>",
        _html_figure(out_dir, media.psnr_plot, f"PSNR per frame against {ref} (inf, identical frames, not drawn)"),
        _html_figure(out_dir, media.ssim_plot, f"SSIM per frame against {ref}"),
        *[_html_method(m, raw["cases"], media, out_dir, ref) for m in raw["methods"]],
    ]
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>{_CSS}</style></head>\n"
            f"<body><main>\n" + "\n".join(body) + "\n</main></body></html>\n")


def _html_method(method: dict, cases: list[dict], media: ReportMedia, out_dir: Path, ref: str) -> str:
    esc, name = html.escape, method["name"]
    parts = [f"<h2>{esc(name)}</h2>",
             f"<p>Config: <code>{esc(json.dumps(json_safe(method['config'])))}</code></p>",
             _html_table(*case_table(method, cases), numeric_from=3)]
    table = choices_table(method)
    if table is not None:
        parts += ["<p>How often each head ran each choice (calls, every step counted):</p>", _html_table(*table)]
    if method["notes"]:
        parts.append('<p>Notes:</p><ul class="fallbacks">'
                     + "".join(f"<li>{esc(n)}</li>" for n in method["notes"]) + "</ul>")
    if method["fallbacks"]:
        parts.append('<p>Fallbacks:</p><ul class="fallbacks">'
                     + "".join(f"<li>{esc(r)}</li>" for r in method["fallbacks"]) + "</ul>")
    parts.append(_html_figure(out_dir, media.density[name], f"Realised attention density and pattern per layer "
                                                            f"and head: {name}"))
    if name == ref:
        parts.append(f"<p>{esc(ref)} is the reference every other method is compared with.</p>")
    for c, (mp4, gif) in enumerate(media.side_by_side.get(name, [])):
        case = cases[c]
        parts.append(_html_figure(out_dir, gif, f"Case {c}, seed {case['seed']}: \u201c{clip(case['prompt'], 120)}"
                                                f"\u201d. {ref} | {name} | |difference| x{DIFF_GAIN}. Full size, "
                                                f"every frame: {mp4}"))
    return "\n".join(parts)
