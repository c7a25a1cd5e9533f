"""Reading import files without landing them: encodings, delimiters, kinds (real files in a temp directory)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rosetta.raw.files import BadRecord, Record, UnreadableFileError, open_file

ROWS = "name;amount\nSociété Générale;1 234,50\nZoë;7\n"


@pytest.mark.parametrize(
    ("content", "encoding"),
    [
        (ROWS.encode("utf-8"), "utf-8"),
        (b"\xef\xbb\xbf" + ROWS.encode("utf-8"), "utf-8"),
        (ROWS.replace("Zoë", "Zoë €").encode("cp1252"), "cp1252"),
        # 0x81 is undefined in Windows-1252: only Latin-1 reads this file.
        (ROWS.encode("latin-1") + "x;\x81\n".encode("latin-1"), "latin-1"),
        (ROWS.encode("utf-16"), "utf-16"),
    ],
)
def test_the_encoding_is_detected_and_text_decodes_exactly(content: bytes, encoding: str, tmp_path: Path) -> None:
    path = tmp_path / "names.csv"
    path.write_bytes(content)

    opened = open_file(path)
    records = list(opened.records)

    assert f"CSV, {encoding}," in opened.description
    assert isinstance(records[0], Record)
    assert records[0].payload == {"name": "Société Générale", "amount": "1234.50"}
    assert records[1].payload["name"] in ("Zoë", "Zoë €")  # type: ignore[union-attr]


def test_a_truncated_utf16_file_is_refused_before_any_row_is_read(tmp_path: Path) -> None:
    path = tmp_path / "names.csv"
    path.write_bytes(ROWS.encode("utf-16")[:-1])  # cut in the middle of a two-byte code unit

    with pytest.raises(UnreadableFileError, match=r"UTF-16 byte-order mark but is not valid UTF-16 \(truncated\?\)"):
        open_file(path)


@pytest.mark.parametrize(("delimiter", "shown"), [(",", "','"), (";", "';'"), ("\t", "'\\t'"), ("|", "'|'")])
def test_the_delimiter_is_the_most_frequent_candidate_outside_quotes(
    delimiter: str, shown: str, tmp_path: Path
) -> None:
    path = tmp_path / "apps.tsv"
    header = delimiter.join(['"app, code"', "owner", "status"])
    path.write_text(f"{header}\n" + delimiter.join(["A", "team-a", "active"]) + "\n", encoding="utf-8")

    opened = open_file(path)

    assert f"delimiter {shown}" in opened.description
    assert [r.payload for r in opened.records if isinstance(r, Record)] == [
        {"app, code": "A", "owner": "team-a", "status": "active"}
    ]


def test_kind_defaults_to_focus_for_focus_headers_and_to_the_file_name_otherwise(tmp_path: Path) -> None:
    focus = tmp_path / "bill.csv"
    focus.write_text(
        "BilledCost,EffectiveCost,BillingCurrency,ChargePeriodStart,ChargePeriodEnd,x_Team\n", encoding="utf-8"
    )
    other = tmp_path / "CMDB Export (2026-03).csv"
    other.write_text("app_code\n", encoding="utf-8")

    assert open_file(focus).kind == "focus"
    assert open_file(focus, kind="cost").kind == "cost"
    assert open_file(other).kind == "cmdb_export_2026_03"


def test_trailing_empty_fields_are_tolerated_but_extra_values_are_not(tmp_path: Path) -> None:
    path = tmp_path / "costs.csv"
    path.write_text("a;b\n1;2;;\n3;4;5\n", encoding="utf-8")

    records = list(open_file(path).records)

    assert records == [Record(2, {"a": "1", "b": "2"}), BadRecord(3, "expected 2 fields, found 3", "3;4;5")]


def test_sheet_is_refused_for_anything_but_a_workbook(tmp_path: Path) -> None:
    path = tmp_path / "costs.csv"
    path.write_text("a\n1\n", encoding="utf-8")
    with pytest.raises(UnreadableFileError, match=r"--sheet applies to \.xlsx workbooks only"):
        open_file(path, sheet="1")
