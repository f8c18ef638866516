"""worker.cache_converter_type_hints: the SDK's converter decodes journey inputs as before, and
resolves each class's type hints once instead of on every decode."""

from __future__ import annotations

import typing

import pytest
from temporalio.converter import DataConverter
from temporalio.converter import _payload_converter as payload_converter

from domain.journey import JourneyPlan, RecipientInput, StepPlan
from worker import cache_converter_type_hints


def test_hints_are_resolved_once_and_inputs_decode_the_same(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[object] = []

    def counting(obj: object, *args: object, **kwargs: object) -> dict[str, object]:
        calls.append(obj)
        return typing.get_type_hints(obj, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(payload_converter, "get_type_hints", counting)
    converter = DataConverter.default.payload_converter
    value = RecipientInput(1, 2, "a@example.com", plan=JourneyPlan(1, [StepPlan(3, 1, 60.0)]))
    payloads = converter.to_payloads([value])

    assert converter.from_payloads(payloads, [RecipientInput]) == [value]
    uncached = len(calls)
    assert uncached > 0  # the SDK does resolve hints per decode: what the cache is for
    converter.from_payloads(payloads, [RecipientInput])
    assert len(calls) == 2 * uncached

    cache_converter_type_hints()  # wraps the counting function: it sees only cache misses
    cache_converter_type_hints()  # a second call does not wrap it again
    assert converter.from_payloads(payloads, [RecipientInput]) == [value]
    misses = len(calls) - 2 * uncached
    for _ in range(3):
        assert converter.from_payloads(payloads, [RecipientInput]) == [value]
    assert len(calls) - 2 * uncached == misses
