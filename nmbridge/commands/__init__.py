"""The commands behind the CLI, one module each: bridge (the default), stats,
check, demo. Each takes plain options, does its work through the control
modules, and raises nmbridge errors; nmbridge.cli maps them to exit statuses."""
