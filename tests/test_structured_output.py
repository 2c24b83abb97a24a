"""Reading answers as grammar-constrained servers write them: raw newlines and tabs inside JSON strings."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from pipeline.llm.structured_output import parse_answer
from pipeline.prompts.schemas import FaqAnswer

pytestmark = pytest.mark.backend_independent


def test_raw_newlines_and_tabs_inside_strings_are_read_as_text() -> None:
    # llama.cpp's JSON grammar lets a model end a line inside a string; strict JSON (and pydantic) refuse it.
    content = '{"question": "How fine?\n", "answer_html": "<p>Fine\tas table salt.\nThen taste.</p>"}'
    answer = parse_answer(FaqAnswer, content)
    assert isinstance(answer, FaqAnswer)
    assert answer.question == "How fine?\n"
    assert answer.answer_html == "<p>Fine\tas table salt.\nThen taste.</p>"


def test_answers_that_are_not_json_or_miss_fields_are_still_refused() -> None:
    with pytest.raises(ValidationError) as broken:
        parse_answer(FaqAnswer, '{"question": "How fine?", ')
    assert broken.value.errors()[0]["type"] == "json_invalid"
    with pytest.raises(ValidationError) as missing:
        parse_answer(FaqAnswer, '{"question": "How\nfine?"}')
    assert missing.value.errors()[0]["type"] == "missing"
