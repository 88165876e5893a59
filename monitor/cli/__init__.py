"""The `portal-monitor` command.

Owns: argument parsing and one small function per subcommand (`main`), the on-call commands
(`oncall`: incidents, silences, notify-test) and the one backend they talk to (`backend`: the
local state file, or the daemon's API with `--url`).

May import every other part of `monitor` and `checks`; nothing imports it but `__main__`.
"""
