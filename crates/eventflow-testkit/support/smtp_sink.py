"""An SMTP server for the tests: aiosmtpd (PyPI), a real SMTP implementation.

Usage: python3 smtp_sink.py MODE [CERT KEY]
MODE is none, starttls (STARTTLS required before MAIL) or tls (implicit TLS).
Prints {"port": N} once listening, then one JSON line per message accepted:
{"from", "to", "data", "tls", "auth"}. Requires AUTH when the environment
variable SMTP_SINK_USER is set (with SMTP_SINK_PASSWORD).
"""
import asyncio
import json
import os
import socket
import ssl
import sys

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


class Sink:
    async def handle_DATA(self, server, session, envelope):
        print(json.dumps({
            "from": envelope.mail_from,
            "to": envelope.rcpt_tos,
            "data": envelope.content.decode("utf-8", "replace"),
            "tls": session.ssl is not None
            or server.transport.get_extra_info("ssl_object") is not None,
            "auth": session.authenticated,
        }), flush=True)
        return "250 OK message accepted"


def authenticator(server, session, envelope, mechanism, auth_data):
    user = os.environ.get("SMTP_SINK_USER", "").encode()
    password = os.environ.get("SMTP_SINK_PASSWORD", "").encode()
    ok = isinstance(auth_data, LoginPassword) and auth_data.login == user and auth_data.password == password
    return AuthResult(success=ok)


def main():
    mode = sys.argv[1]
    context = None
    if mode in ("starttls", "tls"):
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(sys.argv[2], sys.argv[3])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    needs_auth = bool(os.environ.get("SMTP_SINK_USER"))
    kwargs = dict(
        hostname="127.0.0.1",
        port=port,
        authenticator=authenticator if needs_auth else None,
        auth_required=needs_auth,
        # AUTH only after STARTTLS in mode starttls. (With implicit TLS,
        # aiosmtpd does not know the connection is encrypted and would never
        # offer AUTH; in mode none, plain AUTH is for tests only.)
        auth_require_tls=mode == "starttls",
    )
    if mode == "starttls":
        kwargs.update(tls_context=context, require_starttls=True)
    elif mode == "tls":
        kwargs.update(ssl_context=context)
    controller = Controller(Sink(), **kwargs)
    controller.start()
    print(json.dumps({"port": port}), flush=True)
    try:
        asyncio.new_event_loop().run_until_complete(asyncio.Event().wait())
    finally:
        controller.stop()


main()
