"""``memberwise clv fit`` on the CDNOW transactions as a data scientist would run it."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from memberwise.cli import app
from memberwise.predict.bgnbd import BetaGeoModel
from tests.predict import cdnow

runner = CliRunner()
WINDOW = ["--calibration-end", "1997-09-30", "--observation-end", "1998-06-30", "--freq", "W"]


@pytest.fixture(scope="module")
def csv_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("clv") / "cdnow.csv"
    pacsv.write_csv(cdnow.transactions(), path)  # ISO dates: 1997-01-01
    return path


def _fit(*args: str) -> tuple[int, str]:
    """Exit code and output with Rich's line wrapping undone."""
    result = runner.invoke(app, ["clv", "fit", *args])
    return result.exit_code, " ".join(result.output.split())


def test_bgnbd_fit_prints_the_papers_parameters_and_the_holdout_check(csv_file: Path) -> None:
    code, out = _fit(
        "--transactions",
        str(csv_file),
        "--customer-col",
        "customer_id",
        "--date-col",
        "date",
        *WINDOW,
        "--json",
    )
    assert code == 0, out
    result = json.loads(out)
    assert result["model"] == "bgnbd"
    assert result["customers"] == 2357 and result["repeat_buyers"] == 946
    assert result["params"]["r"] == pytest.approx(0.243, abs=6e-4)
    assert result["log_likelihood"] == pytest.approx(-9582.4, abs=0.05)
    holdout = result["holdout"]
    assert holdout["actual_repeat_purchases"] == 1882
    assert holdout["predicted_repeat_purchases"] == pytest.approx(1653, abs=1)
    assert holdout["duration"] == 39.0
    groups = {g["frequency"]: g for g in holdout["by_calibration_frequency"]}
    assert groups["0"]["customers"] == 1411
    assert sum(g["customers"] for g in groups.values()) == 2357


def test_text_output_for_pareto(csv_file: Path) -> None:
    code, out = _fit(
        "--transactions",
        str(csv_file),
        "--customer-col",
        "customer_id",
        "--date-col",
        "date",
        *WINDOW,
        "--model",
        "pareto",
    )
    assert code == 0, out
    assert "paretonbd on 2,357 customers" in out
    assert "log-likelihood -9,595.0" in out
    assert "actual 1,882" in out
    assert "calibration frequency" in out


def test_gammagamma_on_parquet_with_integer_dates_and_a_saved_model(tmp_path: Path) -> None:
    # the raw file's yyyymmdd dates as integers, read with --date-format
    table = cdnow.transactions()
    as_int = pc.cast(pc.strftime(table["date"], format="%Y%m%d"), pa.int64())
    path = tmp_path / "cdnow.parquet"
    pq.write_table(table.set_column(1, "day", as_int), path)
    code, out = _fit(
        "--transactions",
        str(path),
        "--customer-col",
        "customer_id",
        "--date-col",
        "day",
        "--date-format",
        "%Y%m%d",
        "--value-col",
        "value",
        *WINDOW,
        "--model",
        "gammagamma",
        "--json",
    )
    assert code == 0, out
    result = json.loads(out)
    assert result["params"]["p"] == pytest.approx(6.25, abs=0.006)
    assert result["params"]["q"] == pytest.approx(3.74, abs=0.006)
    assert result["params"]["v"] == pytest.approx(15.44, abs=0.006)
    assert result["holdout"]["customers"] > 0


def test_save_writes_a_model_that_loads(csv_file: Path, tmp_path: Path) -> None:
    target = tmp_path / "bgnbd.json"
    code, out = _fit(
        "--transactions",
        str(csv_file),
        "--customer-col",
        "customer_id",
        "--date-col",
        "date",
        "--calibration-end",
        "1997-09-30",
        "--freq",
        "W",
        "--save",
        str(target),
    )
    assert code == 0, out
    assert "holdout" not in out
    assert BetaGeoModel.load(target).params["b"] == pytest.approx(2.426, abs=6e-4)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--customer-col", "nobody"], "no column 'nobody'"),
        (["--calibration-end", "1997-02-30"], "must be an ISO 8601 date"),
        (["--calibration-end", "1990-01-01"], "calibration window is empty"),
        (["--model", "gammagamma"], "needs a --value-col"),
        (["--calibration-end", "1997-01-01"], "every customer's observation time T is 0"),
    ],
)
def test_bad_requests_exit_2_with_a_sentence(csv_file: Path, args: list[str], says: str) -> None:
    base = {
        "--transactions": str(csv_file),
        "--customer-col": "customer_id",
        "--date-col": "date",
        "--calibration-end": "1997-09-30",
    }
    for flag, value in zip(args[::2], args[1::2], strict=True):
        base[flag] = value
    code, out = _fit(*(item for pair in base.items() for item in pair))
    assert code == 2
    assert "clv fit refused" in out
    assert says in out


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ([], "not ISO 8601 dates"),
        (["--date-format", "%Y-%m-%d"], "does not match the date format"),
        (["--date-format", "%d/%m/%Y"], "Every customer bought only once"),
    ],
)
def test_text_dates_and_one_time_buyers(tmp_path: Path, args: list[str], says: str) -> None:
    path = tmp_path / "tx.csv"
    path.write_text("c,d\n1,01/02/2024\n2,03/02/2024\n3,04/02/2024\n")
    code, out = _fit(
        "--transactions",
        str(path),
        "--customer-col",
        "c",
        "--date-col",
        "d",
        "--calibration-end",
        "2024-03-01",
        *args,
    )
    assert code == 2
    assert says in out


def test_unreadable_files_exit_2(tmp_path: Path) -> None:
    garbage = tmp_path / "x.parquet"
    garbage.write_text("not parquet")
    for path in (tmp_path / "missing.csv", garbage):
        code, out = _fit(
            "--transactions",
            str(path),
            "--customer-col",
            "c",
            "--date-col",
            "d",
            "--calibration-end",
            "1997-09-30",
        )
        assert code == 2
        assert "clv fit refused" in out
