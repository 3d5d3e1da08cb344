"""compose-atomic: atomic deploys, guarded migrations and verified backups for Docker Compose."""

from .hookspecs import hookimpl

__version__ = "0.1.0.dev0"
__all__ = ["hookimpl", "__version__"]
