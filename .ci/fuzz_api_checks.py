"""Schemathesis checks of .ci/fuzz-api (loaded with SCHEMATHESIS_HOOKS).

pinfleet's rules for every answer, beyond the document's schemas: no 5xx
but 503 (no quorum, a full write queue, no controller here) and a path
pin's 500 `cannot resolve …` (IPFS Cluster's answer), and every
error a small JSON `{"code", "message"}` whose code is the HTTP status.
"""

import json

import schemathesis

MAX_ERROR_BODY = 64 * 1024


PATH_PIN_PREFIXES = ("/pins/ipfs/", "/pins/ipns/", "/pins/ipld/")


@schemathesis.check
def no_server_error_but_503(ctx, response, case):
    status = response.status_code
    if status < 500 or status == 503:
        return
    # A path the IPFS node cannot resolve is IPFS Cluster's 500 (every
    # resolve error is); the message says so.
    path = case.formatted_path
    if (
        status == 500
        and path.startswith(PATH_PIN_PREFIXES)
        and response.text.startswith('{"code":500,"message":"cannot resolve ')
    ):
        return
    raise AssertionError(f"server error {status}: {response.text[:500]}")


@schemathesis.check
def error_is_code_and_message(ctx, response, case):
    status = response.status_code
    if status < 400:
        return
    body = response.content or b""
    if len(body) > MAX_ERROR_BODY:
        raise AssertionError(f"error body of {len(body)} bytes")
    ctype = response.headers.get("content-type", [""])
    ctype = ctype[0] if isinstance(ctype, list) else ctype
    if not ctype.startswith("application/json"):
        raise AssertionError(f"error {status} with content type {ctype!r}")
    try:
        value = json.loads(body)
    except ValueError as e:
        raise AssertionError(f"error {status} is not JSON: {e}: {body[:200]!r}")
    if not isinstance(value, dict) or value.get("code") != status:
        raise AssertionError(f"error {status} without code {status}: {body[:200]!r}")
    if not isinstance(value.get("message"), str) or not value["message"]:
        raise AssertionError(f"error {status} without a message: {body[:200]!r}")
