"""Keyword files as the tools export them land in the store as they are; a bad value is an error naming
file, row and column, raised before anything is written or registered.

The export fixtures in `tests/data/keywords/` are written byte for byte like Keyword Planner, Semrush,
Ahrefs, Excel and Google Sheets write them (see its README); each is ingested by materializing the
`keywords` asset and checked on what the store then holds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipeline import cli
from pipeline.cli import sites as site_commands
from pipeline.keywords import (
    MAX_VOLUME,
    KeywordFileError,
    neutralize_formula,
    parse_keyword_bytes,
    read_keyword_file,
)
from pipeline.models import Keyword

EXPORTS = Path(__file__).parent / "data" / "keywords"
GOOD = b"keyword,volume,difficulty,intent\ncold brew,100,20,informational\nlatte art,50,10,commercial\n"


def stored(env, slug: str = "demo") -> dict[str, Keyword]:
    return {k.normalized: k for k in env.store.keywords(env.store.site(slug).id)}


def ingest(env, path: Path, slug: str = "demo"):
    """Register `path` as the site's keyword file and materialize `keywords`; returns the materialization."""
    env.add_site(slug, path)
    result = env.materialize(slug, selection=["keywords"])
    assert result.success
    return result.get_asset_materialization_events()[0].materialization


def metrics(keyword: Keyword) -> tuple[str, int | None, int | None, str | None]:
    return keyword.keyword, keyword.volume, keyword.difficulty, keyword.intent


# -- as exported -------------------------------------------------------------------------------------------


def test_keyword_planner_export_in_utf16_with_title_lines_and_ranges_is_read_as_exported(env):
    path = EXPORTS / "keyword-planner-ranges.csv"
    raw = path.read_bytes()
    assert raw.startswith(b"\xff\xfe") and "\t".encode("utf-16-le") in raw, "UTF-16 LE with BOM, TAB-separated"
    assert "1K\u00a0\u2013\u00a010K".encode("utf-16-le") in raw, "ranges as Keyword Planner writes them"

    materialization = ingest(env, path)

    keywords = stored(env)
    assert {name: metrics(k) for name, k in keywords.items()} == {
        "cold brew coffee": ("cold brew coffee", 3162, None, None),
        "moka pot": ("moka pot", 32, None, None),
        "coffee": ("coffee", 316228, None, None),
        "aeropress filter paper size": ("aeropress filter paper size", 3, None, None),
    }
    cold_brew = keywords["cold brew coffee"].extra
    assert cold_brew["volume_range"] == "1K – 10K", "the estimate says which range it stands for"
    assert (cold_brew["Competition"], cold_brew["Competition (indexed value)"]) == ("Low", "12"), (
        "ad competition is kept, not taken as SEO difficulty"
    )
    assert cold_brew["Searches: Nov 2026"] == "1K\u00a0–\u00a010K" and cold_brew["Currency"] == "EUR"
    assert (keywords["moka pot"].extra["Three month change"], keywords["moka pot"].extra["YoY change"]) == (
        "-90%",
        "+900%",
    ), "formula-looking cells are stored as text"
    assert materialization.metadata["title_lines_skipped"].value == 2
    assert materialization.metadata["volume_ranges_estimated"].value == 4


def test_keyword_planner_export_with_a_date_range_title_line_and_exact_volumes(env):
    ingest(env, EXPORTS / "keyword-planner-exact.csv")
    keywords = stored(env)
    assert {name: k.volume for name, k in keywords.items()} == {
        "cold brew coffee": 2900,
        "moka pot": 880,
        "latte art": 12100,
    }
    assert "volume_range" not in keywords["latte art"].extra
    assert keywords["cold brew coffee"].extra["Searches: Jun 2026"] == "4400"


@pytest.mark.parametrize(
    ("written", "volume"),
    [
        ("0\u00a0–\u00a010", 3),
        ("10\u00a0–\u00a0100", 32),
        ("100\u00a0–\u00a01K", 316),
        ("1K\u00a0–\u00a010K", 3162),
        ("10K\u00a0–\u00a0100K", 31623),
        ("100K\u00a0–\u00a01M", 316228),
        ("1M\u00a0–\u00a010M", 3162278),
        ("1K - 10K", 3162),
        ("1,000–10,000", 3162),
    ],
)
def test_a_volume_range_becomes_its_geometric_midpoint(written, volume):
    parsed = parse_keyword_bytes(f'keyword,volume\ncold brew,"{written}"\n'.encode())
    assert parsed.rows[0].volume == volume
    assert parsed.volume_ranges == 1


def test_semrush_multi_value_intent_is_kept_whole_in_a_stable_form(env):
    ingest(env, EXPORTS / "semrush-keyword-magic.csv")
    keywords = stored(env)
    assert {name: (k.difficulty, k.intent) for name, k in keywords.items()} == {
        "cold brew coffee": (62, "informational, commercial"),
        "best cold brew maker": (48, "informational, commercial"),  # "Commercial, Informational"
        "buy cold brew concentrate": (29, "transactional"),
        "starbucks cold brew": (71, "informational, commercial, navigational"),
    }
    assert not any("intents" in k.extra for k in keywords.values())
    assert keywords["cold brew coffee"].volume == 22200
    assert keywords["cold brew coffee"].extra["Trend"] == "0.67,0.67,0.81,0.81,1.00,1.00,1.00,0.81,0.67,0.54,0.54,0.67"
    assert keywords["cold brew coffee"].extra["CPC (USD)"] == "1.10"


def test_a_clusters_dominant_intent_counts_each_intent_of_a_multi_value_keyword(env):
    ingest(env, EXPORTS / "semrush-keyword-magic.csv")
    assert env.materialize("demo", selection=["clusters"]).success
    intents = {c.dominant_intent for c in env.store.clusters(env.store.site("demo").id) if c.keyword_count}
    assert intents and intents <= {"informational", "commercial", "transactional", "navigational", None}


def test_ahrefs_keywords_explorer_export_in_utf16_tabs(env):
    path = EXPORTS / "ahrefs-keywords-explorer-utf16.csv"
    assert path.read_bytes().startswith(b"\xff\xfe")
    ingest(env, path)
    keywords = stored(env)
    assert {name: metrics(k) for name, k in keywords.items()} == {
        "cold brew coffee": ("cold brew coffee", 23000, 41, "informational, commercial"),
        "starbucks cold brew": ("starbucks cold brew", 8100, 28, "commercial, navigational"),
        "cold brew ratio": ("cold brew ratio", 4400, 12, "informational"),
        "cold brew near me": ("cold brew near me", 1900, 0, None),  # `Local,Non-branded`: who, not why
    }
    coffee = keywords["cold brew coffee"].extra
    assert coffee["Global volume"] == "91000", "Global volume is kept, never taken for the volume"
    assert keywords["cold brew coffee"].intent == "informational, commercial", "Non-branded is not an intent"
    assert (coffee["#"], coffee["Parent Keyword"], coffee["Country"]) == ("1", "cold brew", "us")


def test_ahrefs_export_in_utf8_commas_lands_exactly_like_the_utf16_one(env):
    ingest(env, EXPORTS / "ahrefs-keywords-explorer-utf16.csv", "utf16")
    ingest(env, EXPORTS / "ahrefs-keywords-explorer-utf8.csv", "utf8")
    as_utf16 = {name: (*metrics(k), k.extra) for name, k in stored(env, "utf16").items()}
    as_utf8 = {name: (*metrics(k), k.extra) for name, k in stored(env, "utf8").items()}
    assert as_utf8 == as_utf16 and len(as_utf8) == 4


def test_semicolon_separated_utf8_with_bom_is_read_as_exported(env):
    path = EXPORTS / "semicolon-utf8-bom.csv"
    assert path.read_bytes().startswith(b"\xef\xbb\xbfKeyword;")
    ingest(env, path)
    keywords = stored(env)
    assert {name: metrics(k) for name, k in keywords.items()} == {
        "moulin à café": ("moulin à café", 2900, 41, "commercial, transactional"),
        "café filtre": ("café filtre", 1200, 35, "informational"),
        "cafetière italienne": ("cafetière italienne", 880, 22, "commercial"),
    }
    assert keywords["moulin à café"].extra == {"CPC": "1,05"}


def test_tab_separated_utf8_is_read_as_exported(env):
    ingest(env, EXPORTS / "tab-separated.tsv")
    keywords = stored(env)
    assert {name: metrics(k) for name, k in keywords.items()} == {
        "hario v60": ("hario v60", 6600, 27, "navigational"),
        "pour over ratio": ("pour over ratio", 2400, 9, "informational"),
        "pour over kettle": ("pour over kettle", 1600, 18, "commercial"),
    }
    assert keywords["hario v60"].extra["notes"] == 'brand, in "quotes"'
    assert keywords["pour over kettle"].extra["notes"] == "gooseneck, 1 l"


def test_the_largest_volume_the_store_holds_is_accepted_on_both_backends(env, tmp_path):
    path = tmp_path / "big.csv"
    path.write_bytes(f"keyword,volume\nyoutube,{MAX_VOLUME}\n".encode())
    ingest(env, path)
    assert stored(env)["youtube"].volume == MAX_VOLUME == 2**31 - 1, "keywords.volume is an INTEGER column"


def test_formula_looking_cells_are_stored_as_text(env, tmp_path):
    path = tmp_path / "formulas.csv"
    path.write_bytes(b'keyword,volume,note\n=HYPERLINK("http://x.invalid"),10,@SUM(A1)\n-cheap coffee,5,+1\n')
    ingest(env, path)
    keywords = stored(env)
    assert keywords['=hyperlink("http://x.invalid")'].keyword == '=HYPERLINK("http://x.invalid")'
    assert keywords['=hyperlink("http://x.invalid")'].extra == {"note": "@SUM(A1)"}
    assert keywords["-cheap coffee"].extra == {"note": "+1"}


@pytest.mark.parametrize(
    ("cell", "written"),
    [
        ("=1+2", "'=1+2"),
        ("+1", "'+1"),
        ("-90%", "'-90%"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\t=1", "'\t=1"),
        ("\uff1d1+2", "'\uff1d1+2"),
        ("cold brew", "cold brew"),
        ("", ""),
    ],
)
def test_neutralize_formula_makes_formula_looking_cells_text_for_spreadsheets(cell, written):
    assert neutralize_formula(cell) == written


# -- bad values ----------------------------------------------------------------------------------------------


def keyword_planner(rows: list[str]) -> bytes:
    lines = ["Keyword Stats 2026-11-30 at 10_15_02", "All locations", "Keyword\tCurrency\tAvg. monthly searches", *rows]
    return b"\xff\xfe" + ("\r\n".join(lines) + "\r\n").encode("utf-16-le")


BAD_FILES = [
    pytest.param(b"keyword,volume\ncold brew,10\nmoka pot,nan\n", 3, "volume", "'nan' is not a number", id="nan"),
    pytest.param(b"keyword,volume\nmoka pot,inf\n", 2, "volume", "'inf' is not a finite number", id="inf"),
    pytest.param(
        b"keyword,volume\nmoka pot,1e400\n", 2, "volume", "'1e400' is above the maximum of 2,147,483,647", id="1e400"
    ),
    pytest.param(
        b"keyword,volume\nmoka pot,2147483648\n",
        2,
        "volume",
        "'2147483648' is above the maximum of 2,147,483,647",
        id="beyond-integer-column",
    ),
    pytest.param(
        b"keyword,volume\nmoka pot,99999999999999999999\n",
        2,
        "volume",
        "'99999999999999999999' is above the maximum of 2,147,483,647",
        id="beyond-sqlite-integer",
    ),
    pytest.param(
        b"keyword,difficulty\nmoka pot,1e400\n", 2, "difficulty", "'1e400' is above the maximum of 100", id="difficulty"
    ),
    pytest.param(
        b"keyword,volume\nmoka\x00pot,10\n",
        2,
        "keyword",
        "contains the control character U+0000 (NUL) at character 5",
        id="nul-in-keyword",
    ),
    pytest.param(
        b"keyword,notes\nmoka pot,stove\x00top\n",
        2,
        "notes",
        "contains the control character U+0000 (NUL)",
        id="nul-in-another-column",
    ),
    pytest.param(
        b"keyword,volume\n\x1b[31mmoka pot,10\n", 2, "keyword", "contains the control character U+001B", id="escape"
    ),
    pytest.param(
        b'keyword,volume\ncold brew,10\n"moka pot,20\nlatte art,30\nflat white,40\n',
        3,
        "keyword",
        "a quote opens this cell and is never closed",
        id="unterminated-quote",
    ),
    pytest.param(
        b'keyword,volume\ncold brew,10\n"moka" pot,20\n',
        3,
        "keyword",
        "text follows the closing quote of this cell",
        id="text-after-closing-quote",
    ),
    pytest.param(
        b'keyword,volume\n"moka pot,20\nlatte art",30\n',
        2,
        "keyword",
        "keyword runs over several lines",
        id="quote-joining-rows",
    ),
    pytest.param(
        keyword_planner(["cold brew\tEUR\t1K\u00a0–\u00a010K", "moka pot\tEUR\tnan"]),
        5,
        "Avg. monthly searches",
        "'nan' is not a number",
        id="keyword-planner-utf16",
    ),
    pytest.param(
        "\ufeffKeyword;Search Volume\nmoka pot;3000000000\n".encode(),
        2,
        "Search Volume",
        "'3000000000' is above the maximum",
        id="semicolon-utf8-bom",
    ),
]


@pytest.fixture
def good_site(env, tmp_path, monkeypatch):
    """A site whose good keyword file was imported, and the CLI pointed at the same store."""
    good = tmp_path / "good.csv"
    good.write_bytes(GOOD)
    ingest(env, good)
    monkeypatch.setenv("DATABASE_URL", env.url)
    monkeypatch.setenv("PIPELINE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr(site_commands, "add_site_partition", lambda slug: env.root)  # the partition exists already
    return env


def snapshot(env) -> tuple[Any, ...]:
    site = env.store.site("demo")
    return site.keywords_file, site.name, env.row_counts(), {n: (*metrics(k), k.extra) for n, k in stored(env).items()}


@pytest.mark.parametrize(("content", "row", "column", "message"), BAD_FILES)
def test_a_bad_value_is_named_by_file_row_and_column_and_sites_add_registers_nothing(
    good_site, tmp_path, capsys, content, row, column, message
):
    env = good_site
    before = snapshot(env)
    bad = tmp_path / "bad.csv"
    bad.write_bytes(content)

    assert cli.main(["sites", "add", "demo", "--keywords", str(bad)]) == 2

    error = capsys.readouterr().err
    assert f"keyword file {bad.resolve()}: " in error and "nothing was imported" in error
    assert f"row {row}, column '{column}': {message}" in error
    assert snapshot(env) == before, "registered file, site and store rows unchanged"
    assert not (tmp_path / "data" / "sites" / "demo").exists(), "no copy of a rejected file is kept"
    assert env.materialize("demo", selection=["keywords"]).success, "the previous good file still imports"
    assert snapshot(env) == before


@pytest.mark.parametrize(("content", "row", "column", "message"), BAD_FILES)
def test_a_bad_value_fails_the_keywords_asset_before_anything_is_written(
    good_site, tmp_path, content, row, column, message
):
    env = good_site
    bad = tmp_path / "bad.csv"
    bad.write_bytes(content)
    env.store.upsert_site("demo", "Demo", str(bad))  # registered behind the CLI's back
    counts, keywords = env.row_counts(), snapshot(env)[3]

    result = env.materialize("demo", selection=["keywords"], raise_on_error=False)

    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    description = failure.step_failure_data.user_failure_data.description
    assert f"keyword file {bad}: " in description
    assert f"row {row}, column '{column}': {message}" in description
    assert (env.row_counts(), snapshot(env)[3]) == (counts, keywords), "not one row written"


def test_a_bad_export_over_the_registered_file_leaves_the_site_on_its_good_copy(good_site, tmp_path, capsys):
    env = good_site
    export = tmp_path / "export.csv"
    export.write_bytes(b"keyword,volume\nmoka pot,20\n")
    assert cli.main(["sites", "add", "demo", "--keywords", str(export)]) == 0
    registered = Path(env.store.site("demo").keywords_file)
    assert registered.parent == tmp_path / "data" / "sites" / "demo" and registered.read_bytes() == export.read_bytes()
    assert f"Keyword file kept as {registered}" in capsys.readouterr().out
    probe = registered.with_name("probe")
    probe.write_bytes(b"")
    assert registered.stat().st_mode == probe.stat().st_mode, "created like any file: runs can read it"
    probe.unlink()
    assert env.materialize("demo", selection=["keywords"]).success
    before = snapshot(env)

    export.write_bytes(b"keyword,volume\nmoka pot,20\nlatte art,nan\n")  # the next export, saved over the first
    assert cli.main(["sites", "add", "demo", "--keywords", str(export)]) == 2
    assert "row 3, column 'volume': 'nan' is not a number" in capsys.readouterr().err

    assert snapshot(env) == before and Path(before[0]) == registered
    assert env.materialize("demo", selection=["keywords"]).success, "later keyword runs keep working"
    assert snapshot(env) == before


def test_a_quoted_cell_over_several_lines_is_kept_and_later_rows_keep_their_line_numbers():
    content = b'keyword,notes\ncold brew,"first line\nsecond line"\nmoka pot,ok\nlatte art,bad\x07\n'
    with pytest.raises(KeywordFileError) as caught:
        parse_keyword_bytes(content, "notes.csv")
    message = str(caught.value)
    assert "1 problem(s)" in message and "row 5, column 'notes': contains the control character U+0007" in message
    parsed = parse_keyword_bytes(content.replace(b"\x07", b""), "notes.csv")
    assert [(r.keyword, r.line, r.extra["notes"]) for r in parsed.rows] == [
        ("cold brew", 2, "first line\nsecond line"),
        ("moka pot", 4, "ok"),
        ("latte art", 5, "bad"),
    ]


def test_utf16_without_a_byte_order_mark_is_reported_not_misread(tmp_path):
    path = tmp_path / "no-bom.csv"
    path.write_bytes("Keyword\tAvg. monthly searches\r\ncold brew\t1000\r\n".encode("utf-16-le"))
    with pytest.raises(KeywordFileError) as caught:
        read_keyword_file(path)
    assert f"keyword file {path}" in str(caught.value)
    assert "row 1: looks like UTF-16 without a byte-order mark" in str(caught.value)


def test_every_problem_of_a_file_is_reported_at_once_with_its_row_and_column():
    content = b"keyword,volume,difficulty\na,nan,1\nb,5,inf\nc\x00,5,2\nd,1e400,3\n"
    with pytest.raises(KeywordFileError) as caught:
        parse_keyword_bytes(content, "mixed.csv")
    message = str(caught.value)
    assert "keyword file mixed.csv: 4 problem(s), nothing was imported" in message
    for expected in (
        "row 2, column 'volume': 'nan'",
        "row 3, column 'difficulty': 'inf'",
        "row 4, column 'keyword': contains the control character U+0000",
        "row 5, column 'volume': '1e400'",
    ):
        assert expected in message
