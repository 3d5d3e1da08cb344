"""The managed Caddy proxy: one container per project, driven through Caddy's admin API.

See :mod:`compose_atomic.proxy.caddy` for the container and the API client, and
docs/deploy.md for what the proxy promises.
"""

from .caddy import CaddyProxy, ProxyError, Route

__all__ = ["CaddyProxy", "ProxyError", "Route"]
