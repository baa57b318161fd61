"""The one error-policy table: every Cloud API error code and all of its effects.

Meta's error codes are classified by ``error.code`` (never by HTTP status alone). What
happens to the **job** (``action``):

* ``retry``      transient; try again later with backoff (counts as an attempt)
* ``throttle``   a rate limit; slow down without burning an attempt, job keeps its place
* ``fallback``   this channel cannot reach the recipient; hand over to the next channel
* ``fail``       the request is wrong or the account cannot send; fail the job

and what else it does (flags), acted on by the dispatcher (``delivery.dispatch``):

* ``pause_sender``    an account-level problem: stop the number, keep its jobs
* ``token_refused``   Meta refused the access token: the pause ends by itself when a new
                      token appears (``delivery.token_watch``)
* ``pause_campaigns`` a spam or policy report: pause the number's running campaigns
* ``slow_down``       the number's rate limit: stretch its interval for a while
* ``hold_pair``       the recipient's pair limit: hold that recipient, 4^X seconds
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Action = Literal["retry", "throttle", "fallback", "fail"]


@dataclass(frozen=True)
class Policy:
    action: Action
    title: str
    pause_sender: bool = False  # account-level problem: stop sending from this number
    token_refused: bool = False  # the access token is unusable: a new one resumes the sender
    pause_campaigns: bool = False  # spam / policy: the number's campaigns stop
    slow_down: bool = False  # the number's throughput limit
    hold_pair: bool = False  # the (business, consumer) pair limit


POLICY: dict[int, Policy] = {
    0: Policy("fail", "AuthException", pause_sender=True, token_refused=True),
    1: Policy("retry", "API Unknown"),
    2: Policy("retry", "API Service"),
    3: Policy("fail", "API Method"),
    4: Policy("throttle", "API Too Many Calls", slow_down=True),
    10: Policy("fail", "Permission Denied", pause_sender=True),
    33: Policy("fail", "Parameter value is not valid"),
    100: Policy("fail", "Invalid parameter"),
    102: Policy("fail", "API Session: access token expired or invalid", pause_sender=True,
                 token_refused=True),
    190: Policy("fail", "Access token has expired", pause_sender=True, token_refused=True),
    368: Policy("fail", "Temporarily blocked for policies violations", pause_sender=True,
                 pause_campaigns=True),
    80007: Policy("throttle", "Rate limit issues", slow_down=True),
    130403: Policy("fail", "Not allowed"),
    130429: Policy("throttle", "Rate limit hit", slow_down=True),
    130472: Policy("fallback", "User's number is part of an experiment"),
    130497: Policy(
        "fallback", "Business account is restricted from messaging users in this country"
    ),
    131000: Policy("retry", "Something went wrong"),
    131005: Policy("fail", "Access denied", pause_sender=True),
    131008: Policy("fail", "Required parameter is missing"),
    131009: Policy("fail", "Parameter value is not valid"),
    131016: Policy("retry", "Service unavailable"),
    131021: Policy("fail", "Recipient cannot be sender"),
    131026: Policy("fallback", "Message undeliverable"),
    131031: Policy("fail", "Account has been locked", pause_sender=True),
    131037: Policy(
        "fail", "WhatsApp provided number needs display name approval", pause_sender=True
    ),
    131042: Policy("fail", "Business eligibility payment issue", pause_sender=True),
    131045: Policy("fail", "Incorrect certificate", pause_sender=True),
    131047: Policy("fallback", "Re-engagement message"),
    131048: Policy("throttle", "Spam rate limit hit", pause_campaigns=True),
    131049: Policy("fallback", "Meta chose not to deliver"),
    131050: Policy("fallback", "User has stopped marketing messages"),
    131051: Policy("fail", "Unsupported message type"),
    131052: Policy("retry", "Media download error"),
    131053: Policy("retry", "Media upload error"),
    131056: Policy("throttle", "(Business Account, Consumer Account) pair rate limit hit",
                    hold_pair=True),
    131057: Policy("fail", "Account in maintenance mode", pause_sender=True),
    131063: Policy("fallback", "Recipient blocked this business"),
    132000: Policy("fail", "Number of parameters does not match the expected number of params"),
    132001: Policy("fail", "Template does not exist"),
    132005: Policy("fail", "Translated text too long"),
    132007: Policy("fail", "Template format character policy violated"),
    132012: Policy("fail", "Template parameter format mismatch"),
    132015: Policy("fail", "Template is paused"),
    132016: Policy("fail", "Template is disabled"),
    132018: Policy("fail", "Template parameter text has invalid characters"),
    133004: Policy("retry", "Server temporarily unavailable"),
    133010: Policy("fail", "Phone number not registered", pause_sender=True),
    135000: Policy("retry", "Generic user error"),
}

# No error code at all: network error, timeout, or an HTTP error without Meta's body.
TRANSPORT = Policy("retry", "Network error or timeout")
SERVER_ERROR = Policy("retry", "Server error")
UNKNOWN = Policy("fail", "Unknown error")
# HTTP 401 without a code Meta documents: the token was refused. Pause, as for 190.
UNAUTHORIZED = Policy("fail", "Unauthorized (access token refused)", pause_sender=True,
                      token_refused=True)


def classify(code: int | None, http_status: int | None = None) -> Policy:
    """The policy for an error, by Meta's code first, then by transport facts."""
    if code is not None and code in POLICY:
        return POLICY[code]
    if http_status == 401:
        return UNAUTHORIZED
    if code is None:
        if http_status is None:
            return TRANSPORT
        if http_status >= 500 or http_status == 429:
            return SERVER_ERROR
        return UNKNOWN
    if http_status is not None and http_status >= 500:
        return SERVER_ERROR
    return UNKNOWN


def token_refused(code: int | None, http_status: int | None) -> bool:
    """Whether an answer means the access token cannot be used (any HTTP 401 does)."""
    return classify(code, http_status).token_refused or http_status == 401
