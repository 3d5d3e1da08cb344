"""Known container images, in one place: which are PostgreSQL servers, which serve a web UI.

Matching is exact on the image's repository (registry host and tag stripped, Docker
Hub's ``library/`` dropped), never by substring: ``postgrest/postgrest``,
``supabase/postgres-meta``, ``prometheuscommunity/postgres-exporter`` and
``prodrigestivill/postgres-backup-local`` talk to PostgreSQL but are not servers.
``init`` and ``backup`` import these tables; nothing else should keep its own copy.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Repositories of PostgreSQL server images, with what they are.
POSTGRES_IMAGES: dict[str, str] = {
    "postgres": "the official PostgreSQL image",
    "bitnami/postgresql": "Bitnami's PostgreSQL",
    "bitnami/postgresql-repmgr": "Bitnami's PostgreSQL with repmgr",
    "postgis/postgis": "PostGIS",
    "timescale/timescaledb": "TimescaleDB",
    "timescale/timescaledb-ha": "TimescaleDB HA",
    "pgvector/pgvector": "PostgreSQL with pgvector",
    "ankane/pgvector": "PostgreSQL with pgvector",
    "tensorchord/pgvecto-rs": "PostgreSQL with pgvecto.rs",
    "supabase/postgres": "Supabase's PostgreSQL",
    "ghcr.io/immich-app/postgres": "Immich's PostgreSQL",
    "compose-atomic-testbed/postgres": "the compose-atomic test bed's PostgreSQL",
}


@dataclass(frozen=True)
class WebImage:
    """An image that serves HTTP, what it listens on and what it documents."""

    port: int
    name: str
    health: str | None = None  # documented health endpoint
    base_url: tuple[str, ...] = ()  # the app's own variables that hold its public URL
    entry: bool = True  # the app people open; False: only other services call it
    healthcheck: bool | None = None  # True: the image defines a Docker HEALTHCHECK
    health_status: int | None = None  # what the health endpoint answers when it is not 2xx/3xx
    health_note: str | None = None  # why, when health_status is set


#: Images whose repository alone tells the port they serve HTTP on.
WEB_IMAGES: dict[str, WebImage] = {
    # web servers
    "nginx": WebImage(80, "nginx"),
    "httpd": WebImage(80, "Apache httpd"),
    "nginxinc/nginx-unprivileged": WebImage(8080, "nginx (unprivileged)"),
    # self-hosted apps
    "ghost": WebImage(2368, "Ghost", base_url=("url",)),
    "wordpress": WebImage(80, "WordPress"),
    "nextcloud": WebImage(80, "Nextcloud", health="/status.php", base_url=("OVERWRITEHOST",)),
    "grafana/grafana": WebImage(3000, "Grafana", health="/api/health", base_url=("GF_SERVER_ROOT_URL",)),
    "metabase/metabase": WebImage(3000, "Metabase", health="/api/health", base_url=("MB_SITE_URL",)),
    "n8nio/n8n": WebImage(5678, "n8n", health="/healthz", base_url=("WEBHOOK_URL", "N8N_EDITOR_BASE_URL")),
    "docker.n8n.io/n8nio/n8n": WebImage(5678, "n8n", health="/healthz",
                                        base_url=("WEBHOOK_URL", "N8N_EDITOR_BASE_URL")),
    "gitea/gitea": WebImage(3000, "Gitea", health="/api/healthz", base_url=("GITEA__server__ROOT_URL",)),
    "louislam/uptime-kuma": WebImage(3001, "Uptime Kuma"),
    "ghcr.io/umami-software/umami": WebImage(3000, "Umami", health="/api/heartbeat"),
    "directus/directus": WebImage(8055, "Directus", health="/server/health", base_url=("PUBLIC_URL",)),
    "strapi/strapi": WebImage(1337, "Strapi"),
    "ghcr.io/plausible/community-edition": WebImage(8000, "Plausible", health="/api/health",
                                                    base_url=("BASE_URL",)),
    "plausible/analytics": WebImage(8000, "Plausible", health="/api/health", base_url=("BASE_URL",)),
    "ghcr.io/immich-app/immich-server": WebImage(2283, "Immich", health="/api/server/ping",
                                                 healthcheck=True),
    "mattermost/mattermost-team-edition": WebImage(8065, "Mattermost", health="/api/v4/system/ping",
                                                   base_url=("MM_SERVICESETTINGS_SITEURL",)),
    "mattermost/mattermost-enterprise-edition": WebImage(8065, "Mattermost", health="/api/v4/system/ping",
                                                         base_url=("MM_SERVICESETTINGS_SITEURL",)),
    "ghcr.io/paperless-ngx/paperless-ngx": WebImage(8000, "Paperless-ngx", base_url=("PAPERLESS_URL",),
                                                    healthcheck=True),
    "miniflux/miniflux": WebImage(8080, "Miniflux", health="/healthcheck", base_url=("BASE_URL",)),
    "listmonk/listmonk": WebImage(9000, "listmonk", health="/api/health"),
    "ghcr.io/goauthentik/server": WebImage(9000, "authentik", health="/-/health/live/"),
    "chatwoot/chatwoot": WebImage(3000, "Chatwoot", base_url=("FRONTEND_URL",)),
    "twentycrm/twenty": WebImage(3000, "Twenty", health="/healthz", base_url=("SERVER_URL",)),
    "ghcr.io/linkwarden/linkwarden": WebImage(3000, "Linkwarden", base_url=("NEXTAUTH_URL",)),
    "outlinewiki/outline": WebImage(3000, "Outline", health="/_health", base_url=("URL",)),
    "docmost/docmost": WebImage(3000, "Docmost", base_url=("APP_URL",)),
    "kong": WebImage(8000, "Kong", health="/", health_status=404,
                     health_note="Kong answers 404 where none of its routes matches, which shows it is up; "
                                 "point health.path at one of your Kong routes and drop health.status "
                                 "for a probe that reaches the services behind it"),
    "supabase/studio": WebImage(3000, "Supabase Studio (reached through the API gateway)", entry=False),
    # services that only other services call
    "supabase/gotrue": WebImage(9999, "Supabase Auth (reached through the API gateway)", entry=False),
    "supabase/realtime": WebImage(4000, "Supabase Realtime (reached through the API gateway)", entry=False),
    "postgrest/postgrest": WebImage(3000, "PostgREST (reached through the API gateway)", entry=False),
    "supabase/postgres-meta": WebImage(8080, "postgres-meta (called by Studio)", entry=False),
    "supabase/storage-api": WebImage(5000, "Supabase Storage (reached through the API gateway)", entry=False),
    "supabase/edge-runtime": WebImage(9000, "Supabase Edge Functions (reached through the API gateway)",
                                      entry=False),
    "supabase/logflare": WebImage(4000, "Logflare (called by the other services)", entry=False),
    "darthsim/imgproxy": WebImage(8080, "imgproxy (called by Storage)", entry=False),
    "timberio/vector": WebImage(9001, "Vector (a log collector)", entry=False),
    "ghcr.io/immich-app/immich-machine-learning": WebImage(3003, "Immich machine learning (called by "
                                                                 "immich-server)", entry=False),
    "n8nio/runners": WebImage(5680, "n8n task runner (connects to its n8n)", entry=False),
    "ghost/traffic-analytics": WebImage(3000, "Ghost traffic analytics (reached through the proxy)",
                                        entry=False),
    "ghcr.io/tryghost/activitypub": WebImage(8080, "Ghost ActivityPub (reached through the proxy)",
                                             entry=False),
    "apache/tika": WebImage(9998, "Tika (called by the app)", entry=False),
    "gotenberg/gotenberg": WebImage(3000, "Gotenberg (called by the app)", entry=False),
}

#: Services that hold TCP (not HTTP) traffic and keep their ports: never routed.
TCP_IMAGES: dict[str, str] = {
    "supabase/supavisor": "a PostgreSQL connection pooler",
    "edoburu/pgbouncer": "a PostgreSQL connection pooler",
    "bitnami/pgbouncer": "a PostgreSQL connection pooler",
}

#: Reverse proxies that would sit where compose-atomic's managed Caddy sits (by repository).
PROXY_IMAGES = {"caddy": "Caddy", "traefik": "Traefik", "nginxproxy/nginx-proxy": "nginx-proxy",
                "jwilder/nginx-proxy": "nginx-proxy", "lucaslorentz/caddy-docker-proxy": "caddy-docker-proxy",
                "haproxy": "HAProxy", "jc21/nginx-proxy-manager": "Nginx Proxy Manager",
                "envoyproxy/envoy": "Envoy"}
#: Helpers that only serve an existing proxy (certificates), by repository.
PROXY_HELPERS = {"nginxproxy/acme-companion": "nginx-proxy's certificate companion",
                 "jrcs/letsencrypt-nginx-proxy-companion": "nginx-proxy's certificate companion"}
#: Stateful services compose-atomic does not replace (last path component of the image).
DATASTORES = {"redis", "valkey", "keydb", "memcached", "rabbitmq", "mysql", "mariadb", "mongo",
              "mongodb", "elasticsearch", "opensearch", "minio", "kafka", "zookeeper", "nats",
              "clickhouse-server", "etcd", "mailhog", "mailpit", "meilisearch", "typesense"}
#: Container ports that carry something other than HTTP.
TCP_PORTS: dict[int, str] = {
    22: "SSH", 25: "SMTP", 53: "DNS", 110: "POP3", 143: "IMAP", 465: "SMTPS", 587: "SMTP",
    993: "IMAPS", 1883: "MQTT", 3306: "MySQL", 5432: "PostgreSQL", 5672: "AMQP", 6379: "Redis",
    6543: "PostgreSQL (pooled)", 8883: "MQTT", 11211: "memcached", 27017: "MongoDB",
}


def repository(image: str) -> str:
    """``docker.io/library/postgres:17-alpine@sha256:..`` -> ``postgres``;
    ``ghcr.io/immich-app/postgres:14`` -> ``ghcr.io/immich-app/postgres``."""
    name = image.strip().split("@", 1)[0]
    last = name.rsplit("/", 1)
    if ":" in last[-1]:
        name = name[: len(name) - len(last[-1])] + last[-1].split(":", 1)[0]
    parts = name.split("/")
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        if parts[0] in ("docker.io", "index.docker.io", "registry-1.docker.io"):
            parts = parts[1:]
    if len(parts) == 2 and parts[0] == "library":
        parts = parts[1:]
    return "/".join(parts).lower()


def postgres_image(image: str) -> str | None:
    """What this image is when it is a PostgreSQL server image (exact match), else None."""
    return POSTGRES_IMAGES.get(repository(image)) if image else None


def web_image(image: str) -> WebImage | None:
    """The known web image this is, else None."""
    return WEB_IMAGES.get(repository(image)) if image else None
