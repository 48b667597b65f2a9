"""`sw eval`'s table (one row per checkpoint scored, the columns its objective has) and
`sw compare`'s (one row per run)."""

from __future__ import annotations


def eval_table(rows: list[dict]) -> list[str]:
    """Aligned text lines: a header, then a row per checkpoint, then what was scored."""
    first = rows[0]
    head = ["stage", "checkpoint"]
    if first["objective"] == "clm":
        head += ["loss", "ppl", "bits/token", "bits/byte", "bits/char"]
    elif first["objective"] == "mlm":
        head += [f"loss @{first['ratio']:g}", "ppl"]
    else:
        head += [f"loss @{r['ratio']:g}" for r in first["ratios"]]
        if "nelbo" in first:
            head.append("NELBO bits/token")
    own = "val_loss" in first
    if own:
        head += ["val loss", "recorded"]
    body = [[*_where(row), *_measures(row), *(_own(row) if own else [])] for row in rows]
    widths = [max(len(x) for x in column) for column in zip(head, *body, strict=True)]
    lines = ["  ".join(x.rjust(w) for x, w in zip(line, widths, strict=True)).rstrip()
             for line in [head, *body]]  # fmt: skip
    scored = first["data"] if first["data"] != "validation" else "the run's validation windows"
    count = first["windows"]
    lines.append(f"scored on {scored} ({count} window{'' if count == 1 else 's'})")
    return lines


def _where(row: dict) -> list[str]:
    stage = str(row["stage"]) + ("" if row["stage_done"] else f" (step {row['step']})")
    return [stage, row["checkpoint"]]


def _measures(row: dict) -> list[str]:
    if row["objective"] == "clm":
        keys = ("loss", "perplexity", "bits_per_token", "bits_per_byte", "bits_per_char")
        return [_number(row[k]) for k in keys]
    if row["objective"] == "mlm":
        return [_number(row["loss"]), _number(row["perplexity"])]
    out = [_number(r["loss"]) for r in row["ratios"]]
    if "nelbo" in row:
        out.append(_number(row["nelbo"]["bits_per_token"]))
    return out


def _own(row: dict) -> list[str]:
    return [_number(row["val_loss"]), _number(row["recorded_val_loss"])]


def _number(x) -> str:
    return "-" if x is None else f"{x:.4f}"


def compare_table(result) -> list[str]:
    """A row per run: its points, where it ends, its best loss, its loss at the x every run
    reaches; then what was scored."""
    axis = result.axis.value
    head = ["run", "name", "points", f"last {axis}", "last loss", "best loss"]
    at = result.common
    head.append(f"loss at {_x(at)} {axis}" if at is not None else "loss at common x")
    body = [[row["run"], row["name"], str(row["points"]), _x(row["last_x"]),
             _number(row["last_loss"]), _number(row["best_loss"]),
             _number(row["loss_at_common_x"])] for row in result.rows()]  # fmt: skip
    widths = [max(len(x) for x in column) for column in zip(head, *body, strict=True)]
    lines = ["  ".join(x.ljust(w) if i < 2 else x.rjust(w)
                       for i, (x, w) in enumerate(zip(line, widths, strict=True))).rstrip()
             for line in [head, *body]]  # fmt: skip
    where = f"every checkpoint on {result.source}"
    if result.source == "validation":
        where = "each run's own validation windows (the same for every run)"
    lines.append(f"scored on {where}")
    return lines


def _x(x) -> str:
    if x is None:
        return "-"
    if x >= 1e6:
        return f"{x:.3g}"
    return f"{x:,.0f}" if float(x).is_integer() else f"{x:,.1f}"
