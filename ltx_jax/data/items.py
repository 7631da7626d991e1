"""The dataset listing: a CSV, JSON or JSONL file with caption and media columns (the official
trainer's formats; paths relative to the listing's folder), or a folder of media files with
same-named .txt captions.

`list_items` returns the rows it can use and one `Problem` per row it cannot (missing column
value, empty caption, unknown extension); the listing itself being unreadable is a DataError.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

from ltx_jax.data.media import IMAGE_SUFFIXES, VIDEO_SUFFIXES, media_kind
from ltx_jax.errors import DataError, UsageError

__all__ = ['Item', 'Problem', 'list_items', 'LISTING_SUFFIXES']

LISTING_SUFFIXES = ('.csv', '.json', '.jsonl')


@dataclasses.dataclass(frozen=True)
class Item:
  """One training sample to make: its caption (trigger word already prepended), media file and
  optional reference (IC-LoRA control or source) video; `row` names it in messages."""
  caption: str
  media: Path
  reference: Path | None = None
  row: str = ''


@dataclasses.dataclass(frozen=True)
class Problem:
  """An input that was skipped, and why (one line)."""
  where: str
  reason: str

  def __str__(self) -> str:
    return f"{self.where}: {self.reason}"


def list_items(source: str | Path, *, caption_column: str = 'caption',
               media_column: str = 'media_path', reference_column: str = '',
               trigger_word: str = '') -> tuple[list[Item], list[Problem]]:
  """Items and problems of a listing file or media folder (see the module docstring)."""
  path = Path(source).expanduser()
  if path.is_dir():
    if reference_column:
      raise UsageError("reference_column needs a CSV/JSON/JSONL listing; a folder of media has "
                       "no reference column")
    rows = _folder_rows(path, caption_column, media_column)
    root = path
  elif path.is_file():
    if path.suffix.lower() not in LISTING_SUFFIXES:
      raise UsageError(f"input {str(path)!r}: a listing must be {', '.join(LISTING_SUFFIXES)} "
                       "or a folder of media with .txt captions")
    rows = _file_rows(path)
    root = path.parent
    _check_columns(path, rows, caption_column=caption_column, media_column=media_column,
                   reference_column=reference_column)
  else:
    raise UsageError(f"input {str(path)!r}: no such file or folder")
  prefix = f"{trigger_word.strip()} " if trigger_word.strip() else ''
  items, problems = [], []
  for where, row in rows:
    item, why = _item(row, root, where, caption_column, media_column, reference_column, prefix)
    if why:
      problems.append(Problem(where, why))
    else:
      items.append(item)
  return items, problems


def _item(row: dict | str, root: Path, where: str, caption_column: str, media_column: str,
          reference_column: str, prefix: str) -> tuple[Item | None, str]:
  if isinstance(row, str):  # the reader's own complaint about the row
    return None, row
  if not isinstance(row, dict):
    return None, f"not an object with {caption_column!r} and {media_column!r}"
  media = row.get(media_column)
  if not isinstance(media, str) or not media.strip():
    return None, f"no {media_column!r} value"
  media_path = root / media.strip()
  label = where if where == media.strip() else f"{where} {media.strip()}"
  try:
    media_kind(media_path)
  except DataError as e:
    return None, str(e)
  caption = row.get(caption_column)
  if caption is None or not isinstance(caption, str):
    return None, f"no {caption_column!r} value"
  if not caption.strip():
    return None, "empty caption"
  reference = None
  if reference_column:
    ref = row.get(reference_column)
    if not isinstance(ref, str) or not ref.strip():
      return None, f"no {reference_column!r} value"
    reference = root / ref.strip()
    try:
      media_kind(reference)
    except DataError as e:
      return None, f"reference: {e}"
  return Item(prefix + caption.strip(), media_path, reference, label), ''


def _check_columns(path: Path, rows: list, **columns: str) -> None:
  """A column that no row has is a usage error (a wrong name), not a problem per row."""
  present = set()
  for _, row in rows:
    if isinstance(row, dict):
      present.update(row)
  if not present:
    return
  for key, name in columns.items():
    if name and name not in present:
      raise UsageError(f"{key}={name!r} is not a column of {path.name}; its columns: "
                       f"{', '.join(sorted(map(str, present)))}")


def _file_rows(path: Path) -> list[tuple[str, dict | str]]:
  suffix = path.suffix.lower()
  try:
    text = path.read_text(encoding='utf-8-sig')  # a byte-order mark (Excel's CSVs) dropped
  except (OSError, UnicodeDecodeError) as e:
    raise DataError(f"cannot read listing {str(path)!r}: {e}") from None
  name = path.name
  if suffix == '.csv':
    try:
      reader = csv.DictReader(text.splitlines())
      return [(f"{name} row {i + 2}", dict(r)) for i, r in enumerate(reader)]
    except csv.Error as e:
      raise DataError(f"listing {str(path)!r} is not valid CSV: {e}") from None
  if suffix == '.json':
    try:
      data = json.loads(text)
    except json.JSONDecodeError as e:
      raise DataError(f"listing {str(path)!r} is not valid JSON: {e}") from None
    if not isinstance(data, list):
      raise DataError(f"listing {str(path)!r} must hold a JSON list of objects, got "
                      f"{type(data).__name__}")
    return [(f"{name} entry {i}", r) for i, r in enumerate(data)]
  rows = []
  for i, line in enumerate(text.splitlines()):
    if not line.strip():
      continue
    try:
      rows.append((f"{name} line {i + 1}", json.loads(line)))
    except json.JSONDecodeError as e:
      rows.append((f"{name} line {i + 1}", f"not valid JSON: {e}"))
  return rows


def _folder_rows(path: Path, caption_column: str, media_column: str
                 ) -> list[tuple[str, dict | str]]:
  """Each media file of the folder (sorted, not recursive) with its same-named .txt caption;
  files of other suffixes (but .txt) are reported as unknown."""
  rows = []
  for f in sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith('.')):
    suffix = f.suffix.lower()
    if suffix == '.txt':
      continue
    row = {media_column: f.name}
    if suffix in IMAGE_SUFFIXES + VIDEO_SUFFIXES:
      txt = f.with_suffix('.txt')
      if not txt.is_file():
        rows.append((f.name, f"no caption file {txt.name}"))
        continue
      try:
        row[caption_column] = txt.read_text(encoding='utf-8')
      except (OSError, UnicodeDecodeError) as e:
        rows.append((f.name, f"unreadable caption {txt.name}: {e}"))
        continue
    rows.append((f.name, row))
  return rows
