"""Build the C extension cfutures._cfutures from the sources in src/."""
import glob
import os

from setuptools import Extension, setup

# CFUTURES_CFLAGS lets CI add -Werror or sanitizers without editing this file.
extra_compile_args = ["-Wall", "-Wextra", "-Wno-missing-field-initializers",
                      "-Wno-unused-parameter"]
extra_compile_args += os.environ.get("CFUTURES_CFLAGS", "").split()
extra_link_args = os.environ.get("CFUTURES_LDFLAGS", "").split()

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
)
