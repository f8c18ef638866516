"""Sign webhook requests the way each provider does, with keys the tests generate.

Shared with the HTTP-level tests of the webhook route. Deliberately written from the providers'
documentation rather than by calling `webhooks.*`, so a bug there cannot hide itself here.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

# --- SendGrid: ECDSA P-256 / SHA-256 over timestamp + raw body --------------------------------


class SendGridKeys(NamedTuple):
    private_key: ec.EllipticCurvePrivateKey
    public_b64: str  # base64 DER SubjectPublicKeyInfo, as the SendGrid UI shows it
    public_pem: str


def sendgrid_keypair() -> SendGridKeys:
    private_key = ec.generate_private_key(ec.SECP256R1())
    public = private_key.public_key()
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return SendGridKeys(private_key, base64.b64encode(der).decode(), pem.decode())


def sign_sendgrid(
    private_key: ec.EllipticCurvePrivateKey, timestamp: int | str, body: bytes
) -> dict[str, str]:
    ts = str(timestamp)
    signature = private_key.sign(ts.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {
        "content-type": "application/json",
        "x-twilio-email-event-webhook-signature": base64.b64encode(signature).decode(),
        "x-twilio-email-event-webhook-timestamp": ts,
    }


# --- Postmark: HTTP Basic credentials -----------------------------------------------------------


def basic_auth(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"authorization": f"Basic {token}", "content-type": "application/json"}


# --- Mailgun: hex HMAC-SHA256(signing key, timestamp + token), inside the body -----------------


def sign_mailgun(key: str, timestamp: int | str, token: str) -> dict[str, str]:
    """The body's `signature` block."""
    ts = str(timestamp)
    digest = hmac.new(key.encode(), (ts + token).encode(), hashlib.sha256).hexdigest()
    return {"timestamp": ts, "token": token, "signature": digest}


def mailgun_body(
    key: str, event_data: dict[str, Any], *, timestamp: int | None = None, token: str | None = None
) -> bytes:
    timestamp = int(datetime.now(UTC).timestamp()) if timestamp is None else timestamp
    token = token or secrets.token_hex(25)
    block = sign_mailgun(key, timestamp, token)
    return json.dumps({"signature": block, "event-data": event_data}).encode()


# --- Resend (Svix): base64 HMAC-SHA256(key, "id.timestamp.body") --------------------------------


def resend_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(24)).decode()


def sign_resend(secret: str, msg_id: str, timestamp: int | str, body: bytes) -> dict[str, str]:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    content = f"{msg_id}.{timestamp}.".encode() + body
    signature = base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()
    return {
        "content-type": "application/json",
        "svix-id": msg_id,
        "svix-timestamp": str(timestamp),
        "svix-signature": f"v1,{signature}",
    }


# --- SNS: RSA PKCS#1 v1.5 over the canonical string, SHA1 (v1) or SHA256 (v2) -------------------

SNS_CERT_URL = (
    "https://sns.eu-west-1.amazonaws.com/"
    "SimpleNotificationService-9c6465fa7f48f5cacd23014631ec1136.pem"
)


def make_sns_certificate(
    common_name: str = "sns.amazonaws.com",
) -> tuple[rsa.RSAPrivateKey, bytes]:
    """A self-signed certificate standing in for SNS's signing certificate: (key, PEM)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return key, cert.public_bytes(serialization.Encoding.PEM)


_SNS_FIELDS = {
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
    "UnsubscribeConfirmation": (
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ),
}


def sns_string_to_sign(envelope: dict[str, Any]) -> bytes:
    fields = _SNS_FIELDS[envelope["Type"]]
    return "".join(f"{f}\n{envelope[f]}\n" for f in fields if f in envelope).encode()


def sign_sns(
    envelope: dict[str, Any], private_key: rsa.RSAPrivateKey, version: str = "2"
) -> dict[str, Any]:
    """A copy of the envelope with SignatureVersion and Signature set."""
    algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()  # SNS SignatureVersion 1
    signature = private_key.sign(sns_string_to_sign(envelope), padding.PKCS1v15(), algorithm)
    return {
        **envelope,
        "SignatureVersion": version,
        "Signature": base64.b64encode(signature).decode(),
    }


def sns_time(moment: datetime) -> str:
    """SNS's timestamp format, e.g. 2024-11-26T11:25:03.118Z."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def sns_envelope(
    message: dict[str, Any] | str,
    *,
    topic_arn: str,
    kind: str = "Notification",
    timestamp: datetime | None = None,
    cert_url: str = SNS_CERT_URL,
    message_id: str | None = None,
) -> dict[str, Any]:
    """An unsigned SNS envelope shaped like SNS's HTTP(S) delivery JSON."""
    region = topic_arn.split(":")[3]
    timestamp = timestamp or datetime.now(UTC)
    envelope: dict[str, Any] = {
        "Type": kind,
        "MessageId": message_id or secrets.token_hex(16),
        "TopicArn": topic_arn,
        "Message": message if isinstance(message, str) else json.dumps(message),
        "Timestamp": sns_time(timestamp),
        "SigningCertURL": cert_url,
    }
    if kind == "Notification":
        envelope["Subject"] = "Amazon SES Email Event Notification"
        envelope["UnsubscribeURL"] = (
            f"https://sns.{region}.amazonaws.com/?Action=Unsubscribe&SubscriptionArn={topic_arn}:1"
        )
    else:
        envelope["Token"] = secrets.token_hex(32)
        envelope["SubscribeURL"] = (
            f"https://sns.{region}.amazonaws.com/?Action=ConfirmSubscription"
            f"&TopicArn={topic_arn}&Token={envelope['Token']}"
        )
    return envelope


def sns_headers(envelope: dict[str, Any]) -> dict[str, str]:
    return {
        "content-type": "text/plain; charset=UTF-8",
        "x-amz-sns-message-type": envelope["Type"],
        "x-amz-sns-message-id": envelope["MessageId"],
        "x-amz-sns-topic-arn": envelope["TopicArn"],
    }
