"""API tokens and tickets, checked the way pveproxy does.

Secrets live in `secrets.json` in the simulator's state folder (mode 0600), created once: the API token
the lab hands to clients, the root@pam password for ticket logins, and the key that signs tickets (so
tickets survive a restart of the simulator, as they survive a pveproxy restart on PVE).
"""
import base64
import hashlib
import hmac
import json
import os
import secrets
import time
import uuid
from http.cookies import SimpleCookie
from pathlib import Path

TOKEN_ID = "root@pam!ocv"
TICKET_LIFETIME = 7200


class AuthError(Exception):
    """401, with PVE's message."""


def load_or_create(state_dir):
    path = Path(state_dir) / "secrets.json"
    if path.exists():
        return json.loads(path.read_text())
    data = {"tokens": {TOKEN_ID: str(uuid.uuid4())}, "root_password": secrets.token_urlsafe(18),
            "ticket_key": secrets.token_hex(32)}
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(".secrets.json.tmp")
    with open(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as stream:
        json.dump(data, stream)
    os.replace(temporary, path)
    return data


class Auth:
    def __init__(self, state_dir):
        self.secrets = load_or_create(state_dir)
        self.key = bytes.fromhex(self.secrets["ticket_key"])

    def _sign(self, text):
        digest = hmac.new(self.key, text.encode(), hashlib.sha256).digest()
        return base64.b64encode(digest).decode()

    # tickets
    def create_ticket(self, username, password):
        if username not in ("root@pam", "root") or not hmac.compare_digest(
                password.encode(), self.secrets["root_password"].encode()):
            raise AuthError("authentication failure")
        username = "root@pam"
        stamp = f"{int(time.time()):08X}"
        plain = f"PVE:{username}:{stamp}"
        return {"username": username, "ticket": f"{plain}::{self._sign(plain)}",
                "CSRFPreventionToken": f"{stamp}:{self._sign(stamp + username)}",
                "cap": {}}

    def _check_ticket(self, ticket):
        plain, sep, signature = ticket.partition("::")
        parts = plain.split(":")
        if not sep or len(parts) != 3 or parts[0] != "PVE" or not hmac.compare_digest(signature, self._sign(plain)):
            raise AuthError("invalid PVE ticket")
        if time.time() - int(parts[2], 16) > TICKET_LIFETIME:
            raise AuthError("permission denied - invalid PVE ticket")
        return parts[1], parts[2]

    # every API request
    def authenticate(self, headers, method):
        """-> the user ("root@pam" or "root@pam!ocv"), or AuthError."""
        header = headers.get("Authorization")
        if header:
            return self._check_token(header)
        cookie = SimpleCookie(headers.get("Cookie", ""))
        if "PVEAuthCookie" not in cookie:
            raise AuthError("No ticket")
        user, stamp = self._check_ticket(cookie["PVEAuthCookie"].value)
        if method != "GET":
            token = headers.get("CSRFPreventionToken", "")
            if not hmac.compare_digest(token, f"{stamp}:{self._sign(stamp + user)}"):
                raise AuthError("Permission denied - invalid csrf token")
        return user

    def _check_token(self, header):
        kind, rest = (header.split("=", 1) + [""])[:2]
        if kind != "PVEAPIToken" or "!" not in rest:
            raise AuthError("invalid API token format")
        full_id, sep, value = rest.partition("=")
        if not sep:
            # `USER@REALM!ID:SECRET` is the PBS spelling; PVE wants `=`.
            raise AuthError("no token value!")
        if "!" not in full_id:
            raise AuthError("invalid API token format")
        user, token_name = full_id.split("!", 1)
        expected = self.secrets["tokens"].get(full_id)
        if expected is None:
            raise AuthError(f"no such token '{token_name}' for user '{user}'")
        if not hmac.compare_digest(value.encode(), expected.encode()):
            raise AuthError("invalid token value!")
        return full_id
