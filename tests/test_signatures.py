"""inspect.signature() and docstrings: cfutures against the running stdlib.

Every public callable of cfutures, and every public method of its classes,
has the signature of its counterpart in the stdlib of the running
interpreter (parameter names, kinds and defaults), so inspect.signature(),
help() and tools built on them (IDEs, argument checkers, mocks with
autospec) see the stdlib's API.  The C types carry text signatures (the
"name(...)\\n--\\n\\n" docstring convention); the thin public classes
inherit them through the MRO.
"""
import asyncio
import concurrent.futures as std
import inspect
import pydoc
import sys

import pytest

import cfutures

pytestmark = pytest.mark.timeout(60)

PY314 = sys.version_info >= (3, 14)


def params(sig):
    return [(p.name, p.kind, p.default) for p in sig.parameters.values()]


def assert_same_signature(ours, theirs):
    assert params(inspect.signature(ours)) == \
        params(inspect.signature(theirs)), (
            f"{inspect.signature(ours)} != {inspect.signature(theirs)}")


@pytest.fixture
def futures():
    return cfutures.Future(), std.Future()


@pytest.fixture
def executors():
    ours, theirs = cfutures.ThreadPoolExecutor(1), std.ThreadPoolExecutor(1)
    yield ours, theirs
    ours.shutdown()
    theirs.shutdown()


# ---- module-level names ---------------------------------------------------

@pytest.mark.parametrize("name", ["wait", "as_completed", "Future"])
def test_function_and_class_signatures(name):
    assert_same_signature(getattr(cfutures, name), getattr(std, name))


@pytest.mark.xfail(
    PY314, strict=True,
    reason="3.14 gave the stdlib's ThreadPoolExecutor **ctxkwargs for its "
           "prepare_context() hook; cfutures has no such hook and rejects "
           "unknown keywords (as the stdlib's own prepare_context does)")
def test_executor_class_signature():
    assert_same_signature(cfutures.ThreadPoolExecutor, std.ThreadPoolExecutor)


def test_to_thread_signature_is_asyncio_to_thread():
    assert_same_signature(cfutures.to_thread, asyncio.to_thread)


def test_ext_install_signature():
    sig = inspect.signature(cfutures.install)
    assert params(sig) == [
        ("loop", inspect.Parameter.POSITIONAL_OR_KEYWORD, None)]


# ---- methods --------------------------------------------------------------

FUTURE_METHODS = [
    "add_done_callback", "cancel", "cancelled", "done", "exception",
    "result", "running", "set_exception", "set_result",
    "set_running_or_notify_cancel",
]


def test_future_methods_listed_are_the_stdlibs():
    public = {name for name in dir(std.Future)
              if not name.startswith("_")
              and inspect.isroutine(getattr(std.Future, name))}
    assert public == set(FUTURE_METHODS)


@pytest.mark.parametrize("name", FUTURE_METHODS)
def test_future_method_signature(futures, name):
    ours, theirs = futures
    assert_same_signature(getattr(ours, name), getattr(theirs, name))


def test_ext_remove_done_callback_is_asyncio_futures(futures):
    ours = inspect.signature(futures[0].remove_done_callback)
    theirs = inspect.signature(asyncio.Future.remove_done_callback)
    assert params(ours) == params(theirs)[1:]   # without self


def test_ext_await_signature(futures):
    assert params(inspect.signature(futures[0].__await__)) == []


EXECUTOR_METHODS = ["submit", "map", "shutdown", "__enter__", "__exit__"]


def test_executor_methods_listed_are_the_stdlibs():
    public = {name for name in dir(std.ThreadPoolExecutor)
              if not name.startswith("_")
              and inspect.isroutine(getattr(std.ThreadPoolExecutor, name))}
    # 3.14's prepare_context is a classmethod hook the public class inherits
    # unchanged from the stdlib's.
    public.discard("prepare_context")
    assert public == {n for n in EXECUTOR_METHODS if not n.startswith("_")}


@pytest.mark.parametrize("name", EXECUTOR_METHODS)
def test_executor_method_signature(executors, name):
    ours, theirs = (getattr(e, name) for e in executors)
    if name == "map" and not PY314:
        # buffersize= is new in the stdlib in 3.14; cfutures has it on every
        # version (README, Differences).
        sig = inspect.signature(ours)
        extra = sig.parameters["buffersize"]
        assert (extra.kind, extra.default) == (extra.KEYWORD_ONLY, None)
        ours = sig.replace(parameters=[
            p for p in sig.parameters.values() if p.name != "buffersize"])
        assert params(ours) == params(inspect.signature(theirs))
        return
    assert_same_signature(ours, theirs)


# ---- help() ---------------------------------------------------------------

@pytest.mark.parametrize("obj, expected", [
    (cfutures.Future, "result(self, /, timeout=None)"),
    (cfutures.Future, "add_done_callback(self, /, fn)"),
    (cfutures.ThreadPoolExecutor,
     "ThreadPoolExecutor(max_workers=None, thread_name_prefix='', "
     "initializer=None, initargs=())"),
    (cfutures.ThreadPoolExecutor,
     "shutdown(self, /, wait=True, *, cancel_futures=False)"),
    (cfutures.wait, "wait(fs, timeout=None, return_when='ALL_COMPLETED')"),
    (cfutures.as_completed, "as_completed(fs, timeout=None)"),
    (cfutures.to_thread, "to_thread(func, /, *args, **kwargs)"),
])
def test_help_shows_the_signature(obj, expected):
    # 3.13's pydoc breaks a long signature over the " |  " margin of a
    # class's page: compare without whitespace and margins.
    def squeeze(text):
        return "".join(text.replace("|", " ").split())
    text = pydoc.render_doc(obj, renderer=pydoc.plaintext)
    assert squeeze(expected) in squeeze(text)


# ---- docstrings -----------------------------------------------------------

def public_callables():
    for name in cfutures.__all__:
        obj = getattr(cfutures, name)
        if callable(obj) and getattr(std, name, None) is not obj:
            yield name, obj
    for cls, names in [(cfutures.Future, FUTURE_METHODS
                        + ["remove_done_callback"]),
                       (cfutures.ThreadPoolExecutor, EXECUTOR_METHODS)]:
        for name in names:
            yield f"{cls.__name__}.{name}", getattr(cls, name)


@pytest.mark.parametrize("name, obj", list(public_callables()),
                         ids=[n for n, _ in public_callables()])
def test_docstring(name, obj):
    doc = inspect.getdoc(obj)
    assert doc and len(doc.strip()) >= 20, name
    # The text-signature prologue is consumed, never shown as text.
    assert "--\n\n" not in (obj.__doc__ or "")
    assert "$self" not in doc and "$module" not in doc


def test_docstrings_of_the_to_thread_call():
    async def main():
        call = cfutures.to_thread(int, "7")
        try:
            for name in ["get_loop", "add_done_callback",
                         "remove_done_callback", "done", "cancelled",
                         "result", "exception", "cancel", "send", "throw",
                         "close"]:
                assert inspect.getdoc(getattr(call, name)), name
            sig = inspect.signature(call.cancel)
            assert params(sig) == [
                ("msg", inspect.Parameter.POSITIONAL_OR_KEYWORD, None)]
            return await call
        finally:
            call.close()
    assert asyncio.run(main()) == 7
