"""Keyword files: every bad input gets an error naming file, row and column, and nothing is half-written."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.keywords import MAX_ROW_BYTES, KeywordFileError, read_keyword_file


def write(tmp_path: Path, content: bytes | str, name: str = "keywords.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def error_for(path: Path) -> str:
    with pytest.raises(KeywordFileError) as caught:
        read_keyword_file(path)
    message = str(caught.value)
    assert str(path) in message, "the error names the file"
    assert "nothing was imported" in message
    return message


def test_missing_required_column_is_named_with_the_header_found(tmp_path):
    message = error_for(write(tmp_path, "phrase,volume\ncold brew,100\n"))
    assert "row 1, column 'keyword': required column missing" in message
    assert "'phrase', 'volume'" in message


def test_empty_file_is_rejected(tmp_path):
    assert "the file is empty" in error_for(write(tmp_path, ""))
    assert "the file is empty" in error_for(write(tmp_path, "\n  \n"))


def test_header_without_rows_is_rejected(tmp_path):
    assert "no keyword rows" in error_for(write(tmp_path, "keyword,volume\n"))


def test_non_utf8_bytes_are_reported_with_their_row(tmp_path):
    message = error_for(write(tmp_path, b"keyword,volume\ncold brew,10\ncaf\xe9 latte,20\n"))
    assert "row 3: not valid UTF-8 (byte 0xe9" in message


def test_blank_lines_are_skipped_and_counted(tmp_path):
    parsed = read_keyword_file(write(tmp_path, "keyword,volume\n\ncold brew,10\n  ,  \n\nlatte art,20\n"))
    assert [r.keyword for r in parsed.rows] == ["cold brew", "latte art"]
    assert parsed.blank_lines == 3


def test_non_numeric_volume_names_row_column_and_value(tmp_path):
    message = error_for(write(tmp_path, "keyword,volume\ncold brew,10\nlatte art,lots\n"))
    assert "row 3, column 'volume': 'lots' is not a number" in message


def test_every_bad_row_is_reported_at_once(tmp_path):
    content = (
        "keyword,volume,difficulty,intent\na,x,1,informational\n,5,2,commercial\nb,5,101,commercial\nc,5,3,curious\n"
    )
    message = error_for(write(tmp_path, content))
    assert "4 problem(s)" in message
    assert "row 2, column 'volume'" in message
    assert "row 3, column 'keyword': keyword is empty" in message
    assert "row 4, column 'difficulty': '101' is above the maximum of 100" in message
    assert "row 5, column 'intent': 'curious' is not one of" in message


def test_duplicates_differing_in_case_or_spacing_are_merged_first_wins(tmp_path):
    parsed = read_keyword_file(
        write(tmp_path, "keyword,volume\nCold Brew,100\ncold  brew ,5\n COLD BREW,7\nlatte art,3\n")
    )
    assert [(r.keyword, r.normalized, r.volume) for r in parsed.rows] == [
        ("Cold Brew", "cold brew", 100),
        ("latte art", "latte art", 3),
    ]
    assert parsed.merged_duplicates == 2


def test_a_10_mb_line_is_rejected_without_parsing_it(tmp_path):
    huge = "x" * (10 * 1024 * 1024)
    message = error_for(write(tmp_path, f"keyword,volume\ncold brew,1\n{huge},2\n"))
    assert f"row 3: row is {len(huge) + 2:,} bytes long; the limit is {MAX_ROW_BYTES:,} bytes" in message


def test_overlong_keyword_is_rejected(tmp_path):
    message = error_for(write(tmp_path, "keyword\n" + "y" * 300 + "\n"))
    assert "row 2, column 'keyword': keyword is 300 characters; the limit is 255" in message


def test_export_headers_numbers_intents_and_extra_columns_are_normalised(tmp_path):
    content = (
        "\ufeffKeyword,Search Volume,KD,Search Intent,CPC\n"
        '"cold brew","1,200",45.0,"Informational, Commercial",1.20\n'
        "latte art,900,12,c,0.5\n"
        "aeropress,,,,\n"
    )
    parsed = read_keyword_file(write(tmp_path, content))
    rows = {r.keyword: r for r in parsed.rows}
    assert (rows["cold brew"].volume, rows["cold brew"].difficulty, rows["cold brew"].intent) == (
        1200,
        45,
        "informational, commercial",
    )
    assert rows["cold brew"].extra == {"CPC": "1.20"}
    assert rows["latte art"].intent == "commercial"
    assert (rows["aeropress"].volume, rows["aeropress"].intent) == (None, None)


def test_missing_file_is_reported(tmp_path):
    assert "cannot be read" in error_for(tmp_path / "nope.csv")


def test_a_bad_file_fails_the_keywords_asset_and_leaves_stored_keywords_untouched(env, tmp_path):
    good = write(tmp_path, "keyword,volume\ncold brew,100\nlatte art,50\n", "good.csv")
    env.add_site("demo", good)
    assert env.materialize("demo", selection=["keywords"]).success
    before = [(k.normalized, k.volume) for k in env.store.keywords(env.store.site("demo").id)]

    bad = write(tmp_path, "keyword,volume\ncold brew,999\nmoka pot,12\nflat white,many\n", "bad.csv")
    env.store.upsert_site("demo", "Demo", str(bad))
    result = env.materialize("demo", selection=["keywords"], raise_on_error=False)

    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "row 4, column 'volume': 'many' is not a number" in failure.step_failure_data.user_failure_data.description
    after = [(k.normalized, k.volume) for k in env.store.keywords(env.store.site("demo").id)]
    assert after == before, "the good rows of the bad file (cold brew=999, moka pot) were not written"


def test_keyword_files_are_additive_and_refresh_metrics(env, tmp_path):
    env.add_site("demo", write(tmp_path, "keyword,volume\ncold brew,100\nlatte art,50\n", "one.csv"))
    assert env.materialize("demo", selection=["keywords"]).success
    env.store.upsert_site(
        "demo", "Demo", str(write(tmp_path, "keyword,volume\nCold Brew,150\nmoka pot,20\n", "two.csv"))
    )
    assert env.materialize("demo", selection=["keywords"]).success
    stored = {k.normalized: (k.keyword, k.volume) for k in env.store.keywords(env.store.site("demo").id)}
    assert stored == {"cold brew": ("cold brew", 150), "latte art": ("latte art", 50), "moka pot": ("moka pot", 20)}
