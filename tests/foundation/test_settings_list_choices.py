"""``choices`` (and bounds) on a ``list[...]`` setting apply to each item, with the item's key path."""

from __future__ import annotations

from dataclasses import dataclass

from forwarder.settings import build, setting


@dataclass
class Listy:
    kinds: list[str] = setting(default_factory=list, doc="kinds", choices=("a", "b"))
    sizes: list[int] = setting(default_factory=list, doc="sizes", minimum=1)


def test_each_item_of_a_list_setting_is_checked_against_its_choices_and_bounds() -> None:
    problems: list[str] = []
    built = build(Listy, {"kinds": ["a", "b"], "sizes": [1, 5]}, "x", problems)
    assert problems == [] and built.kinds == ["a", "b"]
    problems = []
    build(Listy, {"kinds": ["a", "c"], "sizes": [0]}, "x", problems)
    assert problems == ["x.kinds[1]: expected one of 'a', 'b', got 'c'", "x.sizes[0]: expected at least 1, got 0"]
