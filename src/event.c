/* A one-shot event a thread sleeps on with the GIL released.
 *
 * Every blocking wait in cfutures (result(), wait(), as_completed(),
 * shutdown()) ends here, so this is the one place that honours timeouts and
 * lets signal handlers run, the way threading.Lock.acquire() does. */
#include "cfutures.h"

#include <math.h>

/* Seconds up to this convert without question on every version: the fast
 * path needs no check the stdlib would make differently. */
#define CF_PLAIN_TIMEOUT_MAX 1e9

/* Hand an odd timeout to Lock.acquire(), the stdlib's own conversion, so
 * it raises exactly what the running stdlib raises (types, NaN, overflow:
 * the messages differ between versions).  The lock is new and free: a
 * good value acquires it at once. */
static int
check_timeout_like_lock(PyObject *timeout)
{
    PyObject *mod = PyImport_ImportModule("_thread");
    if (mod == NULL) {
        return -1;
    }
    PyObject *lock = PyObject_CallMethod(mod, "allocate_lock", NULL);
    Py_DECREF(mod);
    if (lock == NULL) {
        return -1;
    }
    PyObject *r = PyObject_CallMethod(lock, "acquire", "OO", Py_True,
                                      timeout);
    Py_DECREF(lock);
    if (r == NULL) {
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

/* Positive seconds Lock.acquire() accepted, as nanoseconds rounded up (as
 * _PyTime_ROUND_TIMEOUT); past about 292 years it saturates, which
 * cf_event_wait treats as for ever in practice. */
static int64_t
accepted_seconds_to_ns(double secs)
{
    double ns = ceil(secs * 1e9);
    return ns >= (double)INT64_MAX ? INT64_MAX : (int64_t)ns;
}

/* The stdlib's way, step by step: Condition.wait()'s poll test (a
 * TypeError for a str), then Lock.acquire(True, timeout). */
static int
parse_odd_timeout(PyObject *timeout, int64_t *timeout_ns)
{
    int poll = cf_condition_wait_polls(timeout);
    if (poll != 0) {
        *timeout_ns = 0;
        return poll < 0 ? -1 : 0;
    }
    if (check_timeout_like_lock(timeout) < 0) {
        return -1;
    }
    /* Accepted, so it is a real number (or has __index__). */
    double secs = PyFloat_AsDouble(timeout);
    if (secs == -1.0 && PyErr_Occurred()) {
        return -1;
    }
    *timeout_ns = accepted_seconds_to_ns(secs);
    return 0;
}

int
cf_parse_timeout(PyObject *timeout, int64_t *timeout_ns)
{
    if (timeout == NULL || timeout == Py_None) {
        *timeout_ns = -1;
        return 0;
    }
    if (PyFloat_CheckExact(timeout)) {
        return cf_parse_timeout_seconds(PyFloat_AS_DOUBLE(timeout),
                                        timeout_ns);
    }
    if (PyLong_CheckExact(timeout)) {
        int overflow;
        long long v = PyLong_AsLongLongAndOverflow(timeout, &overflow);
        if (!overflow && v <= 0) {
            *timeout_ns = 0;
            return 0;
        }
        if (!overflow && v <= CF_PLAIN_TIMEOUT_MAX) {
            *timeout_ns = v * 1000000000LL;
            return 0;
        }
    }
    return parse_odd_timeout(timeout, timeout_ns);
}

int
cf_parse_timeout_seconds(double secs, int64_t *timeout_ns)
{
    if (secs > 0 && secs <= CF_PLAIN_TIMEOUT_MAX) {
        *timeout_ns = accepted_seconds_to_ns(secs);
        return 0;
    }
    if (secs <= 0) {
        *timeout_ns = 0;
        return 0;
    }
    /* NaN or too large: boxed for the stdlib's own checks. */
    PyObject *boxed = PyFloat_FromDouble(secs);
    if (boxed == NULL) {
        return -1;
    }
    int r = parse_odd_timeout(boxed, timeout_ns);
    Py_DECREF(boxed);
    return r;
}

int
cf_event_init(cf_event *ev)
{
    ev->is_set = 0;
    ev->lock = PyThread_allocate_lock();
    if (ev->lock == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    /* Held while unset: the sleeper blocks acquiring it again. */
    PyThread_acquire_lock(ev->lock, 1);
    return 0;
}

void
cf_event_fini(cf_event *ev)
{
    if (ev->lock != NULL) {
        if (!cf_load_acquire(&ev->is_set)) {
            PyThread_release_lock(ev->lock);
        }
        PyThread_free_lock(ev->lock);
        ev->lock = NULL;
    }
}

void
cf_event_set(cf_event *ev)
{
    /* Setters may race (two futures of one wait() completing in two
     * threads): only the one that flips the flag releases the lock. */
    int unset = 0;
    if (cf_cas(&ev->is_set, &unset, 1)) {
        PyThread_release_lock(ev->lock);
    }
}

void
cf_event_clear(cf_event *ev)
{
    if (cf_load_acquire(&ev->is_set)) {
        /* Released by the setter (or about to be: without the GIL the
         * flag flips just before the release), and not taken since: this
         * waits at most for that release. */
        PyThread_acquire_lock(ev->lock, 1);
        cf_store_release(&ev->is_set, 0);
    }
}

int
cf_event_wait(cf_event *ev, int64_t timeout_ns)
{
    if (cf_load_acquire(&ev->is_set)) {
        return 1;
    }
    int64_t deadline = 0;
    if (timeout_ns > 0) {
        /* Saturate: a timeout of centuries must not wrap to the past. */
        int64_t now = cf_monotonic_ns();
        deadline = timeout_ns > INT64_MAX - now ? INT64_MAX
                                                : now + timeout_ns;
    }
    for (;;) {
        PY_TIMEOUT_T us;
        if (timeout_ns < 0) {
            us = -1;
        }
        else if (timeout_ns == 0) {
            us = 0;
        }
        else {
            int64_t left = deadline - cf_monotonic_ns();
            us = left > 0 ? (PY_TIMEOUT_T)(left / 1000 + (left % 1000 != 0))
                          : 0;
        }
        PyLockStatus r;
        if (us == 0) {
            /* Polling needs no GIL release. */
            r = PyThread_acquire_lock_timed(ev->lock, 0, 0);
        }
        else {
            Py_BEGIN_ALLOW_THREADS
            r = PyThread_acquire_lock_timed(ev->lock, us, 1);
            Py_END_ALLOW_THREADS
        }
        if (r == PY_LOCK_ACQUIRED) {
            /* The setter released it for us; give it back so is_set and
             * the lock agree (set == released). */
            PyThread_release_lock(ev->lock);
            return 1;
        }
        if (r == PY_LOCK_INTR) {
            /* A signal arrived: run its Python handler, which may raise
             * (KeyboardInterrupt), then sleep again for what is left. */
            if (Py_MakePendingCalls() < 0) {
                return -1;
            }
            if (cf_load_acquire(&ev->is_set)) {
                return 1;
            }
            continue;
        }
        /* Timed out; a setter may have run meanwhile. */
        return cf_load_acquire(&ev->is_set) ? 1 : 0;
    }
}

int
cf_event_is_set(void *ev)
{
    return cf_load_acquire(&((cf_event *)ev)->is_set);
}

int
cf_poll(int (*ready)(void *), void *arg, int64_t *timeout_ns,
        int64_t spin_ns)
{
    int64_t ns = *timeout_ns;
    if (ready(arg)) {
        return 1;
    }
    if (ns == 0) {
        return 0;
    }
    int64_t spin = ns < 0 || ns > spin_ns ? spin_ns : ns;
    int64_t t0 = cf_monotonic_ns(), spent;
    int set;
    Py_BEGIN_ALLOW_THREADS
    while (!(set = ready(arg)) && cf_monotonic_ns() - t0 < spin) {
        cf_yield();
    }
    Py_END_ALLOW_THREADS
    if (set) {
        return 1;
    }
    spent = cf_monotonic_ns() - t0;
    if (ns > 0) {
        *timeout_ns = spent >= ns ? 0 : ns - spent;
    }
    /* A signal that came while polling is not seen by the lock wait. */
    return PyErr_CheckSignals() < 0 ? -1 : 0;
}
