"""Schemathesis against a running gateway: every operation of an OpenAPI document, its coverage
cases (boundaries, missing and wrong-typed fields) and Hypothesis-generated cases, valid and
invalid, sent with valid credentials; every 5xx, timeout (a hang) and dropped connection noted.
Also the report both fuzz runners fill (this and hostile_http.py) and the gateway-log check.

Used by the bounded run in the test suite (tests/fuzz/test_openapi_fuzz.py) and the long run in
bench/ (bench/fuzz_long.py). Written against schemathesis 4.x: the pytest integration
(`schemathesis.pytest.from_fixture`) does not run under pytest 9, so this drives the documented
building blocks itself: `openapi.from_dict`, `APIOperation.as_strategy`, `iter_coverage_cases`,
`Case.call`, `Case.as_curl_command`.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from .strategies import LONG_RUN, LONG_VALUE

MODES = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]
# Values generation rarely reaches by chance, mixed into every string, integer and number it
# generates: header and log injection, NUL, bidi, huge and tiny numbers, dates at the edges of
# the calendar, 64-bit edges, paths, URLs the gateway must never fetch, wildcard-looking names.
HOSTILE = {
    "string": [
        "\r\nX-Injected: 1",
        "a\x00b",
        "\u202egnp.exe",
        "9" * 40,
        "-1",
        "0001-01-01T00:00:00Z",
        "9999-12-31T23:59:59+23:59",
        "1e400",
        "NaN",
        "../../etc/passwd",
        "http://127.0.0.1:9/x.png",
        "data:image/png;base64,!!!",
        "*",
        "legal-*",
        "{",
        "\U0001f600" * 3,
        LONG_VALUE,
    ],
    "integer": [2**63, -(2**63) - 1, 2**64, 10**30, -(10**30), -1, 0],
    "number": [1e300, -1e300, 1e-300, 2**53 + 1, -0.0, 3.5e38],
}


@dataclass
class Finding:
    operation: str
    outcome: str  # "HTTP 5xx", "timeout", "connection error"
    curl: str
    detail: str
    request_id: str | None = None  # from x-request-id, to find the gateway's log lines


@dataclass
class Report:
    calls: int = 0
    statuses: Counter = field(default_factory=Counter)
    findings: list[Finding] = field(default_factory=list)
    tolerated: list[tuple[str, Finding]] = field(default_factory=list)  # (why, finding): known elsewhere
    per_operation: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def record(self, finding: Finding, why: str | None) -> None:
        (self.tolerated.append((why, finding)) if why else self.findings.append(finding))

    def summary(self) -> str:
        codes = ", ".join(f"{k}: {v}" for k, v in sorted(self.statuses.items(), key=lambda kv: str(kv[0])))
        return (
            f"{self.calls} calls in {self.seconds:.0f} s over {len(self.per_operation)} operations; "
            f"statuses {codes}; {len(self.findings)} findings, {len(self.tolerated)} tolerated (known elsewhere)"
        )


def public_document(base_url: str, chat_groups: list[str], embedding_groups: list[str]) -> dict:
    """The served public document, with `model` narrowed to the gateway's groups so generated calls
    reach the routing, the translators and the upstreams instead of stopping at 404 model_not_found."""
    doc = httpx.get(base_url + "/openapi.json", timeout=10).json()
    schemas = doc["components"]["schemas"]
    for name in ("ChatCompletionRequest", "MessagesRequest", "CountTokensRequest"):
        schemas[name]["properties"]["model"] = {"type": "string", "enum": chat_groups}
    schemas["EmbeddingsRequest"]["properties"]["model"] = {"type": "string", "enum": embedding_groups}
    return doc


def admin_document(base_url: str, tenant: str) -> dict:
    """The served admin document, with `{tenant}` pinned to a live tenant (except on its own DELETE)
    so bodies are decoded and checked for real instead of stopping at 404."""
    doc = httpx.get(base_url + "/admin/v1/openapi.json", timeout=10).json()
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            if (method, path) == ("delete", "/admin/v1/tenants/{tenant}"):
                continue
            for param in operation.get("parameters", []):
                if (param["name"], param["in"]) == ("tenant", "path"):
                    param["schema"] = {"type": "string", "enum": [tenant]}
    return doc


class Runner:
    """`auth`: headers that make every call authorised.
    `known(method, path, body, query, outcome) -> str | None`: why a finding is tolerated (it is
    fixed on another branch; tests/fuzz/known.py)."""

    def __init__(
        self, doc: dict, base_url: str, auth: dict[str, str], *, timeout_s: float = 10.0, known: Callable | None = None
    ) -> None:
        # Credentials come from `auth`, not from generation: the point is what a key holder can send.
        config = schemathesis.Config.from_dict(
            {
                "base-url": base_url,
                "dictionaries": {f"hostile-{kind}": {"values": values} for kind, values in HOSTILE.items()},
                "generation": {
                    "with-security-parameters": False,
                    "dictionaries": {kind: {"dictionary": f"hostile-{kind}", "probability": 0.25} for kind in HOSTILE},
                },
            }
        )
        self.schema = schemathesis.openapi.from_dict(doc, config=config)
        self.base_url = base_url
        self.auth = auth
        self.timeout_s = timeout_s
        self.known = known or (lambda method, path, body, query, outcome: None)
        self.session = requests.Session()
        self.report = Report()

    def operations(self, skip: Callable[[str], bool] = lambda label: False):
        for result in self.schema.get_all_operations():
            operation = result.ok()
            if not skip(operation.label):
                yield operation

    def run(
        self,
        *,
        examples: int,
        run_seed: int | None,
        coverage: int | None,
        deadline: float | None = None,
        skip: Callable[[str], bool] = lambda label: False,
    ) -> Report:
        """Per operation: up to `coverage` coverage cases (None: all), then `examples` generated
        cases (valid and invalid). `run_seed` None: a new random seed. `deadline`: monotonic time
        after which no new case starts."""
        start = time.monotonic()
        for operation in self.operations(skip):
            if _late(deadline):
                break
            self._coverage(operation, coverage, deadline)
            self._generated(operation, examples, run_seed, deadline)
        self.report.seconds += time.monotonic() - start
        return self.report

    def _coverage(self, operation, limit: int | None, deadline: float | None) -> None:
        if limit == 0:
            return
        config = self.schema.config.generation_for(operation=operation, phase="coverage")
        for i, case in enumerate(
            self.schema.iter_coverage_cases(operation, generation_modes=MODES, generation_config=config)
        ):
            if (limit is not None and i >= limit) or _late(deadline):
                return
            self.send(case)

    def _generated(self, operation, examples: int, run_seed: int | None, deadline: float | None) -> None:
        if examples == 0:
            return
        strategy = st.one_of(*(operation.as_strategy(generation_mode=mode) for mode in MODES))

        @settings(
            max_examples=examples,
            database=None,
            deadline=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=strategy)
        def fuzz(case) -> None:
            if not _late(deadline):
                self.send(case)

        if run_seed is not None:
            fuzz = seed(run_seed)(fuzz)
        fuzz()

    def send(self, case) -> None:
        headers = dict(self.auth)
        label = case.operation.label
        self.report.calls += 1
        self.report.per_operation[label] = self.report.per_operation.get(label, 0) + 1
        try:
            response = case.call(base_url=self.base_url, session=self.session, headers=headers, timeout=self.timeout_s)
        except requests.Timeout:
            self._note(case, None, "timeout", f"no answer within {self.timeout_s:g} s")
            return
        except requests.ConnectionError as exc:
            self._note(case, None, "connection error", str(exc)[:300])
            return
        except (ValueError, TypeError, UnicodeError) as exc:
            # The client library refused to send it (e.g. a header value it cannot encode): not a call.
            self.report.calls -= 1
            self.report.statuses[f"unsendable ({type(exc).__name__})"] += 1
            return
        self.report.statuses[response.status_code] += 1
        if response.status_code >= 500:
            self._note(case, response, f"HTTP {response.status_code}", response.text[:500])
        elif response.status_code >= 400 and LONG_RUN in response.text:  # an error shows a long value's start only
            self._note(case, response, "a long value repeated whole", response.text[:500])

    def _note(self, case, response, outcome: str, detail: str) -> None:
        request_id = (response.headers.get("x-request-id") or [None])[0] if response is not None else None
        finding = Finding(case.operation.label, outcome, case.as_curl_command(), detail, request_id)
        body = response.request.body if response is not None else _encoded(case.body)
        why = self.known(
            case.method,
            case.formatted_path,
            body if isinstance(body, bytes) else (body or "").encode(),
            case.query,
            outcome,
        )
        self.report.record(finding, why)


def _encoded(body) -> bytes | None:
    try:
        return json.dumps(body).encode()
    except (TypeError, ValueError):
        return None  # NOT_SET (no body) or something JSON cannot hold


def _late(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() > deadline


def unexpected_errors(log: str, tolerated: list[tuple[str, Finding]], logged_as: dict[str, str]) -> list[str]:
    """Each 'unexpected error' the gateway logged (with its traceback), except those of tolerated
    findings: matched by request id, or, for a dropped connection (no id), by the exception its
    finding is known to log (`logged_as`: finding number -> exception line)."""
    ids = {f.request_id for _, f in tolerated if f.request_id}
    causes = {logged_as[_number(why)] for why, f in tolerated if f.request_id is None and _number(why) in logged_as}
    entries, current = [], None
    for line in log.splitlines():
        if "unexpected error" in line:
            current = [line]
            entries.append(current)
        elif current is not None and (
            line.startswith((" ", "Traceback")) or re.match(r"^\w+(\.\w+)*(Error|Exception)", line)
        ):
            current.append(line)
        else:
            current = None
    texts = ["\n".join(e) for e in entries]
    return [t for t in texts if not any(rid in t for rid in ids) and not any(cause in t for cause in causes)]


def _number(why: str) -> str:
    """'finding 10 (branch): ...' -> '10'."""
    return why.split(" ", 2)[1] if why.startswith("finding ") else ""
