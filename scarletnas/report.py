"""Search outputs people read: Pareto front as JSON/CSV, plots as PNG and a
self-contained HTML page (usable as a KFP HTML artifact)."""

from __future__ import annotations

import base64
import csv
import html
import io
import json

from . import storage
from .search import SearchResult

COLUMNS = ["arch", "top1", "madds", "params", "latency_ms", "generation"]


def _csv(rows) -> bytes:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue().encode()


def pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def figure_png(fig, dpi: int = 110) -> bytes:
    """Render and close a figure."""
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    pyplot().close(fig)
    return buf.getvalue()


def curve_png(points: list[tuple[int, float]], title: str, ylabel: str) -> bytes:
    """A metric against training step."""
    fig, ax = pyplot().subplots(figsize=(6, 3.5))
    if points:
        ax.plot(*zip(*points, strict=True))
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return figure_png(fig, dpi=100)


def pareto_png(result: SearchResult, title: str = "Pareto front", warning: str = "") -> bytes:
    from matplotlib.ticker import MaxNLocator

    plt = pyplot()

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.2),
                                  gridspec_kw={"width_ratios": [2, 1]})
    ev = result.evaluated
    ax.scatter([r["madds"] / 1e6 for r in ev], [100 * r["top1"] for r in ev], s=10,
               color="0.7", label=f"evaluated ({len(ev)})")
    front = sorted(result.front, key=lambda r: r["madds"])
    ax.plot([r["madds"] / 1e6 for r in front], [100 * r["top1"] for r in front], "o-",
            color="tab:red", markersize=4, label=f"Pareto front ({len(front)})")
    sel = result.selected
    ax.scatter([r["madds"] / 1e6 for r in sel], [100 * r["top1"] for r in sel], s=120,
               facecolors="none", edgecolors="black", linewidths=1.5,
               label=f"selected for retraining ({len(sel)})")
    budget = result.config.get("max_madds") or 0
    if budget:
        ax.axvline(budget / 1e6, color="tab:blue", linestyle="--", linewidth=1,
                   label=f"MAdds budget ({budget / 1e6:.0f}M)")
    ax.set_xlabel("multiply-adds (M)")
    ax.set_ylabel("supernet validation top-1 (%)")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    ax2.plot(range(1, len(result.hypervolume) + 1), result.hypervolume, "o-", markersize=3)
    ax2.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax2.set_xlabel("generation")
    ax2.set_ylabel("hypervolume (normalized)")
    ax2.set_title("Hypervolume per generation")
    ax2.grid(alpha=0.3)
    if warning:
        fig.suptitle(warning.split(":")[0] + ": supernet scores are noise", color="tab:red",
                     fontweight="bold")
    return figure_png(fig)


def pareto_html(result: SearchResult, png: bytes, title: str = "SCARLET-NAS search",
                warning: str = "") -> str:
    """One page, no external resources: the plot inline and the front as a table.
    A ``warning`` (a supernet that has not learned) stands above everything."""
    img = base64.b64encode(png).decode()
    selected = {r["arch"] for r in result.selected}

    def row(r: dict) -> str:
        mark = " class=sel" if r["arch"] in selected else ""
        lat = "" if r.get("latency_ms") is None else f"{r['latency_ms']:.3f}"
        return (f"<tr{mark}><td><code>{html.escape(r['arch'])}</code></td>"
                f"<td>{100 * r['top1']:.2f}</td><td>{r['madds'] / 1e6:.1f}</td>"
                f"<td>{r['params'] / 1e6:.3f}</td><td>{lat}</td></tr>")

    rows = "\n".join(row(r) for r in sorted(result.front, key=lambda r: r["madds"]))
    hv = result.hypervolume[-1] if result.hypervolume else 0.0
    banner = (f'<p class=warn role=alert><b>Warning:</b> {html.escape(warning)}</p>\n'
              if warning else "")
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }}
table {{ border-collapse: collapse; font-size: 13px; }}
td, th {{ border: 1px solid #ccc; padding: 3px 8px; text-align: right; }}
td:first-child {{ text-align: left; }}
tr.sel {{ background: #fff3c4; }}
p.warn {{ background: #fde2e1; border: 2px solid #c62828; padding: .6em; }}
</style></head><body>
{banner}<h2>{html.escape(title)}</h2>
<p>Objectives: {", ".join(result.objectives)}. {len(result.evaluated)} archs evaluated,
{len(result.front)} on the front, final hypervolume {hv:.4f},
cache hit rate {100 * result.cache_hit_rate:.1f}%. Highlighted rows are selected for retraining.</p>
<img alt="Pareto front" src="data:image/png;base64,{img}" style="max-width:100%">
<table><tr><th>arch</th><th>top-1 (%)</th><th>MAdds (M)</th><th>params (M)</th>
<th>latency (ms)</th></tr>
{rows}
</table></body></html>
"""


def write_search_outputs(result: SearchResult, out_dir: str,
                         warning: str = "") -> dict[str, str]:
    """Write every output under ``out_dir`` (local or s3://); returns their URIs."""
    png = pareto_png(result, warning=warning)
    files = {
        "front.json": json.dumps({k: v for k, v in result.to_dict().items() if k != "evaluated"},
                                 indent=1).encode(),
        "front.csv": _csv(result.front),
        "evaluated.csv": _csv(result.evaluated),
        "pareto.png": png,
        "pareto.html": pareto_html(result, png, warning=warning).encode(),
    }
    out = {}
    for name, data in files.items():
        uri = storage.join(out_dir, name)
        storage.write_bytes(uri, data)
        out[name] = uri
    return out


# ---- markdown reports (KFP Markdown artifacts and MLflow text) -------------------------------
def warning_lines(warning: str) -> list[str]:
    """A warning as the first line of a markdown report, or nothing."""
    return [f"> **WARNING** {warning}", ""] if warning else []


def ranking_markdown(report: dict, standalone_epochs: float, warning: str = "") -> str:
    """The ranking check: correlations, then supernet vs stand-alone accuracy per arch."""
    lines = warning_lines(warning) + [
        "# Ranking check", "",
        f"Kendall tau **{report['kendall_tau']:.3f}** (p={report['kendall_p']:.3g}), "
        f"Spearman rho **{report['spearman_rho']:.3f}** (p={report['spearman_p']:.3g}) "
        f"over {report['n']} archs trained {standalone_epochs:g} epochs stand-alone.", "",
        close_line(report["close"]), "",
        "| arch | MAdds (M) | supernet top-1 | stand-alone top-1 |", "|---|---|---|---|"]
    lines += [f"| `{r['arch']}` | {r['madds'] / 1e6:.2f} | {100 * r['supernet_top1']:.2f} | "
              f"{100 * r['standalone_top1']:.2f} |" for r in report["archs"]]
    return "\n".join(lines) + "\n"


def close_line(close: dict) -> str:
    """How the supernet orders the archs a user picks among."""
    points = f"{100 * close['within']:g}"
    if "kendall_tau" not in close:
        return (f"Among close archs (within {points} points of the best): {close['n']}, too few "
                "to correlate; rank more archs (ranking.archs) to see it.")
    if "predicted" in close["constant"]:
        return (f"Among the {close['n']} close archs (within {points} points of the best): the "
                "supernet scores them all the same, so it cannot pick among them.")
    return (f"Among the {close['n']} close archs (within {points} points of the best): Kendall "
            f"tau **{close['kendall_tau']:.3f}** (p={close['kendall_p']:.3g}), the order that "
            "decides a pick among them.")


def leaderboard_markdown(ranked: list[dict], champion: dict, warning: str = "",
                         footer: str = "") -> str:
    """Retrained models by test top-1, the champion marked."""
    lines = warning_lines(warning) + [
        "# SCARLET-NAS leaderboard", "",
        "| rank | arch | test top-1 | top-5 | MAdds (M) | params (M) | latency CPU b1 (ms) |",
        "|---|---|---|---|---|---|---|"]
    for i, s in enumerate(ranked, 1):
        star = " (champion)" if s is champion else ""
        lines.append(f"| {i} | `{s['arch']}`{star} | {100 * s['test_top1']:.2f} | "
                     f"{100 * s['test_top5']:.2f} | {s['madds'] / 1e6:.2f} | "
                     f"{s['params'] / 1e6:.3f} | {s['latency_ms_cpu_batch1']:.2f} |")
    if footer:
        lines += ["", footer]
    return "\n".join(lines) + "\n"
