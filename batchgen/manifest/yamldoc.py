"""YAML read safely: line numbers kept, merge keys honoured, and bounded in every way.

The document is built straight from libyaml's event stream (no recursive composer: a
manifest of 100,000 nested brackets cannot overflow a stack), with YAML's safe types
only. Aliases share the anchored value, and the size a document would have with every
alias expanded is counted as it is read: a few hundred bytes of "billion laughs"
stop at `MAX_NODES` instead of eating the machine. Mappings and sequences remember
the line of themselves and of each key or item, so every error can name its line.
"""

from __future__ import annotations

from typing import Any

import yaml

from ..core.text import clean

MAX_DEPTH = 64  # nested mappings and sequences
MAX_NODES = 2_000_000  # values in the document, every alias expanded
# Characters that aliases may add: a handful of aliases of one long text must not make a
# page of gigabytes. What the file holds itself is bounded by its size.
MAX_ALIAS_TEXT = 32 * 1024 * 1024

_Parser: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MERGE = "tag:yaml.org,2002:merge"
_SAFE_TAGS = {
    f"tag:yaml.org,2002:{name}" for name in ("str", "int", "float", "bool", "null", "map", "seq", "timestamp")
}


class YamlError(ValueError):
    """The document is not YAML this reader accepts; `line` says where (1-based), when known."""

    def __init__(self, message: str, line: int | None = None, key: str | None = None) -> None:
        super().__init__(message)
        self.line = line
        self.key = key


class LineDict(dict[str, Any]):
    """A YAML mapping that remembers the line of itself and of each key."""

    line: int | None = None
    lines: dict[str, int]


class LineList(list[Any]):
    """A YAML sequence that remembers the line of itself and of each item."""

    line: int | None = None
    lines: list[int]


class _Frame:
    """A mapping or sequence being built: its value, its size so far, a key awaiting its value."""

    __slots__ = ("anchor", "key", "key_line", "merged", "size", "text", "value")

    def __init__(self, value: LineDict | LineList) -> None:
        self.value = value
        self.size = 1
        self.text = 0  # characters of text inside, every alias expanded
        self.key: Any = _NONE
        self.key_line = 0
        self.merged: set[str] = set()  # keys that came from a merge (`<<`), which explicit keys may override
        self.anchor: str | None = None


_NONE = object()


def load(text: str) -> Any:
    """The one document in `text`, as plain Python values (dicts and lists with line numbers)."""
    return _Builder().build(text)


class _Builder:
    def __init__(self) -> None:
        self._resolver = yaml.resolver.Resolver()
        self._constructor = yaml.constructor.SafeConstructor()
        self._anchors: dict[str, tuple[Any, int, int]] = {}  # anchor -> (value, expanded size, text)
        self._alias_text = 0  # characters added by expanding aliases
        self._stack: list[_Frame] = []
        self._total = 0
        self._documents = 0
        self._root: Any = None

    def build(self, text: str) -> Any:
        try:
            for event in yaml.parse(text, Loader=_Parser):
                self._event(event)
        except yaml.MarkedYAMLError as err:
            mark = err.problem_mark or err.context_mark
            problem = " ".join(str(err.problem or err.context or "invalid YAML").split())[:200]
            raise YamlError(f"YAML syntax error: {problem}", _line(mark)) from None
        except yaml.YAMLError as err:
            raise YamlError(f"YAML error: {' '.join(str(err).split())[:200]}") from None
        return self._root

    def _event(self, event: Any) -> None:
        if isinstance(event, yaml.ScalarEvent):
            value = self._scalar(event)
            self._add(value, 1, event, text=len(value) if isinstance(value, str) else 0)
        elif isinstance(event, yaml.MappingStartEvent | yaml.SequenceStartEvent):
            self._open(event)
        elif isinstance(event, yaml.MappingEndEvent | yaml.SequenceEndEvent):
            frame = self._stack.pop()
            self._add(frame.value, frame.size, event, anchor=frame.anchor, text=frame.text)
        elif isinstance(event, yaml.AliasEvent):
            if event.anchor not in self._anchors:
                raise YamlError(f"unknown alias *{str(event.anchor)[:40]}", _line(event.start_mark))
            value, size, text = self._anchors[event.anchor]
            self._alias_text += text
            if self._alias_text > MAX_ALIAS_TEXT:
                raise YamlError(
                    f"aliases expand to more than {MAX_ALIAS_TEXT // 1024**2} MB of text", _line(event.start_mark)
                )
            self._add(value, size, event, alias=True, text=text)
        elif isinstance(event, yaml.DocumentStartEvent):
            self._documents += 1
            if self._documents > 1:
                raise YamlError("expected one YAML document, found more", _line(event.start_mark))

    def _open(self, event: Any) -> None:
        if len(self._stack) >= MAX_DEPTH:
            raise YamlError(f"nested more than {MAX_DEPTH} levels deep", _line(event.start_mark))
        self._check_tag(event.tag, event)
        value: LineDict | LineList
        if isinstance(event, yaml.MappingStartEvent):
            value = LineDict()
            value.lines = {}
        else:
            value = LineList()
            value.lines = []
        value.line = _line(event.start_mark)
        frame = _Frame(value)
        frame.anchor = event.anchor
        self._stack.append(frame)

    def _scalar(self, event: Any) -> Any:
        self._check_tag(event.tag, event)
        tag = event.tag
        if tag is None or tag == "!":
            tag = self._resolver.resolve(yaml.ScalarNode, event.value, event.implicit)  # type: ignore[no-untyped-call]
        if tag == _MERGE:
            return _MERGE_KEY
        value = clean(event.value)  # a "\ud800" escape would otherwise crash the first write of it
        node = yaml.ScalarNode(tag, value, event.start_mark, event.end_mark, event.style)
        construct = self._constructor.yaml_constructors.get(tag)
        if construct is None:  # a tag the safe loader has no type for (`=` resolves to `value`): keep the text
            return value
        try:
            return construct(self._constructor, node)
        except (ValueError, OverflowError, yaml.YAMLError) as err:
            raise YamlError(f"bad {tag.rsplit(':', 1)[-1]} value: {str(err)[:80]}", _line(event.start_mark)) from None

    def _check_tag(self, tag: str | None, event: Any) -> None:
        if tag is not None and tag not in ("!", "?") and tag not in _SAFE_TAGS:
            raise YamlError(f"YAML tag {tag[:60]!r} is not allowed", _line(event.start_mark))

    def _add(
        self, value: Any, size: int, event: Any, *, alias: bool = False, anchor: str | None = None, text: int = 0
    ) -> None:
        """Put a finished value into its parent (or make it the document)."""
        self._total += size if alias else 1
        if self._total > MAX_NODES:
            raise YamlError(f"more than {MAX_NODES:,} values once aliases are expanded", _line(event.start_mark))
        anchor = anchor if anchor is not None else getattr(event, "anchor", None) if not alias else None
        if anchor is not None:
            self._anchors[anchor] = (value, size, text)
        if not self._stack:
            self._root = value
            return
        parent = self._stack[-1]
        parent.size += size
        parent.text += text
        if parent.size > MAX_NODES:
            raise YamlError(f"more than {MAX_NODES:,} values once aliases are expanded", _line(event.start_mark))
        line = _line(event.start_mark) or 0
        if isinstance(parent.value, LineList):
            parent.value.append(value)
            parent.value.lines.append(line)
        elif parent.key is _NONE:
            parent.key, parent.key_line = value, line
        else:
            self._set(parent, parent.key, value, parent.key_line)
            parent.key = _NONE

    def _set(self, frame: _Frame, key: Any, value: Any, line: int) -> None:
        mapping = frame.value
        assert isinstance(mapping, LineDict)
        if key is _MERGE_KEY:
            sources = value if isinstance(value, list) else [value]
            for source in sources:
                if not isinstance(source, dict):
                    raise YamlError("a merge key (<<) takes a mapping or a list of mappings", line)
                for k, v in source.items():
                    if k not in mapping:
                        mapping[k] = v
                        mapping.lines[k] = getattr(source, "lines", {}).get(k, line)
                        frame.merged.add(k)
            return
        if isinstance(key, dict | list):
            raise YamlError("a mapping key must be a plain value", line)
        key = key if isinstance(key, str) else str(key)[:200]
        if key in mapping and key not in frame.merged:
            raise YamlError("duplicate key", line, key)
        frame.merged.discard(key)
        mapping[key] = value
        mapping.lines[key] = line


class _MergeKey:
    def __repr__(self) -> str:
        return "<<"


_MERGE_KEY = _MergeKey()


def _line(mark: Any) -> int | None:
    return mark.line + 1 if mark is not None else None
