"""Every 403 the gateway answers is typed `permission_error` (OpenAI's SDK raises PermissionDeniedError
for it; Anthropic's envelope types it so too): by default, and wherever a 403 is raised with a type."""

from __future__ import annotations

import ast
from pathlib import Path

import multihome
from multihome.schema.errors import ApiError

SRC = Path(multihome.__file__).parent


def test_a_403_is_a_permission_error_by_default_and_other_statuses_are_not():
    assert ApiError(403, "no").body.type == "permission_error"
    assert ApiError(400, "bad").body.type == "invalid_request_error"
    assert ApiError(404, "gone").body.type == "invalid_request_error"
    assert ApiError(403, "no", type="permission_error").body.type == "permission_error"


def test_no_403_in_the_source_is_given_another_type():
    wrong = []
    for path in SRC.rglob("*.py"):
        if "simulators" in path.parts:
            continue  # the upstreams' own error shapes
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "ApiError" and node.args):
                continue
            status = node.args[0]
            if not (isinstance(status, ast.Constant) and status.value == 403):
                continue
            for kw in node.keywords:
                if kw.arg == "type" and not (
                    isinstance(kw.value, ast.Constant) and kw.value.value == "permission_error"
                ):
                    wrong.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert wrong == []
