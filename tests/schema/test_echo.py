"""An error repeats at most ECHO_MAX characters of what the client sent (an id, a name), then "…"."""

from multihome.schema.errors import ECHO_MAX, echo
from multihome.storage.errors import NotFound


def test_short_values_are_echoed_whole_and_long_ones_cut():
    assert echo("resp_abc") == "resp_abc"
    assert echo("x" * ECHO_MAX) == "x" * ECHO_MAX
    assert echo("x" * 100_000) == "x" * ECHO_MAX + "…"
    assert echo(None) == "None"


def test_the_admin_apis_not_found_names_a_long_id_by_its_start():
    message = str(NotFound("api key", "k" * 10_000, "t" * 10_000))
    assert message == f"api key {'k' * ECHO_MAX}… not found in tenant {'t' * ECHO_MAX}…"
