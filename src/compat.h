/* Version switches for CPython 3.11 to 3.15, with or without the GIL.
 *
 * Every difference between the interpreters cfutures builds on lives here,
 * so the concept files are written once against the names below.  Each
 * shim uses the public API where the running version has it and the
 * older spelling otherwise; nothing here reaches into private headers. */
#ifndef CFUTURES_COMPAT_H
#define CFUTURES_COMPAT_H

#ifndef PY_SSIZE_T_CLEAN
#  define PY_SSIZE_T_CLEAN
#endif
#include <Python.h>
#include "platform.h"

/* ---- attributes ----------------------------------------------------- */

/* getattr(obj, name) without an AttributeError when it is missing:
 * 1 found (*result a new ref), 0 missing (*result NULL), -1 error. */
static inline int
cf_getattr_optional(PyObject *obj, PyObject *name, PyObject **result)
{
#if PY_VERSION_HEX >= 0x030D0000
    return PyObject_GetOptionalAttr(obj, name, result);
#else
    return _PyObject_LookupAttr(obj, name, result);
#endif
}

/* ---- weak references ------------------------------------------------ */

/* The referent of a weak reference as a strong reference, or NULL when it
 * is gone (no exception).  3.15 removed the borrowing PyWeakref_GetObject,
 * and a borrowed referent may die under a free-threaded caller. */
static inline PyObject *
cf_weakref_get(PyObject *ref)
{
#if PY_VERSION_HEX >= 0x030D0000
    PyObject *obj;
    if (PyWeakref_GetRef(ref, &obj) < 0) {
        PyErr_Clear();      /* only for a non-weakref: a caller's bug */
        return NULL;
    }
    return obj;
#else
    PyObject *obj = PyWeakref_GetObject(ref);
    return obj == NULL || obj == Py_None ? NULL : Py_NewRef(obj);
#endif
}

/* ---- integers ------------------------------------------------------- */

/* The sign of an int object: -1, 0 or 1. */
static inline int
cf_long_sign(PyObject *v)
{
#if PY_VERSION_HEX >= 0x030E0000
    int sign;
    (void)PyLong_GetSign(v, &sign);     /* fails only for a non-int */
    return sign;
#else
    return _PyLong_Sign(v);
#endif
}

/* ---- the clock ------------------------------------------------------ */

/* CPython's monotonic clock in nanoseconds (time.monotonic_ns()), the one
 * Lock.acquire(timeout) measures, on every platform.  Callable without the
 * GIL (the polls before a sleep read it); it cannot fail once the
 * interpreter has started, which checked the clock. */
static inline int64_t
cf_monotonic_ns(void)
{
#if PY_VERSION_HEX >= 0x030D0000
    PyTime_t t;
    (void)PyTime_MonotonicRaw(&t);
    return (int64_t)t;
#else
    return (int64_t)_PyTime_GetMonotonicClock();
#endif
}

/* ---- timeouts ------------------------------------------------------- */

/* Whether threading.Condition.wait(timeout) polls rather than blocks for
 * a timeout that is not None: 1 poll, 0 block, -1 error.  Up to 3.13 it
 * tests `timeout > 0` (NaN polls); from 3.14 `timeout <= 0` (NaN blocks,
 * and Lock.acquire() then rejects it).  The operator shows in the
 * TypeError of a timeout that does not compare with 0. */
#if PY_VERSION_HEX >= 0x030E0000
#  define CF_NAN_TIMEOUT_POLLS 0
#else
#  define CF_NAN_TIMEOUT_POLLS 1
#endif

static inline int
cf_condition_wait_polls(PyObject *timeout)
{
    PyObject *zero = PyLong_FromLong(0);
    if (zero == NULL) {
        return -1;
    }
#if PY_VERSION_HEX >= 0x030E0000
    int r = PyObject_RichCompareBool(timeout, zero, Py_LE);
#else
    int r = PyObject_RichCompareBool(timeout, zero, Py_GT);
    if (r >= 0) {
        r = !r;
    }
#endif
    Py_DECREF(zero);
    return r;
}

/* ---- recursion and threads ----------------------------------------- */

/* How many more Python frames this thread may enter before RecursionError
 * (sys.getrecursionlimit() minus the depth).  3.12 split the Python count
 * from the C one; before, one counter served both. */
static inline int
cf_recursion_remaining(void)
{
    PyThreadState *ts = PyThreadState_Get();
#if PY_VERSION_HEX >= 0x030C0000
    return ts->py_recursion_remaining;
#else
    return ts->recursion_remaining;
#endif
}

/* CF_THREAD_LOCAL, a variable per OS thread, is in platform.h. */

/* ---- critical sections ---------------------------------------------- */

/* A per-object critical section on a free-threaded build; with the GIL,
 * the GIL already serialises the state changes it brackets.  Beware: a
 * critical section is suspended whenever its thread blocks (on another
 * critical section, a PyMutex, or with the GIL/thread state released), so
 * code that must stay mutually exclusive to the end uses only
 * non-blocking steps inside one (atomics, a cf_spinlock, releasing a
 * PyThread lock). */
#ifdef Py_GIL_DISABLED
#  define CF_BEGIN_CRITICAL(op) Py_BEGIN_CRITICAL_SECTION(op);
#  define CF_END_CRITICAL() Py_END_CRITICAL_SECTION();
#else
#  define CF_BEGIN_CRITICAL(op) {
#  define CF_END_CRITICAL() }
#endif

/* ---- free threading ------------------------------------------------- */

/* The module slot that tells a free-threaded interpreter (3.13+) that
 * cfutures does not need the GIL: every piece of shared state has its
 * guard (README, "Concurrency model"), so importing cfutures leaves the
 * GIL off.  Older versions have no such slot. */
#if PY_VERSION_HEX >= 0x030D0000
#  define CF_MOD_GIL_SLOT {Py_mod_gil, Py_MOD_GIL_NOT_USED},
#else
#  define CF_MOD_GIL_SLOT
#endif

/* The atomics (cf_load_acquire, cf_cas, ...) are in platform.h. */

/* A lock for state shared across objects (the module's registry, lazy
 * initialisation): PyMutex on a free-threaded build (3.13+).  With the
 * GIL it is empty: no section it guards releases the GIL.  Blocking on a
 * PyMutex suspends the caller's critical sections, so never take one
 * inside a critical section whose exclusion matters; and never call into
 * Python (a callback, a Py_DECREF that may run __del__) while holding
 * it. */
#ifdef Py_GIL_DISABLED
typedef PyMutex cf_mutex;
#  define cf_mutex_lock(m) PyMutex_Lock(m)
#  define cf_mutex_unlock(m) PyMutex_Unlock(m)
#else
typedef struct {
    char unused;
} cf_mutex;
#  define cf_mutex_lock(m) ((void)(m))
#  define cf_mutex_unlock(m) ((void)(m))
#endif

/* A spin lock for a few instructions of bookkeeping that run inside a
 * future's critical section (a waiter's notify function): unlike a
 * PyMutex it never detaches the thread state, so the critical section it
 * runs in is never suspended.  Empty with the GIL, which holds for the
 * same few instructions. */
typedef struct {
    int held;
} cf_spinlock;


static inline void
cf_spin_lock(cf_spinlock *l)
{
#ifdef Py_GIL_DISABLED
    while (cf_exchange(&l->held, 1)) {
        while (cf_load_relaxed(&l->held)) {
            cf_yield();
        }
    }
#else
    (void)l;
#endif
}

static inline void
cf_spin_unlock(cf_spinlock *l)
{
#ifdef Py_GIL_DISABLED
    cf_store_release(&l->held, 0);
#else
    (void)l;
#endif
}

/* ---- containers ------------------------------------------------------ */

/* list[i] as a new reference, or NULL with IndexError.  Without the GIL a
 * borrowed item of a list another thread may change can be freed under
 * the caller; PyList_GetItemRef (3.13+) takes the reference safely. */
static inline PyObject *
cf_list_get_ref(PyObject *list, Py_ssize_t i)
{
#if PY_VERSION_HEX >= 0x030D0000
    return PyList_GetItemRef(list, i);
#else
    return Py_XNewRef(PyList_GetItem(list, i));
#endif
}

#endif /* CFUTURES_COMPAT_H */
