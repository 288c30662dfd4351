"""The operator's console at `/console`: server-rendered pages over the admin API (docs/console.md).

One handler for every path under `/console`, declared in `PAGES` (method, path pattern, who may open it,
handler). For each request, in order: the packaged static files and the login form answer without a
session; every other page needs a session cookie (api/console/session.py), whose credential is
identified again by the gateway's authenticator (a revoked key ends the session here) and checked against the
ended sessions (api/console/ends.py: a logout, an org-admin's cut-off); a POST must carry
the session's CSRF token and, when the browser sends one, an Origin naming this host; the viewer's role
must be one the page allows; then the page reads the admin API as the viewer (api/console/views.py), so a
tenant-admin opening another tenant's page by its URL gets the admin API's 403. Errors are pages, not
JSON; nothing a page shows is a secret (a new key's secret once, on the answer to its creation).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from ...config.console import ConsoleConfig
from ...config.oidc import IssuerConfig
from ...identity.authenticator import Authenticator
from ...schema.errors import ApiError, echo
from ...schema.principal import AUDITOR, ORG_ADMIN, TENANT_ADMIN, Principal
from ..asgi import ClientGone, Header, Receive, Send, header
from ..pipeline import Call
from . import web
from .ends import SessionEnds
from .session import COOKIE, Session, SessionError, Sessions, csrf_ok, session_key
from .sso import PENDING_COOKIE, SingleSignOn, SsoError
from .views import Parts, Views

if TYPE_CHECKING:
    import jinja2

log = logging.getLogger("multihome.console")

PREFIX = "/console"
CONSOLE_ROLES = frozenset({ORG_ADMIN, TENANT_ADMIN, AUDITOR})
_ADMINS = frozenset({ORG_ADMIN, TENANT_ADMIN})
_ORG = frozenset({ORG_ADMIN})
_EVERY = CONSOLE_ROLES
# Fixed notices a redirect may name (`?notice=`): the page never echoes text from the URL as a message.
NOTICES = {
    "revoked": "Key revoked: it no longer authenticates on any replica.",
    "team": "Team created.",
    "tenant": "Tenant created.",
    "logged_out": "Logged out: this session no longer opens on any replica.",
    "logged_out_here": (
        "Logged out in this browser. The gateway could not record the logout for its other replicas: "
        "a copy of this session's cookie may still open there until the session times out."
    ),
    "logged_out_local": (
        "Logged out in this browser and on this gateway process. Without storage the gateway keeps no record of "
        "sessions: a copy of this session's cookie still opens on other replicas until the session times out."
    ),
    "ended": (
        "Your session ended: it was logged out or ended by an administrator, its key was revoked or expired, "
        "or it timed out. Log in again."
    ),
}


@dataclass
class Request:
    """One console request as a page handler sees it."""

    call: Call
    receive: Receive
    send: Send
    params: dict[str, str]
    query: dict[str, str]
    viewer: Principal | None = None
    session: Session | None = None
    fields: dict[str, str] = field(default_factory=dict)  # a POST's form, each field's last value


PageHandler = Callable[["Console", Request], Awaitable[None]]


@dataclass(frozen=True)
class Page:
    method: str
    path: str  # under /console; `{name}` is one path segment
    roles: frozenset[str] | None  # who may open it; None: no session needed
    handler: PageHandler
    nav: str | None = None  # the menu entry it belongs to
    pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        regex = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[A-Za-z0-9_.\\-]+)", re.escape(self.path))
        object.__setattr__(self, "pattern", re.compile(f"^{regex}$"))


# The menu: (entry, title, who sees it). A page's own `roles` is what is enforced; the menu only hides.
MENU = (
    ("overview", "Overview", _ADMINS),
    ("routing", "Routing", _ADMINS),
    ("tenants", "Tenants & keys", _ADMINS),
    ("spend", "Spend", _ADMINS),
    ("contracts", "Contracts", _ORG),
    ("audit", "Audit", _EVERY),
    ("state", "State", _ADMINS),
)


class Console:
    def __init__(
        self,
        parts: Parts,
        auth: Authenticator,
        config: ConsoleConfig,
        issuers: Sequence[IssuerConfig] = (),
        ends: SessionEnds | None = None,
    ) -> None:
        self.views = Views(parts)
        self.ends = ends if ends is not None else SessionEnds()  # without storage: this process's logouts
        self.auth = auth
        self.config = config
        self.sessions = Sessions(session_key(config), config.session_ttl_s)
        self.sso = None
        if config.oidc is not None:  # the config check made sure it names one of identity.oidc
            issuer = next(i for i in issuers if i.name == config.oidc.issuer)
            self.sso = SingleSignOn(config.oidc, issuer.issuer, self.sessions)

    @cached_property
    def templates(self) -> jinja2.Environment:
        """Made on the first page, not at gateway start: `import jinja2` is ~0.1 s of every process's start."""
        import jinja2

        templates = jinja2.Environment(
            loader=jinja2.PackageLoader(__package__ or "multihome.api.console", "templates"),
            autoescape=True,  # every value is escaped unless a template says otherwise (none does)
            # A field an older event or record lacks renders empty rather than failing the whole page.
            undefined=jinja2.Undefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        templates.filters["money"] = _money
        templates.filters["when"] = _when
        return templates

    # -- dispatch -----------------------------------------------------------------------------------

    async def handle(self, call: Call, receive: Receive, send: Send) -> None:
        scope = call.scope
        path = scope["path"][len(PREFIX) :] or "/"

        async def noting_status(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                call.status = message["status"]
            await send(message)

        req = Request(call, receive, noting_status, {}, web.query(scope))
        try:
            page = self._match(scope["method"], path, req)
            if page.roles is not None:
                if not await self._identify(req):
                    return
                assert req.viewer is not None
                if not req.viewer.roles & page.roles:
                    raise ApiError(
                        403, "Your role cannot open this page.", type="permission_error", code="insufficient_role"
                    )
            if scope["method"] == "POST":
                req.fields = {k: v[-1] for k, v in (await web.form(scope, receive)).items()}
                if not web.same_origin(scope) or (
                    page.roles is not None and (req.session is None or not csrf_ok(req.session, req.fields.get("csrf")))
                ):
                    raise ApiError(
                        403,
                        "The form is stale or came from another site; reload the page and retry.",
                        type="permission_error",
                        code="csrf",
                    )
            await page.handler(self, req)
        except ApiError as err:
            await self._error(req, err)
        except ClientGone:
            raise
        except Exception:
            log.exception("console: unexpected error serving %s %s", scope["method"], scope["path"])
            failure = ApiError(500, "The console hit an unexpected error; it has been logged.", code="server_error")
            await self._error(req, failure)

    def _match(self, method: str, path: str, req: Request) -> Page:
        allowed = False
        for page in PAGES:
            m = page.pattern.match(path)
            if m:
                if page.method == method:
                    req.params = m.groupdict()
                    return page
                allowed = True
        if allowed:
            raise ApiError(405, f"Method {method} is not allowed here.", code="method_not_allowed")
        raise ApiError(404, "There is no such page.", code="not_found")

    async def _identify(self, req: Request) -> bool:
        """The session's credential, identified again now; False (after redirecting to login) if it no longer is."""
        try:
            req.session = self.sessions.open(web.cookie_parts(req.call.scope, COOKIE))
        except SessionError:
            await self._to_login(req, None)
            return False
        try:
            viewer = await self.auth.admin(
                {"headers": [(b"authorization", b"Bearer " + req.session.credential.encode())]}
            )
        except ApiError:
            await self._to_login(req, "ended")
            return False
        if not viewer.roles & CONSOLE_ROLES or self.ends.ended(req.session, viewer):
            await self._to_login(req, "ended")
            return False
        req.viewer = viewer
        req.call.principal = viewer  # the access log names who browsed
        return True

    async def _to_login(self, req: Request, notice: str | None) -> None:
        scope = req.call.scope
        target = scope["path"] + ("?" + scope["query_string"].decode() if scope.get("query_string") else "")
        query = {"next": target} if scope["method"] == "GET" else {}
        if notice:
            query["notice"] = notice
        location = f"{PREFIX}/login" + ("?" + urlencode(query) if query else "")
        clear = self._clear(req) if notice else []
        if header(scope, b"hx-request") is not None:  # htmx follows a redirect inside the page: leave it instead
            await web.send_html(req.send, 200, "", [(b"hx-redirect", location.encode()), *clear])
            return
        await web.redirect(req.send, location, clear)

    def _clear(self, req: Request) -> list[Header]:
        """The session's cookies removed from the browser (each part of a long one)."""
        return web.clear_cookie_parts(req.call.scope, COOKIE, secure=self.config.secure_cookie)

    async def _error(self, req: Request, err: ApiError) -> None:
        body = err.body
        await self.render(
            req, "error.html", {"status": err.status, "message": body.message, "code": body.code}, status=err.status
        )

    # -- rendering ----------------------------------------------------------------------------------

    async def render(
        self, req: Request, template: str, context: dict[str, Any], *, status: int = 200, nav: str | None = None
    ) -> None:
        viewer = req.viewer
        menu = [(key, title) for key, title, roles in MENU if viewer is not None and viewer.roles & roles]
        html = self.templates.get_template(template).render(
            viewer=viewer,
            is_org=viewer is not None and ORG_ADMIN in viewer.roles,
            menu=menu,
            nav=nav,
            csrf=req.session.csrf if req.session is not None else "",
            notice=NOTICES.get(req.query.get("notice", "")),
            prefix=PREFIX,
            sso=self.config.oidc.button if self.config.oidc is not None else None,
            **context,
        )
        await web.send_html(req.send, status, html)

    # -- pages --------------------------------------------------------------------------------------

    async def static(self, req: Request) -> None:
        await web.send_static(req.send, req.params["name"])

    async def vendored(self, req: Request) -> None:
        await web.send_static(req.send, "vendor/" + req.params["name"])

    async def login_form(self, req: Request) -> None:
        await self.render(req, "login.html", {"next": _local(req.query.get("next")), "failed": None})

    async def login(self, req: Request) -> None:
        credential = req.fields.get("key", "").strip()
        target = _local(req.fields.get("next"))
        try:
            if not credential or not credential.isascii() or not credential.isprintable():
                raise ApiError(401, "Enter an API key.", code="invalid_api_key")
            viewer = await self.auth.admin({"headers": [(b"authorization", b"Bearer " + credential.encode())]})
        except ApiError:
            failed = "That key is unknown, revoked or expired."
            await self.render(req, "login.html", {"next": target, "failed": failed}, status=401)
            return
        if not await self._may_log_in(req, viewer, target):
            return
        cookies = await self._session(req, viewer, credential, target)
        if cookies is not None:
            await web.redirect(req.send, target or _home(viewer), cookies)

    async def _may_log_in(self, req: Request, viewer: Principal, target: str | None) -> bool:
        if viewer.roles & CONSOLE_ROLES:
            return True
        failed = "This key has no console role (org-admin, tenant-admin or auditor)."
        await self.render(req, "login.html", {"next": target, "failed": failed}, status=403)
        return False

    async def _session(
        self, req: Request, viewer: Principal, credential: str, target: str | None
    ) -> list[Header] | None:
        """The session's cookies for a credential that just identified `viewer` (several for a long ID token);
        None, after saying so on the login form, for one too long to keep in cookies at all."""
        _, sealed = self.sessions.new(credential)
        secure = self.config.secure_cookie or web.https(req.call.scope)
        scope = req.call.scope
        try:
            cookies = web.set_cookie_parts(scope, COOKIE, sealed, secure=secure, max_age=int(self.config.session_ttl_s))
        except ValueError:
            failed = (
                f"This credential ({len(credential)} characters) is too long to keep in a browser session; ask "
                "your identity provider to put fewer claims (such as groups) in the ID token."
            )
            await self.render(req, "login.html", {"next": target, "failed": failed}, status=400)
            return None
        log.info("console login: %s (%s)", viewer.subject, ", ".join(sorted(viewer.roles)))
        return cookies

    async def sso_start(self, req: Request) -> None:
        if self.sso is None:
            raise ApiError(404, "Single sign-on is not configured (console.oidc).", code="not_found")
        scope = req.call.scope
        origin = ("https" if web.https(scope) else "http") + "://" + (header(scope, b"host") or b"").decode("latin-1")
        try:
            location, pending = await self.sso.start(origin + PREFIX + "/oidc/callback", _local(req.query.get("next")))
        except SsoError as exc:
            await self.render(req, "login.html", {"next": None, "failed": str(exc)}, status=503)
            return
        # Lax, not Strict: the provider sends the browser back here from its own site.
        secure = self.config.secure_cookie or web.https(scope)
        cookie = web.set_cookie(PENDING_COOKIE, pending, secure=secure, max_age=600, same_site="Lax")
        await web.redirect(req.send, location, [cookie])

    async def sso_callback(self, req: Request) -> None:
        if self.sso is None:
            raise ApiError(404, "Single sign-on is not configured (console.oidc).", code="not_found")
        q, clear = req.query, web.set_cookie(PENDING_COOKIE, "", secure=False, max_age=0, same_site="Lax")
        try:
            if q.get("error"):
                # Anyone can link here with an `error` of their own: its start only, as every echo of a client's value.
                raise SsoError(f"The identity provider refused the sign-on ({echo(q['error'])}).")
            pending = self.sso.pending(web.cookie(req.call.scope, PENDING_COOKIE), q.get("state"))
            token = await self.sso.token(pending, q.get("code", ""))
            try:
                viewer = await self.auth.admin({"headers": [(b"authorization", b"Bearer " + token.encode())]})
            except ApiError as err:
                raise SsoError(f"The ID token was refused: {err.body.message}") from None
            self.sso.check_nonce(token, pending)
        except SsoError as exc:
            await self.render(req, "login.html", {"next": None, "failed": str(exc)}, status=401)
            return
        if not await self._may_log_in(req, viewer, pending.next):
            return
        # A page that moves on by itself: the Strict session cookie is sent on that same-site navigation
        # (on a redirect that began at the provider's site, the browser would hold it back).
        cookies = await self._session(req, viewer, token, pending.next)
        if cookies is None:
            return
        target = pending.next or _home(viewer)
        html = self.templates.get_template("signed_in.html").render(target=target, prefix=PREFIX)
        await web.send_html(req.send, 200, html, [*cookies, clear])

    async def logout(self, req: Request) -> None:
        assert req.session is not None and req.viewer is not None
        spread = await self.ends.end(req.session, req.viewer)
        notice = ("logged_out" if spread else "logged_out_here") if self.ends.stored else "logged_out_local"
        await web.redirect(req.send, f"{PREFIX}/login?notice={notice}", self._clear(req))

    async def home(self, req: Request) -> None:
        assert req.viewer is not None
        await web.redirect(req.send, f"{PREFIX}/overview" if req.viewer.roles & _ADMINS else f"{PREFIX}/audit")

    async def overview(self, req: Request) -> None:
        assert req.viewer is not None
        view = await self.views.overview(req.viewer, req.query)
        template = "overview_live.html" if req.query.get("fragment") else "overview.html"
        tenants = await self.views.tenants(req.viewer)
        await self.render(req, template, {**view, "tenants": tenants}, nav="overview")

    async def routing(self, req: Request, explained: dict[str, Any] | None = None) -> None:
        assert req.viewer is not None
        view = await self.views.routing(req.viewer, req.query)
        if explained is not None:
            view["explain_form"] = explained["form"]
        await self.render(req, "routing.html", {**view, "explained": explained}, nav="routing")

    async def explain(self, req: Request) -> None:
        assert req.viewer is not None
        form = {k: req.fields.get(k, "") for k in ("tenant", "key_id", "model", "stream", "tools", "work")}
        try:
            result: dict[str, Any] = {"plan": await self.views.explain(req.viewer, form, req.call.scope)}
        except ApiError as err:  # a denial or an unknown model is the answer to show, not an error page
            if err.status in (401, 403) and err.body.code in ("other_tenant", "insufficient_role"):
                raise
            result = {"error": err.body.message, "code": err.body.code}
        await self.routing(req, {**result, "form": form})

    async def tenants(self, req: Request) -> None:
        assert req.viewer is not None
        if ORG_ADMIN not in req.viewer.roles:  # a tenant-admin has one tenant
            await web.redirect(req.send, f"{PREFIX}/tenants/{quote(req.viewer.tenant)}")
            return
        await self.render(req, "tenants.html", {"tenants": await self.views.tenants(req.viewer)}, nav="tenants")

    async def create_tenant(self, req: Request) -> None:
        assert req.viewer is not None
        created = await self.views.create_tenant(req.viewer, req.fields)
        await web.redirect(req.send, f"{PREFIX}/tenants/{quote(created['id'])}?notice=tenant")

    async def tenant(self, req: Request, new_key: dict[str, Any] | None = None, status: int = 200) -> None:
        assert req.viewer is not None
        view = await self.views.tenant(req.viewer, req.params["tenant"])
        await self.render(req, "tenant.html", {**view, "new_key": new_key}, nav="tenants", status=status)

    async def create_key(self, req: Request) -> None:
        assert req.viewer is not None
        created = await self.views.create_key(req.viewer, req.params["tenant"], req.fields)
        await self.tenant(req, new_key=created, status=201)  # the secret, once: this answer is not cached

    async def revoke_key(self, req: Request) -> None:
        assert req.viewer is not None
        tenant = req.params["tenant"]
        await self.views.revoke_key(req.viewer, tenant, req.params["id"])
        await web.redirect(req.send, f"{PREFIX}/tenants/{quote(tenant)}?notice=revoked")

    async def create_team(self, req: Request) -> None:
        assert req.viewer is not None
        tenant = req.params["tenant"]
        await self.views.create_team(req.viewer, tenant, req.fields)
        await web.redirect(req.send, f"{PREFIX}/tenants/{quote(tenant)}?notice=team")

    async def spend(self, req: Request) -> None:
        assert req.viewer is not None
        view = await self.views.spend(req.viewer, req.query)
        tenants = await self.views.tenants(req.viewer)
        csv_query = urlencode(
            {k: v for k, v in req.query.items() if k in ("tenant", "group_by", "interval", "start", "end")}
        )
        await self.render(req, "spend.html", {**view, "tenants": tenants, "csv_query": csv_query}, nav="spend")

    async def spend_csv(self, req: Request) -> None:
        assert req.viewer is not None
        view = await self.views.spend(req.viewer, req.query)
        name = f'attachment; filename="multihome-spend-by-{view["group_by"]}-per-{view["interval"]}.csv"'
        await web.send_text(
            req.send, b"text/csv; charset=utf-8", self.views.spend_csv(view), [(b"content-disposition", name.encode())]
        )

    async def contracts(self, req: Request) -> None:
        assert req.viewer is not None
        await self.render(req, "contracts.html", await self.views.contracts(req.viewer, req.query), nav="contracts")

    async def audit(self, req: Request) -> None:
        assert req.viewer is not None
        view = await self.views.audit(req.viewer, req.query)
        await self.render(req, "audit.html", view, nav="audit")

    async def verification(self, req: Request) -> None:
        assert req.viewer is not None
        view = {"verification": await self.views.verification(req.viewer)}
        await self.render(req, "audit_verification.html", view, nav="audit")

    async def state(self, req: Request) -> None:
        assert req.viewer is not None
        view = await self.views.state(req.viewer, req.query)
        tenants = await self.views.tenants(req.viewer)
        await self.render(req, "state.html", {**view, "tenants": tenants}, nav="state")

    async def run(self, req: Request) -> None:
        assert req.viewer is not None
        view = await self.views.run(req.viewer, req.params["id"], req.query)
        await self.render(req, "run.html", view, nav="state")


PAGES: tuple[Page, ...] = (
    Page("GET", "/static/{name}", None, Console.static),
    Page("GET", "/static/vendor/{name}", None, Console.vendored),
    Page("GET", "/login", None, Console.login_form),
    Page("POST", "/login", None, Console.login),
    Page("GET", "/login/oidc", None, Console.sso_start),
    Page("GET", "/oidc/callback", None, Console.sso_callback),
    Page("POST", "/logout", _EVERY, Console.logout),
    Page("GET", "/", _EVERY, Console.home),
    Page("GET", "/overview", _ADMINS, Console.overview, "overview"),
    Page("GET", "/routing", _ADMINS, Console.routing, "routing"),
    Page("POST", "/routing/explain", _ADMINS, Console.explain, "routing"),
    Page("GET", "/tenants", _ADMINS, Console.tenants, "tenants"),
    Page("POST", "/tenants", _ORG, Console.create_tenant, "tenants"),
    Page("GET", "/tenants/{tenant}", _ADMINS, Console.tenant, "tenants"),
    Page("POST", "/tenants/{tenant}/keys", _ADMINS, Console.create_key, "tenants"),
    Page("POST", "/tenants/{tenant}/keys/{id}/revoke", _ADMINS, Console.revoke_key, "tenants"),
    Page("POST", "/tenants/{tenant}/teams", _ADMINS, Console.create_team, "tenants"),
    Page("GET", "/spend", _ADMINS, Console.spend, "spend"),
    Page("GET", "/spend.csv", _ADMINS, Console.spend_csv, "spend"),
    Page("GET", "/contracts", _ORG, Console.contracts, "contracts"),
    Page("GET", "/audit", _EVERY, Console.audit, "audit"),
    Page("GET", "/audit/verification", _EVERY, Console.verification, "audit"),
    Page("GET", "/state", _ADMINS, Console.state, "state"),
    Page("GET", "/state/runs/{id}", _ADMINS, Console.run, "state"),
)


def _home(viewer: Principal) -> str:
    return f"{PREFIX}/overview" if viewer.roles & _ADMINS else f"{PREFIX}/audit"


def _local(target: str | None) -> str | None:
    """A `next` target only if it is a console path on this host (no open redirect to another site), without a
    control character (a header value with one is refused by the HTTP server: the answer would be cut)."""
    if (
        target
        and target.startswith(PREFIX + "/")
        and not target.startswith("//")
        and "\\" not in target
        and target.isprintable()
    ):
        return target
    return None


def _money(value: Any, currency: str = "") -> str:
    try:
        text = f"{float(value):,.6f}".rstrip("0").rstrip(".")
    except (TypeError, ValueError):
        return str(value)
    return f"{text} {currency}".strip()


def _when(value: Any) -> str:
    """An ISO time or unix seconds, as `YYYY-MM-DD HH:MM:SS` UTC."""
    import datetime as dt

    if value is None or value == "":
        return ""
    if isinstance(value, (int, float)):
        return dt.datetime.fromtimestamp(value, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    return str(value).replace("T", " ")[:19]
