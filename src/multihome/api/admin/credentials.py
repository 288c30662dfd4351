"""Admin resource: provider credentials, `/admin/v1/provider-credentials...` (org-admin only).

A provider whose config says `auth.api_key_from: store` takes its API key from here. `PUT` sets or
rotates it (sealed under the organisation's `credentials` data key before it is written: a KMS
that cannot be reached answers 503 and nothing is stored), `DELETE` removes it. This replica's
adapter uses the new key from the next call on; other replicas within `storage.refresh_s`. No
answer ever holds the key: a `GET` says whether one is set, when and by whom, and its last 4
characters (docs/encryption.md "Provider credentials").
"""

from __future__ import annotations

from typing import Any

from ...schema.errors import ApiError, echo
from ...storage.row_reads import unreadable
from . import bodies as B
from .rbac import ORG
from .route import PREFIX, AdminCall, Needs, Route, Services, listing

R = PREFIX + "/provider-credentials"


def _view(s: Services, provider: str, info: Any) -> B.ProviderCredentialView:
    creds = s.crypto.credentials
    if provider not in creds.providers:
        return B.ProviderCredentialView(provider, "env", False)
    if info is None:
        return B.ProviderCredentialView(provider, "store", False)
    return B.ProviderCredentialView(
        provider,
        "store",
        True,
        fingerprint=info.fingerprint or None,
        version=info.version,
        updated_at=info.updated_at,
        updated_by=info.updated_by,
    )


def _stored(s: Services, provider: str, *, writing: bool) -> None:
    """404 for a provider the config does not name; 409 (on a change) for one whose key is not stored here."""
    creds = s.crypto.credentials
    if provider not in creds.configured:
        known = ", ".join(creds.configured) or "none"
        raise ApiError(404, f"Provider {echo(provider)} is not in the config (providers: {known}).", code="not_found")
    if writing and provider not in creds.providers:
        raise ApiError(
            409,
            f"Provider {provider} takes its key from its config (auth.api_key_env or another method); set "
            f"providers.{provider}.auth.api_key_from: store to keep it here, sealed.",
            code="conflict",
        )


async def list_provider_credentials(s: Services, c: AdminCall) -> Any:
    creds = s.crypto.credentials
    infos, bad = await creds.store.infos()
    # A row that cannot be read is named beside the list, not shown as "not set" (its key may be in use).
    views = [_view(s, p, infos.get(p)) for p in creds.configured if p not in bad]
    return listing(views, bad.values())


async def get_provider_credential(s: Services, c: AdminCall) -> Any:
    provider = c.params["provider"]
    _stored(s, provider, writing=False)
    infos, bad = await s.crypto.credentials.store.infos()
    if provider in bad:
        raise unreadable("provider credential", bad[provider])
    return _view(s, provider, infos.get(provider))


async def set_provider_credential(s: Services, c: AdminCall) -> Any:
    provider = c.params["provider"]
    _stored(s, provider, writing=True)
    body: B.SetProviderCredential = c.body
    creds = s.crypto.credentials
    info = await creds.store.put(provider, body.api_key, c.who.subject)  # sealed first: KmsError -> 503, nothing stored
    await creds.sync(only=provider)  # this replica's adapter sends it from the next call on
    return _view(s, provider, info)


async def delete_provider_credential(s: Services, c: AdminCall) -> Any:
    provider = c.params["provider"]
    _stored(s, provider, writing=True)
    creds = s.crypto.credentials
    if not await creds.store.delete(provider):
        raise ApiError(404, f"Provider {echo(provider)} has no stored API key.", code="not_found")
    await creds.sync(only=provider)
    return {"id": provider, "object": "provider_credential.deleted", "deleted": True}


_NEEDS = Needs(
    lambda s: s.crypto, "Provider credentials are kept sealed in the database: set storage.url in the config."
)
ROUTES = (
    Route(
        "GET",
        R,
        ORG,
        list_provider_credentials,
        "Every provider in the config: whether its API key is kept here (auth.api_key_from: store), set, "
        "when and by whom; never the key",
        needs=_NEEDS,
    ),
    Route(
        "GET",
        R + "/{provider}",
        ORG,
        get_provider_credential,
        "One provider's stored API key: set or not, version, when, by whom, last 4 characters; never the key",
        response=B.ProviderCredentialView,
        needs=_NEEDS,
    ),
    Route(
        "PUT",
        R + "/{provider}",
        ORG,
        set_provider_credential,
        "Set or rotate a provider's API key (auth.api_key_from: store): sealed under the KMS before it is "
        "stored (503 when the KMS cannot be reached); used from the next call on",
        B.SetProviderCredential,
        response=B.ProviderCredentialView,
        event="provider_credential.set",
        refresh=False,
        needs=_NEEDS,
    ),
    Route(
        "DELETE",
        R + "/{provider}",
        ORG,
        delete_provider_credential,
        "Delete a provider's stored API key: calls to it go without a key until one is set again",
        event="provider_credential.delete",
        refresh=False,
        needs=_NEEDS,
    ),
)
