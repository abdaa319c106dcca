"""The self-contained HTML page of a backtest report.

One file that opens anywhere, offline: inline CSS, charts as base64 PNG ``data:`` URIs, no
script at all, and a Content-Security-Policy that forbids loading anything else, so an
accidental external reference shows up as a console error (which the browser test looks for)
instead of a silent network request. Every text value is HTML-escaped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5rem auto; max-width: 72rem;
       color: #1d232a; padding: 0 1rem; }
h1 { font-size: 1.5rem; margin-bottom: .25rem; }
h2 { font-size: 1.15rem; margin-top: 2rem; border-bottom: 1px solid #d0d7de; }
table { border-collapse: collapse; font-size: .85rem; margin: .5rem 0; }
th, td { border: 1px solid #d0d7de; padding: .2rem .5rem; }
th { background: #f3f5f7; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.flag { background: #fff4d6; border: 1px solid #e0b000; padding: .5rem .75rem; margin: .5rem 0; }
figure { margin: 1rem 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: .85rem; color: #57606a; }
.muted { color: #57606a; font-size: .85rem; }
.scroll { overflow-x: auto; }
"""


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], *, table_id: str = "",
           num_from: int = 1) -> str:
    tid = f' id="{escape(table_id)}"' if table_id else ""
    head = "".join(f"<th>{escape(str(h))}</th>" for h in header)
    body = []
    for r in rows:
        cells = "".join(
            f'<td class="num">{escape(str(c))}</td>' if i >= num_from
            else f"<td>{escape(str(c))}</td>" for i, c in enumerate(r))
        body.append(f"<tr>{cells}</tr>")
    return (f'<div class="scroll"><table{tid}><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table></div>")


def _kv(pairs: Sequence[tuple[str, Any]], table_id: str) -> str:
    return _table(["Setting", "Value"], [(k, "-" if v is None else v) for k, v in pairs],
                  table_id=table_id, num_from=99)


def render(*, summary: Mapping[str, Any], table: tuple[Sequence[str], Sequence[Sequence[str]]],
           charts: Sequence[tuple[str, str, str]], trade_columns: Sequence[str],
           trade_rows: Sequence[Sequence[str]], trades_total: int) -> str:
    """The page.

    Args:
        summary: the ``summary.json`` content.
        table: ``(header, rows)`` of the metric table (the terminal table's cells).
        charts: ``(element id, caption, base64 PNG)``; the equity chart's id is
            ``equity-chart``.
        trade_columns: the ``trades.csv`` header.
        trade_rows: the first trades, as in ``trades.csv``.
        trades_total: how many trades ``trades.csv`` holds.
    """
    cfg = summary["config"]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>Backtest report</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>Backtest report</h1>",
        f'<p class="muted">{escape(summary["overall"].get("start") or "-")} → '
        f'{escape(summary["overall"].get("end") or "-")} · engine {escape(cfg["engine"])} · '
        f'equity in {escape(summary["accounting_currency"])} · trade log sha256 '
        f'<code>{escape(summary["trade_log_sha256"] or "-")}</code></p>',
    ]
    for note in summary["notes"]:
        parts.append(f'<p class="flag" id="flag-no-risk-limits">{escape(note)}</p>')

    header, rows = table
    parts.append("<h2>Summary</h2>")
    parts.append(_table(header, rows, table_id="summary-table"))
    parts.append('<p class="muted">Per-strategy equity metrics use each strategy\'s realised '
                 "trade P&amp;L on the initial equity; money per trade is in the symbol's quote "
                 "currency. Definitions are in <code>summary.json</code>.</p>")

    parts.append("<h2>Charts</h2>")
    for cid, caption, b64 in charts:
        parts.append(f'<figure><img id="{escape(cid)}" alt="{escape(caption)}" '
                     f'src="data:image/png;base64,{b64}">'
                     f"<figcaption>{escape(caption)}</figcaption></figure>")

    parts.append("<h2>Run</h2>")
    parts.append(_kv([
        ("Strategies", ", ".join(cfg["strategies"])),
        ("Parameters", "; ".join(f"{s}.{k}={v}" for s, k, v in cfg["params"]) or "-"),
        ("Data files", ", ".join(cfg["data_files"])),
        ("From", cfg["from"]), ("To", cfg["to"]),
        ("Timeframe", cfg["timeframe"] or "as in the files"),
        ("Slippage (bps)", cfg["slippage_bps"]), ("Spread (bps)", cfg["spread_bps"]),
        ("Cash", f'{cfg["cash"]} {cfg["cash_currency"]}'),
        ("Initial equity", f'{summary["initial_equity"]} {summary["accounting_currency"]}'),
        ("Final equity", f'{summary["final_equity"]} {summary["accounting_currency"]}'),
        ("Final balances", "; ".join(f"{v} {c}" for c, v in summary["final_balances"].items())),
        ("Risk limits", "OFF (--no-risk-limits)" if summary["flags"]["no_risk_limits"]
         else "; ".join(f"{k}={v}" for k, v in cfg["risk_limits"].items()) or "defaults"),
        ("Candles", summary["candles"]),
    ], "run-table"))

    parts.append("<h2>Symbols</h2>")
    parts.append(_table(
        ["Symbol", "Candles", "Interval (s)", "First", "Last", "First open", "Last close",
         "Files"],
        [(s["symbol"], s["candles"], s["interval_s"], s["first"], s["last"], s["first_open"],
          s["last_close"], ", ".join(s["files"])) for s in summary["symbols"]],
        table_id="symbols-table"))

    rejections = [("risk", k, v) for k, v in summary["risk_rejections"].items()]
    rejections += [("order", k, v) for k, v in summary["order_rejections"].items()]
    if rejections:
        parts.append("<h2>Rejections</h2>")
        parts.append(_table(["Kind", "Reason", "Count"], rejections, num_from=2))

    parts.append(f"<h2>Warnings ({len(summary['warnings'])})</h2>")
    if summary["warnings"]:
        items = "".join(f"<li>{escape(w)}</li>" for w in summary["warnings"][:200])
        more = len(summary["warnings"]) - 200
        parts.append(f'<ul id="warnings">{items}</ul>')
        if more > 0:
            parts.append(f'<p class="muted">… and {more} more in summary.json.</p>')
    else:
        parts.append('<p class="muted">None.</p>')

    parts.append(f"<h2>Trades ({trades_total})</h2>")
    if trades_total > len(trade_rows):
        parts.append(f'<p class="muted">The first {len(trade_rows)}; all of them are in '
                     "<code>trades.csv</code>.</p>")
    parts.append(_table(list(trade_columns), trade_rows, table_id="trades-table", num_from=6))
    parts.append("</body></html>\n")
    return "\n".join(parts)
