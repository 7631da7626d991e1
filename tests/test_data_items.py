"""Dataset listings: CSV / JSON / JSONL (the official trainer's formats) and media folders."""

import json

import pytest

from ltx_jax.data import list_items
from ltx_jax.errors import DataError, UsageError


def test_listing_formats_give_the_same_items(tmp_path):
  rows = [{'caption': 'a cat, running', 'media_path': 'v/a.mp4'},
          {'caption': 'a dog', 'media_path': 'b.png'}]
  (tmp_path / 'd.json').write_text(json.dumps(rows))
  (tmp_path / 'd.jsonl').write_text('\n'.join(json.dumps(r) for r in rows) + '\n\n')
  (tmp_path / 'd.csv').write_bytes(('\ufeffcaption,media_path\n"a cat, running",v/a.mp4\n'
                                    'a dog,b.png\n').encode())  # Excel's byte-order mark
  got = [list_items(tmp_path / f"d.{ext}", trigger_word=' TOK ')
         for ext in ('json', 'jsonl', 'csv')]
  for items, problems in got:
    assert not problems
    assert [(i.caption, i.media) for i in items] == [
        ('TOK a cat, running', tmp_path / 'v/a.mp4'), ('TOK a dog', tmp_path / 'b.png')]


def test_bad_rows_are_problems_and_bad_listings_errors(tmp_path):
  (tmp_path / 'd.jsonl').write_text(
      '{"text": "ok", "file": "a.mp4", "ref": "r.mp4"}\n{"text": "", "file": "a.mp4"}\n'
      'not json\n{"text": "x", "file": "a.txt", "ref": "r.mp4"}\n{"text": "y", "file": 3}\n'
      '{"text": "z", "file": "a.mp4", "ref": "r.exe"}\n[1, 2]\n')
  items, problems = list_items(tmp_path / 'd.jsonl', caption_column='text', media_column='file',
                               reference_column='ref')
  assert [(i.caption, i.media.name, i.reference.name) for i in items] == [('ok', 'a.mp4',
                                                                           'r.mp4')]
  assert [str(p) for p in problems] == [
      "d.jsonl line 2: empty caption", 'd.jsonl line 3: not valid JSON: Expecting value: '
      'line 1 column 1 (char 0)', "d.jsonl line 4: unknown extension '.txt': images .png .jpg "
      ".jpeg .webp .bmp .tif .tiff; videos .mp4 .mov .avi .mkv .webm .m4v .mpg .mpeg .gif",
      "d.jsonl line 5: no 'file' value", "d.jsonl line 6: reference: unknown extension '.exe': "
      "images .png .jpg .jpeg .webp .bmp .tif .tiff; videos .mp4 .mov .avi .mkv .webm .m4v .mpg "
      ".mpeg .gif", "d.jsonl line 7: not an object with 'text' and 'file'"]
  with pytest.raises(UsageError, match="media_column='media_path' is not a column of d.jsonl"):
    list_items(tmp_path / 'd.jsonl', caption_column='text')
  (tmp_path / 'o.json').write_text('{"caption": "x"}')
  with pytest.raises(DataError, match='must hold a JSON list'):
    list_items(tmp_path / 'o.json')
  (tmp_path / 'b.json').write_text('[{"caption": "x",')
  with pytest.raises(DataError, match='is not valid JSON'):
    list_items(tmp_path / 'b.json')
  (tmp_path / 'd.txt').write_text('x')
  with pytest.raises(UsageError, match='a listing must be .csv, .json, .jsonl'):
    list_items(tmp_path / 'd.txt')
  with pytest.raises(UsageError, match='no such file or folder'):
    list_items(tmp_path / 'nope.json')


def test_a_media_folder_with_txt_captions(tmp_path):
  for name in ('b.mp4', 'a.png', 'c.JPG', 'notes.md', '.hidden.png'):
    (tmp_path / name).write_bytes(b'x')
  (tmp_path / 'a.txt').write_text('first\n')
  (tmp_path / 'b.txt').write_text('  ')
  (tmp_path / 'sub').mkdir()
  items, problems = list_items(tmp_path, trigger_word='TOK')
  assert [(i.caption, i.media.name) for i in items] == [('TOK first', 'a.png')]
  assert sorted(map(str, problems)) == [
      'b.mp4: empty caption', 'c.JPG: no caption file c.txt',
      "notes.md: unknown extension '.md': images .png .jpg .jpeg .webp .bmp .tif .tiff; "
      "videos .mp4 .mov .avi .mkv .webm .m4v .mpg .mpeg .gif"]
  with pytest.raises(UsageError, match='reference_column needs a CSV/JSON/JSONL listing'):
    list_items(tmp_path, reference_column='ref')
