"""``rosetta raw import`` end to end: real files, the real CLI entry point, the session's PostgreSQL raw database.

Each test lands under its own source name, so tests never see each other's documents.
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import uuid
import zipfile
from collections import defaultdict
from collections.abc import Iterable
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import openpyxl
import pytest

from rosetta.cli import main
from rosetta.core.settings import Settings
from rosetta.raw.postgres import PostgresRawStore
from rosetta.raw.store import ImportSummary, RejectedRecord

FOCUS_SAMPLE = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "focus" / "focus_1.0_sample_1000.csv"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run ``rosetta ARGS`` in-process: exit code, stdout, stderr."""
    with pytest.raises(SystemExit) as done:
        main(list(args))
    captured = capsys.readouterr()
    return int(done.value.code or 0), captured.out, captured.err


def unique_source(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def _read(
    settings: Settings, source: str
) -> tuple[list[dict[str, Any]], list[ImportSummary], list[RejectedRecord]]:
    store = PostgresRawStore.from_settings(settings)
    try:
        payloads = [document.payload async for document in store.stream(source=source)]
        imports = await store.list_imports(source=source)
        rejected = [record async for record in store.stream_rejected(source=source)]
    finally:
        await store.close()
    return payloads, imports, rejected


def landed(settings: Settings, source: str) -> tuple[list[dict[str, Any]], list[ImportSummary], list[RejectedRecord]]:
    """The payloads, imports (newest first) and rejected records of one source."""
    return asyncio.run(_read(settings, source))


def counts(read: int, landed_: int, duplicates: int, rejected: int) -> dict[str, int]:
    return {"read": read, "landed": landed_, "duplicates": duplicates, "rejected": rejected}


# ---------------------------------------------------------------------------------------------- FOCUS sample


def test_focus_sample_imported_twice_lands_once_with_its_known_totals(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    source = unique_source("aws")
    first = run(capsys, "raw", "import", str(FOCUS_SAMPLE), "--source", source, "--json")
    second = run(capsys, "raw", "import", str(FOCUS_SAMPLE), "--source", source, "--json")

    assert first[0] == 0
    assert json.loads(first[1]) == counts(1000, 1000, 0, 0)
    assert second[0] == 0
    assert json.loads(second[1]) == counts(1000, 0, 1000, 0)
    assert first[1].count("\n") == 1  # exactly one JSON object, on one line

    payloads, imports, rejected = landed(settings, source)
    assert len(payloads) == 1000
    assert rejected == []
    assert [(i.kind, i.status, i.landed, i.duplicates) for i in imports] == [
        ("focus", "completed", 0, 1000),
        ("focus", "completed", 1000, 0),
    ]
    assert sum(Decimal(p["BilledCost"]) for p in payloads) == Decimal("20.52022672899")
    assert sum(Decimal(p["EffectiveCost"]) for p in payloads) == Decimal("14.97651418586")
    assert sum(Decimal(p["ListCost"]) for p in payloads) == Decimal("20.39090575119")
    contracted = [p["ContractedCost"] for p in payloads]
    assert contracted.count(None) == 7
    assert sum(Decimal(c) for c in contracted if c is not None) == Decimal("14.97626039326")


def test_focus_sample_keeps_every_column_and_its_quirks(settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    source = unique_source("focus")
    assert run(capsys, "raw", "import", str(FOCUS_SAMPLE), "--source", source)[0] == 0
    payloads, _, _ = landed(settings, source)

    header = FOCUS_SAMPLE.read_text(encoding="utf-8").splitlines()[0].replace('"', "").split(",")
    assert len(header) == 44
    assert all(set(p) == set(header) for p in payloads)  # every column, nothing added
    first = next(p for p in payloads if p["Id"] == "11472")
    # Amounts are exact decimal strings as written, NULL is null, timestamps are kept as written.
    assert first["BilledCost"] == "0.00000080000"
    assert first["ConsumedQuantity"] == "2.000000000000000"
    assert first["AvailabilityZone"] is None
    assert first["Tags"] is None
    assert first["ChargePeriodStart"] == "2024-09-18 22:00:00"
    assert all(isinstance(p["Tags"], dict | None) for p in payloads)

    tag_keys: dict[str, int] = defaultdict(int)
    for p in payloads:
        for key in p["Tags"] or {}:
            tag_keys[key] += 1
    assert tag_keys[" org"] == 23  # the leading space is kept as-is
    assert tag_keys["org"] == 42
    assert tag_keys["env"] == 42
    assert sum(1 for p in payloads if p["Tags"]) == 711


def test_focus_sample_totals_by_environment_tag_and_provider(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    source = unique_source("focus")
    assert run(capsys, "raw", "import", str(FOCUS_SAMPLE), "--source", source, "--kind", "focus")[0] == 0
    payloads, _, _ = landed(settings, source)

    by_environment: dict[str, list[Decimal]] = defaultdict(lambda: [Decimal(0), Decimal(0), Decimal(0)])
    by_provider: dict[str, Decimal] = defaultdict(Decimal)
    for p in payloads:
        environment = (p["Tags"] or {}).get("environment", "untagged")
        totals = by_environment[environment]
        totals[0] += 1
        totals[1] += Decimal(p["BilledCost"])
        totals[2] += Decimal(p["EffectiveCost"])
        by_provider[p["ProviderName"]] += Decimal(p["BilledCost"])

    assert dict(by_environment) == {
        "dev": [426, Decimal("18.20324140013"), Decimal("16.00000000000")],
        "prod": [234, Decimal("2.04282084220"), Decimal(0)],
        "untagged": [340, Decimal("0.27416448666"), Decimal("-1.02348581414")],
    }
    assert dict(by_provider) == {
        "AWS": Decimal("18.00663861840"),
        "Microsoft": Decimal("1.97651418586"),
        "Oracle": Decimal("0.53707392473"),
    }
    # The README announces 338 distinct (business_unit, application, environment) triples; the file itself,
    # read with the standard library alone, has 337: compare with that independent reading, and with the
    # reference's largest triple (finops-reference.md: 176 rows, BilledCost 15.95809931820).
    triples = _tag_triples(p["Tags"] for p in payloads)
    with FOCUS_SAMPLE.open(encoding="utf-8", newline="") as file:
        expected = _tag_triples(None if r["Tags"] == "NULL" else json.loads(r["Tags"]) for r in csv.DictReader(file))
    assert triples == expected
    assert len(triples) == 337
    largest = ("PeoriaData", "BrightPathMatrix", "dev")
    assert max(triples.items(), key=lambda item: item[1]) == (largest, 176)
    assert sum(Decimal(p["BilledCost"]) for p in payloads if p["Tags"] and _triple(p["Tags"]) == largest) == Decimal(
        "15.95809931820"
    )


def _triple(tags: dict[str, Any]) -> tuple[str, str, str] | None:
    if {"business_unit", "application", "environment"} <= set(tags):
        return (tags["business_unit"], tags["application"], tags["environment"])
    return None


def _tag_triples(all_tags: Iterable[dict[str, Any] | None]) -> dict[tuple[str, str, str], int]:
    """Rows per (business_unit, application, environment) tag triple."""
    found: dict[tuple[str, str, str], int] = defaultdict(int)
    for tags in all_tags:
        triple = _triple(tags) if tags else None
        if triple is not None:
            found[triple] += 1
    return dict(found)


def test_focus_rows_with_bad_tags_or_amounts_are_rejected_and_the_rest_land(
    settings: Settings, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    lines = FOCUS_SAMPLE.read_text(encoding="utf-8").splitlines()
    header, rows = lines[0], lines[1:6]
    broken_tags = rows[1].replace('""environment"": ""dev""', '""environment"" ""dev""')
    assert broken_tags != rows[1]
    broken_amount = rows[2].replace("NULL,0.00000000000,", "NULL,twelve,", 1)
    assert broken_amount != rows[2]
    path = tmp_path / "bill.csv"
    path.write_text("\n".join([header, rows[0], broken_tags, broken_amount, rows[3], rows[4]]) + "\n", encoding="utf-8")
    source = unique_source("aws")

    code, out, _ = run(capsys, "raw", "import", str(path), "--source", source)

    assert code == 0
    assert "read 5, landed 3, duplicates 0, rejected 2" in out
    assert "line 3: Tags is not valid JSON" in out
    assert "line 4: BilledCost is not a decimal number: 'twelve'" in out
    payloads, _, rejected = landed(settings, source)
    assert len(payloads) == 3
    assert [(r.line, r.kind) for r in rejected] == [(3, "focus"), (4, "focus")]
    assert rejected[1].raw == broken_amount


# ---------------------------------------------------------------------------------------------- CSV


def test_a_malformed_csv_row_is_rejected_by_line_number_and_every_other_row_lands(
    settings: Settings, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "cmdb-costs.csv"
    path.write_text(
        "date,app_code,environment,billed_cost\n"
        "2026-03-14,PAY-CHECKOUT,prod,12.40\n"
        '2026-03-14,"PAY-CART\nmultiline",prod,3.10\n'  # one record over lines 3-4
        "2026-03-14,PAY-SEARCH,prod,1.00,unexpected\n"  # line 5: one field too many
        '2026-03-14,"PAY-"X,prod,2.00\n'  # line 6: broken quoting
        "2026-03-14,PAY-LOGIN,dev\n"  # line 7: one field short
        "\n"
        "2026-03-15,PAY-CHECKOUT,prod,12.40\n",  # line 9
        encoding="utf-8",
    )
    source = unique_source("cmdb")

    code, out, err = run(capsys, "raw", "import", str(path), "--source", source, "--kind", "cost")

    assert (code, err) == (0, "")
    assert "read 6, landed 3, duplicates 0, rejected 3" in out
    assert "line 5: expected 4 fields, found 5" in out
    assert "line 6: malformed CSV" in out
    assert "line 7: expected 4 fields, found 3" in out
    payloads, imports, rejected = landed(settings, source)
    assert [p["app_code"] for p in payloads] == ["PAY-CHECKOUT", "PAY-CART\nmultiline", "PAY-CHECKOUT"]
    assert [(r.line, r.raw) for r in rejected] == [
        (5, "2026-03-14,PAY-SEARCH,prod,1.00,unexpected"),
        (6, '2026-03-14,"PAY-"X,prod,2.00'),
        (7, "2026-03-14,PAY-LOGIN,dev"),
    ]
    assert (imports[0].read, imports[0].landed, imports[0].rejected) == (6, 3, 3)

    code, out, _ = run(capsys, "raw", "rejected", "--import", str(imports[0].import_id))
    assert code == 0
    assert [line.split(" ", 2)[2].split(":")[0] for line in out.splitlines()] == ["line 5", "line 6", "line 7"]


def test_latin1_semicolon_csv_with_decimal_commas_and_currencies_lands_normalised_decimals(
    settings: Settings, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "Budget 2026.csv"
    path.write_bytes(
        (
            "Société;Période;Montant;Quantité;Commentaire\n"
            "Générale;2026-03;1 234,56 €;1.500;ok\n"
            "Crédit;2026-03;(2.000,00);12,5;à revoir\n"
            "Cœur;2026-04;€ 99,9;;\n"
        ).encode("cp1252")
    )
    source = unique_source("finance")

    code, out, _ = run(capsys, "raw", "import", str(path), "--source", source)

    assert code == 0
    assert "-> " + source + "/budget_2026 (CSV, cp1252, delimiter ';', decimal mark ','" in out
    payloads, _, _ = landed(settings, source)
    assert payloads == [
        {"Société": "Générale", "Période": "2026-03", "Montant": "1234.56", "Quantité": "1500", "Commentaire": "ok"},
        {
            "Société": "Crédit",
            "Période": "2026-03",
            "Montant": "-2000.00",
            "Quantité": "12.5",
            "Commentaire": "à revoir",
        },
        {"Société": "Cœur", "Période": "2026-04", "Montant": "99.9", "Quantité": None, "Commentaire": None},
    ]


def test_utf8_comma_csv_with_thousands_separators_and_a_bom(
    settings: Settings, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "pools.csv"
    path.write_text(
        '\ufeffperiod,pool,amount,currency\n2026-03,network,"$18,250.00",USD\n2026-03,security,"1,234",USD\n',
        encoding="utf-8",
    )
    source = unique_source("finance")

    code, out, _ = run(capsys, "raw", "import", str(path), "--source", source, "--kind", "shared_cost", "--json")

    assert (code, json.loads(out)) == (0, counts(2, 2, 0, 0))
    payloads, _, _ = landed(settings, source)
    assert [(p["pool"], p["amount"]) for p in payloads] == [("network", "18250.00"), ("security", "1234")]
    assert "period" in payloads[0]  # the BOM is not part of the first column name


# ---------------------------------------------------------------------------------------------- Excel


def _workbook(path: Path) -> None:
    workbook = openpyxl.Workbook()
    notes = workbook.active
    assert notes is not None
    notes.title = "Notes"
    notes.append(["read me first"])
    costs = workbook.create_sheet("Costs")
    costs.append(["app_code", "amount", "day", "label", "count"])
    costs.append(["PAY-CHECKOUT", 12.4, date(2026, 3, 14), "1 234,50 €", 3])
    costs.append(["PAY-CART", 0.1, datetime(2026, 3, 14, 8, 30), None, 7])
    costs.append([None, None, None, None, None])
    costs.append(["PAY-SEARCH", 1e-7, date(2026, 3, 15), "note", 1, "stray"])  # row 5: beyond the header
    costs.append(["PAY-LOGIN", Decimal("99.99"), date(2026, 3, 16), "x", 0])
    workbook.save(path)


@pytest.mark.parametrize("sheet", ["Costs", "2"])
def test_excel_sheet_by_name_or_position_lands_exact_decimals_and_iso_dates(
    sheet: str, settings: Settings, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "costs.xlsx"
    _workbook(path)
    source = unique_source("cmdb")

    code, out, _ = run(capsys, "raw", "import", str(path), "--source", source, "--kind", "cost", "--sheet", sheet)

    assert code == 0
    assert "sheet 'Costs'" in out
    assert "read 4, landed 3, duplicates 0, rejected 1" in out
    assert "line 5: values beyond the last of the 5 header columns" in out
    payloads, _, _ = landed(settings, source)
    assert payloads == [
        {"app_code": "PAY-CHECKOUT", "amount": "12.4", "day": "2026-03-14", "label": "1234.50", "count": "3"},
        {"app_code": "PAY-CART", "amount": "0.1", "day": "2026-03-14T08:30:00", "label": None, "count": "7"},
        {"app_code": "PAY-LOGIN", "amount": "99.99", "day": "2026-03-16", "label": "x", "count": "0"},
    ]


def test_an_unknown_sheet_is_a_one_line_error(
    settings: Settings, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "costs.xlsx"
    _workbook(path)
    code, out, err = run(capsys, "raw", "import", str(path), "--source", unique_source("cmdb"), "--sheet", "9")
    assert code != 0
    assert out == ""
    assert err.count("\n") == 1
    assert "no sheet '9' (sheets: 'Notes', 'Costs')" in err


def test_a_workbook_that_breaks_half_way_lands_nothing_and_is_recorded_as_failed(
    settings: Settings, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    intact = tmp_path / "intact.xlsx"
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.append(["n", "label"])
    for n in range(600):
        sheet.append([n, f"row {n}"])
    workbook.save(intact)
    broken = tmp_path / "broken.xlsx"
    with zipfile.ZipFile(intact) as source_zip, zipfile.ZipFile(broken, "w") as target_zip:
        for item in source_zip.infolist():
            data = source_zip.read(item.filename)
            if item.filename == "xl/worksheets/sheet1.xml":
                data = data[: data.index(b'<row r="500"')] + b'<row r="500"><c r="A500" t="n"><v>1</v></c><garbage'
            target_zip.writestr(item, data)
    source = unique_source("cmdb")

    code, out, err = run(capsys, "raw", "import", str(broken), "--source", source)

    assert code != 0
    assert out == ""
    assert err.count("\n") == 1
    assert "reading failed" in err
    payloads, imports, _ = landed(settings, source)
    assert payloads == []
    assert [(i.status, i.landed) for i in imports] == [("failed", 0)]


# ---------------------------------------------------------------------------------------------- JSON


def test_json_array_object_and_ndjson(settings: Settings, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    array = tmp_path / "apps.json"
    array.write_text('[{"app_code": "A", "cost": 12.50}, 42, {"app_code": "B", "cost": 1}]', encoding="utf-8")
    single = tmp_path / "one.json"
    single.write_text('{"app_code": "C", "valid_to": null}', encoding="utf-8")
    lines = tmp_path / "events.ndjson"
    lines.write_text('{"n": 1}\n\nnot json\n["list"]\n{"n": "bad\\u0000"}\n{"n": 2}\n', encoding="utf-8")
    mislabelled = tmp_path / "more.json"
    mislabelled.write_text('{"n": 10}\n{"n": 11}\n', encoding="utf-8")
    source = unique_source("cmdb")

    outputs = [
        run(capsys, "raw", "import", str(path), "--source", source, "--kind", "application", "--json")
        for path in (array, single, lines, mislabelled)
    ]

    assert [(code, json.loads(out)) for code, out, _ in outputs] == [
        (0, counts(3, 2, 0, 1)),
        (0, counts(1, 1, 0, 0)),
        (0, counts(5, 2, 0, 3)),
        (0, counts(2, 2, 0, 0)),
    ]
    payloads, _, rejected = landed(settings, source)
    # JSON numbers with a fraction land as exact decimal strings, never floats.
    assert payloads == [
        {"app_code": "A", "cost": "12.50"},
        {"app_code": "B", "cost": 1},
        {"app_code": "C", "valid_to": None},
        {"n": 1},
        {"n": 2},
        {"n": 10},
        {"n": 11},
    ]
    assert [(r.line, r.reason.split(":")[0]) for r in rejected] == [
        (None, "element 2 of the array is not a JSON object"),
        (3, "not valid JSON"),
        (4, "not a JSON object"),
        (5, "payload holds a NUL character (\\u0000), which cannot be stored"),
    ]


# ---------------------------------------------------------------------------------------------- unreadable files


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("garbage.csv", os.urandom(4096) + b"\x00\x01\x02", "binary content, not a text file"),
        ("fake.xlsx", b"app_code,amount\nA,1\n", "not a readable .xlsx workbook"),
        ("broken.json", b'{"app_code": "A", ', "not valid JSON"),
        ("scalar.json", b"42", "must hold an object or an array of objects"),
        ("empty.csv", b"", "empty file, no header row"),
        ("dup.csv", b"a,b,a\n1,2,3\n", "duplicate column name(s) in the header: a"),
        ("notes.pdf", b"%PDF-1.4", "unsupported file type '.pdf'"),
        ("costs.csv", b"app_code,amount\nA,1\n", "not a FOCUS export, missing column(s) BilledCost, BillingCurrency"),
    ],
)
def test_an_unreadable_file_is_one_line_error_and_lands_nothing(
    name: str,
    content: bytes,
    message: str,
    settings: Settings,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    source = unique_source("files")
    kind = ["--kind", "focus"] if name == "costs.csv" else []

    code, out, err = run(capsys, "raw", "import", str(path), "--source", source, *kind)

    assert code != 0
    assert out == ""
    assert err.startswith("rosetta: error: ")
    assert err.count("\n") == 1
    assert message in err
    assert landed(settings, source) == ([], [], [])


def test_a_missing_file_or_a_bad_source_name_is_refused(settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "raw", "import", "/nonexistent/costs.csv", "--source", "cmdb")
    assert (code != 0, err.count("\n")) == (True, 1)
    assert "no such file" in err

    code, _, err = run(capsys, "raw", "import", str(FOCUS_SAMPLE), "--source", "bad name!")
    assert code != 0
    assert "invalid source 'bad name!'" in err


def test_imports_command_lists_imports_newest_first(settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    source = unique_source("aws")
    run(capsys, "raw", "import", str(FOCUS_SAMPLE), "--source", source)
    run(capsys, "raw", "import", str(FOCUS_SAMPLE), "--source", source)

    code, out, _ = run(capsys, "raw", "imports", "--source", source, "--json")
    listed = json.loads(out)
    assert code == 0
    assert [(i["landed"], i["duplicates"], i["status"]) for i in listed] == [
        (0, 1000, "completed"),
        (1000, 0, "completed"),
    ]

    code, out, _ = run(capsys, "raw", "imports", "--source", source, "--limit", "1")
    assert code == 0
    assert len(out.splitlines()) == 1
    assert f"{source}/focus  completed  read 1000, landed 0, duplicates 1000, rejected 0" in out
