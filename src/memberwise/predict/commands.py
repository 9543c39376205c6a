"""``memberwise clv``: fit the CLV models on any transaction file, outside the build."""

from __future__ import annotations

import json as jsonlib
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import typer
from rich.console import Console
from rich.table import Table

from memberwise.kit.errors import MemberwiseError
from memberwise.predict.bgnbd import BetaGeoModel
from memberwise.predict.gammagamma import GammaGammaModel
from memberwise.predict.paretonbd import ParetoNBDModel
from memberwise.predict.rfm import InvalidTransactions, rfm_summary

app = typer.Typer(help="Fit and check CLV models on a transaction file.", no_args_is_help=True)
console = Console()
errors = Console(stderr=True)


class ModelName(StrEnum):
    bgnbd = "bgnbd"
    pareto = "pareto"
    gammagamma = "gammagamma"


class Freq(StrEnum):
    D = "D"
    W = "W"


def read_transactions(path: Path) -> pa.Table:
    """A CSV or Parquet file as a table (by extension; anything not .parquet/.pq is CSV)."""
    if not path.is_file():
        raise InvalidTransactions(f"{path} does not exist or is not a file.")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            return pq.read_table(path)
        return pacsv.read_csv(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InvalidTransactions(f"{path} is not a readable CSV or Parquet file: {exc}") from exc


def parse_dates(table: pa.Table, column: str, date_format: str | None) -> pa.Table:
    """Turn a text (or integer, e.g. 19970101) date column into timestamps with a strptime
    format; ISO 8601 text and real date/timestamp columns pass through."""
    if column not in table.column_names or date_format is None:
        return table
    values = table[column]
    if pa.types.is_timestamp(values.type) or pa.types.is_date(values.type):
        return table
    try:
        parsed = pc.strptime(values.cast(pa.string()), format=date_format, unit="s")
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise InvalidTransactions(
            f"Column {column!r} does not match the date format {date_format!r}: {exc}"
        ) from exc
    return table.set_column(table.column_names.index(column), column, parsed)


def _fit(
    model: ModelName, summary: pa.Table, penalizer: float
) -> BetaGeoModel | ParetoNBDModel | GammaGammaModel:
    x = summary["frequency"].to_numpy()
    if model is ModelName.gammagamma:
        if "monetary_value" not in summary.column_names:
            raise InvalidTransactions("The gammagamma model needs a --value-col.")
        return GammaGammaModel(penalizer).fit(x, summary["monetary_value"].to_numpy())
    counts: BetaGeoModel | ParetoNBDModel = (
        BetaGeoModel(penalizer) if model is ModelName.bgnbd else ParetoNBDModel(penalizer)
    )
    return counts.fit(x, summary["recency"].to_numpy(), summary["T"].to_numpy())


def _holdout(
    fitted: BetaGeoModel | ParetoNBDModel | GammaGammaModel, summary: pa.Table
) -> dict[str, Any] | None:
    """Predicted against actual in the holdout: repeat purchases for the count models (in
    total and by calibration frequency, as in the papers' figure), spend for Gamma-Gamma."""
    if "frequency_holdout" not in summary.column_names:
        return None
    x = summary["frequency"].to_numpy()
    actual = summary["frequency_holdout"].to_numpy()
    if isinstance(fitted, GammaGammaModel):
        both = (x > 0) & (actual > 0)
        if "monetary_value_holdout" not in summary.column_names or not both.any():
            return None
        expected = fitted.conditional_expected_spend(
            x[both], summary["monetary_value"].to_numpy()[both]
        )
        observed = summary["monetary_value_holdout"].to_numpy()[both]
        return {
            "customers": int(both.sum()),
            "predicted_mean_spend": float(expected.mean()),
            "actual_mean_spend": float(observed.mean()),
        }
    duration = float(summary["duration_holdout"][0].as_py()) if summary.num_rows else 0.0
    predicted = fitted.conditional_expected_purchases(
        duration, x, summary["recency"].to_numpy(), summary["T"].to_numpy()
    )
    groups = []
    top = 7
    for k in range(top + 1):
        members = x >= top if k == top else x == k
        if members.any():
            groups.append(
                {
                    "frequency": f"{top}+" if k == top else str(k),
                    "customers": int(members.sum()),
                    "predicted_mean": float(predicted[members].mean()),
                    "actual_mean": float(actual[members].mean()),
                }
            )
    return {
        "duration": duration,
        "predicted_repeat_purchases": float(predicted.sum()),
        "actual_repeat_purchases": int(actual.sum()),
        "by_calibration_frequency": groups,
    }


@app.command("fit")
def fit(
    transactions: Annotated[
        Path, typer.Option("--transactions", help="A CSV or Parquet file, one row a purchase.")
    ],
    customer_col: Annotated[str, typer.Option("--customer-col", help="Customer id column.")],
    date_col: Annotated[str, typer.Option("--date-col", help="Purchase date or time column.")],
    calibration_end: Annotated[
        str, typer.Option("--calibration-end", help="Last day of calibration, YYYY-MM-DD.")
    ],
    value_col: Annotated[
        str | None, typer.Option("--value-col", help="Purchase value column (spend model).")
    ] = None,
    observation_end: Annotated[
        str | None,
        typer.Option(
            "--observation-end",
            help="Last day of a holdout after the calibration, YYYY-MM-DD: prints predicted "
            "against actual repeat purchases in it.",
        ),
    ] = None,
    freq: Annotated[Freq, typer.Option("--freq", help="Time unit: D (days) or W (weeks).")] = (
        Freq.D
    ),
    model: Annotated[ModelName, typer.Option("--model", help="Which model to fit.")] = (
        ModelName.bgnbd
    ),
    date_format: Annotated[
        str | None,
        typer.Option(
            "--date-format",
            help="strptime format of a text date column, e.g. %Y%m%d (default: ISO 8601).",
        ),
    ] = None,
    penalizer: Annotated[
        float, typer.Option("--penalizer", min=0.0, help="L2 penalty (0: plain likelihood).")
    ] = 0.0,
    save: Annotated[
        Path | None, typer.Option("--save", help="Write the fitted model as JSON here.")
    ] = None,
    json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Fit BG/NBD, Pareto/NBD or Gamma-Gamma on a transaction file and check it on a holdout.

    Exit code 2, with a sentence, for an unreadable file, a missing column, a bad date or data
    the model cannot be fitted on.
    """
    try:
        table = parse_dates(read_transactions(transactions), date_col, date_format)
        summary = rfm_summary(
            table,
            customer_col=customer_col,
            datetime_col=date_col,
            value_col=value_col,
            calibration_end=calibration_end,
            observation_end=observation_end,
            freq=freq.value,
        )
        fitted = _fit(model, summary, penalizer)
        holdout = _holdout(fitted, summary)
        if save is not None:
            fitted.save(save)
    except MemberwiseError as exc:
        errors.print(f"[red]clv fit refused:[/red] {exc.message}")
        raise typer.Exit(2) from exc
    x = summary["frequency"].to_numpy()
    result: dict[str, Any] = {
        "model": fitted.kind,
        "params": fitted.params,
        "log_likelihood": fitted.log_likelihood,
        "penalizer": penalizer,
        "time_unit": "days" if freq is Freq.D else "weeks",
        "customers": summary.num_rows,
        "repeat_buyers": int((x > 0).sum()),
        "calibration_end": calibration_end,
        "observation_end": observation_end,
        "iterations": fitted.diagnostics.get("iterations"),
        "seconds": fitted.diagnostics.get("seconds"),
        "holdout": holdout,
    }
    if json:
        typer.echo(jsonlib.dumps(result, indent=2))
    else:
        _print(result)


def _print(result: dict[str, Any]) -> None:
    console.print(
        f"[bold]{result['model']}[/bold] on {result['customers']:,} customers "
        f"({result['repeat_buyers']:,} repeat buyers), time in {result['time_unit']}, "
        f"calibration to {result['calibration_end']}"
    )
    params = Table("parameter", "value", title=None)
    for name, value in result["params"].items():
        params.add_row(
            name + (" (γ)" if result["model"] == "gammagamma" and name == "v" else ""),
            f"{value:.4f}",
        )
    console.print(params)
    console.print(
        f"log-likelihood {result['log_likelihood']:,.1f} "
        f"({result['iterations']} iterations, {result['seconds']:.3f} s)"
    )
    holdout = result["holdout"]
    if not holdout:
        return
    if "predicted_mean_spend" in holdout:
        console.print(
            f"holdout, {holdout['customers']:,} repeat buyers who bought again: predicted mean "
            f"spend {holdout['predicted_mean_spend']:.2f}, actual "
            f"{holdout['actual_mean_spend']:.2f}"
        )
        return
    predicted, actual = holdout["predicted_repeat_purchases"], holdout["actual_repeat_purchases"]
    gap = "" if actual == 0 else f" ({(predicted - actual) / actual:+.1%})"
    console.print(
        f"holdout to {result['observation_end']} ({holdout['duration']:g} {result['time_unit']}): "
        f"predicted {predicted:,.1f} repeat purchases, actual {actual:,}{gap}"
    )
    table = Table("calibration frequency", "customers", "predicted mean", "actual mean")
    for g in holdout["by_calibration_frequency"]:
        table.add_row(
            g["frequency"],
            f"{g['customers']:,}",
            f"{g['predicted_mean']:.3f}",
            f"{g['actual_mean']:.3f}",
        )
    console.print(table)
