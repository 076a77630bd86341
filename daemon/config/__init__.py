"""The daemon's configuration: typed settings read from TOML (settings) and the checker that
reports every problem with its line (check)."""
