"""Model schemas: read as the SDK describes them, and every shipped one enforcing its own constraints."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchgen.core.params import check_params
from batchgen.core.schema import Input, ModelSchema, SchemaError, parse, to_json
from batchgen.store.schemas import shipped, shipped_ids

CURATED = {
    "model_meta-musicgen",
    "model_elevenlabs-sound-effects-v2",
    "model_beatoven-sound-effect",
    "model_mm-audio-2-t2a",
    "model_beatoven-music-generation",
    "model_lyria-2",
    "model_elevenlabs-music-v2",
    "model_minimax-music-2-6",
    "model_ace-step-1-5-turbo-text-to-music",
    "model_elevenlabs-tts-v3",
}
SCHEMAS = [s for s in (shipped(i) for i in shipped_ids()) if s is not None]
BOUNDED = [(s, i) for s in SCHEMAS for i in s.inputs if i.type == "number" and (i.min is not None or i.max is not None)]
CHOICES = [(s, i) for s in SCHEMAS for i in s.inputs if i.allowed is not None]
LIMITED = [(s, i) for s in SCHEMAS for i in s.inputs if i.max_length is not None]


def _ids(pair: tuple[ModelSchema, Input]) -> str:
    return f"{pair[0].id}.{pair[1].name}"


def _minimal(schema: ModelSchema) -> dict[str, object]:
    """A body with every always-required input filled in."""
    return {i.name: "x" for i in schema.inputs if i.required.always}


def test_the_curated_set_ships_and_reads_back() -> None:
    assert set(shipped_ids()) >= CURATED
    for schema in SCHEMAS:
        assert parse(to_json(schema), "again") == schema
        assert schema.check(_minimal(schema)) == []
        defaults = {i.name: i.default for i in schema.inputs if i.default is not None}
        assert schema.check({**_minimal(schema), **defaults}) == [], schema.id  # its own defaults pass
    assert shipped("model_nope") is None and shipped("../etc/passwd") is None


@pytest.mark.parametrize("pair", BOUNDED, ids=_ids)
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_a_number_outside_its_range_is_refused_and_inside_passes(
    pair: tuple[ModelSchema, Input], data: st.DataObject
) -> None:
    schema, spec = pair
    low, high = spec.min if spec.min is not None else -1e6, spec.max if spec.max is not None else 1e6
    inside = data.draw(st.floats(low, high, allow_nan=False))
    if spec.allowed is None:
        assert schema.check({**_minimal(schema), spec.name: inside}) == []
    sides = []
    if spec.min is not None:
        sides.append(st.floats(max_value=spec.min, exclude_max=True, allow_nan=False, allow_infinity=False))
    if spec.max is not None:
        sides.append(st.floats(min_value=spec.max, exclude_min=True, allow_nan=False, allow_infinity=False))
    outside = data.draw(st.one_of(sides))
    assert [f for f, _ in schema.check({**_minimal(schema), spec.name: outside})] == [spec.name]


@pytest.mark.parametrize("pair", CHOICES, ids=_ids)
def test_a_value_outside_allowed_values_is_refused(pair: tuple[ModelSchema, Input]) -> None:
    schema, spec = pair
    for value in spec.allowed or ():
        assert schema.check({**_minimal(schema), spec.name: value}) == []
    wrong = "not-a-choice" if spec.type == "string" else -123456.5
    problems = schema.check({**_minimal(schema), spec.name: wrong})
    assert [f for f, _ in problems] == [spec.name] and "must be one of" in problems[0][1]


@pytest.mark.parametrize("pair", LIMITED, ids=_ids)
def test_text_past_its_length_is_refused_with_the_count(pair: tuple[ModelSchema, Input]) -> None:
    schema, spec = pair
    assert spec.max_length is not None
    assert schema.check({**_minimal(schema), spec.name: "a" * spec.max_length}) == []
    problems = schema.check({**_minimal(schema), spec.name: "a" * (spec.max_length + 1)})
    assert problems == [(spec.name, f"must be at most {spec.max_length:,} characters ({spec.max_length + 1:,} given)")]


def test_unknown_inputs_wrong_types_and_required_ones_are_named() -> None:
    sfx = shipped("model_elevenlabs-sound-effects-v2")
    assert sfx is not None
    assert sfx.check({"text": "door", "durationSecond": 3}) == [
        ("durationSecond", "unknown input; did you mean 'durationSeconds'?")
    ]
    assert sfx.check({"text": "door", "loop": "yes"}) == [("loop", "must be true or false")]
    assert sfx.check({"loop": True}) == [("text", "is required")]
    assert sfx.check({"text": 5}) == [("text", "must be text")]


def test_required_rules_if_defined_if_not_defined_and_conditional() -> None:
    schema = parse(
        {
            "id": "model_x",
            "inputs": [
                {"name": "a", "type": "string"},
                {"name": "b", "type": "string", "required": {"ifDefined": {"a": "b goes with a"}}},
                {"name": "c", "type": "string", "required": {"ifNotDefined": {"a": "c or a"}}},
                {"name": "mode", "type": "string", "allowedValues": ["x", "y"]},
                {
                    "name": "d",
                    "type": "number",
                    "step": 0.5,
                    "min": 1,
                    "required": {"conditional": {"values": {"mode": ["y"]}}},
                },
                {
                    "name": "rows",
                    "type": "inputs_array",
                    "maxLength": 2,
                    "inputs": [{"name": "t", "type": "string", "required": {"always": True}}],
                },
            ],
        },
        "test",
    )
    assert schema.check({"a": "1"}) == [("b", "is required")]
    assert schema.check({}) == [("c", "is required")]
    assert schema.check({"c": "1", "mode": "y"}) == [("d", "is required")]
    assert schema.check({"c": "1", "mode": "y", "d": 1.75}) == [("d", "must be a multiple of 0.5 from 1")]
    assert schema.check({"c": "1", "d": 2.5, "rows": [{"t": "x"}, {}]}) == [("rows", "item 2: t: is required")]
    assert schema.check({"c": "1", "rows": [{"t": "x"}] * 3}) == [("rows", "must hold at most 2 items")]


@pytest.mark.parametrize(
    ("doc", "says"),
    [
        ({"inputs": []}, "no model id"),
        ({"id": "model_x", "inputs": []}, "describes no inputs"),
        ({"id": "model_x", "inputs": [{"name": "a", "type": "color"}]}, "input 'a': unknown type 'color'"),
        (
            {"id": "model_x", "inputs": [{"name": "a", "type": "number", "max": "big"}]},
            "input 'a': max is not a number",
        ),
        (
            {"id": "model_x", "inputs": [{"name": "a", "type": "string"}, {"name": "a", "type": "string"}]},
            "declared twice",
        ),
        ({"model": {"id": "model_x", "inputs": [{"type": "string"}]}}, "inputs[0]: an input without a name"),
    ],
)
def test_a_schema_batchgen_cannot_use_is_refused_naming_where(doc: object, says: str) -> None:
    with pytest.raises(SchemaError, match=re.escape(says)) as err:
        parse(doc, "GET /models/model_x")
    assert str(err.value).startswith("GET /models/model_x")


@pytest.mark.parametrize(
    "params",
    [
        {"duration": 31},
        {"duration": 0},
        {"modelVersion": "small"},
        {"classifierFreeGuidance": 11},
        {"normalizationStrategy": "max"},
    ],
)
def test_musicgen_schema_refuses_what_the_musicgen_rules_refuse(params: dict[str, object]) -> None:
    schema = shipped("model_meta-musicgen")
    assert schema is not None
    body = {"prompt": "calm", **params}
    assert schema.check(body) and check_params(body)


def test_a_rule_no_schema_can_say_is_checked_on_top() -> None:
    from batchgen.core import modelrules

    ace = "model_ace-step-1-5-turbo-text-to-music"
    schema = shipped(ace)
    assert schema is not None and schema.check({}) == []  # its schema marks neither required
    assert modelrules.check(ace, {}) == [("prompt", "a prompt or lyrics is required")]
    assert modelrules.check(ace, {"lyrics": "[Verse] la"}) == [] and modelrules.check(ace, {"prompt": "x"}) == []
    assert modelrules.check("model_lyria-2", {}) == []
