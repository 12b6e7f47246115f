"""YAML and JSON from untrusted text, parsed so that no input can exhaust the stack or memory.

`yaml.safe_load` refuses Python tags but still lets aliases multiply a small file into billions
of values ("billion laughs"), loops through recursive anchors, and recurses once per nesting level,
as `json.loads` does: a deep enough document raises RecursionError instead of a parse error.
Here every such input is an ordinary parse error (yaml.YAMLError, json.JSONDecodeError) that
callers already report with its line.
"""

from __future__ import annotations

import json
from typing import Any

import yaml
from yaml.composer import ComposerError

MAX_DEPTH = 100
# Values that aliases may add to a document beyond its own: anchors for reuse, never for bombs.
MAX_ALIAS_EXPANSION = 10_000


class BoundedSafeLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses nesting deeper than MAX_DEPTH and aliases that expand too far or loop."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if self._depth >= MAX_DEPTH:
            mark = self.peek_event().start_mark
            raise ComposerError(None, None, f"nested more than {MAX_DEPTH} levels deep", mark)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_document(self) -> yaml.Node | None:
        node = super().compose_document()
        distinct: set[int] = set()
        expanded = _expanded_size(node, {}, set(), distinct)
        if expanded - len(distinct) > MAX_ALIAS_EXPANSION:
            raise ComposerError(
                None, None, f"aliases expand the document by more than {MAX_ALIAS_EXPANSION:,} values", node.start_mark
            )
        return node


def _expanded_size(node: yaml.Node, sizes: dict[int, int], open_nodes: set[int], distinct: set[int]) -> int:
    """How many values ``node`` becomes with every alias written out (each shared node counted once per use)."""
    key = id(node)
    if key in open_nodes:
        raise ComposerError(None, None, "an alias refers to a value that contains it", node.start_mark)
    if key in sizes:
        return sizes[key]
    distinct.add(key)
    open_nodes.add(key)
    size = 1
    if isinstance(node, yaml.SequenceNode):
        size += sum(_expanded_size(child, sizes, open_nodes, distinct) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            size += _expanded_size(k, sizes, open_nodes, distinct) + _expanded_size(v, sizes, open_nodes, distinct)
    open_nodes.discard(key)
    sizes[key] = size
    return size


def load_yaml(text: str) -> Any:
    """``yaml.safe_load`` with the limits above; raises yaml.YAMLError."""
    return yaml.load(text, Loader=BoundedSafeLoader)  # noqa: S506 - a SafeLoader subclass


def compose_yaml(text: str) -> yaml.Node | None:
    """``yaml.compose`` with the limits above (for the line of each key); raises yaml.YAMLError."""
    return yaml.compose(text, Loader=BoundedSafeLoader)


def load_json(text: str | bytes) -> Any:
    """``json.loads``, with too deep a document a JSONDecodeError rather than a RecursionError."""
    try:
        return json.loads(text)
    except RecursionError:
        doc = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
        raise json.JSONDecodeError("nested too deeply", doc, 0) from None
