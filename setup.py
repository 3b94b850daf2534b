"""Only what pyproject.toml cannot say: the cffi module and the man page."""

from setuptools import setup

setup(
    cffi_modules=["nmbridge/_ffi/build.py:ffibuilder"],
    # the core is built for the stable ABI (_core.abi3.so): one wheel for every Python 3.9+
    options={"bdist_wheel": {"py_limited_api": "cp39"}},
    data_files=[
        ("share/man/man8", ["man/nmbridge.8"]),
        ("lib/systemd/system", ["systemd/nmbridge@.service"]),
    ],
)
