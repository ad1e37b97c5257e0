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
 * Each is recognised only in a shape listed below: its free variables and
 * the names its code uses, to the letter, as each supported version of
 * asyncio writes it.  Only a callback added from the thread running its
 * loop, to a pending future, is replaced; anything else keeps the
 * stdlib's path.  A version whose asyncio changed a callback's shape is
 * caught by tests/test_aio.py::test_ext_asyncio_callback_shapes_known,
 * never silently slowed down.  Each is found only once its asyncio module
 * is imported; cfutures never imports it.
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

/* A shape of one of asyncio's callbacks: its code's co_freevars and
 * co_names, each joined by spaces. */
typedef struct {
    const char *freevars;
    const char *names;
} cb_shape;

/* _chain_future's _call_set_state. */
enum { CHAIN_SOURCE_LOOP, CHAIN_RUNNING_LOOP };
static const cb_shape chain_shapes[] = {
    /* 3.11, 3.12, 3.13.0: hands over now only if dest_loop is source_loop
     * (None for a concurrent source): always call_soon_threadsafe for us. */
    [CHAIN_SOURCE_LOOP] = {
        "_set_state dest_loop destination source_loop",
        "cancelled is_closed call_soon_threadsafe"},
    /* Later 3.13 releases, 3.14, 3.15: hands over now when completed on
     * dest_loop's own thread while it runs (events._get_running_loop()). */
    [CHAIN_RUNNING_LOOP] = {
        "_set_state dest_loop destination",
        "cancelled is_closed events _get_running_loop call_soon_threadsafe"},
};

/* asyncio.tasks._wait's _on_completion; we only call it. */
static const cb_shape wait_shapes[] = {
    /* 3.11 to 3.13 */
    {"counter return_when timeout_handle waiter",
     "FIRST_COMPLETED FIRST_EXCEPTION cancelled exception cancel done "
     "set_result"},
    /* 3.14+: also drops the waiting task from f's awaited-by set, which
     * it keeps for asyncio futures only. */
    {"counter cur_task return_when timeout_handle waiter",
     "FIRST_COMPLETED FIRST_EXCEPTION cancelled exception cancel done "
     "set_result futures future_discard_from_awaited_by"},
};

/* Whether the strings of `tuple`, joined by spaces, are `joined`: 1, 0,
 * or -1 with an exception. */
static int
tuple_is(PyObject *tuple, const char *joined)
{
    PyObject *sep = PyUnicode_FromString(" ");
    if (sep == NULL) {
        return -1;
    }
    PyObject *str = PyUnicode_Join(sep, tuple);
    Py_DECREF(sep);
    if (str == NULL) {
        return -1;
    }
    int same = PyUnicode_CompareWithASCIIString(str, joined) == 0;
    Py_DECREF(str);
    return same;
}

/* The index in `shapes` of code's shape, -1 if none, -2 on error. */
static int
shape_of(PyObject *code, const cb_shape *shapes, int nshapes)
{
    PyObject *freevars = PyCode_GetFreevars((PyCodeObject *)code);
    if (freevars == NULL) {
        return -2;
    }
    PyObject *names = ((PyCodeObject *)code)->co_names;
    int found = -1;
    for (int i = 0; i < nshapes && found == -1; i++) {
        int a = tuple_is(freevars, shapes[i].freevars);
        int b = a == 1 ? tuple_is(names, shapes[i].names) : a;
        if (a < 0 || b < 0) {
            found = -2;
        }
        else if (b) {
            found = i;
        }
    }
    Py_DECREF(freevars);
    return found;
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

/* Find the callback `nested` defined in `module`.`func`, once that module
 * is imported: *code becomes its code object, or None when the function
 * is missing or its shape is none of `shapes`; *shape which one it is (or
 * -1).  Leaves *code NULL (look again later) while the module is not
 * imported. */
static int
find_callback(const char *module, const char *func, const char *nested,
              const cb_shape *shapes, int nshapes, PyObject **code,
              int *shape)
{
    PyObject *mod = imported(module);
    if (mod == NULL) {
        /* Not imported: no callback of it exists yet. */
        return PyErr_Occurred() ? -1 : 0;
    }
    PyObject *outer = PyObject_GetAttrString(mod, func);
    Py_DECREF(mod);
    if (outer == NULL) {
        PyErr_Clear();
    }
    PyObject *found = outer != NULL ? nested_code(outer, nested) : NULL;
    *shape = found != NULL ? shape_of(found, shapes, nshapes) : -1;
    if (*shape >= 0) {
        *code = Py_NewRef(found);
    }
    else if (*shape == -1) {
        *code = Py_NewRef(Py_None);
    }
    Py_XDECREF(outer);
    if (*shape == -2) {
        *shape = -1;
        return -1;
    }
    return 0;
}

/* _chain_future's _call_set_state, and where its closure keeps what we
 * read. */
static int
find_chain_code(cf_state *st)
{
    if (find_callback("asyncio.futures", "_chain_future", "_call_set_state",
                      chain_shapes, Py_ARRAY_LENGTH(chain_shapes),
                      &st->chain_code, &st->chain_shape) < 0) {
        return -1;
    }
    if (st->chain_code == NULL || st->chain_shape < 0) {
        return 0;
    }
    PyObject *freevars = PyCode_GetFreevars((PyCodeObject *)st->chain_code);
    if (freevars == NULL) {
        Py_CLEAR(st->chain_code);
        return -1;
    }
    st->chain_set_state = freevar_index(freevars, "_set_state");
    st->chain_destination = freevar_index(freevars, "destination");
    st->chain_dest_loop = freevar_index(freevars, "dest_loop");
    st->chain_source_loop = freevar_index(freevars, "source_loop");
    Py_DECREF(freevars);
    return 0;
}

/* asyncio.tasks._wait's _on_completion. */
static int
find_wait_code(cf_state *st)
{
    return find_callback("asyncio.tasks", "_wait", "_on_completion",
                         wait_shapes, Py_ARRAY_LENGTH(wait_shapes),
                         &st->wait_code, &st->wait_shape);
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
    if (set_state == NULL || destination == NULL || dest_loop == NULL
        || dest_loop == Py_None) {
        return 0;
    }
    if (st->chain_shape == CHAIN_SOURCE_LOOP
        && cell_contents(fn, st->chain_source_loop) != Py_None) {
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
    *replacement = cf_aio_loop_call(
        st, dest_loop, set_state, args, fn,
        st->chain_shape == CHAIN_RUNNING_LOOP);
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
        *replacement = cf_aio_loop_call(st, loop, fn, args, fn, 0);
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

PyObject *
cf_asyncio_callback_shapes(PyObject *module, PyObject *unused)
{
    cf_state *st = cf_get_state(module);
    if ((st->chain_code == NULL && find_chain_code(st) < 0)
        || (st->wait_code == NULL && find_wait_code(st) < 0)) {
        return NULL;
    }
    /* Not imported yet: None, as for an unknown shape. */
    return Py_BuildValue(
        "{s:N,s:N}",
        "chain", st->chain_code == NULL || st->chain_code == Py_None
                 ? Py_NewRef(Py_None) : PyLong_FromLong(st->chain_shape),
        "wait", st->wait_code == NULL || st->wait_code == Py_None
                ? Py_NewRef(Py_None) : PyLong_FromLong(st->wait_shape));
}
