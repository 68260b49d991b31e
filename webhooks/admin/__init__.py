"""`/admin`: the operator dashboard, behind ADMIN_TOKEN.

`blueprint` holds the blueprint and the cookie settings it gives the app, `auth` the login,
sessions and CSRF checks, `pages` the dashboard itself. Importing the package registers them all.
"""

from webhooks.admin import auth, pages
from webhooks.admin.blueprint import bp

__all__ = ["auth", "bp", "pages"]
