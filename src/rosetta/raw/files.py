"""Reading import files: CSV, Excel ``.xlsx``, JSON and NDJSON, FOCUS cost exports among the CSVs.

:func:`open_file` checks everything that can make a file unreadable *before* anything is landed (it does
not exist, it is binary, the workbook is broken, the JSON does not parse, the header is unusable) and
raises :class:`UnreadableFileError` with one line saying why. It returns the records as a lazy iterator of
:class:`Record` (a payload and its line) and :class:`BadRecord` (a line that cannot be landed, with the
reason and the raw text), so a bad row never stops an import and memory stays bounded (JSON arrays
excepted: a JSON document is parsed whole; use NDJSON for large files).

CSV: the encoding is UTF-8 (BOM or not) when the whole file decodes as UTF-8, else Windows-1252 when it
decodes as that, else Latin-1 (UTF-16 with a BOM is read too); the delimiter is the most frequent of
``,`` ``;`` tab ``|`` outside quotes in the header line; the decimal mark is voted by the unambiguous
numbers of the first rows (see :mod:`rosetta.core.locale_numbers`). Values are strings, empty cells ``null``,
locale-formatted numbers normalised to exact decimal strings. A row with fewer fields than the header,
or more non-empty ones, is rejected with its line number (the line where the record starts).

Excel: ``openpyxl`` in read-only mode (rows are streamed), formula *values* (not formulas), the sheet by
name or 1-based position (the first by default); numbers become exact decimal strings (the shortest
decimal that round-trips the stored double), dates ISO 8601 strings, line numbers are worksheet rows.
"""

from __future__ import annotations

import codecs
import csv
import re
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from itertools import islice
from pathlib import Path
from typing import Any, Literal

import msgspec

from rosetta.core.errors import BadRequestError
from rosetta.core.locale_numbers import DecimalConvention
from rosetta.raw.focus import FocusRowError, FocusShaper, is_focus_header, missing_focus_columns

FileFormat = Literal["csv", "xlsx", "json", "ndjson"]

_EXTENSIONS: dict[str, FileFormat] = {
    ".csv": "csv",
    ".tsv": "csv",
    ".txt": "csv",
    ".xlsx": "xlsx",
    ".xlsm": "xlsx",
    ".json": "json",
    ".ndjson": "ndjson",
    ".jsonl": "ndjson",
}
_SNIFF_BYTES = 64 * 1024
_SAMPLE_ROWS = 200
_MAX_RAW = 4_000
_CHUNK = 1 << 20
_DELIMITERS = (",", ";", "\t", "|")
_NDJSON = "NDJSON, one object per line"
_CONTROL = frozenset(range(32)) - {9, 10, 12, 13}

_json_decoder = msgspec.json.Decoder(float_hook=Decimal)


class UnreadableFileError(BadRequestError):
    """The file cannot be imported at all; nothing was landed."""

    title = "Unreadable file"


@dataclass(frozen=True, slots=True)
class Record:
    """One payload to land and where it came from (1-based line or worksheet row; None for JSON elements)."""

    line: int | None
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class BadRecord:
    """One record that cannot be landed: where, why, and its raw text (truncated to a few kilobytes)."""

    line: int | None
    reason: str
    raw: str | None


@dataclass(frozen=True)
class OpenedFile:
    """A readable file: its format, the kind its documents land as, a description and its records."""

    path: Path
    format: FileFormat
    kind: str
    description: str
    records: Iterator[Record | BadRecord]

    @property
    def origin(self) -> str:
        """The file's absolute path, recorded as the import's origin."""
        return str(self.path.resolve())


def clip(text: str) -> str:
    """Raw text kept with a rejected record, bounded so a runaway line cannot bloat the store."""
    return text if len(text) <= _MAX_RAW else text[:_MAX_RAW] + "…"


def default_kind(path: Path) -> str:
    """The kind a file's documents land as when none is given: its name, as a lowercase identifier."""
    return re.sub(r"[^a-z0-9]+", "_", path.stem.lower()).strip("_")[:100] or "file"


def open_file(path: Path, *, kind: str | None = None, sheet: str | None = None) -> OpenedFile:
    """Open an import file, refusing it now (``UnreadableFileError``) if it cannot be imported at all."""
    if not path.exists():
        raise UnreadableFileError(f"{path}: no such file")
    if not path.is_file():
        raise UnreadableFileError(f"{path}: not a regular file")
    file_format = _EXTENSIONS.get(path.suffix.lower())
    if file_format is None:
        supported = ", ".join(sorted(_EXTENSIONS))
        raise UnreadableFileError(f"{path}: unsupported file type {path.suffix or '(none)'!r} (supported: {supported})")
    if sheet is not None and file_format != "xlsx":
        raise UnreadableFileError(f"{path}: --sheet applies to .xlsx workbooks only")
    try:
        if file_format == "xlsx":
            return _open_xlsx(path, kind, sheet)
        encoding = _text_encoding(path)
        if file_format == "csv":
            return _open_csv(path, kind, encoding)
        return _open_json(path, kind, encoding, file_format)
    except OSError as error:
        raise UnreadableFileError(f"{path}: {error.strerror or error}") from None


# ---------------------------------------------------------------------------------------------- text


def _text_encoding(path: Path) -> str:
    """The encoding of a text file; refuse binary content (NUL bytes or many control characters)."""
    with path.open("rb") as file:
        sample = file.read(_SNIFF_BYTES)
    if sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        # Checked whole now: a truncated UTF-16 file would otherwise fail halfway through the import.
        if not _decodes_as(path, "utf-16"):
            raise UnreadableFileError(
                f"{path}: starts with a UTF-16 byte-order mark but is not valid UTF-16 (truncated?)"
            )
        return "utf-16"
    controls = sum(1 for byte in sample if byte in _CONTROL)
    if b"\x00" in sample or controls > len(sample) // 100:
        raise UnreadableFileError(f"{path}: binary content, not a text file")
    for encoding in ("utf-8", "cp1252"):
        if _decodes_as(path, encoding):
            return "utf-8-sig" if encoding == "utf-8" else encoding
    return "latin-1"


def _decodes_as(path: Path, encoding: str) -> bool:
    """Whether the whole file decodes in ``encoding`` (read in chunks: memory stays bounded)."""
    decoder = codecs.getincrementaldecoder(encoding)("strict")
    try:
        with path.open("rb") as file:
            while chunk := file.read(_CHUNK):
                decoder.decode(chunk)
            decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


# ---------------------------------------------------------------------------------------------- CSV


def _delimiter(header_line: str) -> str:
    """The most frequent candidate delimiter outside quoted text in the header line (``,`` on a tie)."""
    unquoted = re.sub(r'"[^"]*"', "", header_line)
    counts = {delimiter: unquoted.count(delimiter) for delimiter in _DELIMITERS}
    best = max(_DELIMITERS, key=lambda delimiter: counts[delimiter])
    return best if counts[best] > 0 else ","


def _clean_header(names: Sequence[Any], path: Path) -> list[str]:
    columns: list[str] = []
    for position, name in enumerate(names, start=1):
        text = "" if name is None else str(name).strip().lstrip("\ufeff")
        columns.append(text or f"column_{position}")
    duplicates = sorted({name for name in columns if columns.count(name) > 1})
    if duplicates:
        raise UnreadableFileError(f"{path}: duplicate column name(s) in the header: {', '.join(duplicates)}")
    return columns


def _resolve_kind(path: Path, kind: str | None, columns: Sequence[str]) -> str:
    if kind == "focus":
        missing = missing_focus_columns(columns)
        if missing:
            raise UnreadableFileError(f"{path}: not a FOCUS export, missing column(s) {', '.join(missing)}")
    if kind is not None:
        return kind
    return "focus" if is_focus_header(columns) else default_kind(path)


class _LineRecorder:
    """Feeds lines to ``csv.reader`` and remembers those of the current record, for rejected rows' raw text."""

    def __init__(self, lines: Iterator[str]) -> None:
        self._lines = lines
        self.pending: list[str] = []

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        line = next(self._lines)
        self.pending.append(line)
        return line

    def take(self) -> str:
        """The raw text of the record just read (line ending removed)."""
        text = "".join(self.pending).rstrip("\r\n")
        self.pending.clear()
        return text


def _open_csv(path: Path, kind: str | None, encoding: str) -> OpenedFile:
    with path.open(encoding=encoding, newline="") as file:
        delimiter = _delimiter(file.readline())
        file.seek(0)
        reader = csv.reader(file, delimiter=delimiter, strict=True)
        try:
            header = next(reader, None)
        except csv.Error as error:
            raise UnreadableFileError(f"{path}: the header cannot be parsed as CSV: {error}") from None
        sample = _sample_cells(reader)
    if not header:
        raise UnreadableFileError(f"{path}: empty file, no header row")
    columns = _clean_header(header, path)
    resolved = _resolve_kind(path, kind, columns)
    convention = DecimalConvention.infer(sample, default="," if delimiter == ";" else ".")
    shape = _row_shaper(resolved, columns, convention)
    description = (
        f"CSV, {encoding.removesuffix('-sig')}, delimiter {delimiter!r}, decimal mark {convention.mark!r}, "
        f"{len(columns)} columns"
    )
    return OpenedFile(path, "csv", resolved, description, _csv_records(path, encoding, delimiter, columns, shape))


def _sample_cells(reader: Iterator[list[str]]) -> list[str]:
    """The cells of the first rows, skipping malformed ones (they are rejected later, with their line)."""
    cells: list[str] = []
    for _ in range(_SAMPLE_ROWS):
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error:
            continue
        cells += row
    return cells


def _row_shaper(kind: str, columns: list[str], convention: DecimalConvention) -> Callable[[list[str]], dict[str, Any]]:
    """How a row of text cells becomes a payload: FOCUS rules for ``focus``, plain values otherwise."""
    if kind == "focus":
        return FocusShaper(columns, convention).payload

    def plain(cells: list[str]) -> dict[str, Any]:
        return {name: _plain_value(cell, convention) for name, cell in zip(columns, cells, strict=True)}

    return plain


def _plain_value(cell: str, convention: DecimalConvention) -> str | None:
    """Empty is null; a locale-formatted number its exact decimal string; any other text as written."""
    if cell == "":
        return None
    # No shortcut for plain-looking decimals: in a decimal-comma file "1.500" is one thousand five hundred.
    normalised = convention.normalise(cell)
    return cell if normalised is None else normalised


def _csv_records(
    path: Path,
    encoding: str,
    delimiter: str,
    columns: list[str],
    shape: Callable[[list[str]], dict[str, Any]],
) -> Iterator[Record | BadRecord]:
    width = len(columns)
    with path.open(encoding=encoding, newline="") as file:
        lines = _LineRecorder(iter(file))
        reader = csv.reader(lines, delimiter=delimiter, strict=True)
        next(reader)  # the header, validated by _open_csv
        lines.take()
        while True:
            start = reader.line_num + 1
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as error:
                yield BadRecord(start, f"malformed CSV: {error}", clip(lines.take()))
                continue
            raw = lines.take()
            if not cells or cells == [""]:
                continue  # a blank line is not a record
            if len(cells) < width or any(cells[width:]):
                yield BadRecord(start, f"expected {width} fields, found {len(cells)}", clip(raw))
                continue
            try:
                yield Record(start, shape(cells[:width]))
            except FocusRowError as error:
                yield BadRecord(start, str(error), clip(raw))


# ---------------------------------------------------------------------------------------------- Excel


def _open_xlsx(path: Path, kind: str | None, sheet: str | None) -> OpenedFile:
    import openpyxl  # noqa: PLC0415 - only Excel imports pay for it
    from openpyxl.utils.exceptions import InvalidFileException  # noqa: PLC0415

    try:
        workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except (InvalidFileException, zipfile.BadZipFile, KeyError, ValueError, TypeError) as error:
        raise UnreadableFileError(f"{path}: not a readable .xlsx workbook ({type(error).__name__})") from None
    try:
        name = _sheet_name(path, workbook.sheetnames, sheet)
        worksheet = workbook[name]
        worksheet.reset_dimensions()  # some writers store wrong dimensions; read every row that exists
        rows = worksheet.iter_rows(min_row=1)
        header_row, header = _xlsx_header(rows)
        if header is None:
            raise UnreadableFileError(f"{path}: sheet {name!r} is empty, no header row")
        columns = _clean_header(_trim(header), path)
        resolved = _resolve_kind(path, kind, columns)
        sample_rows = islice(worksheet.iter_rows(min_row=header_row + 1), _SAMPLE_ROWS)
        sample_cells = [text for row in sample_rows for cell in row if isinstance(text := _cell_text(cell), str)]
    except UnreadableFileError:
        workbook.close()
        raise
    except Exception as error:  # a damaged sheet surfaces as any parser error
        workbook.close()
        raise UnreadableFileError(f"{path}: not a readable .xlsx workbook ({type(error).__name__})") from None
    convention = DecimalConvention.infer(sample_cells, default=".")
    description = f"Excel workbook, sheet {name!r}, {len(columns)} columns"
    records = _xlsx_records(
        workbook, sheet=name, header_row=header_row, columns=columns, kind=resolved, convention=convention
    )
    return OpenedFile(path, "xlsx", resolved, description, records)


def _sheet_name(path: Path, names: list[str], sheet: str | None) -> str:
    """The sheet chosen by name, else by 1-based position; the first sheet when none is chosen."""
    if sheet is None:
        return names[0]
    if sheet in names:
        return sheet
    if sheet.isdigit() and 1 <= int(sheet) <= len(names):
        return names[int(sheet) - 1]
    raise UnreadableFileError(f"{path}: no sheet {sheet!r} (sheets: {', '.join(repr(n) for n in names)})")


def _xlsx_header(rows: Iterator[tuple[Any, ...]]) -> tuple[int, list[Any] | None]:
    """The first non-empty row (its number and values)."""
    for number, row in enumerate(rows, start=1):
        values = [cell.value for cell in row]
        if any(value is not None for value in values):
            return number, values
    return 0, None


def _trim(values: list[Any]) -> list[Any]:
    """Drop trailing empty cells."""
    end = len(values)
    while end and values[end - 1] in (None, ""):
        end -= 1
    return values[:end]


def _excel_number(value: int | float | Decimal) -> str:
    """An Excel number as an exact decimal string: the shortest decimal that round-trips the stored double."""
    if isinstance(value, int):
        return str(value)
    return format(Decimal(repr(value)) if isinstance(value, float) else value, "f")


def _cell_text(cell: Any) -> str | bool | None:
    """One worksheet cell as JSON-ready text: numbers exact decimal strings, dates ISO 8601, text as written."""
    value = cell.value
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float | Decimal):
        return _excel_number(value)
    if isinstance(value, datetime):
        number_format = str(getattr(cell, "number_format", "")).lower()
        date_only = value.time() == time(0) and not any(mark in number_format for mark in ("h", "s"))
        return value.date().isoformat() if date_only else value.isoformat()
    if isinstance(value, date | time):
        return value.isoformat()
    return str(value)


def _xlsx_records(
    workbook: Any,
    *,
    sheet: str,
    header_row: int,
    columns: list[str],
    kind: str,
    convention: DecimalConvention,
) -> Iterator[Record | BadRecord]:
    width = len(columns)
    focus = FocusShaper(columns, convention) if kind == "focus" else None
    try:
        rows = workbook[sheet].iter_rows(min_row=header_row + 1)
        for number, row in enumerate(rows, start=header_row + 1):
            values = _trim([_cell_text(cell) for cell in row])
            if not values:
                continue
            raw = "\t".join("" if value is None else str(value) for value in values)
            if len(values) > width:
                yield BadRecord(number, f"values beyond the last of the {width} header columns", clip(raw))
                continue
            values += [None] * (width - len(values))
            if focus is not None:
                try:
                    yield Record(number, focus.payload(["" if v is None else str(v) for v in values]))
                except FocusRowError as error:
                    yield BadRecord(number, str(error), clip(raw))
                continue
            payload = {name: _excel_value(value, convention) for name, value in zip(columns, values, strict=True)}
            yield Record(number, payload)
    finally:
        workbook.close()


def _excel_value(value: str | bool | None, convention: DecimalConvention) -> str | bool | None:
    if isinstance(value, str):
        return _plain_value(value, convention)
    return value


# ---------------------------------------------------------------------------------------------- JSON


def _open_json(path: Path, kind: str | None, encoding: str, file_format: FileFormat) -> OpenedFile:
    resolved = kind or default_kind(path)
    if file_format == "json":
        text = path.read_text(encoding=encoding)
        try:
            document = _json_decoder.decode(text)
        except msgspec.DecodeError as error:
            if _looks_like_ndjson(text):
                return OpenedFile(path, "ndjson", resolved, _NDJSON, _ndjson_records(path, encoding))
            raise UnreadableFileError(f"{path}: not valid JSON: {error}") from None
        if isinstance(document, dict):
            return OpenedFile(path, "json", resolved, "JSON object", iter([Record(1, document)]))
        if isinstance(document, list):
            return OpenedFile(path, "json", resolved, f"JSON array of {len(document)}", _array_records(document))
        raise UnreadableFileError(f"{path}: a JSON file must hold an object or an array of objects")
    return OpenedFile(path, "ndjson", resolved, _NDJSON, _ndjson_records(path, encoding))


def _looks_like_ndjson(text: str) -> bool:
    """A ``.json`` file holding one object per line (a common mislabelling of NDJSON)."""
    first = next((line for line in text.splitlines() if line.strip()), "")
    try:
        return isinstance(_json_decoder.decode(first), dict)
    except msgspec.DecodeError:
        return False


def _array_records(document: list[Any]) -> Iterator[Record | BadRecord]:
    for position, element in enumerate(document, start=1):
        if isinstance(element, dict):
            yield Record(None, element)
        else:
            raw = clip(msgspec.json.encode(element).decode())
            yield BadRecord(None, f"element {position} of the array is not a JSON object", raw)


def _ndjson_records(path: Path, encoding: str) -> Iterator[Record | BadRecord]:
    with path.open(encoding=encoding, newline="") as file:
        for number, line in enumerate(file, start=1):
            text = line.strip()
            if not text:
                continue
            try:
                document = _json_decoder.decode(text)
            except msgspec.DecodeError as error:
                yield BadRecord(number, f"not valid JSON: {error}", clip(text))
                continue
            if isinstance(document, dict):
                yield Record(number, document)
            else:
                yield BadRecord(number, "not a JSON object", clip(text))
