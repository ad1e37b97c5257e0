"""pytest plugin for the slow builds of .ci/run (ASan, the debug
interpreter), loaded with ``-p slow_build``.

* The oracle half of the differential tests (``mod`` =
  concurrent.futures) is deselected: it runs no C code of ours, so it
  checks nothing under a sanitizer or Py_DEBUG, and it is half the time.
* A test that is fast enough normally must not fail for being slow here,
  so hypothesis' per-example deadline is off.
"""
import concurrent.futures

try:
    from hypothesis import settings
except ImportError:
    pass
else:
    settings.register_profile("cfutures-slow-build", deadline=None)
    settings.load_profile("cfutures-slow-build")


def pytest_collection_modifyitems(config, items):
    keep, oracle = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and \
                callspec.params.get("mod") is concurrent.futures:
            oracle.append(item)
        else:
            keep.append(item)
    if oracle:
        config.hook.pytest_deselected(items=oracle)
        items[:] = keep
