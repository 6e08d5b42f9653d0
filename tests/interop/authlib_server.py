"""An independently written authorization server for p11jwt's interoperability tests.

Authlib (https://authlib.org) configured for the client_credentials grant (RFC 6749 §4.4)
with private_key_jwt client authentication (RFC 7523 §2.2, OpenID Connect Core §9). Authlib
and joserfc verify the assertions; nothing here comes from p11jwt. It publishes RFC 8414
metadata at /.well-known/oauth-authorization-server only, so that clients have to fall back
from /.well-known/openid-configuration.

    python3 authlib_server.py --client-id ID --jwks FILE --port-file FILE [--algs RS256,ES384]

It listens on 127.0.0.1 (a free port), writes its base URL (the issuer) to the port file
atomically, and serves until killed.
"""

import argparse
import json
import os
import sys

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import ClientMixin
from authlib.oauth2.rfc6749 import InvalidClientError
from authlib.oauth2.rfc6749 import grants
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion
from flask import Flask
from flask import jsonify
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from werkzeug.serving import make_server

PRIVATE_KEY_JWT = "private_key_jwt"


class Client(ClientMixin):
    """The one registered OAuth client: its id and its public JWKS."""

    def __init__(self, client_id, jwks):
        self.client_id = client_id
        self.jwks = jwks

    def get_client_id(self):
        return self.client_id

    def get_default_redirect_uri(self):
        return None

    def get_allowed_scope(self, scope):
        return scope or ""

    def check_redirect_uri(self, redirect_uri):
        return False

    def check_client_secret(self, client_secret):
        return False

    def check_endpoint_auth_method(self, method, endpoint):
        return method == PRIVATE_KEY_JWT and endpoint == "token"

    def check_response_type(self, response_type):
        return False

    def check_grant_type(self, grant_type):
        return grant_type == "client_credentials"


class PrivateKeyJwt(JWTBearerClientAssertion):
    """RFC 7523 client authentication with an exact aud, the listed algs and jti replay checks."""

    CLIENT_AUTH_METHOD = PRIVATE_KEY_JWT

    def __init__(self, token_endpoint, algorithms):
        super().__init__(leeway=5)
        self.token_endpoint = token_endpoint
        self.algorithms = algorithms
        self.used_jtis = set()

    def get_audiences(self):
        return [self.token_endpoint]

    def validate_jti(self, claims, jti):
        if jti in self.used_jtis:
            return False
        self.used_jtis.add(jti)
        return True

    def resolve_client_public_key(self, client):
        return KeySet.import_key_set(client.jwks)

    def process_assertion_claims(self, assertion, resolve_key):
        # Authlib's own method lets joserfc pick "recommended" algs only; name them instead.
        try:
            token = jwt.decode(assertion, resolve_key, algorithms=self.algorithms)
        except JoseError as e:
            raise InvalidClientError(description=e.description) from e
        self.verify_claims(token.claims)
        return token.claims


class ClientCredentials(grants.ClientCredentialsGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = [PRIVATE_KEY_JWT]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--jwks", required=True)
    parser.add_argument("--port-file", required=True)
    parser.add_argument("--algs", default="RS256,ES384")
    args = parser.parse_args()

    with open(args.jwks) as f:
        client = Client(args.client_id, json.load(f))
    algorithms = args.algs.split(",")

    app = Flask("authlib-interop")
    http = make_server("127.0.0.1", 0, app, threaded=True)
    issuer = f"http://127.0.0.1:{http.server_port}"
    token_endpoint = f"{issuer}/oauth/token"

    server = AuthorizationServer(
        app,
        query_client=lambda client_id: client if client_id == client.client_id else None,
        save_token=lambda token, request: None,
    )
    server.register_client_auth_method(PRIVATE_KEY_JWT, PrivateKeyJwt(token_endpoint, algorithms))
    server.register_grant(ClientCredentials)

    @app.post("/oauth/token")
    def token():
        return server.create_token_response()

    @app.get("/.well-known/oauth-authorization-server")
    def metadata():
        return jsonify(
            issuer=issuer,
            token_endpoint=token_endpoint,
            response_types_supported=[],
            grant_types_supported=["client_credentials"],
            token_endpoint_auth_methods_supported=[PRIVATE_KEY_JWT],
            token_endpoint_auth_signing_alg_values_supported=algorithms,
        )

    temp = f"{args.port_file}.{os.getpid()}.tmp"
    with open(temp, "w") as f:
        f.write(issuer + "\n")
    os.rename(temp, args.port_file)
    print(f"authlib_server: issuer {issuer}", file=sys.stderr, flush=True)
    http.serve_forever()


if __name__ == "__main__":
    main()
