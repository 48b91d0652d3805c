"""Builds the optional native core, ``ndbridge._native``, from the Rust crate in native/.

``pip install ./python`` builds it when a Rust toolchain is on the PATH; without one (or when
the build fails, or with ``NDBRIDGE_NATIVE=0``) the package installs as pure Python, and
``ndbridge`` runs on pyzmq + numpy alone. Everything else is in pyproject.toml.
"""

import glob
import os

from setuptools import setup

HERE = os.path.dirname(os.path.abspath(__file__))

# pip builds this directory in place, and setuptools packs whatever its build directory holds:
# an extension left there by an earlier build would ship with a build that skips or fails it.
for stale in glob.glob(os.path.join(HERE, "build", "lib*", "ndbridge", "_native*")):
    os.remove(stale)

rust_extensions = []
if os.environ.get("NDBRIDGE_NATIVE", "1") != "0":
    from setuptools_rust import Binding, RustExtension, Strip

    rust_extensions.append(RustExtension("ndbridge._native", path="native/Cargo.toml",
                                         binding=Binding.PyO3, optional=True,
                                         strip=Strip.Debug))

setup(rust_extensions=rust_extensions)
