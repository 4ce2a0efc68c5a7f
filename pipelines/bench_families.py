"""Merge the per-family results of pipelines/bench_families.sh into one report.

Reads OUT/status.tsv (family, exit status, seconds) and each OUT/bench/<family>/bench.json (bench-dry-run.json in a
dry run), and writes OUT/BENCH_FAMILIES.md and OUT/BENCH_FAMILIES.json: `vidsparse bench`'s own report of every
family that finished (the summary table, then one section per family), and a list of the families that did not,
with their status and the last lines of their log; and OUT/bench_md_section.md, the summary table as a section to
append to pipelines/bench.md.

    python pipelines/bench_families.py /tmp/vidsparse-families --limit-s 560
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vidsparse.app.bench.report import write_results

NAMES = ("BENCH_FAMILIES.md", "BENCH_FAMILIES.json")
SECTION = "bench_md_section.md"  # the summary table as a section of pipelines/bench.md


def read_status(out: Path) -> list[dict]:
    """The rows of status.tsv: family, status (an exit status, "skipped" or "timeout after N s"), seconds."""
    lines = (out / "status.tsv").read_text().splitlines()[1:]
    return [dict(zip(("family", "status", "seconds"), line.split("\t"))) for line in lines if line.strip()]


def merge(out: Path, limit_s: float) -> tuple[list[dict], list[dict]]:
    """(rows of the families that finished, status of those that did not); writes the merged report."""
    status = read_status(out)
    rows, env, missing = [], None, []
    for entry in status:
        folder = out / "bench" / entry["family"]
        found = [folder / name for name in ("bench.json", "bench-dry-run.json") if (folder / name).is_file()]
        result = json.loads(found[0].read_text()) if found else None
        if result is None or not result["models"]:
            log = out / "bench" / f"{entry['family']}.log"
            tail = log.read_text().splitlines()[-3:] if log.is_file() else []
            missing.append({**entry, "log_tail": tail})
            continue
        env = env or result
        rows += [{**row, "command": result["command"], "wall_s": float(entry["seconds"]), "exit_status": entry["status"]}
                 for row in result["models"]]
    if env is None:
        env = {"date": "-", "device": "-", "versions": {}, "dry_run": True}
    command = f"bash pipelines/bench_families.sh (LIMIT_S={limit_s:g}); per family: " + "; ".join(
        f"`{r['command']}`" for r in rows)
    head = {key: env[key] for key in ("date", "device", "versions", "dry_run")} | {"command": command.replace("`", "")}
    write_results(head | {"not_measured": missing}, rows, out, NAMES)
    md = out / NAMES[0]
    lines = md.read_text().splitlines()
    lines[2] = f"Produced by `bash pipelines/bench_families.sh` within {limit_s:g} s on {env['date']}, one process a family:"
    lines[3:3] = ["", *(f"- {r['model']} ({r['wall_s']:.0f} s, exit {r['exit_status']}): `{r['command']}`" for r in rows)]
    if missing:
        lines += ["", "## Not measured", ""]
        lines += [f"- {m['family']}: {m['status']} after {m['seconds']} s; log ends: "
                  + " / ".join(line.strip() for line in m["log_tail"] if line.strip())[:400] for m in missing]
    md.write_text("\n".join(lines) + "\n")
    table = lines[lines.index("## Summary") + 2 : lines.index("## Summary") + 4 + sum(len(r["variants"]) for r in rows)]
    (out / SECTION).write_text("\n".join([
        f"## The families of issue 22 ({env['device']}, {env['date']})", "",
        "Produced by `bash pipelines/bench_families.sh` (one process a family; the commands and every family's "
        "section: `pipelines/BENCH_FAMILIES.md`). The hybrid's row is a reusing step, after its refresh and its "
        "choosing step ran untimed (its density counts those steps too).", "", *table,
        *(["", "Not measured: " + "; ".join(f"{m['family']} ({m['status']})" for m in missing)] if missing else []),
    ]) + "\n")
    return rows, missing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the folder bench_families.sh wrote ($OUT)")
    parser.add_argument("--limit-s", type=float, default=560, help="the script's time limit, for the report")
    args = parser.parse_args(argv)
    rows, missing = merge(args.out, args.limit_s)
    print(f"merged {len(rows)} families into {args.out / NAMES[0]}"
          + (f"; not measured: {', '.join(m['family'] for m in missing)}" if missing else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
