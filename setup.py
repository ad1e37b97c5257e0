"""Build the C extension cfutures._cfutures from the sources in src/."""
import glob
import os

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

# CFUTURES_CFLAGS lets CI add -Werror or sanitizers without editing this file.
extra_compile_args = ["-Wall", "-Wextra", "-Wno-missing-field-initializers",
                      "-Wno-unused-parameter"]
extra_compile_args += os.environ.get("CFUTURES_CFLAGS", "").split()
extra_link_args = os.environ.get("CFUTURES_LDFLAGS", "").split()


class BuildExtAlsoInSource(build_ext):
    """Also copy the built module into the checkout's cfutures/.

    `python -m cfutures` and `python -m pytest` run from the checkout put it
    first on sys.path, so its cfutures/ shadows the installed package; with
    the compiled module beside it, both imports are the same build.
    """

    def run(self):
        super().run()
        if not self.inplace and os.path.isfile("cfutures/__init__.py"):
            self.copy_extensions_to_source()


setup(
    ext_modules=[
        Extension(
            "cfutures._cfutures",
            sources=sorted(glob.glob("src/*.c")),
            depends=glob.glob("src/*.h"),
            extra_compile_args=extra_compile_args,
            extra_link_args=extra_link_args,
        )
    ],
    cmdclass={"build_ext": BuildExtAlsoInSource},
)
