"""Bearer-token checks shared by the collector's batch endpoint and the worker's query API."""

from __future__ import annotations

import hmac
from collections.abc import Sequence


def bearer_token_is_valid(authorization: str | None, tokens: Sequence[str]) -> bool:
    """Check an Authorization header against the configured tokens in constant time per token.

    Every configured token is compared, so the time taken does not tell which
    one matched. No configured token means no request is authorized.
    """
    if not authorization or not tokens:
        return False
    scheme, _, presented = authorization.strip().partition(" ")
    presented = presented.strip()
    if scheme.lower() != "bearer" or not presented:
        return False
    presented_bytes = presented.encode("utf-8")
    matched = False
    for token in tokens:
        matched |= hmac.compare_digest(presented_bytes, token.encode("utf-8"))
    return matched
