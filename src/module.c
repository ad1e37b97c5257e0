/* The _cfutures module: multi-phase init (PEP 489) and its state (PEP 630).
 *
 * The state holds the stdlib's own exception classes and constants, so
 * cfutures raises and returns exactly what concurrent.futures does. */
#include "cfutures.h"

static PyObject *
import_attr(const char *module, const char *name)
{
    PyObject *mod = PyImport_ImportModule(module);
    if (mod == NULL) {
        return NULL;
    }
    PyObject *attr = PyObject_GetAttrString(mod, name);
    Py_DECREF(mod);
    return attr;
}

static int
load_stdlib(cf_state *st)
{
    static const char *state_names[5] = {
        "PENDING", "RUNNING", "CANCELLED", "CANCELLED_AND_NOTIFIED",
        "FINISHED"};
#define IMPORT(field, module, name)                          \
    do {                                                     \
        if ((st->field = import_attr(module, name)) == NULL) \
            return -1;                                       \
    } while (0)
    IMPORT(CancelledError, "concurrent.futures._base", "CancelledError");
    IMPORT(TimeoutError, "concurrent.futures._base", "TimeoutError");
    IMPORT(InvalidStateError, "concurrent.futures._base",
           "InvalidStateError");
    IMPORT(BrokenExecutor, "concurrent.futures._base", "BrokenExecutor");
    IMPORT(BrokenThreadPool, "concurrent.futures.thread", "BrokenThreadPool");
    IMPORT(std_future_type, "concurrent.futures._base", "Future");
    IMPORT(DoneAndNotDoneFutures, "concurrent.futures._base",
           "DoneAndNotDoneFutures");
    IMPORT(FIRST_COMPLETED, "concurrent.futures._base", "FIRST_COMPLETED");
    IMPORT(FIRST_EXCEPTION, "concurrent.futures._base", "FIRST_EXCEPTION");
    IMPORT(ALL_COMPLETED, "concurrent.futures._base", "ALL_COMPLETED");
    IMPORT(logger, "concurrent.futures._base", "LOGGER");
    IMPORT(threading_Condition, "threading", "Condition");
    IMPORT(threading_Thread, "threading", "Thread");
    for (int i = 0; i < 5; i++) {
        IMPORT(state_names[i], "concurrent.futures._base", state_names[i]);
    }
#undef IMPORT
    return 0;
}

/* _set_public_types(future_class, executor_class): the package hands over
 * its thin stdlib-compatible subclasses, which C code then instantiates. */
static PyObject *
set_public_types(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    cf_state *st = cf_get_state(module);
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError,
                        "_set_public_types() takes 2 arguments");
        return NULL;
    }
    PyObject *fut = args[0], *ex = args[1];
    if (!PyType_Check(fut)
        || !PyType_IsSubtype((PyTypeObject *)fut, st->future_type)) {
        PyErr_SetString(PyExc_TypeError,
                        "future class must subclass _cfutures.Future");
        return NULL;
    }
    if (ex != Py_None && (!PyType_Check(ex) || st->executor_type == NULL
        || !PyType_IsSubtype((PyTypeObject *)ex, st->executor_type))) {
        PyErr_SetString(PyExc_TypeError,
                        "executor class must subclass "
                        "_cfutures.ThreadPoolExecutor");
        return NULL;
    }
    Py_XSETREF(st->public_future_type, (PyTypeObject *)Py_NewRef(fut));
    if (ex != Py_None) {
        Py_XSETREF(st->public_executor_type, (PyTypeObject *)Py_NewRef(ex));
    }
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"_set_public_types", (PyCFunction)(void (*)(void))set_public_types,
     METH_FASTCALL, "Register the package's public Future and executor classes."},
    {"_asyncio_callback_shapes", cf_asyncio_callback_shapes, METH_NOARGS,
     "Which known shape asyncio's own done-callbacks have here (tests)."},
    {NULL, NULL, 0, NULL},
};

static int
module_exec(PyObject *module)
{
    cf_state *st = cf_get_state(module);
    if (load_stdlib(st) < 0) {
        return -1;
    }
    if (cf_future_setup(module, st) < 0
        || cf_executor_setup(module, st) < 0
        || cf_wait_setup(module, st) < 0
        || cf_aio_setup(module, st) < 0) {
        return -1;
    }
    return 0;
}

#define CF_STATE_OBJECTS(V)                                               \
    V(future_type) V(public_future_type) V(executor_type)                 \
    V(public_executor_type) V(workqueue_type) V(mapiter_type)             \
    V(aswaiter_type) V(awaiter_type) V(batch_type) V(aiocall_type)        \
    V(CancelledError) V(TimeoutError) V(InvalidStateError)                \
    V(BrokenExecutor) V(BrokenThreadPool) V(std_future_type)              \
    V(DoneAndNotDoneFutures) V(FIRST_COMPLETED) V(FIRST_EXCEPTION)        \
    V(ALL_COMPLETED) V(logger) V(threading_Condition) V(threading_Thread) \
    V(asyncio_CancelledError) V(get_running_loop) V(batch_key)            \
    V(default_pool) V(str_call_soon_threadsafe) V(str_call_soon)          \
    V(str_create_future) V(asyncio_InvalidStateError) V(aio_pool_type)     \
    V(str_submit) V(str_default_executor) V(context_kwnames)              \
    V(str__ready) V(loopcall_type) V(chain_code)                          \
    V(executor_submit_descr) V(time_sleep) V(switch_point)                \
    V(waiter_type) V(str__condition) V(str__state) V(str__waiters)        \
    V(str__exception) V(str_acquire) V(str_release) V(str_append)         \
    V(str_remove) V(str_cancelled) V(str_exception)                       \
    V(wait_code) V(loopfuture_type) V(str__executor_shutdown_called)     \
    V(default_executor_hook)

static int
module_traverse(PyObject *module, visitproc visit, void *arg)
{
    cf_state *st = cf_get_state(module);
#define VISIT(f) Py_VISIT(st->f);
    CF_STATE_OBJECTS(VISIT)
#undef VISIT
    for (int i = 0; i < 5; i++) {
        Py_VISIT(st->state_names[i]);
    }
    return 0;
}

static int
module_clear(PyObject *module)
{
    cf_state *st = cf_get_state(module);
#define CLEAR(f) Py_CLEAR(st->f);
    CF_STATE_OBJECTS(CLEAR)
#undef CLEAR
    for (int i = 0; i < 5; i++) {
        Py_CLEAR(st->state_names[i]);
    }
    return 0;
}

static void
module_free(void *module)
{
    module_clear((PyObject *)module);
}

static PyModuleDef_Slot module_slots[] = {
    {Py_mod_exec, module_exec},
    /* Correct without the GIL (README "Concurrency model"): importing
     * cfutures must not turn it back on for the whole process. */
    CF_MOD_GIL_SLOT
    {0, NULL},
};

PyModuleDef cf_module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "cfutures._cfutures",
    .m_doc = "C implementation of concurrent.futures for the cfutures package.",
    .m_size = sizeof(cf_state),
    .m_methods = module_methods,
    .m_slots = module_slots,
    .m_traverse = module_traverse,
    .m_clear = module_clear,
    .m_free = module_free,
};

PyMODINIT_FUNC
PyInit__cfutures(void)
{
    return PyModuleDef_Init(&cf_module_def);
}
