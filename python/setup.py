"""Bundle libscx_phase.so into the package when it has been built.

The library comes from $SCX_PHASE_LIB, or ../target/release of this
checkout (cargo build --release). Without it, the package still installs
and finds the library at run time through $SCX_PHASE_LIB.
"""
import os
import shutil

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildWithLib(build_py):
    def run(self):
        super().run()
        here = os.path.dirname(os.path.abspath(__file__))
        for src in (os.environ.get("SCX_PHASE_LIB"),
                    os.path.join(here, "..", "target", "release", "libscx_phase.so")):
            if src and os.path.isfile(src):
                dst = os.path.join(self.build_lib, "scx_phase", "libscx_phase.so")
                shutil.copyfile(src, dst)
                break


setup(cmdclass={"build_py": BuildWithLib})
