/* asyncio's own done-callbacks on cfutures futures.
 *
 * asyncio adds a few callbacks of its own to the concurrent futures it is
 * given.  Under concurrent.futures semantics (the callback runs in the
 * completing thread) all one of them does there is hand the outcome to a
 * loop with call_soon_threadsafe: Python code run by the pool worker, one
 * self-pipe write and one loop wakeup per future.  Recognised here by its
 * code object, such a callback is replaced by a loop call (aio.c) that
 * does the same on the loop, batched with the loop's other wakeups:
 *
 *   - asyncio.futures._chain_future's _call_set_state, behind
 *     asyncio.wrap_future and so behind loop.run_in_executor.  For a
 *     concurrent source (source_loop None) and a destination on a loop, it
 *     calls dest_loop.call_soon_threadsafe(_set_state, destination,
 *     source), or returns if that loop is closed; the loop call runs
 *     _set_state(destination, source) on that loop, and is dropped if the
 *     loop is closed.
 *   - asyncio.tasks._wait's _on_completion, behind asyncio.wait, which
 *     since 3.11 takes its futures as they are, counts on asyncio.Future's
 *     add_done_callback (the callback runs on the loop) and removes the
 *     callback again with remove_done_callback (future.c).  Run in a
 *     worker it would complete a loop future from the wrong thread and
 *     never wake the loop; the loop call runs _on_completion(f) on the
 *     loop that is waiting, and is dropped if the loop is closed.
 *
 * Only a callback added from the thread running its loop, to a pending
 * future, is replaced; anything else, or a closure of a shape we do not
 * know (another Python version), keeps the stdlib's path.  Each is found
 * only once its asyncio module is imported; cfutures never imports it.
 */
#include "cfutures.h"

/* The nested code object named `name` among outer's constants, or NULL
 * (borrowed). */
static PyObject *
nested_code(PyObject *outer, const char *name)
{
    if (!PyFunction_Check(outer)) {
        return NULL;
    }
    PyObject *consts = ((PyCodeObject *)PyFunction_GET_CODE(outer))->co_consts;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(consts); i++) {
        PyObject *c = PyTuple_GET_ITEM(consts, i);
        if (PyCode_Check(c)
            && PyUnicode_CompareWithASCIIString(((PyCodeObject *)c)->co_name,
                                                name) == 0) {
            return c;
        }
    }
    return NULL;
}

/* Index of the free variable `name` of code, or -1. */
static Py_ssize_t
freevar_index(PyObject *freevars, const char *name)
{
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(freevars); i++) {
        if (PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(freevars, i),
                                             name) == 0) {
            return i;
        }
    }
    return -1;
}

/* The module `name` if it is imported, else NULL (new ref; an exception
 * only on error). */
static PyObject *
imported(const char *name)
{
    PyObject *str = PyUnicode_FromString(name);
    if (str == NULL) {
        return NULL;
    }
    PyObject *mod = PyImport_GetModule(str);
    Py_DECREF(str);
    return mod;
}

/* Look up _call_set_state once asyncio.futures is imported: st->chain_code
 * becomes its code, or None if its shape is not the one we know. */
static int
find_chain_code(cf_state *st)
{
    PyObject *mod = imported("asyncio.futures");
    if (mod == NULL) {
        /* Not imported: no callback of it exists yet; look again later. */
        return PyErr_Occurred() ? -1 : 0;
    }
    PyObject *chain = PyObject_GetAttrString(mod, "_chain_future");
    Py_DECREF(mod);
    if (chain == NULL) {
        PyErr_Clear();
        st->chain_code = Py_NewRef(Py_None);
        return 0;
    }
    PyObject *code = nested_code(chain, "_call_set_state");
    Py_DECREF(chain);
    PyObject *found = Py_None;
    if (code != NULL) {
        PyObject *freevars = PyCode_GetFreevars((PyCodeObject *)code);
        if (freevars == NULL) {
            return -1;
        }
        st->chain_set_state = freevar_index(freevars, "_set_state");
        st->chain_destination = freevar_index(freevars, "destination");
        st->chain_dest_loop = freevar_index(freevars, "dest_loop");
        st->chain_source_loop = freevar_index(freevars, "source_loop");
        if (st->chain_set_state >= 0 && st->chain_destination >= 0
            && st->chain_dest_loop >= 0 && st->chain_source_loop >= 0) {
            found = code;
        }
        Py_DECREF(freevars);
    }
    st->chain_code = Py_NewRef(found);
    return 0;
}

/* Look up _on_completion in asyncio.tasks._wait once asyncio.tasks is
 * imported: st->wait_code becomes it, or None. */
static int
find_wait_code(cf_state *st)
{
    PyObject *mod = imported("asyncio.tasks");
    if (mod == NULL) {
        return PyErr_Occurred() ? -1 : 0;
    }
    PyObject *wait = PyObject_GetAttrString(mod, "_wait");
    Py_DECREF(mod);
    if (wait == NULL) {
        PyErr_Clear();
        st->wait_code = Py_NewRef(Py_None);
        return 0;
    }
    PyObject *code = nested_code(wait, "_on_completion");
    Py_DECREF(wait);
    st->wait_code = Py_NewRef(code != NULL ? code : Py_None);
    return 0;
}

/* The contents of closure cell i of fn, or NULL (borrowed). */
static PyObject *
cell_contents(PyObject *fn, Py_ssize_t i)
{
    PyObject *closure = PyFunction_GET_CLOSURE(fn);
    if (closure == NULL || !PyTuple_Check(closure)
        || i >= PyTuple_GET_SIZE(closure)) {
        return NULL;
    }
    PyObject *cell = PyTuple_GET_ITEM(closure, i);
    return PyCell_Check(cell) ? PyCell_GET(cell) : NULL;
}

/* _call_set_state for future f: a loop call of _set_state(destination, f)
 * on dest_loop, when that loop runs in this thread. */
static int
adopt_call_set_state(cf_state *st, cf_future *f, PyObject *fn,
                     PyObject **replacement)
{
    PyObject *set_state = cell_contents(fn, st->chain_set_state);
    PyObject *destination = cell_contents(fn, st->chain_destination);
    PyObject *dest_loop = cell_contents(fn, st->chain_dest_loop);
    PyObject *source_loop = cell_contents(fn, st->chain_source_loop);
    if (set_state == NULL || destination == NULL || dest_loop == NULL
        || dest_loop == Py_None || source_loop != Py_None) {
        return 0;
    }
    PyObject *loop = cf_aio_running_loop(st);
    if (loop == NULL) {
        return PyErr_Occurred() ? -1 : 0;
    }
    Py_DECREF(loop);
    if (loop != dest_loop) {
        return 0;
    }
    PyObject *args = PyTuple_Pack(2, destination, (PyObject *)f);
    if (args == NULL) {
        return -1;
    }
    *replacement = cf_aio_loop_call(st, dest_loop, set_state, args, fn);
    Py_DECREF(args);
    return *replacement == NULL ? -1 : 1;
}

/* _on_completion for future f: a loop call of _on_completion(f) on the
 * loop running in this thread (the one awaiting asyncio.wait). */
static int
adopt_on_completion(cf_state *st, cf_future *f, PyObject *fn,
                    PyObject **replacement)
{
    PyObject *loop = cf_aio_running_loop(st);
    if (loop == NULL) {
        return PyErr_Occurred() ? -1 : 0;
    }
    PyObject *args = PyTuple_Pack(1, (PyObject *)f);
    if (args != NULL) {
        *replacement = cf_aio_loop_call(st, loop, fn, args, fn);
        Py_DECREF(args);
    }
    Py_DECREF(loop);
    return *replacement == NULL ? -1 : 1;
}

/* Whether `name` is `ascii` (of length `len`): most callbacks' names
 * differ in length, so this costs every other callback one compare. */
static int
name_is(PyObject *name, const char *ascii, Py_ssize_t len)
{
    return PyUnicode_GET_LENGTH(name) == len
           && PyUnicode_CompareWithASCIIString(name, ascii) == 0;
}

int
cf_adopt_asyncio_callback(cf_future *f, PyObject *fn,
                          PyObject **replacement)
{
    *replacement = NULL;
    if (!PyFunction_Check(fn)) {
        return 0;
    }
    PyObject *code = PyFunction_GET_CODE(fn);
    PyObject *name = ((PyCodeObject *)code)->co_name;
    int chain = name_is(name, "_call_set_state", 15);
    if (!chain && !name_is(name, "_on_completion", 14)) {
        return 0;
    }
    cf_state *st = cf_state_from_type(Py_TYPE(f));
    if (st == NULL) {
        return -1;
    }
    if (chain) {
        if (st->chain_code == NULL && find_chain_code(st) < 0) {
            return -1;
        }
        return code == st->chain_code
               ? adopt_call_set_state(st, f, fn, replacement) : 0;
    }
    if (st->wait_code == NULL && find_wait_code(st) < 0) {
        return -1;
    }
    return code == st->wait_code
           ? adopt_on_completion(st, f, fn, replacement) : 0;
}
