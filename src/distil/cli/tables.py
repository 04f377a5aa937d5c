"""Tables the commands share: a gate check with its evidence, numbers formatted one way."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table


def fmt(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _interval(interval) -> str:
    if not interval or interval[0] is None or interval[1] is None:
        return "-"
    return f"[{fmt(interval[0])}, {fmt(interval[1])}]"


def checks_table(checks: list[dict], title: str, *, detail: bool = True) -> Table:
    """Every check with its evidence: value, 95% interval, p-value, item count, status (and how it was decided)."""
    table = Table(title=title)
    for col in ("threshold", "value", "95% interval", "limit", "p", "n", "status", *(("detail",) if detail else ())):
        table.add_column(col)
    colours = {"pass": "green", "FAIL": "red", "undecided": "yellow"}
    for c in checks:
        status = c.get("status") or ("pass" if c["passed"] else "FAIL")
        p_value = "-" if c.get("p_value") is None else f"{c['p_value']:.3g}"
        how = c.get("detail", "") + (f" ({c['method']})" if c.get("method") and c.get("method") != "exact" else "")
        table.add_row(
            c["name"],
            fmt(c["value"]),
            _interval(c.get("interval")),
            fmt(c["threshold"]),
            p_value,
            fmt(c.get("n")),
            f"[{colours.get(status, 'white')}]{status}[/{colours.get(status, 'white')}]",
            *((escape(how),) if detail else ()),
        )
    return table
