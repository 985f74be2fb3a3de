"""The kiosk process: real parts wired together, systemd, the control socket, and the admin commands."""
