"""Endpoint ordering: round robin, failover, cooling-down endpoints last, every one tried when all rest."""

from __future__ import annotations

import httpx

from sinks.splunk_hec.endpoints import FAILOVER, ROUND_ROBIN, EndpointPool


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def pool(mode: str, clock: Clock) -> EndpointPool:
    urls = ["https://a:8088", "https://b:8088", "https://c:8088/"]
    return EndpointPool(urls, httpx.Client, {}, mode=mode, cooldown=30, clock=clock)


def names(p: EndpointPool) -> str:
    return "".join(e.url[8] for e in p.order())


def test_round_robin_rotates_and_skips_resting_endpoints():
    clock = Clock()
    p = pool(ROUND_ROBIN, clock)
    assert [names(p) for _ in range(4)] == ["abc", "bca", "cab", "abc"]
    p.fail(p.endpoints[1], "busy")
    assert names(p) == "cab"  # rotation starts at b, which rests: tried last
    assert names(p) == "cab"  # rotation starts at c
    clock.now += 31
    assert names(p) == "abc"  # b is back


def test_failover_prefers_configuration_order_and_comes_back():
    clock = Clock()
    p = pool(FAILOVER, clock)
    assert names(p) == "abc"
    p.fail(p.endpoints[0], "connect error")
    assert names(p) == "bca"
    p.fail(p.endpoints[1], "busy")
    clock.now += 1
    assert names(p) == "cab"  # both resting: the one whose cooldown ends first comes first
    clock.now += 30
    assert names(p) == "abc"


def test_every_endpoint_is_tried_when_all_rest():
    clock = Clock()
    p = pool(FAILOVER, clock)
    for e in p.endpoints:
        p.fail(e, "down")
    assert sorted(names(p)) == ["a", "b", "c"]
    assert p.endpoints[2].url == "https://c:8088"  # trailing slash dropped
    channels = {e.channel for e in p.endpoints}
    assert len(channels) == 3  # one data channel per endpoint
