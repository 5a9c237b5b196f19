"""The hot-folder daemon: config, watcher and intake, the durable queue and its states, the
read-only queue reader (for the TUI and ``queue list``), workers, the service, systemd units and
logs. Drives :mod:`daemon.engine`; nothing below imports it."""
