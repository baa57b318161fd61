"""Meta's error bodies, exactly as the Graph API and the messages webhook show them.

A synchronous Graph API error is::

    HTTP 400
    {"error": {"message": "(#132000) Number of parameters does not match the expected number of params",
               "type": "OAuthException", "code": 132000,
               "error_data": {"messaging_product": "whatsapp", "details": "body: ..."},
               "fbtrace_id": "AKCYcYG8nDBghnNaaYAQx3M"}}

(``error_subcode`` only where Meta sends one, ``error_data`` only when there are details),
and the same failure reported asynchronously, in a ``failed`` status webhook, is::

    {"code": 131026, "title": "Message undeliverable", "message": "Message undeliverable",
     "error_data": {"details": "..."},
     "href": "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/"}

The HTTP statuses follow Meta's error-code reference: throttling (130429, 131056, 131048)
is HTTP 400, not 429; 131000 is 500; 190 is 401; 132001 is 404.

The fake SMS provider answers Twilio-style errors (:func:`twilio_error`).
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import orjson

ERROR_CODES_HREF = "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/"
GRAPH_DOCS = "https://developers.facebook.com/docs/graph-api"


@dataclass(frozen=True, slots=True)
class MetaError:
    """One row of Meta's error-code table."""

    code: int
    title: str  # the webhook ``title`` / ``message``
    message: str  # the Graph API ``message`` after the "(#code) " prefix
    http_status: int
    details: str  # the usual ``error_data.details``
    type: str = "OAuthException"


def _row(
    code: int, title: str, http_status: int, details: str, message: str | None = None
) -> tuple[int, MetaError]:
    return code, MetaError(code, title, message or title, http_status, details)


#: Meta's error codes that the sandbox answers (or injects); unknown codes fall back to 131000's
#: shape with their own number.
META_ERRORS: dict[int, MetaError] = dict(
    [
        _row(0, "AuthException", 401, "We were unable to authenticate the app user."),
        _row(1, "API Unknown", 400, "Invalid request or possible server error."),
        _row(2, "API Service", 503, "Temporary due to downtime or due to being overloaded."),
        _row(3, "API Method", 500, "Capability or permissions issue."),
        _row(
            4,
            "API Too Many Calls",
            400,
            "The app has reached its API call rate limit.",
            "Application request limit reached",
        ),
        _row(10, "Permission Denied", 403, "Permission is either not granted or has been removed."),
        _row(
            100,
            "Invalid parameter",
            400,
            "The request included one or more unsupported or misspelled parameters.",
        ),
        _row(
            190,
            "Access token has expired",
            401,
            "Your access token has expired.",
            "Invalid OAuth access token - Cannot parse access token",
        ),
        _row(200, "API Permission", 403, "Permission is either not granted or has been removed."),
        _row(
            368,
            "Temporarily blocked for policies violations",
            403,
            "The WhatsApp Business Account associated with the app has been restricted or disabled "
            "for violating a platform policy.",
        ),
        _row(
            80007,
            "Rate limit issues",
            400,
            "The WhatsApp Business Account has reached its rate limit.",
        ),
        _row(
            130429,
            "Rate limit hit",
            400,
            "Cloud API message throughput has been reached.",
        ),
        _row(
            130472,
            "User's number is part of an experiment",
            400,
            "Failed to send message because this user's phone number is part of an experiment.",
        ),
        _row(
            130497,
            "Business account is restricted from messaging users in this country",
            403,
            "The WhatsApp Business Account is restricted from messaging users in this country.",
        ),
        _row(
            131000,
            "Something went wrong",
            500,
            "Message failed to send due to an unknown error.",
        ),
        _row(131005, "Access denied", 403, "Permission is either not granted or has been removed."),
        _row(
            131008,
            "Required parameter is missing",
            400,
            "The request is missing a required parameter.",
        ),
        _row(
            131009,
            "Parameter value is not valid",
            400,
            "One or more parameter values are invalid.",
        ),
        _row(131016, "Service unavailable", 503, "A service is temporarily unavailable."),
        _row(
            131021,
            "Recipient cannot be sender",
            400,
            "Sender and recipient phone number is the same.",
        ),
        _row(
            131026,
            "Message undeliverable",
            400,
            "Message Undeliverable.",
        ),
        _row(
            131030,
            "Recipient phone number not in allowed list",
            400,
            "Add recipient phone number to recipient list and try again.",
        ),
        _row(131031, "Account has been locked", 403, "Account has been locked."),
        _row(
            131037,
            "WhatsApp provided number needs display name approval before message can be sent.",
            400,
            "The 555 business phone number needs a display name approval.",
        ),
        _row(
            131042,
            "Business eligibility payment issue",
            400,
            "Message failed to send because there were one or more errors related to your payment "
            "method.",
        ),
        _row(
            131045,
            "Incorrect certificate",
            400,
            "Message failed to send due to a phone number registration error.",
        ),
        _row(
            131047,
            "Re-engagement message",
            400,
            "Message failed to send because more than 24 hours have passed since the customer "
            "last replied to this number.",
        ),
        _row(
            131048,
            "Spam rate limit hit",
            400,
            "Message failed to send because there are restrictions on how many messages can be "
            "sent from this phone number. This may be because too many previous messages were "
            "blocked or flagged as spam.",
        ),
        _row(
            131049,
            "This message was not delivered to maintain healthy ecosystem engagement.",
            400,
            "In order to maintain a healthy ecosystem engagement, the message failed to be "
            "delivered.",
        ),
        _row(
            131050,
            "User has stopped marketing messages",
            400,
            "Unable to deliver the message. This recipient has chosen to stop receiving marketing "
            "messages on WhatsApp from your business.",
        ),
        _row(131051, "Unsupported message type", 400, "Unsupported message type."),
        _row(131052, "Media download error", 400, "Unable to download the media sent by the user."),
        _row(131053, "Media upload error", 400, "Unable to upload the media used in the message."),
        _row(
            131056,
            "(Business Account, Consumer Account) pair rate limit hit",
            400,
            "Message failed to send because there were too many messages sent from this phone "
            "number to the same phone number in a short period of time.",
        ),
        _row(
            131057, "Account in maintenance mode", 500, "Business Account is in maintenance mode."
        ),
        _row(
            132000,
            "Template Param Count Mismatch",
            400,
            "The number of variable parameter values included in the request did not match the "
            "number of variable parameters defined in the template.",
            "Number of parameters does not match the expected number of params",
        ),
        _row(
            132001,
            "Template does not exist",
            404,
            "The template does not exist in the specified language or the template has not been "
            "approved.",
            "Template name does not exist in the translation",
        ),
        _row(
            132005,
            "Template Hydrated Text Too Long",
            400,
            "Translated text is too long.",
        ),
        _row(
            132007,
            "Template Format Character Policy Violated",
            400,
            "Template content violates a WhatsApp policy.",
        ),
        _row(
            132012,
            "Template Parameter Format Mismatch",
            400,
            "Variable parameter values formatted incorrectly.",
        ),
        _row(
            132015,
            "Template is Paused",
            400,
            "Template is paused due to low quality so it cannot be sent in a template message.",
        ),
        _row(
            132016,
            "Template is Disabled",
            400,
            "Template has been paused too many times due to "
            "low quality and is now permanently disabled.",
        ),
        _row(
            133010,
            "Phone number Not Registered",
            400,
            "The phone number is not registered on the WhatsApp Business Platform.",
        ),
    ]
)


def meta_error(code: int) -> MetaError:
    """The table row for ``code`` (an unknown code gets a generic row with its own number)."""
    row = META_ERRORS.get(code)
    if row is not None:
        return row
    return MetaError(code, "Something went wrong", "Something went wrong", 400, "Unknown error.")


def fbtrace_id() -> str:
    """A random id shaped like Meta's ``fbtrace_id`` (23 URL-safe base64 characters)."""
    return base64.urlsafe_b64encode(os.urandom(18))[:23].decode("ascii")


def graph_error_body(
    code: int,
    *,
    details: str | None = None,
    message: str | None = None,
    subcode: int | None = None,
    type_: str | None = None,
    whatsapp: bool = True,
) -> dict[str, object]:
    """Meta's ``{"error": {...}}`` object for ``code``.

    ``message`` replaces the whole message (e.g. ``"(#100) The parameter to is required."``);
    by default it is ``"(#<code>) <message from the table>"``. ``details`` fills
    ``error_data.details`` (for WhatsApp codes >= 1000 Meta's usual text by default; omitted
    for Graph codes without details). ``whatsapp`` adds ``messaging_product``.
    """
    row = meta_error(code)
    if message is None:
        message = row.message if code == 190 else f"(#{code}) {row.message}"
        if details is None and code >= 1000:
            details = row.details  # WhatsApp codes always come with details
    err: dict[str, object] = {"message": message, "type": type_ or row.type, "code": code}
    if details is not None:
        data: dict[str, str] = {"messaging_product": "whatsapp"} if whatsapp else {}
        data["details"] = details
        err["error_data"] = data
    if subcode is not None:
        err["error_subcode"] = subcode
    err["fbtrace_id"] = fbtrace_id()
    return {"error": err}


def graph_error(
    code: int,
    *,
    details: str | None = None,
    message: str | None = None,
    subcode: int | None = None,
    type_: str | None = None,
    http_status: int | None = None,
    whatsapp: bool = True,
) -> tuple[int, bytes]:
    """(HTTP status, JSON body) of a Graph API error answer."""
    body = graph_error_body(
        code, details=details, message=message, subcode=subcode, type_=type_, whatsapp=whatsapp
    )
    status = http_status if http_status is not None else meta_error(code).http_status
    return status, orjson.dumps(body)


def unsupported_request(method: str, object_id: str) -> tuple[int, bytes]:
    """Meta's answer for an id that does not exist or that the token cannot reach (100/33)."""
    msg = (
        f"Unsupported {method.lower()} request. Object with ID '{object_id}' does not exist, "
        "cannot be loaded due to missing permissions, or does not support this operation. "
        f"Please read the Graph API documentation at {GRAPH_DOCS}"
    )
    return graph_error(100, message=msg, subcode=33, type_="GraphMethodException", http_status=400)


def invalid_token(missing: bool) -> tuple[int, bytes]:
    """HTTP 401, code 190: no token, or a token the sandbox does not know."""
    msg = (
        "An active access token must be used to query information about the current user."
        if missing
        else "Invalid OAuth access token - Cannot parse access token"
    )
    return graph_error(190, message=msg, http_status=401)


def expired_message(expired_at: float, now: float) -> str:
    """Meta's text for an expired token (times in Pacific time, as Meta writes them)."""
    try:
        tz: Any = ZoneInfo("America/Los_Angeles")
    except Exception:  # no tz database: UTC
        tz = UTC

    def fmt(t: float) -> str:
        return datetime.fromtimestamp(t, tz).strftime("%A, %d-%b-%y %H:%M:%S %Z")

    return (f"Error validating access token: Session has expired on {fmt(expired_at)}."
            f" The current time is {fmt(now)}.")


def token_expired(expired_at: float, now: float) -> tuple[int, bytes]:
    """HTTP 401, code 190, subcode 463: the token expired."""
    return graph_error(190, message=expired_message(expired_at, now), subcode=463,
                       type_="OAuthException", http_status=401)


def webhook_error(code: int, details: str | None = None) -> dict[str, object]:
    """An element of a ``failed`` status's ``errors`` array (webhooks v16.0+ shape)."""
    row = meta_error(code)
    return {
        "code": code,
        "title": row.title,
        "message": row.title,
        "error_data": {"details": details if details is not None else row.details},
        "href": ERROR_CODES_HREF,
    }


# ---- the fake Twilio-style SMS provider -------------------------------------------------

#: code → (HTTP status, message template with ``{to}``/``{from_}``)
TWILIO_ERRORS: dict[int, tuple[int, str]] = {
    20003: (401, "Authenticate"),
    21211: (400, "The 'To' number {to} is not a valid phone number."),
    21212: (
        400,
        "The 'From' number {from_} is not a valid phone number, shortcode, or alphanumeric sender ID.",
    ),
    21408: (
        400,
        "Permission to send an SMS has not been enabled for the region indicated by the 'To' number: {to}.",
    ),
    21602: (400, "Message body is required."),
    21603: (400, "A 'From' or 'MessagingServiceSid' parameter is required to send a message."),
    21604: (400, "A 'To' phone number is required."),
    21610: (400, "Attempt to send to unsubscribed recipient"),
    21614: (400, "'To' number {to} is not a valid mobile number"),
    20429: (429, "Too Many Requests"),
    30001: (400, "Queue overflow"),
    30003: (400, "Unreachable destination handset"),
    30005: (400, "Unknown destination handset"),
    30006: (400, "Landline or unreachable carrier"),
    30007: (400, "Message filtered"),
    30008: (400, "Unknown error"),
    20500: (500, "An internal server error has occurred"),
}


def twilio_error(
    code: int, *, to: str = "", from_: str = "", http_status: int | None = None
) -> tuple[int, bytes]:
    """(HTTP status, JSON body) of a Twilio REST API error."""
    status, template = TWILIO_ERRORS.get(code, (400, "Error {code}"))
    if http_status is not None:
        status = http_status
    message = template.format(to=to, from_=from_, code=code)
    body = {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    return status, orjson.dumps(body)
