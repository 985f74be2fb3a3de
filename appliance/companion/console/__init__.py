"""The companion's web console: teachers read lessons, admins run the fleet and the accounts."""

from appliance.companion.console.views import setup_console

__all__ = ["setup_console"]
