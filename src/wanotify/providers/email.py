"""Email over SMTP (``WANOTIFY_SMTP_URL``: ``smtp://[user:pass@]host:port``, ``smtp+starttls://…``
or ``smtps://…``)."""

from __future__ import annotations

import smtplib
import ssl
import time
from email.message import EmailMessage
from email.utils import make_msgid
from urllib.parse import unquote, urlsplit

from wanotify.providers.whatsapp import SendResult


def send_email(smtp_url: str, sender: str, to: str, subject: str, body: str) -> SendResult:
    parts = urlsplit(smtp_url)
    host = parts.hostname or "localhost"
    secure = parts.scheme == "smtps"
    port = parts.port or (465 if secure else 25)
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg_id = make_msgid(domain=sender.partition("@")[2] or None)
    msg["Message-ID"] = msg_id
    msg.set_content(body)
    started = time.perf_counter()
    try:
        smtp: smtplib.SMTP = (
            smtplib.SMTP_SSL(host, port, timeout=10, context=ssl.create_default_context())
            if secure
            else smtplib.SMTP(host, port, timeout=10)
        )
        with smtp:
            if parts.scheme == "smtp+starttls":
                smtp.starttls(context=ssl.create_default_context())
            if parts.username:
                smtp.login(unquote(parts.username), unquote(parts.password or ""))
            smtp.send_message(msg)
    except smtplib.SMTPResponseException as exc:
        return SendResult(False, None, None, int(exc.smtp_code), str(exc.smtp_error)[:2000], None,
                          (time.perf_counter() - started) * 1000)
    except (smtplib.SMTPException, OSError) as exc:
        return SendResult(False, None, None, None, f"smtp error: {type(exc).__name__}", None,
                          (time.perf_counter() - started) * 1000)
    return SendResult(True, msg_id, 250, None, None, None, (time.perf_counter() - started) * 1000)
