"""The medians and ratios of several runs, and the table ``wanotify bench throughput`` prints."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from wanotify.devtools.bench.common import median
from wanotify.devtools.bench.throughput.figures import BASELINES, RunFigures


def _med(values: list[float | None]) -> float | None:
    return median(values)


def summarise(all_runs: list[RunFigures], latencies: tuple[float, ...], per_post: int) -> dict[str, Any]:
    def drain(key: str, attr: str) -> float | None:
        return _med([getattr(r.drains[key], attr) for r in all_runs if key in r.drains])

    out: dict[str, Any] = {"per_post": per_post, "send": {}, "notes": []}
    out["noop"] = drain("noop", "rate")
    for lat in latencies:
        tag = f"{lat:g} ms"
        row: dict[str, Any] = {}
        for task, pool, conc, _ in BASELINES:
            key = f"{task}/{pool}/{tag}"
            row[f"{task} ({pool}, c={conc})"] = {"rate": drain(key, "rate"),
                                                 "cpu_per_1000": drain(key, "cpu_per_1000")}
        pooled = max((v for k, v in row.items() if k.startswith("pooled")),
                     key=lambda v: v["rate"] or 0.0)
        ours = {"rate": drain(f"wanotify/{tag}", "rate"),
                "cpu_per_1000": drain(f"wanotify/{tag}", "cpu_per_1000"),
                "db_cpu_per_1000": drain(f"wanotify/{tag}", "db_cpu_per_1000"),
                "rss_mb": drain(f"wanotify/{tag}", "rss_mb")}
        row["wanotify"] = ours
        row["best_pooled"] = pooled
        row["x_pooled"] = _ratio(ours["rate"], pooled["rate"])
        row["x_noop"] = _ratio(ours["rate"], out["noop"])
        row["cpu_share_of_pooled"] = _ratio(ours["cpu_per_1000"], pooled["cpu_per_1000"])
        out["send"][tag] = row
        for r in all_runs:
            for key, d in r.drains.items():
                if key.endswith("/" + tag) and d.notes:
                    out["notes"].append(f"{key}: {'; '.join(d.notes)}")
    out["enqueue"] = {
        "http_p50_ms": _med([r.enqueue.http_p50_ms for r in all_runs]),
        "http_p99_ms": _med([r.enqueue.http_p99_ms for r in all_runs]),
        "http_rate": _med([r.enqueue.http_rate for r in all_runs]),
        "paced_rate": _med([r.enqueue.paced_rate for r in all_runs]),
        "paced_p50_ms": _med([r.enqueue.paced_p50_ms for r in all_runs]),
        "paced_p99_ms": _med([r.enqueue.paced_p99_ms for r in all_runs]),
        "batch_rate": _med([r.enqueue.batch_rate for r in all_runs]),
        "bulk_rate": _med([r.enqueue.bulk_rate for r in all_runs]),
    }
    ing: dict[str, Any] = {}
    for key in ("ours", "base", "ours1", "base1"):
        ing[key] = {"rate": _med([r.ingest[key].rate for r in all_runs]),
                    "p50_ms": _med([r.ingest[key].p50_ms for r in all_runs]),
                    "p99_ms": _med([r.ingest[key].p99_ms for r in all_runs]),
                    "paced_rate": _med([r.ingest[key].paced_rate for r in all_runs]),
                    "paced_p50_ms": _med([r.ingest[key].paced_p50_ms for r in all_runs]),
                    "paced_p99_ms": _med([r.ingest[key].paced_p99_ms for r in all_runs])}
        for r in all_runs:
            if r.ingest[key].notes:
                out["notes"].append(f"ingest {key}: {'; '.join(r.ingest[key].notes)}")
    ing["x_base"] = _ratio(ing["ours"]["rate"], ing["base"]["rate"])
    ing["x_base1"] = _ratio(ing["ours1"]["rate"], ing["base1"]["rate"])
    out["ingest"] = ing
    rss = [r.drains["rss"] for r in all_runs if "rss" in r.drains]
    out["rss"] = [[int(n), float(mb)] for n, mb in (x.split(":") for x in rss[0].notes)] if rss else []
    return out


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def print_report(s: dict[str, Any], console: Any) -> None:
    def f(v: float | None, spec: str = ".0f", suffix: str = "") -> str:
        return "—" if v is None else f"{v:{spec}}{suffix}"

    t = Table(title=f"wanotify bench throughput — medians of {s['runs']} run(s), {s['cores']} cores")
    for col in ("figure", "wanotify", "baseline", "ratio", "goal"):
        t.add_column(col, justify="right" if col != "figure" else "left")
    t.add_row("Celery no-op task drain (ceiling of one task per message)", "", f(s["noop"], ".0f", "/s"), "", "")
    for tag, row in s["send"].items():
        for name, v in row.items():
            if name.startswith(("naive", "pooled")):
                t.add_row(f"  {name}, {tag}", "", f(v["rate"], ".0f", "/s"), "",
                          f"CPU {f(v['cpu_per_1000'], '.2f')} s/1k")
        ours, pooled = row["wanotify"], row["best_pooled"]
        t.add_row(f"send path, {tag} (sends/s)", f(ours["rate"], ".0f", "/s"), f(pooled["rate"], ".0f", "/s"),
                  f(row["x_pooled"], ".1f", "×"), "≥3× at 0 ms, ≥5× at 50 ms")
        t.add_row(f"  vs the no-op ceiling, {tag}", "", f(s["noop"], ".0f", "/s"), f(row["x_noop"], ".1f", "×"),
                  "≥1.5×")
        t.add_row(f"  CPU s per 1,000 sends (worker + broker), {tag}", f(ours["cpu_per_1000"], ".2f"),
                  f(pooled["cpu_per_1000"], ".2f"), f(row["cpu_share_of_pooled"], ".2f", "×"), "≤0.33×")
        t.add_row(f"  + Postgres CPU s per 1,000 sends, {tag}", f(ours["db_cpu_per_1000"], ".2f"), "—", "", "")
        t.add_row(f"  worker RSS after the drain, {tag}", f(ours["rss_mb"], ".0f", " MB"), "", "", "")
    e = s["enqueue"]
    t.add_row("POST /v1/notifications, 32 clients back to back: p50 / p99",
              f"{f(e['http_p50_ms'], '.1f')} / {f(e['http_p99_ms'], '.1f')} ms", "", "", "p99 < 20 ms")
    t.add_row("  jobs/s", f(e["http_rate"], ".0f", "/s"), "", "", "")
    t.add_row(f"  open loop at {f(e['paced_rate'], '.0f', '/s')} (half capacity): p50 / p99",
              f"{f(e['paced_p50_ms'], '.1f')} / {f(e['paced_p99_ms'], '.1f')} ms", "", "", "p99 < 20 ms")
    t.add_row("POST /v1/notifications:batch (500/request, 4 clients)", f(e["batch_rate"], ".0f", "/s"), "", "",
              "")
    t.add_row("Python API in bulk (notify_many)", f(e["bulk_rate"], ".0f", "/s"), "", "", "≥5,000/s")
    i = s["ingest"]
    t.add_row(f"webhook ingest, {s['per_post']} statuses/POST (events/s)", f(i["ours"]["rate"], ".0f", "/s"),
              f(i["base"]["rate"], ".0f", "/s"), f(i["x_base"], ".1f", "×"), "≥10×")
    t.add_row("  webhook answer p50 / p99 while ingesting",
              f"{f(i['ours']['p50_ms'], '.1f')} / {f(i['ours']['p99_ms'], '.1f')} ms",
              f"{f(i['base']['p50_ms'], '.1f')} / {f(i['base']['p99_ms'], '.1f')} ms", "", "p99 < 50 ms")
    t.add_row(f"  open loop at {f(i['ours']['paced_rate'], '.0f', ' POST/s')} (half capacity): p50 / p99",
              f"{f(i['ours']['paced_p50_ms'], '.1f')} / {f(i['ours']['paced_p99_ms'], '.1f')} ms", "", "",
              "p99 < 50 ms")
    t.add_row("webhook ingest, 1 status/POST (events/s)", f(i["ours1"]["rate"], ".0f", "/s"),
              f(i["base1"]["rate"], ".0f", "/s"), f(i["x_base1"], ".1f", "×"), "")
    t.add_row("  webhook answer p50 / p99 while ingesting",
              f"{f(i['ours1']['p50_ms'], '.1f')} / {f(i['ours1']['p99_ms'], '.1f')} ms",
              f"{f(i['base1']['p50_ms'], '.1f')} / {f(i['base1']['p99_ms'], '.1f')} ms", "", "")
    if s["rss"]:
        t.add_row("worker RSS during a long drain (sends: MB)",
                  ", ".join(f"{n // 1000}k: {mb:.0f}" for n, mb in s["rss"]), "", "", "< 250 MB, no growth")
    console.print(t)
    for n in s["notes"]:
        console.print(f"[yellow]note:[/yellow] {n}")
