#!/usr/bin/env python3
"""An SMTP server for the SMTP client's tests (aiosmtpd, in the tools virtualenv).

    smtp_test_server.py PORT FOLDER [--tls CERT KEY] [--user USER --password PASSWORD]

With --tls it offers STARTTLS with that certificate. With --user it accepts AUTH PLAIN for that
user, in clear too (so a test can show the client never sends it so). Every AUTH attempt is
appended to FOLDER/auth.jsonl with whether it came over TLS; every message is written to
FOLDER/mail-<n>.eml, and the client port it came from appended to FOLDER/peers.log (one port
for mails sent over one connection). A recipient starting with "refuse" is refused (550). Runs
until killed.
"""
import argparse
import json
import os
import ssl
import time

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


class Handler:
    def __init__(self, folder):
        self.folder = folder
        self.count = 0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("refuse"):
            return "550 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        with open(os.path.join(self.folder, "mail-%d.eml" % self.count), "wb") as f:
            f.write(envelope.original_content or envelope.content)
        with open(os.path.join(self.folder, "peers.log"), "a") as f:
            f.write("%d\n" % session.peer[1])
        return "250 OK"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("folder")
    parser.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
    parser.add_argument("--user")
    parser.add_argument("--password")
    args = parser.parse_args()
    os.makedirs(args.folder, exist_ok=True)

    def authenticate(server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and auth_data.login.decode() == args.user \
            and auth_data.password.decode() == args.password
        with open(os.path.join(args.folder, "auth.jsonl"), "a") as f:
            f.write(json.dumps({"mechanism": mechanism, "tls": session.ssl is not None, "ok": ok}) + "\n")
        return AuthResult(success=ok)

    context = None
    if args.tls:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.tls[0], args.tls[1])
    controller = Controller(
        Handler(args.folder), hostname="127.0.0.1", port=args.port, tls_context=context,
        authenticator=authenticate if args.user else None, auth_require_tls=False,
        auth_exclude_mechanism=["LOGIN"])
    controller.start()
    with open(os.path.join(args.folder, "ready"), "w") as f:
        f.write("ready\n")
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
