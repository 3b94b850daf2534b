"""The C core of nmbridge, built by cffi (see build.py). Import nmbridge.engine, not this."""
