"""Validation driven by the shipped schemas themselves: what an input's constraints refuse is refused,
with the field named; what they accept passes."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchgen import ManifestError, expand, load
from batchgen.core.params import MODEL_ID
from batchgen.core.schema import Input
from batchgen.store.schemas import shipped, shipped_ids

MODELS = [m for m in shipped_ids() if m != MODEL_ID]  # MusicGen has its own table (tests/manifest/test_manifest.py)
NUMBERS = [
    (model, spec)
    for model in MODELS
    for spec in shipped(model).inputs  # type: ignore[union-attr]
    if spec.type == "number" and spec.name != "seed" and spec.allowed is None and spec.max is not None
]
CHOICES = [
    (model, spec)
    for model in MODELS
    for spec in shipped(model).inputs  # type: ignore[union-attr]
    if spec.allowed is not None and spec.type in ("string", "number")
]
FAST = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def check(tmp_path: Path, model: str, name: str, value: object) -> None:
    prompt = "prompt" if name != "prompt" else "lyrics"
    text = f"""\
    batch: b
    model: {model}
    tracks:
      - name: a
        {prompt}: a quiet test
        {name}: {_yaml(value)}
    """
    path = tmp_path / "m.yaml"
    path.write_text(textwrap.dedent(text))
    expand(load(path), 1)


def _yaml(value: object) -> str:
    """A value as YAML text; a float always with a dot (YAML 1.1 reads `1e-05` as text)."""
    if isinstance(value, float):
        mantissa, _, exponent = repr(value).partition("e")
        return (mantissa if "." in mantissa else mantissa + ".0") + (f"e{exponent}" if exponent else "")
    return json.dumps(value)


def refused(tmp_path: Path, model: str, spec: Input, value: object) -> ManifestError:
    with pytest.raises(ManifestError) as info:
        check(tmp_path, model, spec.name, value)
    err = info.value
    assert err.field == spec.name and err.line == 6, str(err)
    return err


@pytest.mark.parametrize(("model", "spec"), NUMBERS, ids=[f"{m}.{s.name}" for m, s in NUMBERS])
@FAST
@given(data=st.data())
def test_a_number_inside_its_range_passes_and_outside_is_refused(
    tmp_path: Path, model: str, spec: Input, data: st.DataObject
) -> None:
    low = spec.min if spec.min is not None else -1e6
    assert spec.max is not None
    inside = data.draw(st.floats(low, spec.max, allow_nan=False))
    check(tmp_path, model, spec.name, inside)
    above = data.draw(st.floats(spec.max, spec.max + 1e6, exclude_min=True, allow_nan=False))
    assert "at most" in refused(tmp_path, model, spec, above).message
    if spec.min is not None:
        below = data.draw(st.floats(spec.min - 1e6, spec.min, exclude_max=True, allow_nan=False))
        assert "at least" in refused(tmp_path, model, spec, below).message
    assert "must be a number" in refused(tmp_path, model, spec, "loud").message


@pytest.mark.parametrize(("model", "spec"), CHOICES, ids=[f"{m}.{s.name}" for m, s in CHOICES])
@FAST
@given(data=st.data())
def test_an_allowed_value_passes_and_any_other_is_refused(
    tmp_path: Path, model: str, spec: Input, data: st.DataObject
) -> None:
    assert spec.allowed is not None
    check(tmp_path, model, spec.name, data.draw(st.sampled_from(spec.allowed)))
    other = data.draw(
        st.text(alphabet="abcdefghij_0123456789", min_size=1, max_size=12)
        if spec.type == "string"
        else st.integers(-(10**9), 10**9)
    )
    if other in spec.allowed:
        return
    assert "must be one of" in refused(tmp_path, model, spec, other).message


@pytest.mark.parametrize("model", MODELS)
def test_text_past_max_length_is_refused(tmp_path: Path, model: str) -> None:
    schema = shipped(model)
    assert schema is not None
    for spec in schema.inputs:
        if spec.type == "string" and spec.max_length is not None and spec.allowed is None:
            name = "lyrics" if spec.name == "lyrics" else spec.name
            if name in ("prompt", "text"):
                continue  # the prompt line itself: covered in test_models
            with pytest.raises(ManifestError) as info:
                check(tmp_path, model, name, "x" * (spec.max_length + 1))
            assert info.value.field == name and "at most" in info.value.message
