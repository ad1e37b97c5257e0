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
/* Its closure cells we read (st->chain_cells). */
enum { CHAIN_CELL_SET_STATE, CHAIN_CELL_DESTINATION, CHAIN_CELL_DEST_LOOP,
       CHAIN_CELL_SOURCE_LOOP };
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

/* Publish a lazily found code object (or None) and the fields that go
 * with it: under st->lock, first come first served, the code pointer
 * stored last with release, so a reader that loads it with acquire sees
 * the fields.  Threads that lose the race drop theirs. */
static void
publish_code(cf_state *st, PyObject **slot, PyObject *code, int *shape_slot,
             int shape, Py_ssize_t *idx_slots, const Py_ssize_t *idx, int nidx)
{
    cf_mutex_lock(&st->lock);
    if (*slot == NULL) {
        *shape_slot = shape;
        for (int k = 0; k < nidx; k++) {
            idx_slots[k] = idx[k];
        }
        cf_store_release(slot, code);
        code = NULL;
    }
    cf_mutex_unlock(&st->lock);
    Py_XDECREF(code);
}

/* Look up _call_set_state once asyncio.futures is imported: st->chain_code
 * becomes its code, or None if its shape is not one we know. */
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
    int shape = -1;
    Py_ssize_t idx[4] = {-1, -1, -1, -1};
    if (chain == NULL) {
        PyErr_Clear();
        publish_code(st, &st->chain_code, Py_NewRef(Py_None),
                     &st->chain_shape, -1, NULL, NULL, 0);
        return 0;
    }
    PyObject *code = nested_code(chain, "_call_set_state");
    if (code != NULL) {
        shape = shape_of(code, chain_shapes, Py_ARRAY_LENGTH(chain_shapes));
        if (shape == -2) {
            Py_DECREF(chain);
            return -1;
        }
    }
    if (shape >= 0) {
        PyObject *freevars = PyCode_GetFreevars((PyCodeObject *)code);
        if (freevars == NULL) {
            Py_DECREF(chain);
            return -1;
        }
        idx[CHAIN_CELL_SET_STATE] = freevar_index(freevars, "_set_state");
        idx[CHAIN_CELL_DESTINATION] = freevar_index(freevars, "destination");
        idx[CHAIN_CELL_DEST_LOOP] = freevar_index(freevars, "dest_loop");
        idx[CHAIN_CELL_SOURCE_LOOP] = freevar_index(freevars, "source_loop");
        Py_DECREF(freevars);
    }
    /* The code is kept alive by chain's code until this new reference. */
    PyObject *found = Py_NewRef(shape >= 0 ? code : Py_None);
    Py_DECREF(chain);
    publish_code(st, &st->chain_code, found, &st->chain_shape, shape,
                 st->chain_cells, idx, shape >= 0 ? 4 : 0);
    return 0;
}

/* Look up _on_completion in asyncio.tasks._wait once asyncio.tasks is
 * imported: st->wait_code becomes it, or None if its shape is not one we
 * know. */
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
        publish_code(st, &st->wait_code, Py_NewRef(Py_None),
                     &st->wait_shape, -1, NULL, NULL, 0);
        return 0;
    }
    PyObject *code = nested_code(wait, "_on_completion");
    int shape = -1;
    if (code != NULL) {
        shape = shape_of(code, wait_shapes, Py_ARRAY_LENGTH(wait_shapes));
        if (shape == -2) {
            Py_DECREF(wait);
            return -1;
        }
    }
    PyObject *found = Py_NewRef(shape >= 0 ? code : Py_None);
    Py_DECREF(wait);
    publish_code(st, &st->wait_code, found, &st->wait_shape, shape, NULL,
                 NULL, 0);
    return 0;
}

/* The contents of closure cell i of fn, or NULL (new ref; no exception):
 * a cell may be reassigned by another thread, so never borrowed. */
static PyObject *
cell_contents(PyObject *fn, Py_ssize_t i)
{
    PyObject *closure = PyFunction_GET_CLOSURE(fn);
    if (i < 0 || closure == NULL || !PyTuple_Check(closure)
        || i >= PyTuple_GET_SIZE(closure)) {
        return NULL;
    }
    PyObject *cell = PyTuple_GET_ITEM(closure, i);
    return PyCell_Check(cell) ? PyCell_Get(cell) : NULL;
}

/* _call_set_state for future f: a loop call of _set_state(destination, f)
 * on dest_loop, when that loop runs in this thread.  Called once
 * st->chain_code was loaded with acquire: chain_cells are stable. */
static int
adopt_call_set_state(cf_state *st, cf_future *f, PyObject *fn,
                     PyObject **replacement)
{
    int rc = 0;
    PyObject *source_loop = NULL, *loop = NULL, *args = NULL;
    PyObject *set_state = cell_contents(
        fn, st->chain_cells[CHAIN_CELL_SET_STATE]);
    PyObject *destination = cell_contents(
        fn, st->chain_cells[CHAIN_CELL_DESTINATION]);
    PyObject *dest_loop = cell_contents(
        fn, st->chain_cells[CHAIN_CELL_DEST_LOOP]);
    if (set_state == NULL || destination == NULL || dest_loop == NULL
        || dest_loop == Py_None) {
        goto done;
    }
    if (st->chain_shape == CHAIN_SOURCE_LOOP) {
        source_loop = cell_contents(
            fn, st->chain_cells[CHAIN_CELL_SOURCE_LOOP]);
        if (source_loop != Py_None) {
            goto done;
        }
    }
    loop = cf_aio_running_loop(st);
    if (loop == NULL) {
        rc = PyErr_Occurred() ? -1 : 0;
        goto done;
    }
    if (loop != dest_loop) {
        goto done;
    }
    args = PyTuple_Pack(2, destination, (PyObject *)f);
    if (args == NULL) {
        rc = -1;
        goto done;
    }
    *replacement = cf_aio_loop_call(
        st, dest_loop, set_state, args, fn,
        st->chain_shape == CHAIN_RUNNING_LOOP);
    rc = *replacement == NULL ? -1 : 1;
done:
    Py_XDECREF(args);
    Py_XDECREF(loop);
    Py_XDECREF(source_loop);
    Py_XDECREF(set_state);
    Py_XDECREF(destination);
    Py_XDECREF(dest_loop);
    return rc;
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
        if (cf_load_acquire(&st->chain_code) == NULL
            && find_chain_code(st) < 0) {
            return -1;
        }
        return code == cf_load_acquire(&st->chain_code)
               ? adopt_call_set_state(st, f, fn, replacement) : 0;
    }
    if (cf_load_acquire(&st->wait_code) == NULL && find_wait_code(st) < 0) {
        return -1;
    }
    return code == cf_load_acquire(&st->wait_code)
           ? adopt_on_completion(st, f, fn, replacement) : 0;
}

PyObject *
cf_asyncio_callback_shapes(PyObject *module, PyObject *unused)
{
    cf_state *st = cf_get_state(module);
    if ((cf_load_acquire(&st->chain_code) == NULL
         && find_chain_code(st) < 0)
        || (cf_load_acquire(&st->wait_code) == NULL
            && find_wait_code(st) < 0)) {
        return NULL;
    }
    PyObject *chain = cf_load_acquire(&st->chain_code);
    PyObject *wait = cf_load_acquire(&st->wait_code);
    /* Not imported yet: None, as for an unknown shape. */
    return Py_BuildValue(
        "{s:N,s:N}",
        "chain", chain == NULL || chain == Py_None
                 ? Py_NewRef(Py_None) : PyLong_FromLong(st->chain_shape),
        "wait", wait == NULL || wait == Py_None
                ? Py_NewRef(Py_None) : PyLong_FromLong(st->wait_shape));
}
