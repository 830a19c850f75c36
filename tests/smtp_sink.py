"""An SMTP server for tests (aiosmtpd): every message received is appended
to the file named by argv[2], decoded (quoted-printable, base64, encoded
words), as:

    MAIL FROM: <sender>
    RCPT TO: <recipient>,<recipient>
    Subject: <subject>

    <plain-text body>
    .

Prints "ready" once it listens on 127.0.0.1:<argv[1]>.
"""
import email
import email.policy
import sys
import time

from aiosmtpd.controller import Controller


class Sink:
    async def handle_DATA(self, server, session, envelope):
        msg = email.message_from_bytes(
            envelope.original_content or envelope.content, policy=email.policy.default
        )
        body = msg.get_body(preferencelist=("plain",))
        text = body.get_content() if body is not None else ""
        record = "MAIL FROM: %s\nRCPT TO: %s\nSubject: %s\n\n%s\n.\n" % (
            envelope.mail_from,
            ",".join(envelope.rcpt_tos),
            msg.get("Subject", ""),
            text,
        )
        with open(sys.argv[2], "ab") as f:
            f.write(record.encode())
        return "250 OK"


controller = Controller(Sink(), hostname="127.0.0.1", port=int(sys.argv[1]))
controller.start()
print("ready", flush=True)
while True:
    time.sleep(3600)
