"""Signed releases for a fleet of kiosks (The Update Framework): the keys, the offline signing of a
release by an admin, and the repository a companion serves and keeps fresh.

Neither kiosk nor companion code: the companion imports it to serve a repository, the admin's command
to sign one; a kiosk only ever verifies (``appliance.updates``) and never holds a signing key.
"""
