"""report.md: the report with its images and videos referenced by relative path."""

from __future__ import annotations

import json

from ..runinfo import json_safe
from .style import clip
from .text import ReportMedia, case_table, choices_table, definitions, meta_rows, summary_table

__all__ = ["render_markdown"]


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(map(cell, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(cell, row)) + " |" for row in rows]
    return "\n".join(lines)


def _md_code(text: str) -> str:
    fence = "``" if "`" in text else "`"
    return f"{fence} {text} {fence}" if fence == "``" else f"`{text}`"


def render_markdown(raw: dict, media: ReportMedia) -> str:
    meta, ref = raw["meta"], raw["methods"][0]["name"]
    parts = [f"# vidsparse compare: {meta.get('model', '')}".rstrip(": ")]
    meta_cells = [[k, _md_code(v) if k == "command" else v] for k, v in meta_rows(meta)]
    parts.append(_md_table(["run", ""], meta_cells))
    parts.append("## Summary\n\n" + _md_table(*summary_table(raw)))
    parts.append(f"> {raw['lpips']['reason']}")
    parts.append("\n".join(f"- {line}" for line in definitions(raw)))
    parts.append(f"## Density against quality\n\n![Density against PSNR]({media.tradeoff_plot})")
    parts.append(f"## Quality per frame against {ref}\n\n![PSNR per frame]({media.psnr_plot})\n\n"
                 f"![SSIM per frame]({media.ssim_plot})")
    for method in raw["methods"]:
        parts.append(_md_method(method, raw["cases"], media, ref))
    return "\n\n".join(parts) + "\n"


def _md_method(method: dict, cases: list[dict], media: ReportMedia, ref: str) -> str:
    name = method["name"]
    lines = [f"## {name}", "", f"Config: {_md_code(json.dumps(json_safe(method['config'])))}", ""]
    lines += [_md_table(*case_table(method, cases)), ""]
    table = choices_table(method)
    if table is not None:
        lines += ["How often each head ran each choice (calls, every step counted):", "", _md_table(*table), ""]
    if method["notes"]:
        lines += ["Notes:", *[f"- {note}" for note in method["notes"]], ""]
    if method["fallbacks"]:
        lines += ["Fallbacks:", *[f"- {reason}" for reason in method["fallbacks"]], ""]
    lines.append(f"![density per layer and head: {name}]({media.density[name]})")
    if name == ref:
        lines += ["", f"{ref} is the reference every other method is compared with."]
    for c, (mp4, gif) in enumerate(media.side_by_side.get(name, [])):
        case = cases[c]
        lines += ["", f"Case {c} (seed {case['seed']}, \"{clip(case['prompt'], 80)}\"): [{mp4}]({mp4})", "",
                  f"![{ref} | {name} | difference]({gif})"]
    return "\n".join(lines)
