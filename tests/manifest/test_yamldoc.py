"""The bounded YAML reader: plain values with line numbers, bombs refused with a line."""

from __future__ import annotations

import pytest

from batchgen.manifest.yamldoc import LineDict, YamlError, load

# Ten of ten of ten ... : 10^8 values from a few hundred bytes.
BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{k}: &{k} [{', '.join(['*' + p] * 10)}]\n" for p, k in zip("abcdefg", "bcdefgh", strict=True)
)


def test_values_remember_their_lines() -> None:
    """Mappings and sequences carry the line of each key and item."""
    doc = load("batch: b\ntracks:\n  - name: a\n  - name: c\n")
    assert isinstance(doc, LineDict) and doc.lines == {"batch": 1, "tracks": 2}
    assert [item.line for item in doc["tracks"]] == [3, 4] and doc["tracks"][1].lines == {"name": 4}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
            + "".join(
                f"{k}: &{k} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
                for p, k in zip("abcdefg", "bcdefgh", strict=True)
            ),
            "values once aliases are expanded",
        ),
        ("a: *missing\n", "unknown alias"),
        ("a: 1\n---\nb: 2\n", "one YAML document"),
        ("a: !!python/object:os.system x\n", "is not allowed"),
        ("[" * 100 + "]" * 100 + "\n", "nested more than"),
    ],
    ids=["alias bomb", "unknown alias", "two documents", "python tag", "deep"],
)
def test_what_is_refused_is_refused_with_a_line(text: str, message: str) -> None:
    """Each refusal names what is wrong, at a line where there is one."""
    with pytest.raises(YamlError, match=message):
        load(text)
