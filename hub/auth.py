"""Bearer-token authentication against the control plane (``hub.ports.Authenticator``).

The admin token (``HUB_ADMIN_TOKEN``) authenticates the HIE operator; any other token must be a
registered, active partner's token (stored hashed).
"""

from __future__ import annotations

import hmac

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hub.control import partners
from hub.ports import Principal


class SqlAuthenticator:
    """Authenticator on the ``partners`` table plus the operator's admin token."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], *, admin_token: str | None) -> None:
        self._sessions = sessions
        self._admin_token = admin_token

    def is_admin(self, token: str) -> bool:
        """Constant-time comparison with the admin token (never true when none is configured)."""
        return bool(self._admin_token) and hmac.compare_digest(token.encode(), (self._admin_token or "").encode())

    async def authenticate(self, token: str) -> Principal | None:
        if not token:
            return None
        if self.is_admin(token):
            return Principal(kind="operator")
        async with self._sessions() as session:
            partner = await partners.authenticate(session, token)
        if partner is None:
            return None
        return Principal(kind=partner.kind, partner_id=partner.id, organization=partner.organization)
