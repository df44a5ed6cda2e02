"""Signed payment callbacks: HMAC-SHA256 over the timestamp and the raw body, per provider.

A provider sends `Rushgate-Timestamp: <unix seconds>` and
`Rushgate-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>." + body)>`. A callback is
accepted only with a valid signature made within the tolerance; a replayed callback
carries the same payment id and so changes nothing (pay.lua records each payment once).
"""

from __future__ import annotations

import hashlib
import hmac

from intake.problems import ProblemError

TIMESTAMP_HEADER = "rushgate-timestamp"
SIGNATURE_HEADER = "rushgate-signature"
SIGNATURE_VERSION = "v1="


def sign(secret: bytes, timestamp_s: int, body: bytes) -> str:
    """The signature header value a provider sends (also what tests and clients use)."""
    mac = hmac.new(secret, f"{timestamp_s}.".encode() + body, hashlib.sha256).hexdigest()
    return SIGNATURE_VERSION + mac


def verify(
    secret: bytes | None, timestamp: str | None, signature: str | None, body: bytes, *, now_s: int, tolerance_s: int
) -> None:
    """Raise a 401 problem unless the callback is signed by this provider within the tolerance."""
    refusal = ProblemError(401, "invalid-signature", "unknown provider, or a missing, wrong or stale signature")
    if secret is None or timestamp is None or signature is None or not timestamp.isdigit():
        raise refusal
    timestamp_s = int(timestamp)
    expected = sign(secret, timestamp_s, body)
    valid = hmac.compare_digest(expected.encode(), signature.strip().encode())
    if not valid or abs(now_s - timestamp_s) > tolerance_s:
        raise refusal
