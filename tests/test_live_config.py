"""What a config reload may change live (live_config.restart_needed): the sections read at start-up only
are named, the live ones and the --drain-timeout override are not."""

from __future__ import annotations

from builders import config, deployment, group, open_door, provider, sqlite, typed
from multihome.live_config import restart_needed


def _cfg(**sections) -> dict:
    return config(
        providers={"p": provider("openai", "http://127.0.0.1:9/v1")},
        deployments={"d": deployment("p", "m")},
        model_groups={"g": group("d")},
        **{"server": open_door(), **sections},
    )


def test_live_sections_need_no_restart():
    old = typed(_cfg())
    new = typed(
        config(
            providers={
                "p": provider("openai", "http://127.0.0.1:9/v1"),
                "q": provider("openai", "http://127.0.0.1:8/v1"),
            },
            deployments={"d": deployment("p", "m"), "e": deployment("q", "n")},
            model_groups={"g": group("d", "e", strategy="lowest-latency"), "h": group("e")},
            server=open_door(),
            metering={"rate_limits": [{"scope": "key", "id": "*", "requests_per_minute": 5}]},
        )
    )
    assert restart_needed(old, new) == []


def test_start_up_sections_are_named():
    old = typed(_cfg())
    new = typed(_cfg(server=open_door(port=4999), routing={"latency_ewma_alpha": 0.5}, metering={"fail_open": False}))
    assert restart_needed(old, new) == [
        f"{name}: changed; this section is read at start-up only: restart the gateway to change it"
        for name in ("server", "routing", "metering")
    ]


def test_the_drain_deadline_is_not_compared():
    old = typed(_cfg())
    old.server.drain_timeout_s = 30  # as `serve --drain-timeout 30` sets it
    assert restart_needed(old, typed(_cfg())) == []


def test_limits_on_an_unmetered_gateway_and_stored_key_providers_need_a_restart():
    old = typed(_cfg())
    new = typed(_cfg(metering={"budgets": [{"scope": "key", "id": "*", "amount": 5, "period": "day"}]}))
    assert [p.partition(":")[0] for p in restart_needed(old, new, metered=False)] == ["metering"]
    old = typed(_cfg(storage=sqlite("/tmp/unused.db")))
    stored = typed(
        config(
            providers={"p": provider("openai", "http://127.0.0.1:9/v1", auth={"api_key_from": "store"})},
            deployments={"d": deployment("p", "m")},
            model_groups={"g": group("d")},
            server=open_door(),
            storage=sqlite("/tmp/unused.db"),
        )
    )
    assert [p.partition(":")[0] for p in restart_needed(old, stored)] == ["providers.p"]
