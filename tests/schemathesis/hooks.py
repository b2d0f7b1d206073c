"""Schemathesis hooks for enrichd's OpenAPI check (tests/tests/openapi.rs).

EngageLab signs a callback with the hex HMAC-SHA256 of its
X-WebHook-Timestamp header, keyed with the app key. Schemathesis cannot
generate that, so every EngageLab case whose headers are otherwise valid
(a numeric timestamp, `email` as AppKey, a 64-hex signature) is signed here
with the current time and ENRICHD_ENGAGELAB_APP_KEY. Cases with deliberately
invalid headers are left alone: they must get 401.
"""

import hashlib
import hmac
import os
import re
import time

import schemathesis

APP_KEY = os.environ.get("ENRICHD_ENGAGELAB_APP_KEY", "")


@schemathesis.hook
def before_call(context, case, kwargs):
    headers = case.headers
    if not APP_KEY or headers is None or "X-WebHook-Signature" not in headers:
        return
    valid = (
        re.fullmatch(r"[0-9]{1,19}", str(headers.get("X-WebHook-Timestamp", "")))
        and headers.get("X-WebHook-AppKey") == "email"
        and re.fullmatch(r"[0-9a-fA-F]{64}", str(headers.get("X-WebHook-Signature", "")))
    )
    if not valid:
        return
    timestamp = str(int(time.time()))
    headers["X-WebHook-Timestamp"] = timestamp
    headers["X-WebHook-Signature"] = hmac.new(
        APP_KEY.encode(), timestamp.encode(), hashlib.sha256
    ).hexdigest()
