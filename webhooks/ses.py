"""Amazon SES events delivered through an SNS HTTPS subscription (reference §5)."""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, TypeGuard
from urllib.parse import urlsplit

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from domain.events import IncomingEvent
from domain.journey import EventType
from webhooks._common import (
    bounce_info,
    check_fresh,
    dig,
    email,
    from_iso,
    header,
    message_id,
    text,
)
from webhooks.errors import WebhookAuthError, WebhookDisabled, WebhookPayloadError

CertFetcher = Callable[[str], Awaitable[bytes]]
Confirmer = Callable[[str], Awaitable[None]]

# sns.<region>.amazonaws.com[.cn], the region spelled as AWS spells regions (eu-west-1,
# us-gov-west-1): a looser label also matched S3 bucket hosts such as sns.s3.amazonaws.com,
# where anyone can publish a "certificate" of their own.
SNS_HOST = re.compile(r"^sns\.[a-z]{2}(?:-[a-z]+)+-\d{1,2}\.amazonaws\.com(?:\.cn)?$")
# The subject SNS's signing certificates are issued to.
SNS_CERT_SUBJECT = "sns.amazonaws.com"

# Fields covered by the SNS signature, in the order AWS concatenates them; absent ones are skipped.
_SIGNED_FIELDS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": (
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ),
}
_SIGNED_FIELDS["UnsubscribeConfirmation"] = _SIGNED_FIELDS["SubscriptionConfirmation"]
_HASHES = {"1": hashes.SHA1, "2": hashes.SHA256}

_SIMPLE = {
    "Delivery": EventType.DELIVERED,
    "Open": EventType.OPEN,
    "Click": EventType.CLICK,
    "DeliveryDelay": EventType.BOUNCE_SOFT,  # SES keeps trying: never terminal
}
# Where each SES event keeps its own details (and so its timestamp).
_DETAIL_KEY = {
    "Delivery": "delivery",
    "Open": "open",
    "Click": "click",
    "Bounce": "bounce",
    "Complaint": "complaint",
    "DeliveryDelay": "deliveryDelay",
    "Subscription": "subscription",
    "Send": "send",
    "Reject": "reject",
    "Rendering Failure": "failure",
}
_SES_VALIDATION_NOTICE = "Successfully validated SNS topic"


def is_sns_url(url: Any) -> TypeGuard[str]:
    """True only for https://sns.<region>.amazonaws.com[.cn]/... with no userinfo or port."""
    # Control characters or spaces would be dropped by urlsplit but not by the HTTP client.
    if not isinstance(url, str) or not url.isascii() or any(c <= " " or c == "\x7f" for c in url):
        return False
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    # The whole netloc must match, so userinfo ("x@") and ports cannot slip past the pattern.
    return parts.scheme == "https" and SNS_HOST.fullmatch(parts.netloc) is not None


def _issued_to_sns(cert: x509.Certificate) -> bool:
    """The certificate's subject is SNS (CN sns.amazonaws.com, or a regional SNS host)."""
    names = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    return len(names) == 1 and (
        names[0] == SNS_CERT_SUBJECT or bool(SNS_HOST.fullmatch(str(names[0])))
    )


async def fetch_url(url: str) -> bytes:
    async with httpx.AsyncClient(timeout=10.0, follow_redirects=False) as client:
        response = await client.get(url)
        response.raise_for_status()
        return response.content


async def confirm_subscription(subscribe_url: str) -> None:
    await fetch_url(subscribe_url)


class SesProvider:
    name = "ses"

    def __init__(
        self,
        topic_arns: list[str] | None,
        *,
        cert_fetcher: CertFetcher | None = None,
        confirmer: Confirmer | None = None,
        max_age: timedelta = timedelta(hours=2),
        max_future: timedelta = timedelta(minutes=5),
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        # SNS keeps the publish Timestamp on retries (up to an hour with a custom policy).
        self._topics = frozenset(t for t in topic_arns or () if t)
        self._fetch = cert_fetcher or fetch_url
        self._confirm = confirmer or confirm_subscription
        self._max_age = max_age
        self._max_future = max_future
        self._clock = clock
        self._certs: dict[str, x509.Certificate] = {}  # by SigningCertURL

    async def handle(self, headers: Mapping[str, str], body: bytes) -> list[IncomingEvent]:
        if not self._topics:
            raise WebhookDisabled("ses webhook is not configured")
        envelope = await self._verify(headers, body)
        kind = envelope["Type"]
        if kind == "SubscriptionConfirmation":
            if not is_sns_url(envelope.get("SubscribeURL")):
                raise WebhookAuthError("SubscribeURL is not an SNS URL")
            await self._confirm(envelope["SubscribeURL"])
            return []
        if kind == "UnsubscribeConfirmation":
            return []
        return self._events(envelope)

    async def _verify(self, headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
        """Authenticate the SNS envelope (topic, cert URL, freshness, signature); return it."""
        try:
            parsed = json.loads(body)
        except (UnicodeDecodeError, ValueError) as exc:
            raise WebhookAuthError("not a signed SNS message") from exc
        envelope: dict[str, Any] = parsed if isinstance(parsed, dict) else {}
        kind = envelope.get("Type")
        if not isinstance(kind, str) or kind not in _SIGNED_FIELDS:
            raise WebhookAuthError("not a signed SNS message")
        for name, field in (
            ("x-amz-sns-message-type", "Type"),
            ("x-amz-sns-message-id", "MessageId"),
        ):
            value = header(headers, name)
            if value is not None and value != envelope.get(field):
                raise WebhookAuthError("SNS headers do not match the message")
        # The topic first: a genuine Amazon signature only proves *some* SNS topic sent this.
        topic = envelope.get("TopicArn")
        if not isinstance(topic, str) or topic not in self._topics:
            raise WebhookAuthError("SNS topic is not allowed")
        cert_url = envelope.get("SigningCertURL")
        if not is_sns_url(cert_url) or not urlsplit(cert_url).path.endswith(".pem"):
            raise WebhookAuthError("SigningCertURL is not an SNS certificate URL")
        hash_cls = _HASHES.get(str(envelope.get("SignatureVersion", "1")))
        signed = self._string_to_sign(envelope, kind)
        try:
            signature = base64.b64decode(envelope["Signature"], validate=True)
            signed_at = from_iso(envelope["Timestamp"])
        except (KeyError, TypeError, ValueError, binascii.Error, WebhookPayloadError) as exc:
            raise WebhookAuthError("invalid signature") from exc
        if hash_cls is None or signed is None or signed_at is None:
            raise WebhookAuthError("invalid signature")
        now = self._clock()
        check_fresh(signed_at, now, max_age=self._max_age, max_future=self._max_future)
        key = await self._public_key(cert_url, now)
        try:
            key.verify(signature, signed, padding.PKCS1v15(), hash_cls())
        except InvalidSignature as exc:
            raise WebhookAuthError("invalid signature") from exc
        return envelope

    @staticmethod
    def _string_to_sign(envelope: dict[str, Any], kind: str) -> bytes | None:
        lines = []
        for field in _SIGNED_FIELDS[kind]:
            value = envelope.get(field)
            if value is None:
                if field == "Subject":
                    continue  # the only optional signed field
                return None
            if not isinstance(value, str):
                return None
            lines.append(f"{field}\n{value}\n")
        return "".join(lines).encode()

    async def _public_key(self, url: str, now: datetime) -> rsa.RSAPublicKey:
        cert = self._certs.get(url)
        if cert is None:
            # Fetch errors propagate (-> 5xx) so SNS retries; a bad certificate is an auth failure.
            pem = await self._fetch(url)
            try:
                cert = x509.load_pem_x509_certificate(pem)
            except ValueError as exc:
                raise WebhookAuthError("SigningCertURL does not hold a certificate") from exc
            if not isinstance(cert.public_key(), rsa.RSAPublicKey):
                raise WebhookAuthError("SNS signing certificate is not an RSA certificate")
            if not _issued_to_sns(cert):
                raise WebhookAuthError("SNS signing certificate is not issued to SNS")
            self._certs[url] = cert
        # Checked on every use: a cached certificate can expire while the process runs.
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise WebhookAuthError("SNS signing certificate is not currently valid")
        key = cert.public_key()
        assert isinstance(key, rsa.RSAPublicKey)
        return key

    def _events(self, envelope: dict[str, Any]) -> list[IncomingEvent]:
        message: str = envelope["Message"]  # a signed field, so present and a string
        if message.startswith(_SES_VALIDATION_NOTICE):
            return []  # SES's one-off notice after a topic is set up as an event destination
        try:
            event = json.loads(message)
        except ValueError as exc:
            raise WebhookPayloadError("SNS Message is not a JSON SES event") from exc
        raw_type = dig(event, "eventType") or dig(event, "notificationType")
        if not isinstance(raw_type, str):
            raise WebhookPayloadError("SNS Message is not an SES event")
        return [self._event(event, raw_type, envelope)]

    def _event(
        self, event: dict[str, Any], raw_type: str, envelope: dict[str, Any]
    ) -> IncomingEvent:
        detail = dig(event, _DETAIL_KEY.get(raw_type, ""))
        if not isinstance(detail, dict):
            detail = {}
        kind: str | None = _SIMPLE.get(raw_type)  # Send, Reject, Rendering Failure: stored only
        bounce = None
        recipient = None
        if raw_type == "Bounce":
            hard = detail.get("bounceType") == "Permanent"  # Transient/Undetermined: may recover
            kind = EventType.BOUNCE_HARD if hard else EventType.BOUNCE_SOFT
            first = dig(detail, "bouncedRecipients", 0)
            recipient = dig(first, "emailAddress")
            bounce = bounce_info(
                "hard" if hard else "soft", dig(first, "status"), dig(first, "diagnosticCode")
            )
        elif raw_type == "Complaint":
            # An ARF "not-spam" report is the opposite of a complaint.
            if detail.get("complaintFeedbackType") != "not-spam":
                kind = EventType.COMPLAINT
            recipient = dig(detail, "complainedRecipients", 0, "emailAddress")
        elif raw_type == "DeliveryDelay":
            first = dig(detail, "delayedRecipients", 0)
            recipient = dig(first, "emailAddress")
            bounce = bounce_info("soft", dig(first, "status"), dig(first, "diagnosticCode"))
        elif raw_type == "Delivery":
            recipient = dig(detail, "recipients", 0)
        elif raw_type == "Subscription" and _unsubscribed(detail):
            kind = EventType.UNSUBSCRIBE
        if recipient is None:
            # Open/Click (and others) do not say who acted; we send one recipient per message.
            destination = dig(event, "mail", "destination")
            if isinstance(destination, list) and len(destination) == 1:
                recipient = destination[0]
        return IncomingEvent(
            provider=self.name,
            dedupe_key=envelope["MessageId"],  # kept by SNS across its retries
            type=kind,
            raw_type=raw_type,
            delivery_id=text(dig(event, "mail", "tags", "drip_delivery_id", 0)),
            message_id=message_id(dig(event, "mail", "commonHeaders", "messageId")),
            recipient=email(recipient),
            occurred_at=from_iso(
                dig(detail, "timestamp")
                or dig(event, "mail", "timestamp")
                or envelope.get("Timestamp")
            ),
            url=text(detail.get("link")) if kind == EventType.CLICK else None,
            bounce=bounce,
            raw=event,
        )


def _unsubscribed(detail: dict[str, Any]) -> bool:
    """A Subscription event is an unsubscribe unless its new preferences opt out of nothing."""
    prefs = detail.get("newTopicPreferences")
    if not isinstance(prefs, dict):
        return True
    if prefs.get("unsubscribeAll") is True:
        return True
    topics = prefs.get("topicSubscriptionStatus") or []
    return any(dig(t, "subscriptionStatus") == "OptOut" for t in topics)
