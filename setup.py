"""Only what pyproject.toml cannot say: the cffi module and the man page."""

from setuptools import setup

setup(
    cffi_modules=["nmbridge/_ffi/build.py:ffibuilder"],
    data_files=[
        ("share/man/man8", ["man/nmbridge.8"]),
        ("lib/systemd/system", ["systemd/nmbridge@.service"]),
    ],
)
