"""Property tests: any JSON-shaped input becomes an event that round-trips through orjson."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forwarder.schema import DlpEvent, from_dict, from_json, to_json

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
FIELDS = [
    "id",
    "idempotency_key",
    "kind",
    "severity",
    "record_type",
    "policies",
    "override",
    "user",
    "recipients",
    "object",
    "sensitive_types",
    "labels",
    "device",
    "links",
    "related",
    "enrichment",
    "raw",
]
nested = st.fixed_dictionaries(
    {},
    optional={
        "policies": st.lists(
            st.fixed_dictionaries({}, optional={"rules": st.lists(json_values, max_size=3), "id": json_values}),
            max_size=3,
        ),
        "object": st.dictionaries(st.sampled_from(["size", "name", "sha1", "type"]), json_values, max_size=4),
        "sensitive_types": st.lists(
            st.dictionaries(st.sampled_from(["count", "confidence", "detected_values", "name"]), json_values),
            max_size=3,
        ),
    },
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=8), nested)
def test_any_json_input_becomes_a_round_tripping_event(flat: dict, deep: dict) -> None:
    event = from_dict({**flat, **deep})
    assert isinstance(event, DlpEvent)
    assert from_json(to_json(event)) == event


def test_oversized_integers_never_crash_serialization() -> None:
    big = 2**70
    event = from_dict({"id": "x", "record_type": big, "enrichment": {"n": big, 3: "k"}, "raw": {"FileSize": big}})
    assert event.record_type == 0
    data = to_json(event)
    again = from_json(data)
    assert again.raw == {"FileSize": str(big)} and again.enrichment == {"n": str(big), "3": "k"}
    assert from_dict({"raw": 5, "enrichment": "x"}).raw is None
