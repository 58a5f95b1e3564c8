"""Bundle libscx_phase.so into the package when it has been built.

The library comes from $SCX_PHASE_LIB, or ../target/release of this
checkout (cargo build --release). Without it, the package still installs
and finds the library at run time through $SCX_PHASE_LIB. A wheel that
bundles it is tagged for this platform (py3-none-linux_x86_64): the
Python is pure, the library is not. scripts/wheel.sh builds one.
"""
import os
import shutil

from setuptools import Distribution, setup
from setuptools.command.build_py import build_py

try:
    from wheel.bdist_wheel import bdist_wheel
except ImportError:  # no wheel package: source installs only
    bdist_wheel = None


def _bundled_lib():
    here = os.path.dirname(os.path.abspath(__file__))
    for src in (os.environ.get("SCX_PHASE_LIB"),
                os.path.join(here, "..", "target", "release", "libscx_phase.so")):
        if src and os.path.isfile(src):
            return src
    return None


class BuildWithLib(build_py):
    def run(self):
        super().run()
        src = _bundled_lib()
        if src:
            dst = os.path.join(self.build_lib, "scx_phase", "libscx_phase.so")
            shutil.copyfile(src, dst)


cmdclass = {"build_py": BuildWithLib}



class WithLibrary(Distribution):
    """Not pure when it carries the library: a platform wheel."""

    def has_ext_modules(self):
        return _bundled_lib() is not None


if bdist_wheel is not None:
    class PlatformWheel(bdist_wheel):
        def get_tag(self):
            python, abi, plat = super().get_tag()
            # ctypes, no extension module: any Python 3 on this platform.
            return ("py3", "none", plat) if not self.root_is_pure else (python, abi, plat)

    cmdclass["bdist_wheel"] = PlatformWheel

setup(cmdclass=cmdclass, distclass=WithLibrary)
