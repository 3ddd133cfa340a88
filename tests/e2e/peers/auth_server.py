#!/usr/bin/env python3
"""A small OAuth 2.1 authorization server for the end-to-end tests (starlette + uvicorn).

What an MCP client's OAuth flow needs, and nothing more:

- `GET /.well-known/oauth-authorization-server`: RFC 8414 metadata (issuer = this server's
  base URL, `code_challenge_methods_supported: [S256]`, the RFC 9207 `iss` parameter).
- `POST /register`: dynamic client registration (RFC 7591); public clients
  (`token_endpoint_auth_method: none`).
- `GET /authorize`: approves at once and redirects to the client's registered `redirect_uri`
  with `code`, `state` and `iss`. PKCE S256 is required.
- `POST /token`: `authorization_code` (checks the code's client, redirect URI, PKCE verifier
  and `resource`) and `refresh_token`. Access tokens are RS256 JWTs with `kid`, `iss`,
  `aud` = the RFC 8707 `resource` the client asked for, `sub`, `client_id`, `scope`, `iat`
  and `exp`.
- `GET /jwks`: the public key.

Granted scopes are the requested ones, limited to `--grantable` when it is given (so a test
can show a client that cannot get more). Every step is printed, one line each.

Usage: auth_server.py [--port 0] [--subject alice] [--grantable "mcp tools.write"].
Prints `listening on 127.0.0.1:PORT`.
"""

import argparse
import base64
import hashlib
import secrets
import sys
import time
from urllib.parse import urlencode

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from loopback import bind, serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse
from starlette.routing import Route

TOKEN_TTL = 3600
KID = "e2e-as-1"


def log(*parts: object) -> None:
    print(*parts, flush=True)


def oauth_error(error: str, description: str, status: int = 400) -> JSONResponse:
    log("refused:", error, description)
    return JSONResponse({"error": error, "error_description": description}, status_code=status)


def build(issuer: str, subject: str, grantable: set[str] | None) -> Starlette:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = {**RSAAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": KID, "alg": "RS256", "use": "sig"}
    clients: dict[str, dict] = {}
    codes: dict[str, dict] = {}
    refresh_tokens: dict[str, dict] = {}

    def mint(client_id: str, resource: str, scope: str) -> dict:
        now = int(time.time())
        claims = {
            "iss": issuer,
            "aud": resource,
            "sub": subject,
            "client_id": client_id,
            "scope": scope,
            "iat": now,
            "exp": now + TOKEN_TTL,
        }
        token = jwt.encode(claims, key, algorithm="RS256", headers={"kid": KID})
        refresh = secrets.token_urlsafe(32)
        refresh_tokens[refresh] = {"client_id": client_id, "resource": resource, "scope": scope}
        log("token issued:", f"client_id={client_id}", f"aud={resource}", f"scope={scope!r}")
        return {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": TOKEN_TTL,
            "scope": scope,
            "refresh_token": refresh,
        }

    async def metadata(request: Request) -> JSONResponse:
        log("metadata")
        return JSONResponse(
            {
                "issuer": issuer,
                "authorization_endpoint": f"{issuer}/authorize",
                "token_endpoint": f"{issuer}/token",
                "registration_endpoint": f"{issuer}/register",
                "jwks_uri": f"{issuer}/jwks",
                "response_types_supported": ["code"],
                "grant_types_supported": ["authorization_code", "refresh_token"],
                "token_endpoint_auth_methods_supported": ["none"],
                "code_challenge_methods_supported": ["S256"],
                "authorization_response_iss_parameter_supported": True,
                **({"scopes_supported": sorted(grantable)} if grantable else {}),
            }
        )

    async def jwks(request: Request) -> JSONResponse:
        log("jwks")
        return JSONResponse({"keys": [jwk]})

    async def register(request: Request) -> JSONResponse:
        body = await request.json()
        redirect_uris = body.get("redirect_uris") or []
        if not redirect_uris:
            return oauth_error("invalid_redirect_uri", "redirect_uris is required")
        client_id = f"client-{secrets.token_hex(8)}"
        client = {
            **body,
            "client_id": client_id,
            "client_id_issued_at": int(time.time()),
            "token_endpoint_auth_method": "none",
            "redirect_uris": redirect_uris,
        }
        clients[client_id] = client
        log("registered:", client_id, f"redirect_uris={redirect_uris}", f"scope={body.get('scope')!r}")
        return JSONResponse(client, status_code=201)

    async def authorize(request: Request):
        q = request.query_params
        client = clients.get(q.get("client_id", ""))
        if client is None:
            return oauth_error("invalid_client", "unknown client_id")
        redirect_uri = q.get("redirect_uri")
        if redirect_uri not in client["redirect_uris"]:
            return oauth_error("invalid_request", "redirect_uri is not registered")
        if q.get("response_type") != "code":
            return oauth_error("unsupported_response_type", "only code")
        if q.get("code_challenge_method") != "S256" or not q.get("code_challenge"):
            return oauth_error("invalid_request", "PKCE with S256 is required")
        resource = q.get("resource")
        if not resource:
            return oauth_error("invalid_target", "resource (RFC 8707) is required")
        requested = q.get("scope", "").split()
        scope = " ".join(s for s in requested if grantable is None or s in grantable)
        code = secrets.token_urlsafe(24)
        codes[code] = {
            "client_id": client["client_id"],
            "redirect_uri": redirect_uri,
            "challenge": q["code_challenge"],
            "resource": resource,
            "scope": scope,
        }
        log("authorized:", client["client_id"], f"resource={resource}", f"scope={q.get('scope')!r}", f"granted={scope!r}")
        params = {"code": code, "iss": issuer}
        if "state" in q:
            params["state"] = q["state"]
        return RedirectResponse(f"{redirect_uri}?{urlencode(params)}", status_code=302)

    async def token(request: Request) -> JSONResponse:
        form = await request.form()
        grant_type = form.get("grant_type")
        if grant_type == "authorization_code":
            grant = codes.pop(form.get("code", ""), None)  # single use
            if grant is None:
                return oauth_error("invalid_grant", "unknown or used code")
            if form.get("client_id") != grant["client_id"]:
                return oauth_error("invalid_grant", "the code was issued to another client")
            if form.get("redirect_uri") != grant["redirect_uri"]:
                return oauth_error("invalid_grant", "redirect_uri differs from the authorization request")
            verifier = form.get("code_verifier", "")
            digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
            if not secrets.compare_digest(digest, grant["challenge"]):
                return oauth_error("invalid_grant", "PKCE verification failed")
            if form.get("resource", grant["resource"]) != grant["resource"]:
                return oauth_error("invalid_target", "resource differs from the authorization request")
            log("code exchanged:", grant["client_id"], "pkce=ok")
            return JSONResponse(mint(grant["client_id"], grant["resource"], grant["scope"]))
        if grant_type == "refresh_token":
            grant = refresh_tokens.pop(form.get("refresh_token", ""), None)
            if grant is None or form.get("client_id") != grant["client_id"]:
                return oauth_error("invalid_grant", "unknown refresh token")
            if form.get("resource", grant["resource"]) != grant["resource"]:
                return oauth_error("invalid_target", "resource differs from the original grant")
            log("refreshed:", grant["client_id"])
            return JSONResponse(mint(grant["client_id"], grant["resource"], grant["scope"]))
        return oauth_error("unsupported_grant_type", f"{grant_type!r}")

    return Starlette(
        routes=[
            Route("/.well-known/oauth-authorization-server", metadata),
            Route("/jwks", jwks),
            Route("/register", register, methods=["POST"]),
            Route("/authorize", authorize),
            Route("/token", token, methods=["POST"]),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--subject", default="alice")
    parser.add_argument("--grantable", default=None, help="space-separated scopes it may grant (default: any)")
    args = parser.parse_args()

    sock, port = bind(args.port)
    issuer = f"http://127.0.0.1:{port}"
    grantable = set(args.grantable.split()) if args.grantable is not None else None
    serve(sock, build(issuer, args.subject, grantable))


if __name__ == "__main__":
    sys.exit(main())
