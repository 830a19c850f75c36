"""acme2certifier (PyPI, 0.46.3) on loopback for twincert's end-to-end tests.

Run by tests/e2e/a2c_ca.rs with the venv's python:

    python serve.py PORT CERT_PEM KEY_PEM

Environment: ACME_SRV_CONFIGFILE (acme2certifier's own: its acme_srv.cfg),
A2C_DNS_PORT (the port of the test BIND).

What this wrapper adds to acme2certifier's own WSGI application, and why:

* HTTPS: the listening socket is wrapped with TLS (the harness's localhost
  certificate) and every request is marked ``wsgi.url_scheme=https``, so
  the URLs in the directory, Location headers and orders are https ones.
  The ACME client (twincert) trusts the harness's local CA for it.
* DNS port: acme2certifier's ``[DEFAULT] dns_server_list`` takes bare
  addresses, asked on port 53. Every dnspython resolver is made to ask
  on A2C_DNS_PORT instead (the port is set in ``reset()``, which runs in
  the resolver's constructor before acme2certifier assigns its
  nameservers, which take the resolver's port then).
* One request at a time (wsgiref's simple server, as acme2certifier's
  own ``acme2certifier_wsgi.py`` runs it): its SQLite database handler is
  not written for concurrent writers.

Nothing here changes machine-wide state; it listens on 127.0.0.1 only.
"""

import os
import ssl
import sys

_dns_port = int(os.environ.get("A2C_DNS_PORT", "53"))
if _dns_port != 53:
    import dns.resolver

    _orig_reset = dns.resolver.BaseResolver.reset

    def _reset(self):
        _orig_reset(self)
        self.port = _dns_port

    dns.resolver.BaseResolver.reset = _reset

from wsgiref.simple_server import make_server  # noqa: E402

from acme2certifier.share import acme2certifier_wsgi as a2c  # noqa: E402


def app(environ, start_response):
    environ["wsgi.url_scheme"] = "https"
    return a2c.application(environ, start_response)


def main():
    port, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    srv = make_server("127.0.0.1", port, app, handler_class=a2c.get_handler_cls())
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    print("acme2certifier listening on https://127.0.0.1:%d" % port, flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
