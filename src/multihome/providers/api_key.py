"""Where an adapter's API key comes from: the environment variable the config names
(`auth.api_key_env`), or the admin API's sealed store (`auth.api_key_from: store`), which the
gateway opens and hands to the adapter's `build` at start-up and whenever it changes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..config import env_secret

if TYPE_CHECKING:
    from ..config import Provider


def api_key_of(provider: Provider, stored: str | None, what: str) -> str | None:
    """The key to send: `stored` for a provider whose key lives in the store (None until one is set),
    else the one in `auth.api_key_env` (`what` is that key path, for the error when it is unset)."""
    if provider.auth.api_key_from == "store":
        return stored
    return env_secret(provider.auth.api_key_env, what=what)
