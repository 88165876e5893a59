"""The daemon's one HTTP client: a single aiohttp `ClientSession` for every check and receiver.

Why one: with a thousand http checks at one second each, a session per check would mean a
thousand connectors, cookie jars and DNS caches; receivers and the heartbeat add their own.
The daemon creates one `HttpClient`, passes it to everything that speaks HTTP and closes it
last, at shutdown; a config reload hands the same client to the new checks and receivers.

What differs per caller is passed per request, never baked into the session: the timeout
(`ClientTimeout` on each request; the session has none), TLS verification (`ssl=False` on the
request keeps unverified connections in a pool of their own), `Connection: close` for a probe
that must connect afresh every time (the WHMCS check).

A component built without a client (a unit test, `once` for a single check) makes its own
`HttpClient` and closes it in its `aclose()`: whoever creates a client closes it.
"""

from __future__ import annotations

import aiohttp

from monitor import __version__

# Close idle keep-alive connections before Node's default server keepAliveTimeout (5 s), so
# a request never goes out on a socket the BFF is closing at that very moment.
KEEPALIVE_S = 4.0
USER_AGENT = f"portal-monitor/{__version__}"


class HttpClient:
    """One lazily made `ClientSession` (it must be made inside the running loop)."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        """The session, made on first use; made again if it was closed."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                # No connection limit (the default 100 would queue requests and inflate response
                # times): each check has at most one request in flight, so checks bound it.
                connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=KEEPALIVE_S),
                cookie_jar=aiohttp.DummyCookieJar(),  # a probe keeps no cookies; saves work per reply
                timeout=aiohttp.ClientTimeout(total=None),  # every request passes its own
                headers={"User-Agent": USER_AGENT},
            )
        return self._session

    @property
    def closed(self) -> bool:
        return self._session is None or self._session.closed

    async def aclose(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()


def own_or_shared(client: HttpClient | None) -> tuple[HttpClient, bool]:
    """`(client, owned)`: the client passed in, or a new one that the caller must close."""
    return (client, False) if client is not None else (HttpClient(), True)
