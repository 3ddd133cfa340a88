"""Client authentication end to end, with the official Python SDK on both sides.

The SDK `Client` reaches the SDK's `MCPServer` through the gateway with each credential the
gateway accepts (a bearer JWT, HS256 or RS256 from a JWKS; an API key; Basic with a bcrypt
hash), and is refused with a wrong one. Then the SDK's OAuth client (`OAuthClientProvider`)
finds its way on its own: 401 from the gateway, the gateway's Protected Resource Metadata,
the authorization server's metadata, dynamic client registration, authorization code with
PKCE, a token whose audience is the gateway's resource, and tool calls through the gateway;
and, when a policy wants one more scope for a tool, the step-up re-authorization the SDK
does on `403 insufficient_scope`. In every case the upstream's `headers` tool shows that no
client credential reached it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

import bcrypt
import httpx
import httpx2
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from helpers import run, text_of
from jwt.algorithms import RSAAlgorithm
from mcp import Client
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthClientMetadata, OAuthToken
from mcp.shared.exceptions import MCPError

UNAUTHORIZED = -32010  # the gateway's JSON-RPC code for 401
FORBIDDEN = -32013  # ... and for 403 (policy, insufficient scope)

ISSUER = "https://idp.e2e.test"
AUDIENCE = "mcp-gateway"
HS256_SECRET = "e2e-hs256-secret-at-least-32-bytes-long-0123456789"
API_KEY = "e2e-api-key-5c1f0a7d9e3b4c2a8f6d"
PASSWORD = "correct horse battery staple"
REDIRECT_URI = "http://127.0.0.1:9/oauth/callback"  # never contacted: the test catches the redirect


# ---- plumbing ------------------------------------------------------------------------


@dataclass
class HttpLog:
    """Every HTTP exchange of one SDK client, its OAuth requests included (httpx2 event hooks)."""

    exchanges: list[tuple[str, str, int, str | None]] = field(default_factory=list)

    async def _on_response(self, response: httpx2.Response) -> None:
        request = response.request
        self.exchanges.append((request.method, str(request.url), response.status_code, response.headers.get("www-authenticate")))

    def hooks(self) -> dict:
        return {"response": [self._on_response]}

    def statuses(self, url_prefix: str) -> list[int]:
        return [status for _, url, status, _ in self.exchanges if url.startswith(url_prefix)]


def sdk_client(url: str, http: httpx2.AsyncClient, mode: str = "auto") -> Client:
    """The SDK `Client` over Streamable HTTP, sending through `http` (its headers and auth)."""
    return Client(streamable_http_client(url, http_client=http), mode=mode, read_timeout_seconds=30, cache=None)


def http_client(log: HttpLog, headers: dict[str, str] | None = None, auth: httpx2.Auth | None = None) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(headers=headers, auth=auth, timeout=httpx2.Timeout(30, read=120), event_hooks=log.hooks())


async def upstream_headers(client: Client) -> dict[str, str]:
    """The request headers the upstream received with a tool call."""
    return json.loads(text_of(await client.call_tool("headers", {})))


def mcp_error(exc: BaseException) -> MCPError:
    """The `MCPError` a failed connect raised (the SDK's task groups may wrap it)."""
    if isinstance(exc, MCPError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            try:
                return mcp_error(inner)
            except AssertionError:
                pass
    raise AssertionError(f"not an MCP error: {exc!r}") from exc


def assert_no_credentials(headers: dict[str, str], secrets: list[str]) -> None:
    # The request as the gateway forwarded it (it sets X-Request-Id), not an empty stand-in.
    assert headers.get("x-request-id") and headers.get("mcp-protocol-version"), headers
    assert "authorization" not in headers, headers
    assert "x-api-key" not in headers, headers
    dump = json.dumps(headers)
    for secret in secrets:
        assert secret not in dump, f"a client credential reached the upstream: {headers}"


# ---- one credential per auth method --------------------------------------------------


@dataclass
class Credentials:
    yaml: str  # the `security:` section
    good: dict[str, str]  # request headers
    bad: dict[str, str]
    secrets: list[str]  # what must never reach the upstream


def claims() -> dict:
    return {"sub": "carol", "iss": ISSUER, "aud": AUDIENCE, "exp": int(time.time()) + 600, "scope": "mcp"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def jwt_rule(source: str, algorithm: str) -> str:
    return f"""
security:
  auth:
    - name: clients
      jwt: {{{source}, algorithms: [{algorithm}], issuer: "{ISSUER}", audience: {AUDIENCE}}}
"""


def credentials(method: str, tmp_path) -> Credentials:
    if method == "jwt-hs256":
        good = jwt.encode(claims(), HS256_SECRET, algorithm="HS256")
        bad = jwt.encode(claims(), "another-secret-that-is-also-32-bytes-long!", algorithm="HS256")
        return Credentials(jwt_rule(f'secret: "{HS256_SECRET}"', "HS256"), bearer(good), bearer(bad), [good])
    if method == "jwt-rs256-jwks":
        key, other = (rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(2))
        jwk = {**RSAAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": "k1", "alg": "RS256", "use": "sig"}
        jwks = tmp_path / "jwks.json"
        jwks.write_text(json.dumps({"keys": [jwk]}))
        good = jwt.encode(claims(), key, algorithm="RS256", headers={"kid": "k1"})
        # Same kid, another key: the signature does not verify.
        bad = jwt.encode(claims(), other, algorithm="RS256", headers={"kid": "k1"})
        return Credentials(jwt_rule(f'jwks_file: "{jwks}"', "RS256"), bearer(good), bearer(bad), [good])
    if method == "api-key":
        digest = hashlib.sha256(API_KEY.encode()).hexdigest()
        yaml = f"""
security:
  auth:
    - name: clients
      api_keys:
        keys:
          - {{id: ci-bot, sha256: "{digest}"}}
"""
        return Credentials(yaml, {"X-API-Key": API_KEY}, {"X-API-Key": API_KEY + "-wrong"}, [API_KEY])
    if method == "basic-bcrypt":
        hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
        yaml = f"""
security:
  auth:
    - name: clients
      basic:
        users:
          - {{name: alice, hash: "{hashed}"}}
"""

        def basic(user: str, password: str) -> dict[str, str]:
            return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}

        good = basic("alice", PASSWORD)
        return Credentials(yaml, good, basic("alice", PASSWORD + "!"), [good["Authorization"].split()[1], PASSWORD])
    raise ValueError(method)


@pytest.mark.parametrize("method", ["jwt-hs256", "jwt-rs256-jwks", "api-key", "basic-bcrypt"])
def test_sdk_client_with_each_credential(stack, tmp_path, method):
    creds = credentials(method, tmp_path)
    upstream = stack.python_server()
    gateway = stack.gateway({"default": {"servers": [upstream]}}, extra=creds.yaml)
    url = f"{gateway}/mcp"

    async def body():
        log = HttpLog()
        async with http_client(log, headers=creds.good) as http, sdk_client(url, http) as client:
            tools = {tool.name for tool in (await client.list_tools()).tools}
            assert {"add", "echo", "headers"} <= tools
            assert text_of(await client.call_tool("add", {"a": 20, "b": 22})) == "42"
            assert text_of(await client.call_tool("echo", {"text": "through the gateway"})) == "through the gateway"
            assert_no_credentials(await upstream_headers(client), creds.secrets)
        assert log.statuses(url) and all(s < 300 for s in log.statuses(url)), log.exchanges

        # A wrong credential: 401 for every request, which the SDK raises as the gateway's error.
        log = HttpLog()
        with pytest.raises((MCPError, BaseExceptionGroup)) as refused:
            async with http_client(log, headers=creds.bad) as http, sdk_client(url, http) as client:
                await client.list_tools()
        assert mcp_error(refused.value).code == UNAUTHORIZED, refused.value
        assert log.statuses(url) and set(log.statuses(url)) == {401}, log.exchanges

    run(body)


# ---- OAuth: the SDK's OAuth client against a small authorization server --------------


class MemoryStorage:
    """The SDK's `TokenStorage`, in memory."""

    def __init__(self):
        self.tokens: OAuthToken | None = None
        self.client_info: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


class Browser:
    """Stands in for the user's browser: opens the authorization URL (the authorization server
    approves at once) and catches its redirect to the client's callback."""

    def __init__(self):
        self.visits: list[dict[str, str]] = []  # the authorization requests' parameters
        self._result: AuthorizationCodeResult | None = None

    async def redirect_handler(self, authorization_url: str) -> None:
        self.visits.append({k: v[0] for k, v in parse_qs(urlsplit(authorization_url).query).items()})
        async with httpx.AsyncClient(timeout=30) as http:
            response = await http.get(authorization_url)  # redirects are not followed
        assert response.status_code == 302, response.text
        location = response.headers["location"]
        assert location.startswith(REDIRECT_URI + "?"), location
        params = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
        self._result = AuthorizationCodeResult(code=params["code"], state=params.get("state"), iss=params.get("iss"))

    async def callback_handler(self) -> AuthorizationCodeResult:
        result, self._result = self._result, None
        assert result is not None, "callback without a redirect"
        return result


def oauth_yaml(issuer: str, policies: str = "") -> str:
    return f"""
security:
  auth:
    - name: oauth
      routes: [/mcp]
      jwt: {{jwks_url: "{issuer}/jwks", algorithms: [RS256], issuer: "{issuer}"}}
      oauth:
        resource: "http://127.0.0.1:{{port}}/mcp"
        authorization_servers: ["{issuer}"]
        scopes_supported: [mcp, tools.write]
        required_scopes: [mcp]
{policies}"""


def oauth_provider(url: str, storage: MemoryStorage, browser: Browser) -> OAuthClientProvider:
    return OAuthClientProvider(
        server_url=url,
        client_metadata=OAuthClientMetadata(
            client_name="mcp-gateway end-to-end test",
            redirect_uris=[REDIRECT_URI],
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
        ),
        storage=storage,
        redirect_handler=browser.redirect_handler,
        callback_handler=browser.callback_handler,
    )


def verified_claims(token: str, issuer: str, audience: str) -> dict:
    """The access token's claims, its signature checked with the authorization server's JWKS."""
    jwks = httpx.get(f"{issuer}/jwks", timeout=10).json()
    header = jwt.get_unverified_header(token)
    (jwk,) = [k for k in jwks["keys"] if k["kid"] == header["kid"]]
    return jwt.decode(token, RSAAlgorithm.from_jwk(jwk), algorithms=["RS256"], audience=audience, issuer=issuer)


def oauth_steps(log: HttpLog, gateway: str, issuer: str) -> list[str]:
    """The exchanges up to the first successful MCP request, as `METHOD path status` (with
    `gateway`/`as` for the host)."""
    steps = []
    for method, url, status, _ in log.exchanges:
        host = "gateway" if url.startswith(gateway) else "as" if url.startswith(issuer) else url
        steps.append(f"{method} {host}{urlsplit(url).path} {status}")
        if host == "gateway" and urlsplit(url).path == "/mcp" and status == 200:
            break
    return steps


@pytest.mark.parametrize("mode", ["auto", "legacy"])
def test_sdk_oauth_client_through_gateway(stack, mode):
    """`auto`: stateless 2026-07-28 requests; `legacy`: initialize, a session, its GET stream."""
    issuer = stack.auth_server()
    upstream = stack.python_server()
    gateway = stack.gateway({"default": {"servers": [upstream]}}, extra=oauth_yaml(issuer))
    url = f"{gateway}/mcp"
    metadata_url = f"{gateway}/.well-known/oauth-protected-resource/mcp"

    async def body():
        log, storage, browser = HttpLog(), MemoryStorage(), Browser()
        async with http_client(log, auth=oauth_provider(url, storage, browser)) as http, sdk_client(url, http, mode) as client:
            assert (client.protocol_version == "2026-07-28") == (mode == "auto")
            assert text_of(await client.call_tool("add", {"a": 20, "b": 22})) == "42"
            assert text_of(await client.call_tool("echo", {"text": "with a token"})) == "with a token"
            assert {"add", "echo", "headers"} <= {tool.name for tool in (await client.list_tools()).tools}
            seen_upstream = await upstream_headers(client)

        # What the SDK did, in order: the MCP request refused, the gateway's Protected
        # Resource Metadata, the authorization server's metadata, registration, (the
        # authorization request, in the browser), the token request, the MCP request again.
        assert oauth_steps(log, gateway, issuer) == [
            "POST gateway/mcp 401",
            "GET gateway/.well-known/oauth-protected-resource/mcp 200",
            "GET as/.well-known/oauth-authorization-server 200",
            "POST as/register 201",
            "POST as/token 200",
            "POST gateway/mcp 200",
        ], log.exchanges
        # Every later request (in `legacy` mode: the GET stream and the DELETE too) carried the token.
        assert all(s < 300 for s in log.statuses(url)[1:]), log.exchanges
        challenge = log.exchanges[0][3]
        assert challenge == f'Bearer realm="mcp-gateway", resource_metadata="{metadata_url}", scope="mcp"'

        # One authorization, with PKCE S256, for the gateway's resource (RFC 8707), asking
        # for the scope the 401 named.
        assert len(browser.visits) == 1, browser.visits
        (visit,) = browser.visits
        assert visit["client_id"] == storage.client_info.client_id
        assert visit["code_challenge_method"] == "S256" and len(visit["code_challenge"]) == 43
        assert visit["resource"] == url
        assert visit["scope"] == "mcp"

        # The token is for the gateway's resource, and never reached the upstream.
        token = storage.tokens.access_token
        granted = verified_claims(token, issuer, audience=url)
        assert granted["aud"] == url and granted["scope"] == "mcp"
        assert granted["client_id"] == storage.client_info.client_id
        assert_no_credentials(seen_upstream, [token])

    run(body)


# `echo` needs one more scope than the route requires; lists are filtered accordingly.
STEP_UP_POLICIES = """  policies:
    - {name: writers, effect: allow, scopes: [tools.write], tools: [echo]}
    - {name: no-echo, effect: deny, tools: [echo]}
    - {effect: allow}
"""


@pytest.mark.parametrize("grantable", [None, "mcp"], ids=["granted", "refused"])
def test_sdk_oauth_step_up_on_insufficient_scope(stack, grantable):
    """On `403 insufficient_scope` the SDK re-authorizes for the union of its scopes and the
    ones the challenge names, then retries once. If the authorization server grants them,
    the call goes through; if not, the retry's 403 reaches the caller as the gateway's error."""
    issuer = stack.auth_server(grantable=grantable)
    upstream = stack.python_server()
    gateway = stack.gateway({"default": {"servers": [upstream]}}, extra=oauth_yaml(issuer, STEP_UP_POLICIES))
    url = f"{gateway}/mcp"
    metadata_url = f"{gateway}/.well-known/oauth-protected-resource/mcp"

    async def body():
        log, storage, browser = HttpLog(), MemoryStorage(), Browser()
        async with http_client(log, auth=oauth_provider(url, storage, browser)) as http, sdk_client(url, http) as client:
            # With the scope the route requires: `echo` is not listed, `add` works.
            assert "echo" not in {tool.name for tool in (await client.list_tools()).tools}
            assert text_of(await client.call_tool("add", {"a": 1, "b": 2})) == "3"
            assert len(browser.visits) == 1 and browser.visits[0]["scope"] == "mcp"
            client_id = storage.client_info.client_id

            before = len(log.exchanges)
            if grantable is None:
                assert text_of(await client.call_tool("echo", {"text": "stepped up"})) == "stepped up"
                assert "echo" in {tool.name for tool in (await client.list_tools()).tools}
            else:
                with pytest.raises(MCPError) as denied:
                    await client.call_tool("echo", {"text": "not allowed"})
                assert denied.value.code == FORBIDDEN, denied.value
                assert 'policy "no-echo" denies tools/call of tool "echo"' in denied.value.message
            seen_upstream = await upstream_headers(client)

        # The 403 named both scopes; the SDK asked for them (same registration, no new
        # discovery), got a token and retried the call once.
        step_up = log.exchanges[before:]
        assert [(m, urlsplit(u).path, s) for m, u, s, _ in step_up[:3]] == [
            ("POST", "/mcp", 403),
            ("POST", "/token", 200),
            ("POST", "/mcp", 200 if grantable is None else 403),
        ], log.exchanges
        assert step_up[0][3] == f'Bearer error="insufficient_scope", scope="mcp tools.write", resource_metadata="{metadata_url}"'
        assert len(browser.visits) == 2, browser.visits
        assert browser.visits[1]["scope"] == "mcp tools.write"
        assert browser.visits[1]["client_id"] == client_id == storage.client_info.client_id
        token = storage.tokens.access_token
        granted = verified_claims(token, issuer, audience=url)
        assert granted["scope"] == ("mcp tools.write" if grantable is None else "mcp")
        assert_no_credentials(seen_upstream, [token])

    run(body)
