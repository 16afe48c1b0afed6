"""Bearer-token authentication against the control plane (``hub.ports.Authenticator``).

The admin token (``HUB_ADMIN_TOKEN``) authenticates the HIE operator; any other token must be a
registered, active partner's token (stored hashed). A known token is remembered for ``cache_ttl_s``
(10 s), so a deactivated partner is refused at most that long after deactivation.
"""

from __future__ import annotations

import hmac
import time

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hub.control import partners
from hub.ports import Principal


class SqlAuthenticator:
    """Authenticator on the ``partners`` table plus the operator's admin token."""

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], *, admin_token: str | None, cache_ttl_s: float = 10.0
    ) -> None:
        self._sessions = sessions
        self._admin_token = admin_token
        self._cache_ttl_s = cache_ttl_s
        self._cache: dict[str, tuple[float, Principal]] = {}

    def is_admin(self, token: str) -> bool:
        """Constant-time comparison with the admin token (never true when none is configured)."""
        return bool(self._admin_token) and hmac.compare_digest(token.encode(), (self._admin_token or "").encode())

    async def authenticate(self, token: str) -> Principal | None:
        if not token:
            return None
        if self.is_admin(token):
            return Principal(kind="operator")
        key = partners.hash_token(token)
        cached = self._cache.get(key)
        if cached is not None and time.monotonic() - cached[0] < self._cache_ttl_s:
            return cached[1]
        async with self._sessions() as session:
            partner = await partners.authenticate(session, token)
        if partner is None:
            self._cache.pop(key, None)
            return None
        principal = Principal(kind=partner.kind, partner_id=partner.id, organization=partner.organization)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[key] = (time.monotonic(), principal)
        return principal
